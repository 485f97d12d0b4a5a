//! Runs: supervised training, evaluation of a saved model, pseudo-labeling, self-training
//! rounds (offline, as the paper) or one run with an online EMA teacher, the student's
//! compute-matched control, and classification pre-training. The paper's grid of such runs
//! is [`crate::grid`].
use crate::config::{load_config, preset, SelfTrainMode, TaskKind, TrainConfig};
use crate::data::{
    datasets, eval_transform, num_outputs, train_transform, unlabeled_source, unlabeled_truth,
};
use crate::dist::Runtime;
use crate::error::{Error, Result};
use crate::model::{apply_init, load_model};
use crate::online::OnlineData;
use crate::pseudo::{self, Labeling, PseudoLabeled, PseudoOptions, QualityRow};
use crate::task::{self, EvalData, Metrics};
use crate::trainer::{images_per_step, Outcome, Trainer};
use candle_core::DType;
use pupil_data::Dataset;
use pupil_nn::ParamStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Supervised training (optionally with a pseudo-labeled set mixed in) on `rt`: one
/// process, or one rank of a data-parallel job.
pub fn train(
    cfg: &TrainConfig,
    rt: &Runtime,
    out: &Path,
    pseudo: Option<Arc<dyn Dataset>>,
    resume: bool,
    quiet: bool,
) -> Result<Outcome> {
    train_with(cfg, rt, out, (pseudo, None), resume, quiet)
}

/// An online student's training (`selftrain.mode = "online"`): human-labeled batches and,
/// after the burn-in, unlabeled ones its EMA teacher labels as it goes.
pub fn train_online(
    cfg: &TrainConfig,
    rt: &Runtime,
    out: &Path,
    resume: bool,
    quiet: bool,
) -> Result<Outcome> {
    if cfg.selftrain.mode != SelfTrainMode::Online {
        return Err(Error::config(
            "an online student needs selftrain.mode = \"online\"",
        ));
    }
    let spec = &cfg.selftrain.unlabeled;
    let data = OnlineData {
        source: unlabeled_source(cfg, spec)?,
        truth: unlabeled_truth(cfg, spec),
    };
    train_with(cfg, rt, out, (None, Some(data)), resume, quiet)
}

fn train_with(
    cfg: &TrainConfig,
    rt: &Runtime,
    out: &Path,
    (pseudo, online): (Option<Arc<dyn Dataset>>, Option<OnlineData>),
    resume: bool,
    quiet: bool,
) -> Result<Outcome> {
    crate::checks::check_config(cfg)?;
    let (train_ds, val_ds) = datasets(cfg)?;
    if train_ds.len() < cfg.optim.batch_size {
        return Err(Error::config(format!(
            "{}: the training split has {} images (data.labeled_fraction = {}), fewer than one batch (optim.batch_size = {})",
            describe(&crate::data::split_spec(cfg, false)?),
            train_ds.len(),
            cfg.data.labeled_fraction,
            cfg.optim.batch_size
        )));
    }
    let names = train_ds.class_names();
    let k = num_outputs(cfg.task, &names, &cfg.data.dataset);
    let norm_group = rt.group.clone().filter(|_| cfg.optim.sync_batch_norm);
    let store = ParamStore::new(&rt.device, DType::F32, cfg.seed).with_norm_group(norm_group);
    let model = task::build(cfg, k, &store)?;
    apply_init(&store, &cfg.init)?;
    let t = Trainer {
        cfg,
        task: model.as_ref(),
        store: &store,
        runtime: rt,
        out: out.to_path_buf(),
        class_names: names,
        num_outputs: k,
        human: train_ds,
        pseudo,
        online,
        val: Some(val_ds),
        train_transform: train_transform(cfg)?,
        eval_transform: eval_transform(cfg),
        quiet,
    };
    let o = t.run(resume)?;
    // In a data-parallel job rank 0 alone writes (the others have no final metrics).
    if rt.is_lead() {
        pupil_data::io::write_json_atomic(out.join("outcome.json"), &o)?;
    }
    Ok(o)
}

/// Where a split's images come from, for messages.
fn describe(spec: &pupil_data::DatasetSpec) -> String {
    use pupil_data::DatasetSpec as S;
    match spec {
        S::Coco { annotations, .. } => annotations.display().to_string(),
        S::Voc { root, set, .. } => format!("{} (image set {set})", root.display()),
        S::Folder { root } => root.display().to_string(),
        S::Digits { split, .. } => format!("the digit scenes' {split:?} split"),
        S::Classes { set, .. } => format!("the {set} set"),
        S::ClassFolder { root, .. } => format!("the class folders of {}", root.display()),
    }
}

