//! Detection: RetinaNet's focal + box loss, COCO AP, boxes as pseudo labels.
use super::{EvalData, Metrics, Prediction, PseudoLabels, PseudoOptions, PseudoViews, Task};
use crate::config::TaskKind;
use crate::error::Result;
use candle_core::Tensor;
use pupil_data::batch::Batch;
use pupil_data::coco::eval::{CocoEval, STAT_NAMES};
use pupil_data::coco::{CocoDetection, CocoFile};
use pupil_heads::boxes::batched_nms;
use pupil_heads::retinanet::RetinaNet;
use std::path::Path;

pub struct DetectionTask(pub RetinaNet);

impl Task for DetectionTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Detection
    }

    fn loss(&self, batch: &Batch, train: bool) -> Result<(Tensor, Vec<(String, f64)>)> {
        let l = self.0.loss(batch, train)?;
        let parts = vec![
            ("cls".into(), l.cls),
            ("box".into(), l.boxes),
            ("positives".into(), l.num_positives as f64),
        ];
        Ok((l.total, parts))
    }

    fn forward(&self, images: &Tensor) -> Result<Vec<Tensor>> {
        let (cls, reg) = self.0.forward_t(images, false)?;
        Ok(vec![cls, reg])
    }

    fn predict(&self, batch: &Batch) -> Result<Vec<Prediction>> {
        let dets = self.0.predict(&batch.images, &batch.info)?;
        Ok(dets.into_iter().map(Prediction::Boxes).collect())
    }

    fn evaluate(&self, data: &EvalData) -> Result<Metrics> {
        let names = data.dataset.class_names();
        let mut preds = Vec::new();
        let mut gt = CocoFile::from_samples(&[], &names);
        data.for_each(|originals, batch| {
            let dets = self.0.predict(&batch.images, &batch.info)?;
            for (s, d) in originals.iter().zip(dets) {
                preds.push((s.image_id, d));
            }
            // ground truth in original coordinates
            let part = CocoFile::from_samples(originals, &names);
            let first = gt.annotations.len() as u64;
            gt.images.extend(part.images);
            gt.annotations
                .extend(part.annotations.into_iter().map(|mut a| {
                    a.id += first;
                    a
                }));
            Ok(())
        })?;
        let mut ev = CocoEval::new(&gt);
        for (id, d) in preds {
            let b: Vec<[f32; 4]> = d.iter().map(|x| x.bbox).collect();
            let c: Vec<u32> = d.iter().map(|x| x.class).collect();
            let s: Vec<f32> = d.iter().map(|x| x.score).collect();
            ev.add_xyxy(id, &b, &c, &s)?;
        }
        let r = ev.evaluate()?;
        let mut out = Metrics::default();
        for (n, v) in STAT_NAMES.iter().zip(r.stats) {
            out.values.insert(n.to_string(), v.max(0.0));
        }
        out.primary = r.stats[0].max(0.0);
        Ok(out)
    }

    fn pseudo_label(
        &self,
        v: &PseudoViews,
        opts: &PseudoOptions,
        _out: &Path,
    ) -> Result<PseudoLabels> {
        let n = v.originals.len();
        // (class, box in original coordinates, score) of every view
        let mut all: Vec<Vec<(usize, [f32; 4], f32)>> = vec![Vec::new(); n];
        for (batch, flip) in &v.views {
            let dets = self.0.predict(&batch.images, &batch.info)?;
            for (k, d) in dets.into_iter().enumerate() {
                let w = v.originals[k].width() as f32;
                for x in d {
                    let b = if *flip {
                        [w - x.bbox[2], x.bbox[1], w - x.bbox[0], x.bbox[3]]
                    } else {
                        x.bbox
                    };
                    all[k].push((x.class as usize, b, x.score));
                }
            }
        }
        let keep_from = opts.keep_from.min(opts.score_threshold);
        let mut out = PseudoLabels::default();
        for (k, dets) in all.into_iter().enumerate() {
            let boxes: Vec<[f32; 4]> = dets.iter().map(|d| d.1).collect();
            let scores: Vec<f32> = dets.iter().map(|d| d.2).collect();
            let classes: Vec<usize> = dets.iter().map(|d| d.0).collect();
            // the views' boxes merged as one set
            let keep = if v.views.len() > 1 {
                batched_nms(&boxes, &scores, &classes, self.0.config.post.nms_iou)
            } else {
                (0..dets.len()).collect()
            };
            let id = v.originals[k].image_id;
            for j in keep.into_iter().filter(|&j| scores[j] as f64 >= keep_from) {
                let cat = classes[j] as u64 + 1;
                out.detections
                    .push(CocoDetection::from_xyxy(id, cat, boxes[j], scores[j]));
            }
        }
        Ok(out)
    }
}
