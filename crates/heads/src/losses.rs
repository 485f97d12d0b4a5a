//! Losses: sigmoid focal loss and Huber loss (the paper's RetinaNet), and softmax
//! cross-entropy with an ignore label for segmentation.
use candle_core::{DType, Result, Tensor, D};

/// Sigmoid focal loss summed over all elements (torchvision's `sigmoid_focal_loss`,
/// reduction "sum"), in the numerically stable form.
pub fn sigmoid_focal_loss(
    logits: &Tensor,
    targets: &Tensor,
    alpha: f64,
    gamma: f64,
) -> Result<Tensor> {
    let mut rows = logits.dims().to_vec();
    if let Some(k) = rows.last_mut() {
        *k = 1;
    }
    let ones = Tensor::ones(rows, logits.dtype(), logits.device())?;
    weighted_focal_loss(logits, targets, &ones, alpha, gamma)
}

/// Sigmoid focal loss summed, each element weighted by `weight` (any shape that broadcasts
/// to the logits; one value per row of classes takes the fused op on CPU).
pub fn weighted_focal_loss(
    logits: &Tensor,
    targets: &Tensor,
    weight: &Tensor,
    alpha: f64,
    gamma: f64,
) -> Result<Tensor> {
    let k = logits.dims().last().copied().unwrap_or(1);
    if weight.elem_count() * k == logits.elem_count() && weight.dims().last() == Some(&1) {
        if let Some(s) =
            pupil_ops::focal::weighted_focal_sum(logits, targets, weight, alpha, gamma)?
        {
            return Ok(s);
        }
    }
    focal_elements(logits, targets, alpha, gamma)?
        .broadcast_mul(weight)?
        .sum_all()
}

/// Per-element focal loss.
pub fn focal_elements(logits: &Tensor, targets: &Tensor, alpha: f64, gamma: f64) -> Result<Tensor> {
    let x = logits;
    let t = targets;
    // BCE with logits: max(x, 0) - x t + ln(1 + exp(-|x|))
    let ce = ((x.relu()? - (x * t)?)? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let p = pupil_nn::sigmoid(x)?;
    let one_minus_t = (t.neg()? + 1.0)?;
    let p_t = ((&p * t)? + ((p.neg()? + 1.0)? * &one_minus_t)?)?;
    let modulator = (p_t.neg()? + 1.0)?.relu()?.powf(gamma)?;
    let alpha_t = ((t * alpha)? + (one_minus_t * (1.0 - alpha))?)?;
    (ce * modulator)? * alpha_t
}

/// Huber loss summed: `0.5 d^2` for |d| < delta, else `delta (|d| - delta / 2)`.
pub fn huber_loss(pred: &Tensor, target: &Tensor, delta: f64) -> Result<Tensor> {
    huber_elements(pred, target, delta)?.sum_all()
}

pub fn huber_elements(pred: &Tensor, target: &Tensor, delta: f64) -> Result<Tensor> {
    let a = (pred - target)?.abs()?;
    let q = a.minimum(delta)?;
    (q.sqr()? * 0.5)? + ((a - &q)? * delta)?
}

/// Mean softmax cross-entropy over the pixels whose label is not `ignore`.
/// `logits` [B, K, H, W], `labels` [B, H, W] (u8 or integer). Returns 0 when every pixel is
/// ignored.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor, ignore: u32) -> Result<Tensor> {
    let lab: Vec<u32> = labels.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
    let lab = std::sync::Arc::new(lab);
    let n_valid = lab.iter().filter(|&&l| l != ignore).count();
    // both forms check the labels against the classes
    let sum = match pupil_ops::xent::softmax_xent_sum(logits, &lab, ignore)? {
        Some(sum) => sum,
        None => composed_xent_sum(logits, &lab, ignore)?,
    };
    sum / n_valid.max(1) as f64
}

/// The cross-entropy sum in candle's ops (devices without the fused op).
fn composed_xent_sum(logits: &Tensor, lab: &[u32], ignore: u32) -> Result<Tensor> {
    let (b, k, h, w) = logits.dims4()?;
    if let Some(&bad) = lab.iter().find(|&&l| l != ignore && l as usize >= k) {
        candle_core::bail!("label {bad} out of range for {k} classes")
    }
    let lp = pupil_ops::log_softmax_last_dim(
        &logits
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((b * h * w, k))?,
    )?;
    let valid: Vec<f32> = lab
        .iter()
        .map(|&l| if l == ignore { 0.0 } else { 1.0 })
        .collect();
    let idx: Vec<u32> = lab
        .iter()
        .map(|&l| if l == ignore { 0 } else { l })
        .collect();
    let dev = logits.device();
    let idx = Tensor::from_vec(idx, (b * h * w, 1), dev)?;
    let picked = lp.gather(&idx, D::Minus1)?.squeeze(D::Minus1)?;
    let mask = Tensor::from_vec(valid, b * h * w, dev)?.to_dtype(picked.dtype())?;
    (picked * mask)?.sum_all()?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_cross_entropy_matches_the_composed_form() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 3.0, (2, 4, 5, 6), &dev).unwrap();
        let lab: Vec<u32> = (0..60)
            .map(|i| if i % 5 == 0 { 255 } else { i % 4 })
            .collect();
        let labels = Tensor::from_vec(lab.clone(), (2, 5, 6), &dev).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let fused = softmax_cross_entropy(v.as_tensor(), &labels, 255).unwrap();
        let composed = (composed_xent_sum(v.as_tensor(), &lab, 255).unwrap() / 48.0).unwrap();
        let (a, b) = (
            fused.to_scalar::<f64>().unwrap(),
            composed.to_scalar::<f64>().unwrap(),
        );
        assert!((a - b).abs() < 1e-10, "{a} vs {b}");
        let ga = fused.backward().unwrap();
        let gb = composed.backward().unwrap();
        let (ga, gb) = (
            ga.get(v.as_tensor()).unwrap(),
            gb.get(v.as_tensor()).unwrap(),
        );
        let d = (ga - gb).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
    }

    #[test]
    fn fused_weighted_focal_loss_matches_the_composed_form() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 2.0, (2, 50, 4), &dev).unwrap();
        let t = Tensor::randn(0f64, 1.0, (2, 50, 4), &dev)
            .unwrap()
            .gt(1.0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let w: Vec<f64> = (0..100).map(|i| (i % 3) as f64 / 2.0).collect();
        let w = Tensor::from_vec(w, (2, 50, 1), &dev).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let fused = weighted_focal_loss(v.as_tensor(), &t, &w, 0.25, 1.5).unwrap();
        let composed = focal_elements(v.as_tensor(), &t, 0.25, 1.5)
            .unwrap()
            .broadcast_mul(&w)
            .unwrap()
            .sum_all()
            .unwrap();
        let (a, b) = (
            fused.to_scalar::<f64>().unwrap(),
            composed.to_scalar::<f64>().unwrap(),
        );
        assert!((a - b).abs() < 1e-9 * b.abs(), "{a} vs {b}");
        let ga = fused.backward().unwrap();
        let gb = composed.backward().unwrap();
        let flat = |g: &candle_core::backprop::GradStore| -> Vec<f64> {
            g.get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (p, q) in flat(&ga).iter().zip(flat(&gb)) {
            assert!((p - q).abs() < 1e-9 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }
}