/// Evaluates a saved model on its config's validation split.
pub fn evaluate_model(path: &Path, dev_spec: &str) -> Result<Metrics> {
    let dev = crate::model::device(dev_spec)?;
    let l = load_model(path, &dev)?;
    let (_, val) = datasets(&l.config)?;
    let bc = pupil_data::batch::BatchConfig {
        size_divisor: l.config.data.size_divisor,
        ..Default::default()
    };
    l.task.evaluate(&EvalData {
        dataset: val,
        transform: eval_transform(&l.config),
        batch: &bc,
        device: &dev,
        batch_size: 16,
    })
}

/// Pseudo-labels every shard of the unlabeled source with a teacher (one process; the CLI
/// runs single shards for clusters) and returns the labeled set and, where the source has
/// ground truth, the quality report.
pub fn pseudo_label_all(
    teacher_path: &Path,
    cfg: &TrainConfig,
    out: &Path,
    opts: &PseudoOptions,
    quiet: bool,
) -> Result<(Arc<PseudoLabeled>, Vec<QualityRow>)> {
    let dev = crate::model::device(&cfg.device)?;
    let teacher = load_model(teacher_path, &dev)?;
    let spec = &cfg.selftrain.unlabeled;
    let source = unlabeled_source(cfg, spec)?;
    let job = Labeling::new(&teacher, teacher_path, source.clone(), spec)?;
    for i in 0..opts.shard.1 {
        let o = PseudoOptions {
            shard: (i, opts.shard.1),
            ..opts.clone()
        };
        pseudo::label_shard(&job, out, &o, &dev)?;
    }
    let (m, all) = pseudo::write_merged(out)?
        .ok_or_else(|| Error::msg(format!("{}: a shard is missing", out.display())))?;
    let per_image = m.labels as f64 / m.images.max(1) as f64;
    if m.labels == 0 {
        eprintln!("WARNING: the teacher {} emitted no pseudo labels at threshold {} on {} images: the student will learn from human labels only", teacher_path.display(), m.score_threshold, m.images);
    } else if let Some(human) = floods(per_image, 0.0)
        // the human density floors at 1, so below this no read of the labeled split is needed
        .then(|| human_boxes_per_image(cfg))
        .flatten()
        .filter(|&h| floods(per_image, h))
    {
        eprintln!(
            "WARNING: the teacher {} kept {per_image:.1} pseudo boxes per image at threshold {}, {:.0}x the {human:.1} per image of the human labels: it is likely firing on background (check it at selftrain.teacher_scales, or raise selftrain.score_threshold)",
            teacher_path.display(),
            m.score_threshold,
            per_image / human.max(1e-9)
        );
    } else if !quiet {
        eprintln!(
            "pseudo labels: {} on {} images ({:.2} per image); per class {:?}",
            m.labels,
            m.images,
            m.labels as f64 / m.images.max(1) as f64,
            m.per_class
        );
    }
    let report = match unlabeled_truth(cfg, spec) {
        Some(truth) => quality_report(&teacher, &all, truth.as_ref(), out, opts)?,
        None => Vec::new(),
    };
    if !report.is_empty() {
        pupil_data::io::write_json_atomic(out.join("quality.json"), &report)?;
    }
    let ds = PseudoLabeled::new(
        source,
        out,
        &m,
        &all,
        opts.score_threshold,
        cfg.selftrain.ignore_from,
    );
    Ok((Arc::new(ds), report))
}

/// Pseudo boxes per image past which a teacher is taken to fire on background: this many
/// times the human labels' density (a sound teacher keeps fewer boxes than the truth holds).
const FLOOD_FACTOR: f64 = 4.0;

fn floods(pseudo_per_image: f64, human_per_image: f64) -> bool {
    pseudo_per_image > FLOOD_FACTOR * human_per_image.max(1.0)
}

/// Boxes per image of a detection config's labeled training split, over at most 256
/// evenly spaced samples; `None` for other tasks or when the split cannot be read.
fn human_boxes_per_image(cfg: &TrainConfig) -> Option<f64> {
    if cfg.task != TaskKind::Detection {
        return None;
    }
    let (train, _) = crate::data::datasets(cfg).ok()?;
    let n = train.len();
    let take = n.min(256);
    if take == 0 {
        return None;
    }
    let mut boxes = 0usize;
    for k in 0..take {
        boxes += train.get(k * n / take).ok()?.boxes.len();
    }
    Some(boxes as f64 / take as f64)
}

