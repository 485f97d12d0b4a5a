//! Run configuration: TOML files whose every key defaults to the paper's value, overridden
//! with `--set key.path=value`; unknown keys are errors naming the key.
use crate::error::{Error, Result};
use pupil_backbones::zoo::BackboneConfig;
use pupil_data::digits::DigitsConfig;
use pupil_heads::retinanet::RetinaNetConfig;
use pupil_heads::seg::SegmenterConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a run trains; the model behind it is a [`crate::task::Task`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Detection,
    Segmentation,
    Classification,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Detection => "detection",
            TaskKind::Segmentation => "segmentation",
            TaskKind::Classification => "classification",
        }
    }

    /// The name of the primary metric of an evaluation.
    pub fn metric(self) -> &'static str {
        match self {
            TaskKind::Detection => "AP",
            TaskKind::Segmentation => "mIoU",
            TaskKind::Classification => "top-1",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `digits` (embedded scenes), `coco`, `voc`, or for classification `fashion` /
    /// `digit-pool` / `folder:PATH` (class sub-folders).
    pub dataset: String,
    pub digits: DigitsConfig,
    /// COCO: instances JSON and image folder of the train and validation splits.
    pub train_json: Option<String>,
    pub train_images: Option<String>,
    pub val_json: Option<String>,
    pub val_images: Option<String>,
    /// VOC root and image sets.
    pub voc_root: Option<String>,
    pub train_set: String,
    pub val_set: String,
    /// Fraction of the labeled train split used (the paper's 20 / 50 / 100 %).
    pub labeled_fraction: f64,
    /// Padded sizes are multiples of this (128 in the paper).
    pub size_divisor: usize,
    /// Loader threads.
    pub workers: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: "digits".into(),
            digits: DigitsConfig::default(),
            train_json: None,
            train_images: None,
            val_json: None,
            val_images: None,
            voc_root: None,
            train_set: "train".into(),
            val_set: "val".into(),
            labeled_fraction: 1.0,
            size_divisor: 128,
            workers: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// A ladder (`s1`..`s4`) or a pipeline string (`lsj(0.5,2.0) | randaugment(n=2,m=10)`).
    pub policy: String,
    /// Training crop / output size (square).
    pub size: usize,
    /// Multiplies AutoAugment / RandAugment pixel constants (translate, cutout); they are in
    /// pixels of the paper's 640-pixel images. `None`: size / 640.
    pub pixel_scale: Option<f64>,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            policy: "s4".into(),
            size: 640,
            pixel_scale: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Cosine,
    Step,
    Constant,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// Learning rate for a batch of 256 images; scaled linearly to `batch_size`.
    pub lr_per_256: f64,
    pub momentum: f64,
    /// L2 on conv / linear kernels only.
    pub weight_decay: f64,
    /// Global-norm gradient clipping (0 = off).
    pub clip_norm: f64,
    pub warmup_steps: usize,
    /// Warm-up starting learning rate for a batch of 256.
    pub warmup_lr_per_256: f64,
    pub schedule: ScheduleKind,
    /// Step schedule: (fraction of training, multiplier) pairs.
    pub step_points: Vec<(f64, f64)>,
    /// Exponential moving average of the weights (e.g. 0.9998); evaluated and saved too.
    pub ema_decay: Option<f64>,
    pub log_every: usize,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    /// Data-parallel runs: batch norm statistics over the global batch (as the paper).
    pub sync_batch_norm: bool,
    /// Arithmetic of the forward and backward passes: "f32", or mixed precision "bf16" /
    /// "f16" (weights and the optimizer stay f32; f16 adds dynamic loss scaling). Half
    /// precision needs a CUDA device.
    pub precision: Precision,
    /// A step whose loss or gradient is not finite (or, in f16, overflows) is skipped; this
    /// many skipped in a row stop the run with an error (0: stop at the first).
    pub max_nonfinite_steps: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
            Precision::F16 => candle_core::DType::F16,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        // Paper section 3.2: batch 256, lr 0.32 cosine, warm-up 1000 steps from 0.0032, wd 1e-4.
        OptimConfig {
            steps: 120_000,
            batch_size: 256,
            lr_per_256: 0.32,
            momentum: 0.9,
            weight_decay: 1e-4,
            clip_norm: 10.0,
            warmup_steps: 1000,
            warmup_lr_per_256: 0.0032,
            schedule: ScheduleKind::Cosine,
            step_points: vec![(0.9, 0.1), (0.95, 0.01)],
            ema_decay: None,
            log_every: 10,
            eval_every: 0,
            checkpoint_every: 1000,
            sync_batch_norm: true,
            precision: Precision::F32,
            max_nonfinite_steps: 20,
        }
    }
}

