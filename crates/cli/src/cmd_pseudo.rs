//! `pupil pseudo-label` (one shard of a teacher's labels) and `pupil self-train`.
use crate::cmd_train::{report_outcome, ConfigArgs};
use anyhow::{Context, Result};
use pupil_selftrain::experiment;
use pupil_selftrain::model::{device, load_model};
use pupil_selftrain::pseudo::{self, Labeling, PseudoOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PseudoArgs {
    /// Teacher model (model.safetensors of a run).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Unlabeled images: a folder (recursive jpg/png) or digits:unlabeled.
    #[arg(long)]
    pub images: String,
    /// Output folder: shard files, manifest.json, pseudo.json, labels/.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0.5)]
    pub score_threshold: f64,
    /// This process's shard, I/N (0-based); shards already written are kept.
    #[arg(long, default_value = "0/1")]
    pub shard: String,
    /// Also label the mirrored image and merge.
    #[arg(long)]
    pub flip: bool,
    /// Extra inference scales, e.g. 0.75,1.25.
    #[arg(long, value_delimiter = ',')]
    pub scales: Vec<f64>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    s.split_once('/')
        .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
        .context("--shard must be I/N, e.g. 3/16")
}

pub fn pseudo_label(a: PseudoArgs) -> Result<()> {
    let (i, n) = parse_shard(&a.shard)?;
    let dev = device(&a.device)?;
    let teacher = load_model(&a.teacher, &dev)?;
    let source = pupil_selftrain::data::unlabeled_source(&teacher.config, &a.images)?;
    let opts = PseudoOptions {
        score_threshold: a.score_threshold,
        shard: (i, n),
        flip: a.flip,
        scales: a.scales.clone(),
        ..Default::default()
    };
    let job = Labeling {
        teacher: &teacher,
        teacher_path: &a.teacher,
        source,
        source_name: &a.images,
    };
    let s = pseudo::label_shard(&job, &a.out, &opts, &dev)?;
    let kept = s
        .detections
        .iter()
        .filter(|d| d.score >= a.score_threshold)
        .count();
    println!(
        "shard {i}/{n}: {} images, {} pseudo boxes, {} label maps",
        s.images.len(),
        kept,
        s.label_maps.len()
    );
    if kept == 0 && s.label_maps.is_empty() {
        eprintln!(
            "WARNING: the teacher emitted no pseudo labels on this shard at threshold {}",
            a.score_threshold
        );
    }
    if let Some((m, _)) = pseudo::write_merged(&a.out)? {
        println!(
            "all {} shards done: {} images, {} labels -> {}",
            m.shards,
            m.images,
            m.labels,
            a.out.join("pseudo.json").display()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SelfTrainArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Teacher model (model.safetensors of a run); its config is the student's base.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Run folder: round-N/pseudo and round-N/student.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn self_train(a: SelfTrainArgs) -> Result<()> {
    // the student starts from the teacher's config, then the file and --set overrides
    let teacher = load_model(&a.teacher, &candle_core::Device::Cpu)?;
    let base = pupil_selftrain::config::to_table(&teacher.config);
    let cfg = a.cfg.load(Some(base))?;
    let o = experiment::self_train(&a.teacher, &cfg, &a.out, false)?;
    report_outcome(&o);
    Ok(())
}
