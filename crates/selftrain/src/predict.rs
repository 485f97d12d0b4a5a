//! Inference with a saved model: images in, predictions in original coordinates out, as
//! drawings and COCO results.
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

/// A saved model ready to predict.
pub struct Predictor {
    pub model: Loaded,
    device: Device,
    transform: Arc<Transform>,
    batch: BatchConfig,
}

impl Predictor {
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let model = load_model(path, device)?;
        let transform = eval_transform(&model.config);
        let batch = BatchConfig {
            size_divisor: model.config.data.size_divisor,
            ..Default::default()
        };
        Ok(Predictor {
            model,
            device: device.clone(),
            transform,
            batch,
        })
    }

    pub fn class_names(&self) -> &[String] {
        &self.model.class_names
    }

    /// The model's classes as COCO categories (id = class + 1), pupil's own numbering.
    pub fn categories(&self) -> CategoryMap {
        let cats: Vec<CocoCategory> = (self.class_names().iter().enumerate())
            .map(|(i, n)| CocoCategory {
                id: i as u64 + 1,
                name: n.clone(),
                supercategory: None,
            })
            .collect();
        CategoryMap::new(&cats)
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
    pub fn draw(&self, sample: &Sample, p: &Prediction) -> Image {
        let mut s = sample.clone();
        p.apply_to(&mut s);
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
        p.coco_results(image_id, &self.categories())
    }
}
