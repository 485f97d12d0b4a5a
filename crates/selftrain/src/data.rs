//! Datasets of a run: the labeled train split (optionally a fraction of it), validation, the
//! unlabeled source, classification sets, and the augmentation transforms.
use crate::config::{Task, TrainConfig};
use pupil_augment::autoaugment::{AutoAugment, Hparams};
use pupil_augment::geometric::Size;
use pupil_augment::jitter::{FlipJitter, ScaleJitter, MEAN_FILL};
use pupil_augment::randaugment::RandAugment;
use pupil_augment::Pipeline;
use pupil_data::coco::CocoDataset;
use pupil_data::dataset::Transform;
use pupil_data::digits::{ClassificationSet, DigitScenes, Split};
use pupil_data::folder::ImageFolder;
use pupil_data::voc::{VocDataset, VocTask};
use pupil_data::{Dataset, Result as DataResult, Rng, Sample};
use std::sync::Arc;

/// A subset of a dataset by index.
pub struct Subset {
    pub inner: Arc<dyn Dataset>,
    pub indices: Vec<usize>,
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, i: usize) -> DataResult<Sample> {
        self.inner.get(self.indices[i])
    }
    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }
}

/// The same images with every label removed (the pseudo-labeling input).
pub struct Unlabeled(pub Arc<dyn Dataset>);

impl Dataset for Unlabeled {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> DataResult<Sample> {
        let mut s = self.0.get(i)?;
        s.boxes.clear();
        s.classes.clear();
        s.crowd.clear();
        s.masks = None;
        s.label_map = None;
        Ok(s)
    }
}

/// A deterministic fraction of a dataset (the paper's 20 / 50 / 100 % of labeled data).
pub fn fraction(ds: Arc<dyn Dataset>, f: f64, seed: u64) -> Arc<dyn Dataset> {
    if f >= 1.0 {
        return ds;
    }
    let n = ((ds.len() as f64 * f).round() as usize).max(1);
    let mut idx = Rng::derive(&[seed, 0x4652_4143]).permutation(ds.len());
    idx.truncate(n);
    idx.sort_unstable();
    Arc::new(Subset {
        inner: ds,
        indices: idx,
    })
}

fn need<'a>(v: &'a Option<String>, what: &str) -> Result<&'a String, String> {
    v.as_ref()
        .ok_or_else(|| format!("data.{what} is required for this dataset"))
}

/// (train, validation) datasets of a config, the train split already cut to its fraction.
pub fn datasets(cfg: &TrainConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>), String> {
    let d = &cfg.data;
    let err = |e: pupil_data::Error| e.to_string();
    let (train, val): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match (cfg.task, d.dataset.as_str()) {
        (Task::Classification, "fashion" | "digit-pool") => {
            let set = if d.dataset == "fashion" {
                ClassificationSet::fashion()
            } else {
                ClassificationSet::digits()
            }
            .map_err(err)?;
            let n = set.indices.len();
            let cut = n - n / 10;
            let all: Arc<dyn Dataset> = Arc::new(set);
            (
                Arc::new(Subset {
                    inner: all.clone(),
                    indices: (0..cut).collect(),
                }),
                Arc::new(Subset {
                    inner: all,
                    indices: (cut..n).collect(),
                }),
            )
        }
        (Task::Classification, other) => {
            return Err(format!(
                "classification data must be fashion or digit-pool, not {other:?}"
            ))
        }
        (_, "digits") => (
            Arc::new(DigitScenes::new(&d.digits, Split::Train).map_err(err)?),
            Arc::new(DigitScenes::new(&d.digits, Split::Val).map_err(err)?),
        ),
        (task, "coco") => {
            let masks = task == Task::Segmentation;
            (
                Arc::new(
                    CocoDataset::open(
                        need(&d.train_json, "train_json")?,
                        need(&d.train_images, "train_images")?,
                    )
                    .map_err(err)?
                    .with_masks(masks),
                ),
                Arc::new(
                    CocoDataset::open(
                        need(&d.val_json, "val_json")?,
                        need(&d.val_images, "val_images")?,
                    )
                    .map_err(err)?
                    .with_masks(masks),
                ),
            )
        }
        (task, "voc") => {
            let root = need(&d.voc_root, "voc_root")?;
            let t = if task == Task::Segmentation {
                VocTask::Segmentation
            } else {
                VocTask::Detection
            };
            (
                Arc::new(VocDataset::open(root, &d.train_set, t, None).map_err(err)?),
                Arc::new(VocDataset::open(root, &d.val_set, t, None).map_err(err)?),
            )
        }
        (_, other) => return Err(format!("unknown dataset {other:?} (digits, coco, voc)")),
    };
    Ok((fraction(train, d.labeled_fraction, cfg.seed), val))
}

