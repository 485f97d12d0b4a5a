//! The segmenter's softmax cross-entropy over class planes as one op on CPU: the composed
//! form (channels-last copy, log-softmax, gather, mask) keeps three tensors the size of the
//! upsampled logits alive through the backward and makes three more in it.
use crate::fused::{slice, Real};
use crate::par;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use std::sync::Arc;

/// Pixels per task of the per-pixel pass.
const PIXELS: usize = 4096;

/// Logits [B, K, H, W] (contiguous), a label per pixel; `ignore` marks pixels left out.
struct Xent {
    labels: Arc<Vec<u32>>,
    ignore: u32,
    /// With `Some(scale)` the op is `scale` times the gradient of the sum in the logits.
    grad: Option<f64>,
}

/// log-sum-exp over the K planes of every pixel, [B * H * W], in f64.
fn log_sum_exp<T: Real>(x: &[T], k: usize, hw: usize) -> Vec<f64> {
    let mut lse = vec![0f64; x.len() / k.max(1)];
    // image by image, so that a chunk of pixels reads one contiguous run of each plane
    for (b, img) in lse.chunks_mut(hw.max(1)).enumerate() {
        par::for_chunks(
            img,
            PIXELS,
            #[inline(always)]
            |i, out| {
                let n = out.len();
                let plane = |c: usize| &x[(b * k + c) * hw + i * PIXELS..][..n];
                let mut m = vec![f64::NEG_INFINITY; n];
                for c in 0..k {
                    for (mj, &v) in m.iter_mut().zip(plane(c)) {
                        *mj = mj.max(v.to());
                    }
                }
                out.fill(0.0);
                for c in 0..k {
                    for ((o, &v), &mj) in out.iter_mut().zip(plane(c)).zip(&m) {
                        *o += (v.to() - mj).exp();
                    }
                }
                for (o, &mj) in out.iter_mut().zip(&m) {
                    *o = o.ln() + mj;
                }
            },
        );
    }
    lse
}

fn fwd<T: Real>(x: &[T], op: &Xent, k: usize, hw: usize) -> f64 {
    let lse = log_sum_exp(x, k, hw);
    let parts = par::map(
        lse.len().div_ceil(PIXELS),
        #[inline(always)]
        |i| {
            let mut s = 0f64;
            for p in i * PIXELS..((i + 1) * PIXELS).min(lse.len()) {
                let l = op.labels[p];
                if l != op.ignore {
                    s += lse[p] - x[(p / hw * k + l as usize) * hw + p % hw].to();
                }
            }
            s
        },
    );
    parts.iter().sum()
}

fn bwd<T: Real>(x: &[T], op: &Xent, k: usize, hw: usize, scale: f64) -> Vec<T> {
    let lse = log_sum_exp(x, k, hw);
    let mut dx = vec![T::f(0.0); x.len()];
    // one task per class plane of one image: softmax minus the one-hot label
    par::for_chunks(
        &mut dx,
        hw,
        #[inline(always)]
        |plane, out| {
            let (b, c) = (plane / k, (plane % k) as u32);
            let xs = &x[plane * hw..][..hw];
            let (labels, lse) = (&op.labels[b * hw..][..hw], &lse[b * hw..][..hw]);
            for (j, o) in out.iter_mut().enumerate() {
                let l = labels[j];
                if l == op.ignore {
                    continue;
                }
                let p = (xs[j].to() - lse[j]).exp();
                *o = T::f(scale * (p - if l == c { 1.0 } else { 0.0 }));
            }
        },
    );
    dx
}

impl CustomOp1 for Xent {
    fn name(&self) -> &'static str {
        match self.grad {
            None => "pupil-softmax-xent-sum",
            Some(_) => "pupil-softmax-xent-grad",
        }
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, k, h, w) = l.shape().dims4()?;
        fn go<T: Real>(x: &[T], op: &Xent, k: usize, hw: usize) -> Vec<T> {
            match op.grad {
                None => vec![T::f(fwd(x, op, k, hw))],
                Some(scale) => bwd(x, op, k, hw, scale),
            }
        }
        let out = match s.dtype() {
            DType::F32 => CpuStorage::F32(go::<f32>(slice(s, l)?, self, k, h * w)),
            DType::F64 => CpuStorage::F64(go::<f64>(slice(s, l)?, self, k, h * w)),
            d => candle_core::bail!("cross-entropy: unsupported dtype {d:?}"),
        };
        let shape = match self.grad {
            None => Shape::from(()),
            Some(_) => l.shape().clone(),
        };
        Ok((out, shape))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let op = Xent {
            labels: self.labels.clone(),
            ignore: self.ignore,
            grad: Some(dy.to_dtype(DType::F64)?.to_scalar::<f64>()?),
        };
        Ok(Some(x.apply_op1_no_bwd(&op)?))
    }
}

