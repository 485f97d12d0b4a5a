//! Runs: supervised training, classification pre-training, self-training rounds, and the
//! paper's grid (init x self-training x augmentation x labeled fraction x seed), resumable,
//! with its report.
use crate::config::{load_config, preset, TaskKind, TrainConfig};
use crate::data::{
    datasets, eval_transform, num_outputs, train_transform, unlabeled_source, unlabeled_truth,
};
use crate::dist::Runtime;
use crate::error::{Error, Result};
use crate::model::{apply_init, load_model};
use crate::pseudo::{self, Labeling, PseudoLabeled, PseudoOptions, QualityRow};
use crate::task::{self, EvalData, Metrics};
use crate::trainer::{Outcome, Trainer};
use candle_core::DType;
use pupil_data::Dataset;
use pupil_nn::ParamStore;
use serde::{Deserialize, Serialize};
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
    let job = Labeling {
        teacher: &teacher,
        teacher_path,
        source: source.clone(),
        source_name: spec,
    };
    for i in 0..opts.shard.1 {
        let o = PseudoOptions {
            shard: (i, opts.shard.1),
            ..opts.clone()
        };
        pseudo::label_shard(&job, out, &o, &dev)?;
    }
    let (m, all) = pseudo::write_merged(out)?
        .ok_or_else(|| Error::msg(format!("{}: a shard is missing", out.display())))?;
    if m.labels == 0 {
        eprintln!("WARNING: the teacher {} emitted no pseudo labels at threshold {} on {} images: the student will learn from human labels only", teacher_path.display(), m.score_threshold, m.images);
    } else if !quiet {
        eprintln!(
            "pseudo labels: {} on {} images ({:.2} per image); per class {:?}",
            m.labels,
            m.images,
            m.labels as f64 / m.images.max(1) as f64,
            m.per_class
        );
    }
    let mut report = Vec::new();
    let truth = unlabeled_truth(cfg, spec).filter(|_| teacher.config.task == TaskKind::Detection);
    if let Some(truth) = truth {
        let t = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
        report = pseudo::quality(&all, truth.as_ref(), &teacher.class_names, &t)?;
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

/// The student's config: the run config with the student's noise, learning rate and init.
pub fn student_config(cfg: &TrainConfig, teacher: &Path) -> TrainConfig {
    let st = &cfg.selftrain;
    let mut student = cfg.clone();
    student.backbone.drop_path = Some(st.drop_path);
    student.backbone.dropout = Some(st.dropout);
    student.optim.lr_per_256 *= st.student_lr_scale;
    student.optim.warmup_lr_per_256 *= st.student_lr_scale;
    student.init = match st.student_init.as_str() {
        "random" => "random".into(),
        "teacher" => format!("pretrained:{}", teacher.display()),
        other => other.to_string(),
    };
    student
}

/// Self-training: `rounds` times, the teacher labels the unlabeled source and a noised
/// student learns from human and pseudo labels; the student becomes the next teacher.
pub fn self_train(teacher: &Path, cfg: &TrainConfig, out: &Path, quiet: bool) -> Result<Outcome> {
    crate::checks::check_config(cfg)?;
    let _lock = crate::lock::RunLock::acquire(out)?;
    let rt = Runtime::single(&cfg.device)?;
    let mut teacher = teacher.to_path_buf();
    let mut last = None;
    for round in 0..cfg.selftrain.rounds.max(1) {
        let rdir = out.join(format!("round-{round}"));
        let mut opts = PseudoOptions {
            score_threshold: cfg.selftrain.score_threshold,
            ..Default::default()
        };
        opts.keep_from = opts.keep_from.min(cfg.selftrain.ignore_from.unwrap_or(1.0));
        let (pseudo, _) = pseudo_label_all(&teacher, cfg, &rdir.join("pseudo"), &opts, quiet)?;
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

/// A classification pre-training config from the `configs/pretrain.toml` preset, a dataset
/// (`fashion`, `digit-pool`), an optional file and `--set` overrides.
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Every arm starts from this run config.
    pub base: TrainConfig,
    /// `random`, `pretrained` (pre-trained here on `pretrain_dataset`) or `pretrained:PATH`.
    pub inits: Vec<String>,
    pub self_training: Vec<bool>,
    pub augment: Vec<String>,
    pub labeled_fractions: Vec<f64>,
    pub seeds: Vec<u64>,
    /// `fashion` (out of domain, ImageNet's role) or `digit-pool` (in domain).
    pub pretrain_dataset: String,
    pub pretrain_steps: usize,
    pub pretrain_batch: usize,
    pub pretrain_lr_per_256: f64,
    /// Student steps as a multiple of the supervised arm's steps.
    pub student_steps_factor: f64,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            base: TrainConfig::default(),
            inits: vec!["random".into(), "pretrained".into()],
            self_training: vec![false, true],
            augment: vec!["s1".into(), "s2".into(), "s3".into(), "s4".into()],
            labeled_fractions: vec![0.2, 0.5, 1.0],
            seeds: vec![0],
            pretrain_dataset: "fashion".into(),
            pretrain_steps: 2000,
            pretrain_batch: 64,
            pretrain_lr_per_256: 0.4,
            student_steps_factor: 1.0,
        }
    }
}