/// Where a student's pseudo labels come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfTrainMode {
    /// The paper's: a fixed teacher labels the unlabeled source once, then the student trains.
    #[default]
    Offline,
    /// An EMA of the student labels each unlabeled batch as training goes (Unbiased / Soft
    /// Teacher style): weak view for the teacher, the student's augmentation for the student.
    Online,
}

impl SelfTrainMode {
    pub fn name(self) -> &'static str {
        match self {
            SelfTrainMode::Offline => "offline",
            SelfTrainMode::Online => "online",
        }
    }

    pub fn other(self) -> SelfTrainMode {
        match self {
            SelfTrainMode::Offline => SelfTrainMode::Online,
            SelfTrainMode::Online => SelfTrainMode::Offline,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfTrainConfig {
    /// `offline` (the paper's teacher) or `online` (an EMA teacher; detection only). The
    /// keys `ema_decay`, `burn_in_steps`, `weak_scale`, `weak_flip` and `silent_warn_steps`
    /// are the online teacher's; `teacher_scales`, `teacher_flip` and `rounds` the offline
    /// one's.
    pub mode: SelfTrainMode,
    /// Online: teacher = decay * teacher + (1 - decay) * student after every applied step,
    /// running statistics included.
    pub ema_decay: f64,
    /// Online: supervised steps before pseudo labels are used; the teacher starts as a copy
    /// of the student at the end of them (0 when the student starts from a trained teacher).
    pub burn_in_steps: usize,
    /// Online: the teacher's view is the whole image resized to fit `augment.size` times a
    /// factor drawn from this range.
    pub weak_scale: [f64; 2],
    /// Online: the teacher's view is mirrored with probability 0.5.
    pub weak_flip: bool,
    /// Online: warn when the teacher has emitted no box for this many steps in a row.
    pub silent_warn_steps: usize,
    /// Weight of the pseudo-labeled loss (alpha).
    pub alpha: f64,
    /// The paper's loss normalization, `(L_h + alpha * avg(L_h) / avg(L_p) * L_p) / (1 +
    /// alpha)` with moving averages; `false` trains on the plain `L_h + alpha * L_p`.
    pub normalize_loss: bool,
    /// Decay of the moving averages of L_h and L_p.
    pub loss_avg_decay: f64,
    /// Pseudo-labeled images per human-labeled image in a batch (1:1 in the paper).
    pub pseudo_per_human: f64,
    /// Teacher score (detection) or pixel confidence (segmentation) threshold.
    pub score_threshold: f64,
    /// Detection: teacher boxes scoring in [ignore_from, score_threshold) become ignore
    /// regions (anchors on them are neither positive nor negative) instead of background.
    /// `None` keeps the paper's plain hard labels.
    pub ignore_from: Option<f64>,
    /// Scales (multiples of `augment.size`) the teacher labels at, merged per image. `None`:
    /// the paper's choice, 0.5 to 1.75 in steps of 0.25 for segmentation, 1 for detection.
    pub teacher_scales: Option<Vec<f64>>,
    /// The teacher also labels the mirrored image, merged with the others.
    pub teacher_flip: bool,
    /// Where the student starts: `init` (the run's own init, random or pre-trained, as the
    /// paper's "w/ ST" rows), `teacher` (the teacher's weights), `random`, or
    /// `pretrained:PATH|hf:...`.
    pub student_init: String,
    /// Student noise: stochastic depth rate of the last block; dropout before a classifier's
    /// last layer, or channel dropout on a detector's or segmenter's head features (its
    /// `detector.dropout` / `segmenter.dropout`).
    pub drop_path: f64,
    pub dropout: f64,
    /// The student's augmentation when it differs from the run's (`augment.policy`); the
    /// teacher always labels un-augmented images.
    pub student_augment: Option<String>,
    /// Multiplies the student's learning rates (below 1 when it starts from the teacher).
    pub student_lr_scale: f64,
    /// Student becomes the next teacher this many times.
    pub rounds: usize,
    /// Source of unlabeled images: `digits:unlabeled` or a folder.
    pub unlabeled: String,
}

/// The paper's multi-scale inference for segmentation pseudo labels.
pub const PAPER_SEG_SCALES: [f64; 6] = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75];

impl SelfTrainConfig {
    /// The teacher's inference scales for a task.
    pub fn scales(&self, task: TaskKind) -> Vec<f64> {
        match (&self.teacher_scales, task) {
            (Some(s), _) => s.clone(),
            (None, TaskKind::Segmentation) => PAPER_SEG_SCALES.to_vec(),
            (None, _) => vec![1.0],
        }
    }
}

impl Default for SelfTrainConfig {
    fn default() -> Self {
        SelfTrainConfig {
            mode: SelfTrainMode::Offline,
            ema_decay: 0.999,
            burn_in_steps: 0,
            weak_scale: [0.8, 1.2],
            weak_flip: true,
            silent_warn_steps: 100,
            alpha: 1.0,
            normalize_loss: true,
            loss_avg_decay: 0.99,
            pseudo_per_human: 1.0,
            score_threshold: 0.5,
            ignore_from: None,
            teacher_scales: None,
            teacher_flip: false,
            student_init: "init".into(),
            drop_path: 0.2,
            dropout: 0.5,
            student_augment: None,
            student_lr_scale: 1.0,
            rounds: 1,
            unlabeled: "digits:unlabeled".into(),
        }
    }
}

impl SelfTrainConfig {
    /// Puts back at their defaults the keys that only the other teacher than `mode`'s reads;
    /// the names of those that were set otherwise.
    pub fn reset_other_mode(&mut self, mode: SelfTrainMode) -> Vec<&'static str> {
        let d = SelfTrainConfig::default();
        let mut set = Vec::new();
        macro_rules! reset {
            ($($k:ident),*) => {{$(
                if self.$k != d.$k {
                    set.push(concat!("selftrain.", stringify!($k)));
                    self.$k = d.$k.clone();
                }
            )*}};
        }
        match mode {
            SelfTrainMode::Offline => {
                reset!(
                    ema_decay,
                    burn_in_steps,
                    weak_scale,
                    weak_flip,
                    silent_warn_steps
                )
            }
            SelfTrainMode::Online => reset!(teacher_scales, teacher_flip),
        }
        set
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub task: TaskKind,
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// `random` or `pretrained:PATH|hf:owner/name`.
    pub init: String,
    pub backbone: BackboneConfig,
    pub detector: RetinaNetConfig,
    pub segmenter: SegmenterConfig,
    pub data: DataConfig,
    pub augment: AugmentConfig,
    pub optim: OptimConfig,
    pub selftrain: SelfTrainConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            task: TaskKind::Detection,
            seed: 0,
            device: "cpu".into(),
            init: "random".into(),
            backbone: BackboneConfig::named("efficientnet-b7"),
            detector: RetinaNetConfig::default(),
            segmenter: SegmenterConfig::default(),
            data: DataConfig::default(),
            augment: AugmentConfig::default(),
            optim: OptimConfig::default(),
            selftrain: SelfTrainConfig::default(),
        }
    }
}

