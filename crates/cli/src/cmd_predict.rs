//! `pupil predict`: a saved model on one image, drawn, with its detections as COCO results.
use anyhow::Result;
use pupil_selftrain::model::device;
use pupil_selftrain::predict::Predictor;
use pupil_selftrain::task::Prediction;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Model (model.safetensors of a run).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A JPEG or PNG image.
    #[arg(long)]
    pub image: PathBuf,
    /// Picture with boxes or masks drawn.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write detections as COCO results JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn describe(p: &Prediction, names: &[String]) {
    let name = |c: u32| names.get(c as usize).cloned().unwrap_or_default();
    match p {
        Prediction::Boxes(dets) => {
            println!("{} detections", dets.len());
            for d in dets {
                let b = d.bbox;
                let n = name(d.class);
                println!(
                    "  {n:>12} {:.3} [{:.1}, {:.1}, {:.1}, {:.1}]",
                    d.score, b[0], b[1], b[2], b[3]
                );
            }
        }
        Prediction::LabelMap { .. } => {}
        Prediction::Class { class, score } => println!("{} {score:.3}", name(*class)),
    }
}

pub fn run(a: PredictArgs) -> Result<()> {
    let p = Predictor::open(&a.checkpoint, &device(&a.device)?)?;
    let mut s = pupil_data::Sample::new(pupil_data::io::read_image(&a.image)?);
    s.image_id = 1;
    let pred = p.predict(std::slice::from_ref(&s))?.remove(0);
    describe(&pred, p.class_names());
    if let Some(j) = &a.json {
        pupil_data::coco::write_results(j, &p.coco_results(s.image_id, &pred))?;
    }
    pupil_data::io::write_png(&a.out, &p.draw(&s, &pred))?;
    println!("wrote {}", a.out.display());
    Ok(())
}
