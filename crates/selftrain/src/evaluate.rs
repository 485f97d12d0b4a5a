//! A saved model scored on a dataset split, as `pupil eval model` reports it: COCO's 12 stats
//! and per-category AP, with the model's detections as a COCO results file in the dataset's
//! own image and category ids (pycocotools on that file and the instances JSON gives the same
//! stats); mIoU and per-class IoU; or top-1 accuracy.
use crate::config::{TaskKind, TrainConfig};
use crate::data::{eval_transform, split_spec};
use crate::error::{bail, Result};
use crate::model::Loaded;
use crate::task::{EvalData, Metrics, Prediction};
use candle_core::Device;
use pupil_data::batch::BatchConfig;
use pupil_data::coco::eval::{evaluate, EvalParams, EvalResult};
use pupil_data::coco::CocoDetection;
use pupil_data::coco::{CategoryMap, CocoFile};
use pupil_data::metrics::ConfusionMatrix;
use pupil_data::source::DatasetSpec;
use pupil_data::{io, Sample};
use std::path::{Path, PathBuf};

/// What an evaluation measured.
pub enum Scores {
    Detection(EvalResult),
    Segmentation {
        confusion: ConfusionMatrix,
        classes: Vec<String>,
    },
    Classification(Metrics),
}

/// A model's scores on a split and, for detection, what they were computed from.
pub struct ModelEval {
    pub scores: Scores,
    pub images: usize,
    /// Detection: the model's detections as COCO results.
    pub detections: Vec<CocoDetection>,
    /// Detection on a set without an instances file (digit scenes, VOC): its ground truth
    /// as one, the file the detections are scored against.
    pub ground_truth: Option<CocoFile>,
}

/// Scores `model` on the validation split of `cfg` (data keys, eval size and batch divisor
/// from `cfg`), `batch_size` images at a time.
pub fn evaluate_split(
    model: &Loaded,
    cfg: &TrainConfig,
    device: &Device,
    batch_size: usize,
) -> Result<ModelEval> {
    if batch_size == 0 {
        bail!("the batch size must be at least 1")
    }
    let spec = split_spec(cfg, true)?;
    let bc = BatchConfig {
        size_divisor: cfg.data.size_divisor,
        ..Default::default()
    };
    let data = EvalData {
        dataset: spec.open()?,
        transform: eval_transform(cfg),
        batch: &bc,
        device,
        batch_size,
    };
    check_classes(model, &data.dataset.class_names(), &spec)?;
    match model.task.kind() {
        TaskKind::Detection => {
            let instances = match &spec {
                DatasetSpec::Coco { annotations, .. } => Some(annotations.as_path()),
                _ => None,
            };
            detection(model, &data, instances)
        }
        TaskKind::Segmentation => segmentation(model, &data),
        TaskKind::Classification => Ok(ModelEval {
            scores: Scores::Classification(model.task.evaluate(&data)?),
            images: data.dataset.len(),
            detections: vec![],
            ground_truth: None,
        }),
    }
}

/// The model must predict the classes of the set it is scored on, in the same order.
fn check_classes(model: &Loaded, names: &[String], spec: &DatasetSpec) -> Result<()> {
    if model.class_names != names {
        let show = |v: &[String]| {
            let head: Vec<&str> = v.iter().take(6).map(String::as_str).collect();
            format!(
                "{} ({}{})",
                v.len(),
                head.join(", "),
                if v.len() > 6 { ", ..." } else { "" }
            )
        };
        let set = match spec {
            DatasetSpec::Coco { annotations, .. } => annotations.display().to_string(),
            DatasetSpec::Voc { root, .. } | DatasetSpec::ClassFolder { root, .. } => {
                root.display().to_string()
            }
            _ => "the validation set".into(),
        };
        bail!(
            "{set}: its classes, {}, are not the model's, {}",
            show(names),
            show(&model.class_names)
        )
    }
    Ok(())
}

