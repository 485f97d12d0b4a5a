//! Runs: supervised training, classification pre-training, self-training rounds, and the
//! paper's grid (init x self-training x augmentation x labeled fraction x seed), resumable,
//! with its report.
use crate::config::{Task, TrainConfig};
use crate::data::{
    datasets, eval_transform, num_outputs, train_transform, unlabeled_source, unlabeled_truth,
};
use crate::model::{apply_init, device, load_model, Metrics, Model};
use crate::pseudo::{self, PseudoLabeled, PseudoOptions, QualityRow};
use crate::trainer::{Outcome, Trainer};
use candle_core::{DType, Result};
use pupil_backbones::params::ParamStore;
use pupil_data::Dataset;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn err(m: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(m.to_string())
}

/// Supervised training (optionally with a pseudo-labeled set mixed in).
pub fn train(
    cfg: &TrainConfig,
    out: &Path,
    pseudo: Option<Arc<dyn Dataset>>,
    resume: bool,
    quiet: bool,
) -> Result<Outcome> {
    let dev = device(&cfg.device)?;
    let (train_ds, val_ds) = datasets(cfg).map_err(err)?;
    let names = train_ds.class_names();
    let k = num_outputs(cfg.task, &names, &cfg.data.dataset);
    let store = ParamStore::new(&dev, DType::F32, cfg.seed);
    let model = Model::build(cfg, k, &store)?;
    apply_init(&store, &cfg.init)?;
    let t = Trainer {
        cfg,
        model: &model,
        store: &store,
        device: dev,
        out: out.to_path_buf(),
        class_names: names,
        num_outputs: k,
        human: train_ds,
        pseudo,
        val: Some(val_ds),
        train_transform: train_transform(cfg).map_err(err)?,
        eval_transform: eval_transform(cfg),
        quiet,
        dist: crate::dist::group(),
    };
    let o = t.run(resume)?;
    // In a data-parallel job rank 0 alone writes (the others have no final metrics).
    if t.dist.as_ref().is_none_or(|g| g.rank() == 0) {
        pupil_data::io::write_json_atomic(out.join("outcome.json"), &o).map_err(err)?;
    }
    Ok(o)
}

/// Evaluates a saved model on its config's validation split.
pub fn evaluate_model(path: &Path, dev_spec: &str) -> Result<Metrics> {
    let dev = device(dev_spec)?;
    let l = load_model(path, &dev)?;
    let (_, val) = datasets(&l.config).map_err(err)?;
    let bc = pupil_data::batch::BatchConfig {
        size_divisor: l.config.data.size_divisor,
        ..Default::default()
    };
    l.model
        .evaluate(val, eval_transform(&l.config), &bc, &dev, 16)
}

