//! `pupil predict`: a saved model on one image or a folder, drawn, with its detections as
//! COCO results.
use anyhow::{bail, Result};
use pupil_selftrain::config::TaskKind;
use pupil_selftrain::model::device;
use pupil_selftrain::predict::{above, predict_folder, FolderOptions, Predictor};
use pupil_selftrain::task::Prediction;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Model (model.safetensors of a run).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// One JPEG or PNG image, drawn to --out (a PNG file).
    #[arg(long, conflicts_with = "images", required_unless_present = "images")]
    pub image: Option<PathBuf>,
    /// A folder (recursive jpg/png) or one image: --out is a folder that receives
    /// detections.json (COCO results with a file_name each), vis/ (a drawing per image),
    /// labels/ (segmenters' label maps) or classes.json (classifiers).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Picture (--image) or output folder (--images).
    #[arg(long)]
    pub out: PathBuf,
    /// With --image: also write its detections as COCO results JSON.
    #[arg(long, conflicts_with = "images")]
    pub json: Option<PathBuf>,
    /// Detections below this score are neither drawn nor written.
    #[arg(long, default_value_t = 0.5)]
    pub score_threshold: f32,
    /// Images per forward pass (--images).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
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
    if !(0.0..=1.0).contains(&a.score_threshold) {
        bail!("--score-threshold {} must be in [0, 1]", a.score_threshold)
    }
    let p = Predictor::open(&a.checkpoint, &device(&a.device)?)?;
    match (&a.image, &a.images) {
        (Some(img), _) => one(&p, img, &a),
        (None, Some(input)) => folder(&p, input, &a),
        (None, None) => bail!("give --image IMG or --images DIR"),
    }
}

fn one(p: &Predictor, img: &Path, a: &PredictArgs) -> Result<()> {
    let mut s = pupil_data::Sample::new(pupil_data::io::read_image(img)?);
    s.image_id = 1;
    let pred = above(
        p.predict(std::slice::from_ref(&s))?.remove(0),
        a.score_threshold,
    );
    describe(&pred, p.class_names());
    if let Some(j) = &a.json {
        pupil_data::coco::write_results(j, &p.coco_results(s.image_id, &pred))?;
    }
    pupil_data::io::write_png(&a.out, &p.draw(&s, &pred))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn folder(p: &Predictor, input: &Path, a: &PredictArgs) -> Result<()> {
    let opts = FolderOptions {
        score_threshold: a.score_threshold,
        batch_size: a.batch_size,
        quiet: false,
    };
    let o = predict_folder(p, input, &a.out, &opts)?;
    print!("{} images", o.images);
    if p.model.config.task == TaskKind::Detection {
        print!(", {} detections", o.detections);
    }
    if let Some(r) = &o.results {
        print!(" -> {}", r.display());
    }
    println!("; drawings in {}", a.out.join("vis").display());
    Ok(())
}
