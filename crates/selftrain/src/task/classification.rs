//! Classification (backbone pre-training): softmax cross-entropy and top-1 accuracy.
use super::{EvalData, Metrics, Prediction, PseudoLabels, PseudoOptions, PseudoViews, Task};
use crate::config::TaskKind;
use crate::error::{bail, Error, Result};
use candle_core::{Tensor, D};
use pupil_backbones::AnyBackbone;
use pupil_data::batch::Batch;
use pupil_nn::Classifier;
use std::path::Path;

pub struct ClassificationTask(AnyBackbone);

impl ClassificationTask {
    /// A backbone with a classification head.
    pub fn new(backbone: AnyBackbone) -> Result<Self> {
        if backbone.classifier().is_none() {
            bail!("classification needs a backbone with a classification head (num_classes > 0)")
        }
        Ok(ClassificationTask(backbone))
    }

    fn head(&self) -> Result<&dyn Classifier> {
        self.0
            .classifier()
            .ok_or_else(|| Error::msg("no classification head"))
    }
}

impl Task for ClassificationTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Classification
    }

    fn loss(&self, batch: &Batch, train: bool) -> Result<(Tensor, Vec<(String, f64)>)> {
        let logits = self.head()?.logits_t(&batch.images, train)?;
        let labels: Vec<u32> = batch
            .classes
            .to_vec2::<i64>()?
            .iter()
            .map(|r| r[0].max(0) as u32)
            .collect();
        let n = labels.len();
        let lp = pupil_ops::log_softmax_last_dim(&logits)?;
        let idx = Tensor::from_vec(labels, (n, 1), logits.device())?;
        let loss = (lp.gather(&idx, D::Minus1)?.sum_all()?.neg()? / n as f64)?;
        Ok((loss, vec![]))
    }

    fn forward(&self, images: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![self.head()?.logits_t(images, false)?])
    }

    fn predict(&self, batch: &Batch) -> Result<Vec<Prediction>> {
        let logits = self.head()?.logits_t(&batch.images, false)?;
        let probs = pupil_ops::softmax_last_dim(&logits.to_dtype(candle_core::DType::F32)?)?;
        let class: Vec<u32> = probs.argmax(D::Minus1)?.to_vec1()?;
        let best: Vec<f32> = probs.max(D::Minus1)?.to_vec1()?;
        Ok(class
            .into_iter()
            .zip(best)
            .map(|(class, score)| Prediction::Class { class, score })
            .collect())
    }

    fn evaluate(&self, data: &EvalData) -> Result<Metrics> {
        let head = self.head()?;
        let (mut right, mut n) = (0usize, 0usize);
        data.for_each(|samples, batch| {
            let pred: Vec<u32> = head
                .logits_t(&batch.images, false)?
                .argmax(D::Minus1)?
                .to_vec1()?;
            for (s, p) in samples.iter().zip(pred) {
                right += (s.classes[0] == p) as usize;
                n += 1;
            }
            Ok(())
        })?;
        let mut out = Metrics {
            primary: right as f64 / n.max(1) as f64,
            ..Default::default()
        };
        out.values.insert("top1".into(), out.primary);
        Ok(out)
    }

    fn pseudo_label(&self, _: &PseudoViews, _: &PseudoOptions, _: &Path) -> Result<PseudoLabels> {
        bail!("pseudo-labeling needs a detector or a segmenter, not a classifier")
    }
}