/// Precision and recall of a teacher's labels against the truth: boxes at several score
/// thresholds (the run's included), or pixels of the label maps.
fn quality_report(
    teacher: &crate::model::Loaded,
    all: &pseudo::Shard,
    truth: &dyn Dataset,
    out: &Path,
    opts: &PseudoOptions,
) -> Result<Vec<QualityRow>> {
    Ok(match teacher.config.task {
        TaskKind::Detection => {
            let mut t = vec![0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, opts.score_threshold];
            t.sort_by(f64::total_cmp);
            t.dedup();
            pseudo::quality(all, truth, &teacher.class_names, &t)?
        }
        TaskKind::Segmentation => pseudo::map_quality(out, all, truth, opts.score_threshold)?,
        TaskKind::Classification => Vec::new(),
    })
}

/// The student's config: the run config with the student's noise, augmentation, learning
/// rate and init.
pub fn student_config(cfg: &TrainConfig, teacher: &Path) -> TrainConfig {
    let st = &cfg.selftrain;
    let mut student = cfg.clone();
    student.backbone.drop_path = Some(st.drop_path);
    // dropout before the classifier of a classification backbone, on the head features of
    // a detector or segmenter
    student.backbone.dropout = Some(st.dropout);
    if let Some(a) = &st.student_augment {
        student.augment.policy = a.clone();
    }
    student.detector.dropout = st.dropout;
    student.segmenter.dropout = st.dropout;
    student.optim.lr_per_256 *= st.student_lr_scale;
    student.optim.warmup_lr_per_256 *= st.student_lr_scale;
    student.init = match st.student_init.as_str() {
        "init" => cfg.init.clone(),
        "random" => "random".into(),
        "teacher" => format!("pretrained:{}", teacher.display()),
        other => other.to_string(),
    };
    student
}

/// The supervised control of a student: the same init, noise, augmentation, steps and
/// learning rate, and as many images per step, all of them human-labeled. It differs from
/// the student only in the pseudo labels.
pub fn control_config(student: &TrainConfig) -> TrainConfig {
    let per_step = images_per_step(student, true);
    let mut c = student.clone();
    // the learning rate scales with the batch: keep the student's
    let keep = student.optim.batch_size as f64 / per_step as f64;
    c.optim.batch_size = per_step;
    c.optim.lr_per_256 *= keep;
    c.optim.warmup_lr_per_256 *= keep;
    c
}

/// The pseudo-labeling options of a run config: its threshold, ignore band, and the
/// teacher's scales and flip.
pub fn pseudo_options(cfg: &TrainConfig) -> PseudoOptions {
    let st = &cfg.selftrain;
    let d = PseudoOptions::default();
    PseudoOptions {
        score_threshold: st.score_threshold,
        keep_from: d.keep_from.min(st.ignore_from.unwrap_or(1.0)),
        flip: st.teacher_flip,
        scales: st.scales(cfg.task),
        ..d
    }
}

/// Self-training: `rounds` times, the teacher labels the unlabeled source and a noised
/// student learns from human and pseudo labels; the student becomes the next teacher.
pub fn self_train(teacher: &Path, cfg: &TrainConfig, out: &Path, quiet: bool) -> Result<Outcome> {
    self_train_from(teacher, cfg, out, None, quiet)
}

/// As [`self_train`]; with `labels`, the first round's student learns from that existing
/// pseudo-label folder (`pupil pseudo-label`, every shard done) instead of labeling again.
pub fn self_train_from(
    teacher: &Path,
    cfg: &TrainConfig,
    out: &Path,
    labels: Option<&Path>,
    quiet: bool,
) -> Result<Outcome> {
    crate::checks::check_config(cfg)?;
    if cfg.selftrain.mode == SelfTrainMode::Online {
        if let Some(dir) = labels {
            return Err(Error::config(format!(
                "{}: pseudo labels made beforehand are the offline teacher's; selftrain.mode = \"online\" labels as it trains",
                dir.display()
            )));
        }
        return online_self_train(Some(teacher), cfg, out, quiet);
    }
    warn_unused_keys(cfg);
    let _lock = crate::lock::RunLock::acquire(out)?;
    let rt = Runtime::single(&cfg.device)?;
    let mut teacher = teacher.to_path_buf();
    let mut last = None;
    for round in 0..cfg.selftrain.rounds.max(1) {
        let rdir = out.join(format!("round-{round}"));
        let opts = pseudo_options(cfg);
        let pseudo = match labels.filter(|_| round == 0) {
            Some(dir) => existing_labels(dir, cfg, quiet)?,
            None => pseudo_label_all(&teacher, cfg, &rdir.join("pseudo"), &opts, quiet)?.0,
        };
        let student = student_config(cfg, &teacher);
        let o = train(
            &student,
            &rt,
            &rdir.join("student"),
            Some(pseudo),
            true,
            quiet,
        )?;
        teacher = o.model_path.clone();
        last = Some(o);
    }
    last.ok_or_else(|| Error::msg("no rounds"))
}