/// Parses a `--set` value: TOML syntax when it parses (numbers, booleans, arrays, inline
/// tables, quoted strings), otherwise a bare string.
fn parse_value(v: &str) -> toml::Value {
    let doc = format!("v = {v}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(v.to_string())),
        Err(_) => toml::Value::String(v.to_string()),
    }
}

/// Sets `a.b.c = value` in a TOML table, creating tables on the way.
pub fn set_path(table: &mut toml::Table, key: &str, value: &str) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::config(format!("--set {key}: empty key segment")));
    }
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let e = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        cur = match e {
            toml::Value::Table(t) => t,
            _ => return Err(Error::config(format!("--set {key}: {p} is not a table"))),
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), parse_value(value));
    Ok(())
}

/// Builds a config from an optional TOML file, a base table and `key=value` overrides.
pub fn load_config<T: serde::de::DeserializeOwned>(
    file: Option<&Path>,
    base: Option<toml::Table>,
    sets: &[String],
) -> Result<T> {
    let text = match file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| Error::config(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let what = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "configuration".into());
    parse_config(text.as_deref(), &what, base, sets)
}

/// [`load_config`] from TOML text (`what` names it in errors).
pub fn parse_config<T: serde::de::DeserializeOwned>(
    text: Option<&str>,
    what: &str,
    base: Option<toml::Table>,
    sets: &[String],
) -> Result<T> {
    let mut table = base.unwrap_or_default();
    if let Some(text) = text {
        let t: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::config(format!("{what}: {e}")))?;
        merge(&mut table, t);
    }
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| Error::config(format!("--set {s}: expected key=value")))?;
        set_path(&mut table, k.trim(), v.trim())?;
    }
    T::deserialize(toml::Value::Table(table))
        .map_err(|e| Error::config(format!("{what}: {}", e.to_string().trim())))
}

