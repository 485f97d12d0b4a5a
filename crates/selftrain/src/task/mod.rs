//! One interface for every task a run trains (detection, segmentation, classification):
//! the trainer, the pseudo-labeler, the CLI and the benchmark call [`Task`] and never ask
//! which model is behind it. A new task is one more implementation and one more arm of
//! [`build`].
mod classification;
mod detection;
mod segmentation;

pub use classification::ClassificationTask;
pub use detection::DetectionTask;
pub use segmentation::SegmentationTask;

use crate::config::{TaskKind, TrainConfig};
use crate::error::Result;
use candle_core::{Device, Tensor};
use pupil_data::batch::{collate, Batch, BatchConfig};
use pupil_data::coco::{CategoryMap, CocoDetection};
use pupil_data::dataset::{Loader, LoaderConfig, Transform};
use pupil_data::{Dataset, Plane, Sample};
use pupil_heads::retinanet::{Detection, RetinaNet};
use pupil_heads::seg::Segmenter;
use pupil_nn::ParamStore;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Metrics of an evaluation; `primary` is AP (detection), mIoU (segmentation) or top-1.
/// Written flat (`{"primary": .., "AP": .., "AP50": ..}`), as COCO tools name them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub primary: f64,
    pub values: BTreeMap<String, f64>,
}

impl serde::Serialize for Metrics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.values.len() + 1))?;
        m.serialize_entry("primary", &self.primary)?;
        for (k, v) in self.values.iter().filter(|(k, _)| *k != "primary") {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> serde::Deserialize<'de> for Metrics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // earlier builds nested the values; their result files still read
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Nested {
                primary: f64,
                values: BTreeMap<String, f64>,
            },
            Flat(BTreeMap<String, f64>),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Nested { primary, values } => Metrics { primary, values },
            Repr::Flat(mut values) => {
                let primary = values
                    .remove("primary")
                    .ok_or_else(|| serde::de::Error::missing_field("primary"))?;
                Metrics { primary, values }
            }
        })
    }
}

/// What a model predicts for one image, in original image coordinates.
#[derive(Clone, Debug, PartialEq)]
pub enum Prediction {
    Boxes(Vec<Detection>),
    /// Class per pixel (255 outside the image) and its softmax confidence.
    LabelMap {
        classes: Plane,
        confidence: Vec<f32>,
    },
    Class {
        class: u32,
        score: f32,
    },
}

impl Prediction {
    /// Puts the prediction on a sample as labels (for drawing).
    pub fn apply_to(&self, s: &mut Sample) {
        match self {
            Prediction::Boxes(dets) => {
                s.boxes = dets.iter().map(|d| d.bbox).collect();
                s.classes = dets.iter().map(|d| d.class).collect();
                s.crowd = vec![false; dets.len()];
            }
            Prediction::LabelMap { classes, .. } => s.label_map = Some(classes.clone()),
            Prediction::Class { class, .. } => s.classes = vec![*class],
        }
    }

