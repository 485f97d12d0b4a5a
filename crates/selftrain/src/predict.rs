//! Inference with a saved model: images in, predictions in original coordinates out, as
//! drawings and COCO results.
use crate::config::TrainConfig;
use crate::data::eval_transform;
use crate::error::Result;
use crate::model::{load_model, Loaded};
use crate::task::Prediction;
use candle_core::Device;
use pupil_data::batch::{collate, BatchConfig};
use pupil_data::coco::{CategoryMap, CocoCategory, CocoDetection};
use pupil_data::dataset::Transform;
use pupil_data::{draw, Image, Sample};
use std::path::Path;
use std::sync::Arc;

mod folder;
pub use folder::{predict_folder, FolderOptions, FolderOutcome, NamedClass, NamedDetection};

/// A saved model ready to predict.
pub struct Predictor {
    pub model: Loaded,
    device: Device,
    transform: Arc<Transform>,
    batch: BatchConfig,
    categories: CategoryMap,
}

impl Predictor {
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let model = load_model(path, device)?;
        let transform = eval_transform(&model.config);
        let batch = BatchConfig {
            size_divisor: model.config.data.size_divisor,
            ..Default::default()
        };
        let categories = training_categories(&model.config, &model.class_names);
        Ok(Predictor {
            model,
            device: device.clone(),
            transform,
            batch,
            categories,
        })
    }

    pub fn class_names(&self) -> &[String] {
        &self.model.class_names
    }

    /// The model's classes as COCO categories: those of its COCO training file where that
    /// file can still be read and names the same classes, else id = class + 1.
    pub fn categories(&self) -> &CategoryMap {
        &self.categories
    }

    /// Predictions for original images, run as one batch.
    pub fn predict(&self, samples: &[Sample]) -> Result<Vec<Prediction>> {
        let views = samples
            .iter()
            .map(|s| (self.transform)(s.clone(), &mut pupil_data::Rng::new(0)))
            .collect::<pupil_data::Result<Vec<_>>>()?;
        let batch = collate(&views, &self.batch, &self.device)?;
        self.model.task.predict(&batch)
    }

    /// The sample with its prediction drawn on it: boxes with "name score", label maps
    /// tinted, a class written at the top-left corner.
    /// Images under 320 pixels a side are enlarged first, so labels leave them readable.
    pub fn draw(&self, sample: &Sample, p: &Prediction) -> Image {
        let mut s = sample.clone();
        p.apply_to(&mut s);
        let s = draw::readable(&s, 320);
        let names = self.class_names();
        match p {
            Prediction::Boxes(d) => {
                let scores: Vec<f32> = d.iter().map(|d| d.score).collect();
                draw::draw_scored(&s, names, &scores)
            }
            Prediction::LabelMap { .. } => draw::draw_sample(&s, names),
            Prediction::Class { class, score } => {
                let mut img = s.image.to_rgb();
                let name = names.get(*class as usize).cloned().unwrap_or_default();
                let px = (img.height.min(img.width) as f32 / 8.0).clamp(10.0, 22.0);
                draw::draw_label(
                    &mut img,
                    0,
                    0,
                    &format!("{name} {score:.2}"),
                    px,
                    [255, 255, 255],
                );
                img
            }
        }
    }

    /// COCO results of one image's prediction.
    pub fn coco_results(&self, image_id: u64, p: &Prediction) -> Vec<CocoDetection> {
        p.coco_results(image_id, &self.categories)
    }
}

/// Detections scoring below `threshold` dropped; other predictions unchanged.
pub fn above(p: Prediction, threshold: f32) -> Prediction {
    match p {
        Prediction::Boxes(mut d) => {
            d.retain(|d| d.score >= threshold);
            Prediction::Boxes(d)
        }
        other => other,
    }
}

/// The category ids a model was trained with (see [`Predictor::categories`]).
fn training_categories(cfg: &TrainConfig, names: &[String]) -> CategoryMap {
    #[derive(serde::Deserialize)]
    struct Categories {
        categories: Vec<CocoCategory>,
    }
    let own = || {
        let cats: Vec<CocoCategory> = (names.iter().enumerate())
            .map(|(i, n)| CocoCategory {
                id: i as u64 + 1,
                name: n.clone(),
                supercategory: None,
            })
            .collect();
        CategoryMap::new(&cats)
    };
    let file = cfg
        .data
        .train_json
        .as_ref()
        .filter(|_| cfg.data.dataset == "coco");
    match file.and_then(|f| pupil_data::io::read_json::<Categories>(f).ok()) {
        Some(c) if CategoryMap::new(&c.categories).names == names => {
            CategoryMap::new(&c.categories)
        }
        _ => own(),
    }
}