/// Appends the samples' boxes (original coordinates) to a ground-truth file.
fn append_truth(gt: &mut CocoFile, samples: &[Sample], names: &[String]) {
    let part = CocoFile::from_samples(samples, names);
    let first = gt.annotations.len() as u64;
    gt.images.extend(part.images);
    gt.annotations
        .extend(part.annotations.into_iter().map(|mut a| {
            a.id += first;
            a
        }));
}

fn detection(model: &Loaded, data: &EvalData, instances: Option<&Path>) -> Result<ModelEval> {
    let names = data.dataset.class_names();
    let given = instances.map(CocoFile::read).transpose()?;
    let mut built = CocoFile::from_samples(&[], &names);
    let cats = CategoryMap::new(&given.as_ref().unwrap_or(&built).categories);
    let (mut dets, mut images) = (Vec::new(), 0);
    data.for_each(|originals, batch| {
        for (s, p) in originals.iter().zip(model.task.predict(batch)?) {
            dets.extend(p.coco_results(s.image_id, &cats));
        }
        images += originals.len();
        if given.is_none() {
            append_truth(&mut built, originals, &names);
        }
        Ok(())
    })?;
    let r = evaluate(
        given.as_ref().unwrap_or(&built),
        &dets,
        &EvalParams::default(),
    )?;
    Ok(ModelEval {
        scores: Scores::Detection(r),
        images,
        detections: dets,
        ground_truth: given.is_none().then_some(built),
    })
}

fn segmentation(model: &Loaded, data: &EvalData) -> Result<ModelEval> {
    let mut cm = ConfusionMatrix::new(model.num_outputs);
    let mut images = 0;
    data.for_each(|originals, batch| {
        for (s, p) in originals.iter().zip(model.task.predict(batch)?) {
            let (Prediction::LabelMap { classes, .. }, Some(gt)) = (&p, &s.label_map) else {
                bail!("image id {} has no label map to score against", s.image_id)
            };
            cm.update_planes(gt, classes)?;
        }
        images += originals.len();
        Ok(())
    })?;
    let names = data.dataset.class_names();
    // label maps of digits and VOC carry background as class 0
    let classes = if model.num_outputs == names.len() + 1 {
        std::iter::once("background".to_string())
            .chain(names)
            .collect()
    } else {
        names
    };
    Ok(ModelEval {
        scores: Scores::Segmentation {
            confusion: cm,
            classes,
        },
        images,
        detections: vec![],
        ground_truth: None,
    })
}

impl ModelEval {
    /// What `metrics.json` holds: the 12 COCO stats by name and `per_category` (id, name,
    /// AP); or mIoU, `per_class_iou`, pixel accuracy and the class names; or top-1.
    pub fn metrics_json(&self) -> serde_json::Value {
        let mut v = match &self.scores {
            Scores::Detection(r) => r.to_json(),
            Scores::Segmentation { confusion, classes } => {
                let mut v = confusion.to_json();
                v["classes"] = serde_json::json!(classes);
                v
            }
            Scores::Classification(m) => serde_json::json!(m.values),
        };
        v["images"] = serde_json::json!(self.images);
        if let Scores::Detection(_) = self.scores {
            v["detections"] = serde_json::json!(self.detections.len());
        }
        v
    }

    /// Writes `metrics.json` and, for detection, `detections.json` (and `ground_truth.json`
    /// where the set has no instances file) into `dir`; returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let metrics = dir.join("metrics.json");
        io::write_json_atomic(&metrics, &self.metrics_json())?;
        let mut files = vec![metrics];
        if let Scores::Detection(_) = self.scores {
            let d = dir.join("detections.json");
            pupil_data::coco::write_results(&d, &self.detections)?;
            files.push(d);
        }
        if let Some(gt) = &self.ground_truth {
            let g = dir.join("ground_truth.json");
            gt.write(&g)?;
            files.push(g);
        }
        Ok(files)
    }
}