/// A preset shipped in the repository's `configs/` folder, as a TOML table.
pub fn preset(name: &str) -> Result<toml::Table> {
    let text = match name {
        "quickstart" => include_str!("../../../configs/quickstart.toml"),
        "pretrain" => include_str!("../../../configs/pretrain.toml"),
        other => return Err(Error::config(format!("no preset named {other:?}"))),
    };
    text.parse()
        .map_err(|e: toml::de::Error| Error::config(format!("configs/{name}.toml: {e}")))
}

/// Deep merge: values of `b` win.
pub fn merge(a: &mut toml::Table, b: toml::Table) {
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(toml::Value::Table(x)), toml::Value::Table(y)) => merge(x, y),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
}

/// A config as a TOML table (for writing next to results and merging presets).
pub fn to_table<T: Serialize>(v: &T) -> toml::Table {
    match toml::Value::try_from(v) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let c = TrainConfig::default();
        assert_eq!(c.optim.lr_per_256, 0.32);
        assert_eq!(c.optim.warmup_steps, 1000);
        assert_eq!(c.detector.focal_gamma, 1.5);
        assert_eq!(c.detector.box_weight, 50.0);
        assert_eq!(c.selftrain.score_threshold, 0.5);
        assert_eq!(c.data.size_divisor, 128);
    }

    #[test]
    fn overrides_and_unknown_keys() {
        let sets = vec![
            "optim.steps=50".to_string(),
            "backbone.name=resnet-50".into(),
            "optim.ema_decay=0.999".into(),
            "augment.policy=s1".into(),
        ];
        let c: TrainConfig = load_config(None, None, &sets).unwrap();
        assert_eq!(c.optim.steps, 50);
        assert_eq!(c.backbone.name, "resnet-50");
        assert_eq!(c.optim.ema_decay, Some(0.999));
        assert_eq!(c.augment.policy, "s1");
        assert_eq!(c.optim.batch_size, 256, "untouched keys keep defaults");
        let e = load_config::<TrainConfig>(None, None, &["optim.stepz=5".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("stepz"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bad.toml");
        std::fs::write(&f, "[optim]\nsteps = 3\n[nonsense]\nx = 1\n").unwrap();
        let e = load_config::<TrainConfig>(Some(&f), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.toml") && e.contains("nonsense"), "{e}");
        std::fs::write(&f, "[optim\n").unwrap();
        let e = load_config::<TrainConfig>(Some(&f), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.toml"), "{e}");
    }
}
