//! Segmentation: cross-entropy with 255 ignored, mIoU, label maps as pseudo labels (the
//! views' probabilities averaged per pixel; pixels under the threshold ignored).
use super::{EvalData, Metrics, Prediction, PseudoLabels, PseudoOptions, PseudoViews, Task};
use crate::config::TaskKind;
use crate::error::{Error, Result};
use candle_core::Tensor;
use pupil_data::batch::Batch;
use pupil_data::metrics::ConfusionMatrix;
use pupil_data::{io, Plane, IGNORE};
use pupil_heads::seg::Segmenter;
use std::path::Path;

pub struct SegmentationTask(pub Segmenter);

/// Per-class probability planes of one image and how many views were summed into them.
type Summed = (Vec<Vec<f32>>, usize);

impl SegmentationTask {
    /// The views' per-class probabilities summed per image, in original coordinates.
    fn summed_probs(&self, v: &PseudoViews) -> Result<Vec<Summed>> {
        let mut acc: Vec<Option<Summed>> = vec![None; v.originals.len()];
        for (batch, flip) in &v.views {
            let probs = self.0.predict_probs(&batch.images, &batch.info)?;
            for (k, p) in probs.into_iter().enumerate() {
                let (w, h) = (v.originals[k].width(), v.originals[k].height());
                let p = if *flip { unflip(p, w, h) } else { p };
                match &mut acc[k] {
                    Some((a, c)) => {
                        for (x, y) in a.iter_mut().zip(&p) {
                            x.iter_mut().zip(y).for_each(|(u, v)| *u += v);
                        }
                        *c += 1;
                    }
                    None => acc[k] = Some((p, 1)),
                }
            }
        }
        acc.into_iter()
            .map(|a| a.ok_or_else(|| Error::msg("pseudo-labeling needs at least one view")))
            .collect()
    }
}

/// Mirrors every probability plane of a `w` x `h` image back.
fn unflip(p: Vec<Vec<f32>>, w: usize, h: usize) -> Vec<Vec<f32>> {
    p.into_iter()
        .map(|ch| {
            (0..h * w)
                .map(|q| ch[(q / w) * w + (w - 1 - q % w)])
                .collect()
        })
        .collect()
}

/// Arg-max class where the mean probability reaches `threshold`, else 255.
fn hard_labels(probs: &[Vec<f32>], count: usize, w: usize, h: usize, threshold: f64) -> Plane {
    let mut plane = Plane::new(w, h, IGNORE);
    for q in 0..w * h {
        let (mut best, mut arg) = (f32::MIN, 0usize);
        for (c, ch) in probs.iter().enumerate() {
            if ch[q] > best {
                best = ch[q];
                arg = c;
            }
        }
        if (best / count as f32) as f64 >= threshold {
            plane.data[q] = arg as u8;
        }
    }
    plane
}

impl Task for SegmentationTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Segmentation
    }

    fn loss(&self, batch: &Batch, train: bool) -> Result<(Tensor, Vec<(String, f64)>)> {
        let labels = batch
            .label_maps
            .as_ref()
            .ok_or_else(|| Error::msg("segmentation needs label maps"))?;
        Ok((self.0.loss(&batch.images, labels, train)?, vec![]))
    }

    fn forward(&self, images: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![self.0.forward_t(images, false)?])
    }

    fn predict(&self, batch: &Batch) -> Result<Vec<Prediction>> {
        let preds = self.0.predict(&batch.images, &batch.info)?;
        Ok(preds
            .into_iter()
            .map(|(classes, confidence)| Prediction::LabelMap {
                classes,
                confidence,
            })
            .collect())
    }

    fn evaluate(&self, data: &EvalData) -> Result<Metrics> {
        let mut cm = ConfusionMatrix::new(self.0.config.num_classes);
        data.for_each(|originals, batch| {
            let preds = self.0.predict(&batch.images, &batch.info)?;
            for (s, (p, _)) in originals.iter().zip(preds) {
                let gt = s.label_map.as_ref().ok_or_else(|| {
                    Error::msg(format!("image id {} has no label map", s.image_id))
                })?;
                cm.update_planes(gt, &p)?;
            }
            Ok(())
        })?;
        let mut out = Metrics {
            primary: cm.mean_iou().unwrap_or(0.0),
            ..Default::default()
        };
        out.values.insert("mIoU".into(), out.primary);
        out.values
            .insert("pixel_accuracy".into(), cm.pixel_accuracy().unwrap_or(0.0));
        Ok(out)
    }

    fn pseudo_label(
        &self,
        v: &PseudoViews,
        opts: &PseudoOptions,
        out: &Path,
    ) -> Result<PseudoLabels> {
        let mut labels = PseudoLabels::default();
        for (k, (probs, count)) in self.summed_probs(v)?.into_iter().enumerate() {
            let s = &v.originals[k];
            let plane = hard_labels(&probs, count, s.width(), s.height(), opts.score_threshold);
            let file = format!("{:08}.png", s.image_id);
            io::write_label_png(out.join("labels").join(&file), &plane)?;
            labels
                .label_maps
                .push((s.image_id, format!("labels/{file}")));
        }
        Ok(labels)
    }
}
