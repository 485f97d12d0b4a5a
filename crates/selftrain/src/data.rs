//! Datasets of a run (the labeled train split, cut to its fraction; validation; the
//! unlabeled source) and its transforms, all from the config.
use crate::config::{TaskKind, TrainConfig};
use crate::error::{Error, Result};
use pupil_augment::geometric::Size;
use pupil_augment::ladder::{ladder_with, parse_pipeline, LadderOptions};
use pupil_data::dataset::{fraction, Transform, Unlabeled};
use pupil_data::digits::Split;
use pupil_data::source::{DatasetSpec, Part, DATASETS};
use pupil_data::voc::VocTask;
use pupil_data::Dataset;
use std::path::PathBuf;
use std::sync::Arc;

fn need(v: &Option<String>, what: &str) -> Result<PathBuf> {
    v.as_ref()
        .map(PathBuf::from)
        .ok_or_else(|| Error::config(format!("data.{what} is required for this dataset")))
}

/// The spec of the train (`val = false`) or validation split of a config.
pub fn split_spec(cfg: &TrainConfig, val: bool) -> Result<DatasetSpec> {
    let d = &cfg.data;
    Ok(match (cfg.task, d.dataset.as_str()) {
        (TaskKind::Classification, "fashion" | "digit-pool") => DatasetSpec::Classes {
            set: d.dataset.clone(),
            part: if val { Part::Val } else { Part::Train },
        },
        (TaskKind::Classification, other) if other.starts_with("folder:") => {
            DatasetSpec::ClassFolder {
                root: PathBuf::from(&other["folder:".len()..]),
                part: if val { Part::Val } else { Part::Train },
            }
        }
        (TaskKind::Classification, other) => {
            return Err(Error::config(format!(
                "classification data must be fashion, digit-pool or folder:PATH, not {other:?}"
            )))
        }
        (_, "digits") => DatasetSpec::Digits {
            config: d.digits.clone(),
            split: if val { Split::Val } else { Split::Train },
        },
        (task, "coco") => {
            let (json, images) = if val {
                (
                    need(&d.val_json, "val_json")?,
                    need(&d.val_images, "val_images")?,
                )
            } else {
                (
                    need(&d.train_json, "train_json")?,
                    need(&d.train_images, "train_images")?,
                )
            };
            DatasetSpec::Coco {
                annotations: json,
                images,
                masks: task == TaskKind::Segmentation,
            }
        }
        (task, "voc") => DatasetSpec::Voc {
            root: need(&d.voc_root, "voc_root")?,
            set: if val { &d.val_set } else { &d.train_set }.clone(),
            task: if task == TaskKind::Segmentation {
                VocTask::Segmentation
            } else {
                VocTask::Detection
            },
        },
        (_, other) => {
            return Err(Error::config(format!(
                "unknown dataset {other:?} ({DATASETS})"
            )))
        }
    })
}

/// (train, validation) datasets of a config, the train split already cut to its fraction.
pub fn datasets(cfg: &TrainConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let train = split_spec(cfg, false)?.open()?;
    let val = split_spec(cfg, true)?.open()?;
    Ok((fraction(train, cfg.data.labeled_fraction, cfg.seed), val))
}

/// The unlabeled image source: `digits:SPLIT` (labels stripped) or an image folder.
pub fn unlabeled_source(cfg: &TrainConfig, spec: &str) -> Result<Arc<dyn Dataset>> {
    if let Some(split) = spec.strip_prefix("digits:") {
        let split: Split = split.parse().map_err(Error::config)?;
        let ds = DatasetSpec::Digits {
            config: cfg.data.digits.clone(),
            split,
        }
        .open()?;
        return Ok(Arc::new(Unlabeled(ds)));
    }
    Ok(DatasetSpec::Folder { root: spec.into() }.open()?)
}

/// The ground truth behind an unlabeled source, where it exists (the embedded scenes).
pub fn unlabeled_truth(cfg: &TrainConfig, spec: &str) -> Option<Arc<dyn Dataset>> {
    let split: Split = spec.strip_prefix("digits:")?.parse().ok()?;
    DatasetSpec::Digits {
        config: cfg.data.digits.clone(),
        split,
    }
    .open()
    .ok()
}

/// The ladder options of a config: its crop size and padding, pixel constants scaled to the
/// crop (`augment.pixel_scale`, default size / 640).
fn ladder_options(cfg: &TrainConfig) -> LadderOptions {
    let a = &cfg.augment;
    LadderOptions {
        pad_multiple: cfg.data.size_divisor,
        pixel_scale: a.pixel_scale.unwrap_or(a.size as f64 / 640.0),
        ..LadderOptions::new(Size::new(a.size, a.size))
    }
}

/// The training augmentation: a ladder (`none`, `s1`..`s4`) or a pipeline string.
pub fn train_transform(cfg: &TrainConfig) -> Result<Arc<Transform>> {
    let policy = cfg.augment.policy.to_ascii_lowercase();
    let p = match policy.as_str() {
        "none" | "s1" | "s2" | "s3" | "s4" => ladder_with(&policy, ladder_options(cfg))?,
        _ => parse_pipeline(&cfg.augment.policy)?,
    };
    Ok(p.into_transform())
}

/// Evaluation preprocessing: resize to fit the size, pad to the divisor, no randomness.
pub fn eval_transform(cfg: &TrainConfig) -> Arc<Transform> {
    ladder_with("none", ladder_options(cfg))
        .expect("`none` is a ladder")
        .into_transform()
}

/// Number of outputs of the model for a task and its datasets' class names.
pub fn num_outputs(task: TaskKind, names: &[String], dataset: &str) -> usize {
    match task {
        // label maps carry background as 0 and objects as id + 1 (digits, VOC)
        TaskKind::Segmentation if dataset == "digits" || dataset == "voc" => names.len() + 1,
        _ => names.len(),
    }
}