/// Pseudo-labels every shard of the unlabeled source with a teacher (one process; the CLI
/// runs single shards for clusters) and returns the labeled set, the merged shards and, where
/// the source has ground truth, the quality report.
pub fn pseudo_label_all(
    teacher_path: &Path,
    cfg: &TrainConfig,
    out: &Path,
    opts: &PseudoOptions,
    quiet: bool,
) -> Result<(Arc<PseudoLabeled>, Vec<QualityRow>)> {
    let dev = device(&cfg.device)?;
    let teacher = load_model(teacher_path, &dev)?;
    let spec = &cfg.selftrain.unlabeled;
    let source = unlabeled_source(cfg, spec).map_err(err)?;
    for i in 0..opts.shard.1 {
        let o = PseudoOptions {
            shard: (i, opts.shard.1),
            ..opts.clone()
        };
        pseudo::label_shard(
            &teacher,
            &teacher_path.display().to_string(),
            source.clone(),
            spec,
            out,
            &o,
            &dev,
        )?;
    }
    let (m, all) = pseudo::merge(out)?;
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
    pupil_data::io::write_json_atomic(out.join("pseudo.json"), &pseudo::to_coco(&m, &all))
        .map_err(err)?;
    let mut report = Vec::new();
    if teacher.config.task == Task::Detection {
        if let Some(truth) = unlabeled_truth(cfg, spec) {
            report = pseudo::quality(
                &all,
                truth.as_ref(),
                &teacher.class_names,
                &[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
            )
            .map_err(err)?;
            pupil_data::io::write_json_atomic(out.join("quality.json"), &report).map_err(err)?;
        }
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

/// Self-training: `rounds` times, the teacher labels the unlabeled source and a noised
/// student learns from human and pseudo labels; the student becomes the next teacher.
pub fn self_train(teacher: &Path, cfg: &TrainConfig, out: &Path, quiet: bool) -> Result<Outcome> {
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
        let mut student = cfg.clone();
        student.backbone.drop_path = Some(cfg.selftrain.drop_path);
        student.backbone.dropout = Some(cfg.selftrain.dropout);
        student.optim.lr_per_256 *= cfg.selftrain.student_lr_scale;
        student.optim.warmup_lr_per_256 *= cfg.selftrain.student_lr_scale;
        student.init = match cfg.selftrain.student_init.as_str() {
            "random" => "random".into(),
            "teacher" => format!("pretrained:{}", teacher.display()),
            other => other.to_string(),
        };
        let o = train(&student, &rdir.join("student"), Some(pseudo), true, quiet)?;
        teacher = o.model_path.clone();
        last = Some(o);
    }
    last.ok_or_else(|| err("no rounds"))
}

/// Classification pre-training of a backbone; returns the model file (its backbone tensors
/// serve `init = "pretrained:PATH"`).
pub fn pretrain(cfg: &TrainConfig, out: &Path, quiet: bool) -> Result<PathBuf> {
    let mut c = cfg.clone();
    c.task = Task::Classification;
    Ok(train(&c, out, None, true, quiet)?.model_path)
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
    let mut c = exp.base.clone();
    c.task = Task::Classification;
    c.seed = seed;
    c.data.dataset = exp.pretrain_dataset.clone();
    c.augment.policy = "none".into();
    c.augment.size = 32;
    c.data.size_divisor = 32;
    c.optim.steps = exp.pretrain_steps;
    c.optim.batch_size = exp.pretrain_batch;
    c.optim.lr_per_256 = exp.pretrain_lr_per_256;
    c.optim.warmup_lr_per_256 = exp.pretrain_lr_per_256 / 100.0;
    c.optim.warmup_steps = exp.pretrain_steps / 20;
    c.optim.eval_every = 0;
    c.optim.checkpoint_every = 0;
    let dir = out.join(format!("pretrain-{}-seed{seed}", exp.pretrain_dataset));
    let done = dir.join("model.safetensors");
    if done.exists() && dir.join("outcome.json").exists() {
        return Ok(done);
    }
    if !quiet {
        eprintln!(
            "pre-training the backbone on {} ({} steps)",
            exp.pretrain_dataset, exp.pretrain_steps
        );
    }
    pretrain(&c, &dir, quiet)
}

/// Runs (or resumes) every arm of the grid; arms already finished are read back.
pub fn run_grid(
    exp: &ExperimentConfig,
    out: &Path,
    quiet: bool,
    mut on_arm: impl FnMut(&ArmResult),
) -> Result<Vec<ArmResult>> {
    std::fs::create_dir_all(out).map_err(|e| err(format!("{}: {e}", out.display())))?;
    pupil_data::io::write_atomic(
        out.join("experiment.toml"),
        toml::to_string(exp).map_err(err)?.as_bytes(),
    )
    .map_err(err)?;
    let mut results = Vec::new();
    for &seed in &exp.seeds {
        for aug in &exp.augment {
            for &frac in &exp.labeled_fractions {
                for init in &exp.inits {
                    let init_spec = match init.as_str() {
                        "pretrained" => format!(
                            "pretrained:{}",
                            pretrained_backbone(exp, out, seed, quiet)?.display()
                        ),
                        other => other.to_string(),
                    };
                    let mut base = exp.base.clone();
                    base.seed = seed;
                    base.augment.policy = aug.clone();
                    base.data.labeled_fraction = frac;
                    base.init = init_spec;
                    let tag = format!(
                        "{}-{aug}-f{frac}-seed{seed}",
                        if init == "random" {
                            "random"
                        } else {
                            "pretrained"
                        }
                    );
                    let sup_dir = out.join(format!("{tag}-supervised"));
                    for &st in &exp.self_training {
                        let name =
                            format!("{tag}-{}", if st { "self-training" } else { "supervised" });
                        let dir = out.join(&name);
                        let result_path = dir.join("result.json");
                        if let Ok(r) = pupil_data::io::read_json::<ArmResult>(&result_path) {
                            on_arm(&r);
                            results.push(r);
                            continue;
                        }
                        if !quiet {
                            eprintln!("arm {name}");
                        }
                        let t0 = std::time::Instant::now();
                        let outcome = if !st {
                            train(&base, &dir, None, true, quiet)?
                        } else {
                            // the teacher is this arm's supervised model
                            let teacher = sup_dir.join("model.safetensors");
                            if !teacher.exists() {
                                train(&base, &sup_dir, None, true, quiet)?;
                            }
                            let mut student = base.clone();
                            student.optim.steps = ((base.optim.steps as f64)
                                * exp.student_steps_factor)
                                .round() as usize;
                            if student.selftrain.student_init == "random" {
                                // random stays random; a pre-trained arm's student starts pre-trained
                                student.selftrain.student_init = base.init.clone();
                            }
                            self_train(&teacher, &student, &dir, quiet)?
                        };
                        let r = ArmResult {
                            name,
                            init: init.clone(),
                            self_training: st,
                            augment: aug.clone(),
                            labeled_fraction: frac,
                            seed,
                            metrics: outcome.final_metrics.unwrap_or_default(),
                            seconds: t0.elapsed().as_secs_f64(),
                        };
                        pupil_data::io::write_json_atomic(&result_path, &r).map_err(err)?;
                        on_arm(&r);
                        results.push(r);
                    }
                }
            }
        }
    }
    Ok(results)
}
