//! `pupil eval detection|segmentation|model`: COCO bbox mAP (pycocotools' numbers) and mIoU
//! of result files, or of a saved model on a dataset split.
use crate::cmd_train::ConfigArgs;
use anyhow::Context;
use pupil_data::coco::eval::{evaluate_files, EvalParams, EvalResult};
use pupil_data::metrics::{evaluate_label_dirs, ConfusionMatrix};
use pupil_selftrain::evaluate::{evaluate_split, Scores};
use pupil_selftrain::model::{device, load_model_as, read_model_header};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// COCO bbox evaluation, identical to pycocotools' COCOeval(iouType='bbox').
    ///
    /// With --json prints one object: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs,
    /// ARm, ARl (-1 where undefined) and per_category, a list of {id, name, AP} by ascending id
    /// (AP -1 for a category without GT).
    Detection(DetectionArgs),
    /// mIoU of label-map PNGs (8-bit gray or palette) matched by file name.
    ///
    /// With --json prints {"mIoU", "per_class_iou", "pixel_accuracy"}; null for classes absent
    /// from both GT and prediction on non-ignored pixels (they are left out of the mean).
    Segmentation(SegmentationArgs),
    /// Run a saved model on the validation split its config names (or --config / --set
    /// overrides: COCO, VOC, digits) and score it.
    ///
    /// Writes OUT/metrics.json (detection: the 12 COCO stats and per_category AP;
    /// segmentation: mIoU, per_class_iou, pixel_accuracy, classes) and, for detection,
    /// OUT/detections.json in COCO results format with the dataset's image and category ids,
    /// so pycocotools on it and the instances JSON gives the stats of metrics.json. Sets
    /// without an instances file (digits, VOC) get their ground truth as
    /// OUT/ground_truth.json.
    Model(ModelArgs),
}

#[derive(clap::Args)]
pub struct ModelArgs {
    /// Model (model.safetensors of a run).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Overrides of the model's own config (data keys, augment.size, detector.post).
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

#[derive(clap::Args)]
pub struct DetectionArgs {
    /// Ground truth: a COCO instances JSON file.
    #[arg(long)]
    pub gt: PathBuf,
    /// Detections: a COCO results JSON file (a list of {image_id, category_id, bbox, score}).
    #[arg(long)]
    pub dt: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct SegmentationArgs {
    /// Folder of ground-truth label maps.
    #[arg(long)]
    pub gt: PathBuf,
    /// Folder of predicted label maps, with the same file names.
    #[arg(long)]
    pub pred: PathBuf,
    /// Number of classes; values at or above it are errors (except the ignore index in GT).
    #[arg(long)]
    pub num_classes: usize,
    /// GT value that is not counted.
    #[arg(long, default_value_t = 255)]
    pub ignore_index: u8,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    match a.command {
        EvalCommand::Detection(d) => detection(d),
        EvalCommand::Segmentation(s) => segmentation(s),
        EvalCommand::Model(m) => model(m),
    }
}

fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string(v).context("cannot serialise the result")?
    );
    Ok(())
}

fn detection(a: DetectionArgs) -> anyhow::Result<()> {
    let params = EvalParams::default();
    let r = evaluate_files(&a.gt, &a.dt, &params)?;
    if r.unknown_category > 0 {
        eprintln!(
            "WARNING: {}: {} detections have a category_id that is not in {}; they are ignored (as pycocotools does)",
            a.dt.display(),
            r.unknown_category,
            a.gt.display()
        );
    }
    if a.json {
        return print_json(&r.to_json());
    }
    print_coco(&r, &params);
    Ok(())
}

/// pycocotools' summary, then AP per category.
fn print_coco(r: &EvalResult, params: &EvalParams) {
    for line in r.summary_lines(params) {
        println!("{line}");
    }
    println!();
    let width = r
        .per_category
        .iter()
        .map(|c| c.1.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:>8}  {:<width$}  {:>6}", "id", "name", "AP");
    for (id, name, ap) in &r.per_category {
        let v = if *ap < 0.0 {
            "-".to_string()
        } else {
            format!("{ap:.3}")
        };
        println!("{id:>8}  {name:<width$}  {v:>6}");
    }
}

fn segmentation(a: SegmentationArgs) -> anyhow::Result<()> {
    let cm = evaluate_label_dirs(&a.gt, &a.pred, a.num_classes, Some(a.ignore_index))?;
    if a.json {
        return print_json(&cm.to_json());
    }
    print_miou(&cm, &[]);
    Ok(())
}

/// mIoU, pixel accuracy and IoU per class (named where `names` has the class).
fn print_miou(cm: &ConfusionMatrix, names: &[String]) {
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
    println!("mIoU            {}", fmt(cm.mean_iou()));
    println!("pixel accuracy  {}", fmt(cm.pixel_accuracy()));
    println!();
    println!("{:>5}  {:<14}  {:>7}", "class", "name", "IoU");
    for (c, v) in cm.per_class_iou().into_iter().enumerate() {
        let n = names.get(c).map_or("", String::as_str);
        println!("{c:>5}  {n:<14}  {:>7}", fmt(v));
    }
}

fn model(a: ModelArgs) -> anyhow::Result<()> {
    let mut header = read_model_header(&a.checkpoint)?;
    // the model's own config, then the file and --set overrides
    let base = pupil_selftrain::config::to_table(&header.config);
    header.config = a.cfg.load(Some(base))?;
    let dev = device(&header.config.device)?;
    let cfg = header.config.clone();
    let m = load_model_as(&a.checkpoint, &dev, header)?;
    let e = evaluate_split(&m, &cfg, &dev, a.batch_size)?;
    match &e.scores {
        Scores::Detection(r) => print_coco(r, &EvalParams::default()),
        Scores::Segmentation { confusion, classes } => print_miou(confusion, classes),
        Scores::Classification(m) => println!("top-1 {:.4}", m.primary),
    }
    let files = e.write(&a.out)?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!("{} images; wrote {}", e.images, names.join(", "));
    Ok(())
}