/// One arm of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmResult {
    pub name: String,
    pub init: String,
    pub self_training: bool,
    pub augment: String,
    pub labeled_fraction: f64,
    pub seed: u64,
    pub metrics: Metrics,
    pub seconds: f64,
}

fn pretrained_backbone(
    exp: &ExperimentConfig,
    out: &Path,
    seed: u64,
    quiet: bool,
) -> Result<PathBuf> {
    let dir = out.join(format!("pretrain-{}-seed{seed}", exp.pretrain_dataset));
    let done = dir.join("model.safetensors");
    if done.exists() && dir.join("outcome.json").exists() {
        return Ok(done);
    }
    let mut c = exp.base.clone();
    let mut base = crate::config::to_table(&c);
    crate::config::merge(&mut base, preset("pretrain")?);
    c = load_config(None, Some(base), &[])?;
    c.seed = seed;
    c.data.dataset = exp.pretrain_dataset.clone();
    let o = &mut c.optim;
    o.steps = exp.pretrain_steps;
    o.batch_size = exp.pretrain_batch;
    o.lr_per_256 = exp.pretrain_lr_per_256;
    o.warmup_lr_per_256 = exp.pretrain_lr_per_256 / 100.0;
    o.warmup_steps = exp.pretrain_steps / 20;
    o.eval_every = 0;
    o.checkpoint_every = 0;
    if !quiet {
        eprintln!(
            "pre-training the backbone on {} ({} steps)",
            exp.pretrain_dataset, exp.pretrain_steps
        );
    }
    pretrain(&c, &dir, quiet)
}

/// The coordinates of one arm's cell in the grid.
struct Cell<'a> {
    seed: u64,
    aug: &'a str,
    frac: f64,
    init: &'a str,
}

/// Runs one arm of a cell, or reads it back when it is done.
fn run_arm(
    exp: &ExperimentConfig,
    out: &Path,
    cell: &Cell,
    base: &TrainConfig,
    st: bool,
    quiet: bool,
) -> Result<ArmResult> {
    let tag = format!(
        "{}-{}-f{}-seed{}",
        if cell.init == "random" {
            "random"
        } else {
            "pretrained"
        },
        cell.aug,
        cell.frac,
        cell.seed
    );
    let name = format!("{tag}-{}", if st { "self-training" } else { "supervised" });
    let dir = out.join(&name);
    let result_path = dir.join("result.json");
    if let Ok(r) = pupil_data::io::read_json::<ArmResult>(&result_path) {
        return Ok(r);
    }
    if !quiet {
        eprintln!("arm {name}");
    }
    let t0 = std::time::Instant::now();
    let outcome = if !st {
        train(
            base,
            &Runtime::single(&base.device)?,
            &dir,
            None,
            true,
            quiet,
        )?
    } else {
        // the teacher is this arm's supervised model
        let sup_dir = out.join(format!("{tag}-supervised"));
        let teacher = sup_dir.join("model.safetensors");
        if !teacher.exists() {
            train(
                base,
                &Runtime::single(&base.device)?,
                &sup_dir,
                None,
                true,
                quiet,
            )?;
        }
        let mut student = base.clone();
        student.optim.steps =
            ((base.optim.steps as f64) * exp.student_steps_factor).round() as usize;
        if student.selftrain.student_init == "random" {
            // random stays random; a pre-trained arm's student starts pre-trained
            student.selftrain.student_init = base.init.clone();
        }
        self_train(&teacher, &student, &dir, quiet)?
    };
    let r = ArmResult {
        name,
        init: cell.init.to_string(),
        self_training: st,
        augment: cell.aug.to_string(),
        labeled_fraction: cell.frac,
        seed: cell.seed,
        metrics: outcome.final_metrics.unwrap_or_default(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    pupil_data::io::write_json_atomic(&result_path, &r)?;
    Ok(r)
}

/// Runs (or resumes) every arm of the grid; arms already finished are read back.
pub fn run_grid(
    exp: &ExperimentConfig,
    out: &Path,
    quiet: bool,
    mut on_arm: impl FnMut(&ArmResult),
) -> Result<Vec<ArmResult>> {
    crate::checks::check_config(&exp.base)?;
    let _lock = crate::lock::RunLock::acquire(out)?;
    let text = toml::to_string(exp).map_err(Error::msg)?;
    pupil_data::io::write_atomic(out.join("experiment.toml"), text.as_bytes())?;
    let mut results = Vec::new();
    for &seed in &exp.seeds {
        for aug in &exp.augment {
            for &frac in &exp.labeled_fractions {
                for init in &exp.inits {
                    let init_spec = match init.as_str() {
                        "pretrained" => {
                            let p = pretrained_backbone(exp, out, seed, quiet)?;
                            format!("pretrained:{}", p.display())
                        }
                        other => other.to_string(),
                    };
                    let mut base = exp.base.clone();
                    base.seed = seed;
                    base.augment.policy = aug.clone();
                    base.data.labeled_fraction = frac;
                    base.init = init_spec;
                    let cell = Cell {
                        seed,
                        aug,
                        frac,
                        init,
                    };
                    for &st in &exp.self_training {
                        let r = run_arm(exp, out, &cell, &base, st, quiet)?;
                        on_arm(&r);
                        results.push(r);
                    }
                }
            }
        }
    }
    Ok(results)
}