    /// Detections as COCO results of `image_id`, with the dataset's category ids.
    pub fn coco_results(&self, image_id: u64, categories: &CategoryMap) -> Vec<CocoDetection> {
        match self {
            Prediction::Boxes(dets) => dets
                .iter()
                .filter_map(|d| {
                    let cat = categories.to_coco(d.class)?;
                    Some(CocoDetection::from_xyxy(image_id, cat, d.bbox, d.score))
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A validation pass: originals come from the loader and the eval transform runs per
/// batch, so ground truth and predictions come from one read of each image.
pub struct EvalData<'a> {
    pub dataset: Arc<dyn Dataset>,
    pub transform: Arc<Transform>,
    pub batch: &'a BatchConfig,
    pub device: &'a Device,
    pub batch_size: usize,
}

impl EvalData<'_> {
    /// Calls `f(originals, batch)` for every batch of the dataset in order.
    pub fn for_each(&self, mut f: impl FnMut(&[Sample], &Batch) -> Result<()>) -> Result<()> {
        let loader = Loader::new(
            self.dataset.clone(),
            LoaderConfig {
                batch_size: self.batch_size,
                shuffle: false,
                drop_last: false,
                seed: 0,
                workers: 2,
                prefetch: 2,
            },
        );
        for b in loader.epoch(0) {
            let originals = b?;
            let views = originals
                .iter()
                .map(|s| (self.transform)(s.clone(), &mut pupil_data::Rng::new(0)))
                .collect::<pupil_data::Result<Vec<_>>>()?;
            let batch = collate(&views, self.batch, self.device)?;
            f(&originals, &batch)?;
        }
        Ok(())
    }
}

/// How a teacher labels (see [`crate::pseudo`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PseudoOptions {
    pub score_threshold: f64,
    /// Detections down to this score are kept in the shards (for the quality report); the
    /// student uses only those at or above `score_threshold`.
    pub keep_from: f64,
    /// Shard `index` of `count` (0-based).
    pub shard: (usize, usize),
    /// Also run the teacher on the mirrored image and merge.
    pub flip: bool,
    /// Inference scales (multiples of the training size), merged per image.
    pub scales: Vec<f64>,
    pub batch_size: usize,
}

impl Default for PseudoOptions {
    fn default() -> Self {
        PseudoOptions {
            score_threshold: 0.5,
            keep_from: 0.1,
            shard: (0, 1),
            flip: false,
            scales: vec![1.0],
            batch_size: 16,
        }
    }
}

/// One batch of unlabeled images and the teacher's views of it: one collated batch per
/// (scale, flip), `true` where the view is mirrored.
pub struct PseudoViews {
    pub originals: Vec<Sample>,
    pub views: Vec<(Batch, bool)>,
}

/// A teacher's labels for one batch: detections with their scores (category ids are train
/// id + 1), or label-map files relative to the output folder.
#[derive(Clone, Debug, Default)]
pub struct PseudoLabels {
    pub detections: Vec<CocoDetection>,
    pub label_maps: Vec<(u64, String)>,
}

/// A model trained for one task.
pub trait Task: Send + Sync {
    fn kind(&self) -> TaskKind;
    /// Total loss of a batch and its named parts (logged).
    fn loss(&self, batch: &Batch, train: bool) -> Result<(Tensor, Vec<(String, f64)>)>;
    /// The raw outputs of an eval-mode forward pass (benchmarks).
    fn forward(&self, images: &Tensor) -> Result<Vec<Tensor>>;
    /// Predictions per image of a collated batch, in original coordinates.
    fn predict(&self, batch: &Batch) -> Result<Vec<Prediction>>;
    /// AP / AP50 (detection), mIoU (segmentation) or top-1 accuracy over a dataset.
    fn evaluate(&self, data: &EvalData) -> Result<Metrics>;
    /// Hard labels for a batch of unlabeled images from the teacher's views of them.
    fn pseudo_label(
        &self,
        views: &PseudoViews,
        opts: &PseudoOptions,
        out: &Path,
    ) -> Result<PseudoLabels>;
}

/// Outputs a model may have.
pub const MAX_CLASSES: usize = 100_000;

/// Builds the model of a config with `num_classes` outputs; its tensors are created in
/// `store` (the backbone under `backbone.`).
pub fn build(cfg: &TrainConfig, num_classes: usize, store: &ParamStore) -> Result<Box<dyn Task>> {
    crate::checks::check_config(cfg)?;
    if !(1..=MAX_CLASSES).contains(&num_classes) {
        return Err(crate::error::Error::config(format!(
            "a model needs 1 to {MAX_CLASSES} classes (outputs), found {num_classes}"
        )));
    }
    let vb = store.root();
    let mut bcfg = cfg.backbone.clone();
    if cfg.task == TaskKind::Classification {
        bcfg.num_classes = num_classes;
    }
    let backbone = pupil_backbones::build(&vb.pp("backbone"), &bcfg)?;
    Ok(match cfg.task {
        TaskKind::Detection => {
            let mut d = cfg.detector.clone();
            d.num_classes = num_classes;
            Box::new(DetectionTask(RetinaNet::new(&vb, Box::new(backbone), &d)?))
        }
        TaskKind::Segmentation => {
            let mut s = cfg.segmenter.clone();
            s.num_classes = num_classes;
            Box::new(SegmentationTask(Segmenter::new(
                &vb,
                Box::new(backbone),
                &s,
            )?))
        }
        TaskKind::Classification => Box::new(ClassificationTask::new(backbone)?),
    })
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn metrics_are_written_flat_and_read_in_both_forms() {
        let m = Metrics {
            primary: 0.5,
            values: [("AP".to_string(), 0.5), ("AP50".to_string(), 0.75)].into(),
        };
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"primary": 0.5, "AP": 0.5, "AP50": 0.75})
        );
        assert_eq!(serde_json::from_value::<Metrics>(j).unwrap(), m);
        let nested = serde_json::json!({"primary": 0.5, "values": {"AP": 0.5, "AP50": 0.75}});
        assert_eq!(serde_json::from_value::<Metrics>(nested).unwrap(), m);
        let e = serde_json::from_value::<Metrics>(serde_json::json!({"AP": 0.5})).unwrap_err();
        assert!(e.to_string().contains("primary"), "{e}");
    }
}
