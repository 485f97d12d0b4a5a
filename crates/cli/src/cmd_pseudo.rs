//! `pupil pseudo-label` (one shard of a teacher's labels) and `pupil self-train`.
use crate::cmd_train::{report_outcome, ConfigArgs};
use anyhow::{bail, Context, Result};
use pupil_selftrain::config::set_path;
use pupil_selftrain::experiment;
use pupil_selftrain::model::{device, load_model, read_model_header};
use pupil_selftrain::pseudo::{self, Labeling, Manifest, PseudoOptions};
use std::path::{Path, PathBuf};

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
    /// Inference scales (multiples of the teacher's training size), merged per image, e.g.
    /// 0.5,0.75,1,1.25,1.5,1.75 (the paper's for segmentation).
    #[arg(long, value_delimiter = ',', default_value = "1")]
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
    let job = Labeling::new(&teacher, &a.teacher, source, &a.images)?;
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
    /// Teacher model (model.safetensors of a run); its config is the student's base. With
    /// --pseudo, the folder's manifest names it. An online student
    /// (`--set selftrain.mode=online`) needs one only to start from it
    /// (`selftrain.student_init = "teacher"`); without it, --config is the student's base.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// An existing pseudo-label folder (`pupil pseudo-label --shard I/N`, every shard done):
    /// the first student learns from it instead of labeling again. Its threshold is the
    /// default of selftrain.score_threshold.
    #[arg(long)]
    pub pseudo: Option<PathBuf>,
    /// Run folder: round-N/pseudo and round-N/student (online: student/, with the EMA
    /// teacher's teacher.safetensors and online.json).
    #[arg(long)]
    pub out: PathBuf,
}

/// The teacher of a pseudo-label folder: the one its manifest records, or `--teacher` when
/// that is the same model or the recorded path is not on this machine.
fn recorded_teacher(m: &Manifest, given: Option<&Path>, dir: &Path) -> Result<PathBuf> {
    let recorded = PathBuf::from(&m.teacher);
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    match given {
        None if recorded.is_file() => Ok(recorded),
        None => bail!(
            "{}: labeled by {}, which is not on this machine; give its copy with --teacher",
            dir.display(),
            m.teacher
        ),
        Some(t) if recorded.is_file() && !same(t, &recorded) => bail!(
            "{}: labeled by {}, not by --teacher {}",
            dir.display(),
            m.teacher,
            t.display()
        ),
        Some(t) => Ok(t.to_path_buf()),
    }
}

/// An online student from --config alone (its EMA teacher needs no trained model).
fn online_without_teacher(a: &SelfTrainArgs) -> Result<()> {
    let cfg = a.cfg.load(None)?;
    if cfg.selftrain.mode != pupil_selftrain::config::SelfTrainMode::Online {
        bail!("--teacher (or --pseudo) is required: the offline teacher (selftrain.mode = \"offline\") is a trained model; selftrain.mode = \"online\" trains its own")
    }
    let o = experiment::online_self_train(None, &cfg, &a.out, false)?;
    finish(&o);
    Ok(())
}

fn finish(o: &pupil_selftrain::trainer::Outcome) {
    report_outcome(o);
    if let Some(m) = &o.teacher_metrics {
        println!(
            "EMA teacher: {}",
            serde_json::to_string(&m.values).unwrap_or_default()
        );
    }
    if let Some(run) = o.model_path.parent() {
        crate::cmd_plot::after_training(run);
    }
}

pub fn self_train(a: SelfTrainArgs) -> Result<()> {
    let (teacher, threshold) = match &a.pseudo {
        Some(dir) => {
            let m = pseudo::complete(dir)?;
            (
                recorded_teacher(&m, a.teacher.as_deref(), dir)?,
                Some(m.score_threshold),
            )
        }
        None => match a.teacher.clone() {
            Some(t) => (t, None),
            None => return online_without_teacher(&a),
        },
    };
    // the student starts from the teacher's config (and the folder's threshold), then the
    // file and --set overrides
    let mut base = pupil_selftrain::config::to_table(&read_model_header(&teacher)?.config);
    if let Some(t) = threshold {
        set_path(&mut base, "selftrain.score_threshold", &format!("{t:?}"))?;
    }
    let cfg = a.cfg.load(Some(base))?;
    let o = experiment::self_train_from(&teacher, &cfg, &a.out, a.pseudo.as_deref(), false)?;
    finish(&o);
    Ok(())
}