/// `sum over pixels whose label is not ignore of -log softmax(x)[label]`, for logits `x`
/// [B, K, H, W] and one label per pixel (B * H * W, row-major). One op on CPU in f32 / f64
/// (the per-pixel arithmetic in f64); `None` elsewhere, for the caller's composed form.
/// Labels must be below K or equal to `ignore`.
pub fn softmax_xent_sum(x: &Tensor, labels: &Arc<Vec<u32>>, ignore: u32) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Ok(None);
    }
    let (b, k, h, w) = x.dims4()?;
    if labels.len() != b * h * w {
        candle_core::bail!(
            "cross-entropy: {} labels for logits {:?}",
            labels.len(),
            x.shape()
        )
    }
    if let Some(&bad) = labels.iter().find(|&&l| l != ignore && l as usize >= k) {
        candle_core::bail!("cross-entropy: label {bad} out of range for {k} classes")
    }
    let op = Xent {
        labels: labels.clone(),
        ignore,
        grad: None,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// -log softmax, written out per pixel.
    fn reference(
        xv: &[f64],
        labels: &[u32],
        (b, k, hw): (usize, usize, usize),
        ignore: u32,
    ) -> f64 {
        let mut s = 0.0;
        for i in 0..b {
            for p in 0..hw {
                let l = labels[i * hw + p];
                if l == ignore {
                    continue;
                }
                let z: Vec<f64> = (0..k).map(|c| xv[(i * k + c) * hw + p]).collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = z.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
                s += lse - z[l as usize];
            }
        }
        s
    }

    #[test]
    fn xent_sum_matches_the_formula_and_finite_differences() {
        let dev = Device::Cpu;
        // 40 x 120 pixels: two chunks of PIXELS per image, the last one short
        for (b, k, h, w) in [(2, 5, 9, 7), (3, 3, 40, 120)] {
            let x = Tensor::randn(0f64, 4.0, (b, k, h, w), &dev).unwrap();
            let labels: Arc<Vec<u32>> = Arc::new(
                (0..b * h * w)
                    .map(|i| if i % 4 == 3 { 255 } else { (i * 7 % k) as u32 })
                    .collect(),
            );
            let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
            let want = reference(&xv, &labels, (b, k, h * w), 255);
            let got = softmax_xent_sum(&x, &labels, 255)
                .unwrap()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(
                (got - want).abs() < 1e-9 * want.abs().max(1.0),
                "{got} vs {want}"
            );
            if b == 2 {
                let loss = |x: &Tensor| -> Result<Tensor> {
                    Ok((softmax_xent_sum(x, &labels, 255)?.expect("cpu") * 0.5)?)
                };
                crate::fused::tests::fd_check(&loss, &x, 1e-5);
            }
            let x32 = x.to_dtype(DType::F32).unwrap();
            let g32 = softmax_xent_sum(&x32, &labels, 255).unwrap().unwrap();
            let g32 = g32.to_scalar::<f32>().unwrap() as f64;
            assert!((g32 - want).abs() < 1e-4 * want.abs().max(1.0));
        }
    }

    #[test]
    fn xent_rejects_bad_labels_and_shapes() {
        let x = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let l = |v: &[u32]| Arc::new(v.to_vec());
        let e = softmax_xent_sum(&x, &l(&[0, 1, 2, 3]), 255).unwrap_err();
        assert!(e.to_string().contains("label 3 out of range"), "{e}");
        let e = softmax_xent_sum(&x, &l(&[0, 1]), 255).unwrap_err();
        assert!(e.to_string().contains("2 labels"), "{e}");
        assert!(softmax_xent_sum(&x, &l(&[0, 255, 2, 1]), 255).is_ok());
    }
}