/// The unlabeled image source: `digits:unlabeled` (labels stripped) or an image folder.
pub fn unlabeled_source(cfg: &TrainConfig, spec: &str) -> Result<Arc<dyn Dataset>, String> {
    if let Some(split) = spec.strip_prefix("digits:") {
        let s: Split = split.parse()?;
        let ds: Arc<dyn Dataset> =
            Arc::new(DigitScenes::new(&cfg.data.digits, s).map_err(|e| e.to_string())?);
        return Ok(Arc::new(Unlabeled(ds)));
    }
    Ok(Arc::new(
        ImageFolder::open(spec).map_err(|e| e.to_string())?,
    ))
}

/// The ground truth behind an unlabeled source, where it exists (the embedded scenes).
pub fn unlabeled_truth(cfg: &TrainConfig, spec: &str) -> Option<Arc<dyn Dataset>> {
    let split: Split = spec.strip_prefix("digits:")?.parse().ok()?;
    DigitScenes::new(&cfg.data.digits, split)
        .ok()
        .map(|d| Arc::new(d) as Arc<dyn Dataset>)
}

fn scaled(h: Hparams, k: f64) -> Hparams {
    Hparams {
        cutout_const: h.cutout_const * k,
        translate_const: h.translate_const * k,
        cutout_bbox_const: h.cutout_bbox_const * k,
        translate_bbox_const: h.translate_bbox_const * k,
        ..h
    }
}

/// The training augmentation of a config. Ladders `s1`..`s4` are built here with the
/// AutoAugment / RandAugment pixel constants scaled to the crop size; other strings are
/// parsed as pipelines.
pub fn train_transform(cfg: &TrainConfig) -> Result<Arc<Transform>, String> {
    let a = &cfg.augment;
    let size = Size::new(a.size, a.size);
    let k = a.pixel_scale.unwrap_or(a.size as f64 / 640.0);
    let jitter = |lo: f64, hi: f64| FlipJitter {
        flip_prob: 0.5,
        jitter: ScaleJitter {
            size,
            scale: (lo, hi),
            pad_multiple: cfg.data.size_divisor,
            fill: MEAN_FILL,
        },
    };
    let mut p = Pipeline::new();
    match a.policy.to_ascii_lowercase().as_str() {
        "none" => p.push(
            "resize",
            ScaleJitter {
                size,
                scale: (1.0, 1.0),
                pad_multiple: cfg.data.size_divisor,
                fill: MEAN_FILL,
            },
        ),
        "s1" => p.push("hflip | scale_jitter", jitter(0.8, 1.2)),
        "s2" | "s3" => {
            let mut aa = AutoAugment::v0();
            aa.hparams = scaled(aa.hparams, k);
            p.push("autoaugment(v0)", aa);
            if a.policy.eq_ignore_ascii_case("s2") {
                p.push("hflip | scale_jitter", jitter(0.8, 1.2));
            } else {
                p.push("hflip | lsj", jitter(0.5, 2.0));
            }
        }
        "s4" => {
            let mut ra = RandAugment::default();
            ra.hparams = scaled(ra.hparams, k);
            p.push("randaugment(n=2,m=10)", ra);
            p.push("hflip | lsj", jitter(0.5, 2.0));
        }
        _ => p = pupil_augment::ladder::parse_pipeline(&a.policy).map_err(|e| e.to_string())?,
    }
    Ok(p.into_transform())
}

/// Evaluation preprocessing: resize to fit the size, pad to the divisor, no randomness.
pub fn eval_transform(cfg: &TrainConfig) -> Arc<Transform> {
    let size = Size::new(cfg.augment.size, cfg.augment.size);
    let mut p = Pipeline::new();
    p.push(
        "resize",
        ScaleJitter {
            size,
            scale: (1.0, 1.0),
            pad_multiple: cfg.data.size_divisor,
            fill: MEAN_FILL,
        },
    );
    p.into_transform()
}

/// Number of outputs of the model for a task and its datasets' class names.
pub fn num_outputs(task: Task, names: &[String], dataset: &str) -> usize {
    match task {
        // label maps carry background as 0 and objects as id + 1 (digits, VOC)
        Task::Segmentation if dataset == "digits" || dataset == "voc" => names.len() + 1,
        _ => names.len(),
    }
}