/// Self-training with an online teacher: one student run in `out/student` whose EMA teacher
/// labels the unlabeled images as it trains. `teacher` (a trained model) is needed only
/// where the student starts from it (`selftrain.student_init = "teacher"`).
pub fn online_self_train(
    teacher: Option<&Path>,
    cfg: &TrainConfig,
    out: &Path,
    quiet: bool,
) -> Result<Outcome> {
    // the mode is train_online's to check; a bad config fails before the folder is taken
    crate::checks::check_config(cfg)?;
    let teacher = match (teacher, cfg.selftrain.student_init.as_str()) {
        (Some(t), _) => t.to_path_buf(),
        (None, "teacher") => {
            return Err(Error::config(
                "selftrain.student_init = \"teacher\": the online student starts from a trained teacher; give one (--teacher)",
            ))
        }
        // not read: the student starts from its own init
        (None, _) => PathBuf::new(),
    };
    warn_unused_keys(cfg);
    let _lock = crate::lock::RunLock::acquire(out)?;
    let rt = Runtime::single(&cfg.device)?;
    let student = student_config(cfg, &teacher);
    train_online(&student, &rt, &out.join("student"), true, quiet)
}

/// The keys of the other mode than the config's that differ from their defaults: said on
/// stderr, as they change nothing in this run.
pub fn unused_keys(cfg: &TrainConfig) -> Vec<&'static str> {
    cfg.selftrain.clone().reset_other_mode(cfg.selftrain.mode)
}

fn warn_unused_keys(cfg: &TrainConfig) {
    let keys = unused_keys(cfg);
    if !keys.is_empty() {
        let other = cfg.selftrain.mode.other().name();
        eprintln!(
            "WARNING: {} configure the {other} teacher; selftrain.mode = \"{}\" does not read them",
            keys.join(", "),
            cfg.selftrain.mode.name()
        );
    }
}

/// The pseudo-labeled set of an existing folder.
fn existing_labels(dir: &Path, cfg: &TrainConfig, quiet: bool) -> Result<Arc<PseudoLabeled>> {
    let (m, ds) = pseudo::labeled_folder(dir, cfg)?;
    if !quiet {
        eprintln!(
            "pseudo labels from {} (teacher {}): {} boxes and {} label maps on {} images",
            dir.display(),
            m.teacher,
            ds.num_boxes(),
            ds.num_label_maps(),
            m.images
        );
    }
    Ok(Arc::new(ds))
}

/// A classification pre-training config from the `configs/pretrain.toml` preset, a dataset
/// (`fashion`, `digit-pool`, `folder:PATH`), an optional file and `--set` overrides.
pub fn pretrain_config(dataset: &str, file: Option<&Path>, sets: &[String]) -> Result<TrainConfig> {
    let mut base = preset("pretrain")?;
    crate::config::set_path(&mut base, "data.dataset", &format!("{dataset:?}"))?;
    let cfg: TrainConfig = load_config(file, Some(base), sets)?;
    if cfg.task != TaskKind::Classification {
        return Err(Error::config(
            "pretrain trains a classifier: task must stay classification",
        ));
    }
    Ok(cfg)
}

/// Classification pre-training of a backbone; returns the model file (its backbone tensors
/// serve `init = "pretrained:PATH"`).
pub fn pretrain(cfg: &TrainConfig, out: &Path, quiet: bool) -> Result<PathBuf> {
    let mut c = cfg.clone();
    c.task = TaskKind::Classification;
    let rt = Runtime::single(&c.device)?;
    Ok(train(&c, &rt, out, None, true, quiet)?.model_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_teacher_floods_past_four_times_the_human_density() {
        // the S4 seed whose teacher fired on background: 187 boxes per image on 3.5 digits
        assert!(floods(187.0, 3.5));
        assert!(!floods(3.2, 3.5));
        assert!(!floods(14.0, 3.5));
        assert!(floods(14.1, 3.5));
        // sparse human labels: at least 4 boxes per image before it warns
        assert!(!floods(3.9, 0.2));
        assert!(floods(4.1, 0.2));
    }

    #[test]
    fn the_human_density_is_read_from_the_labeled_split() {
        // the default task is detection
        let mut cfg = TrainConfig::default();
        cfg.data.digits.train = 16;
        cfg.data.digits.val = 4;
        let d = human_boxes_per_image(&cfg).unwrap();
        // the digit scenes hold a few digits each
        assert!((1.0..8.0).contains(&d), "{d}");
        cfg.task = TaskKind::Segmentation;
        assert_eq!(human_boxes_per_image(&cfg), None);
    }
}
