//! The sigmoid focal loss of a detector's class outputs, summed with per-row weights, as one
//! op on CPU: the composed form keeps a dozen tensors the size of (anchors x classes) alive
//! until the backward ends and passes over them as many times.
use crate::fused::{slice, Real};
use crate::par;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Clone, Copy)]
struct Focal {
    alpha: f64,
    gamma: f64,
}

/// `(1 - p_t)^gamma` and its derivative in `1 - p_t`, with the common gammas without powf.
#[inline(always)]
fn modulator(q: f64, gamma: f64) -> (f64, f64) {
    if q <= 0.0 {
        // clamped as the composed form's relu; no slope at the clamp
        return (if gamma == 0.0 { 1.0 } else { 0.0 }, 0.0);
    }
    if gamma == 2.0 {
        (q * q, 2.0 * q)
    } else if gamma == 1.5 {
        let s = q.sqrt();
        (q * s, 1.5 * s)
    } else if gamma == 0.0 {
        (1.0, 0.0)
    } else {
        let m = q.powf(gamma);
        (m, gamma * m / q)
    }
}

/// Loss of one element and its derivative in the logit.
#[inline(always)]
fn focal_one(x: f64, t: f64, alpha: f64, gamma: f64) -> (f64, f64) {
    // BCE with logits, stable: max(x, 0) - x t + ln(1 + exp(-|x|))
    let e = (-x.abs()).exp();
    let ce = x.max(0.0) - x * t + e.ln_1p();
    let p = if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    let p_t = p * t + (1.0 - p) * (1.0 - t);
    let (m, dm_dq) = modulator(1.0 - p_t, gamma);
    let alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t);
    // dq/dx = -dp_t/dx = -p (1 - p) (2t - 1)
    let dq = -p * (1.0 - p) * (2.0 * t - 1.0);
    (alpha_t * ce * m, alpha_t * ((p - t) * m + ce * dm_dq * dq))
}

const ROWS: usize = 256;

fn fwd<T: Real>(x: &[T], t: &[T], w: &[T], k: usize, f: Focal) -> f64 {
    let rows = w.len();
    let parts = par::map(
        rows.div_ceil(ROWS),
        #[inline(always)]
        |c| {
            let mut s = 0f64;
            for r in c * ROWS..((c + 1) * ROWS).min(rows) {
                let wr = w[r].to();
                if wr == 0.0 {
                    continue;
                }
                let mut row = 0f64;
                for j in r * k..(r + 1) * k {
                    row += focal_one(x[j].to(), t[j].to(), f.alpha, f.gamma).0;
                }
                s += wr * row;
            }
            s
        },
    );
    parts.iter().sum()
}

fn bwd<T: Real>(x: &[T], t: &[T], w: &[T], k: usize, f: Focal, scale: f64) -> Vec<T> {
    let mut dx = vec![T::f(0.0); x.len()];
    par::for_chunks(
        &mut dx,
        ROWS * k,
        #[inline(always)]
        |c, out| {
            for (i, o) in out.chunks_mut(k).enumerate() {
                let r = c * ROWS + i;
                let wr = scale * w[r].to();
                if wr == 0.0 {
                    continue;
                }
                for (j, o) in (r * k..).zip(o) {
                    *o = T::f(wr * focal_one(x[j].to(), t[j].to(), f.alpha, f.gamma).1);
                }
            }
        },
    );
    dx
}

/// [`fwd`]'s sum (the same bits) and the gradient of the sum itself (d loss / d sum = 1),
/// in one pass: the exp and log1p of each element are then paid once per training step.
fn fwd_grad<T: Real>(x: &[T], t: &[T], w: &[T], k: usize, f: Focal) -> (f64, Vec<T>) {
    let rows = w.len();
    let mut dx = vec![T::f(0.0); x.len()];
    let parts: Vec<AtomicU64> = (0..rows.div_ceil(ROWS))
        .map(|_| AtomicU64::new(0))
        .collect();
    par::for_chunks(
        &mut dx,
        ROWS * k,
        #[inline(always)]
        |c, out| {
            let mut s = 0f64;
            for (i, o) in out.chunks_mut(k).enumerate() {
                let r = c * ROWS + i;
                let wr = w[r].to();
                if wr == 0.0 {
                    continue;
                }
                let mut row = 0f64;
                for (j, o) in (r * k..).zip(o) {
                    let (l, d) = focal_one(x[j].to(), t[j].to(), f.alpha, f.gamma);
                    row += l;
                    *o = T::f(wr * d);
                }
                s += wr * row;
            }
            // each chunk owns its slot, so the sum below runs in chunk order
            parts[c].store(s.to_bits(), Ordering::Relaxed);
        },
    );
    let sum = parts
        .iter()
        .map(|p| f64::from_bits(p.load(Ordering::Relaxed)))
        .sum();
    (sum, dx)
}

/// Inputs (logits, targets, row weights). Without `grad` the op is the weighted sum, a
/// scalar; with `grad` (d loss / d sum) it is that sum's gradient in the logits.
struct FocalOp {
    focal: Focal,
    grad: Option<f64>,
    /// When the logits are tracked, the forward also computes the unscaled gradient and
    /// leaves it here for the backward.
    cache: Option<Mutex<Option<CpuStorage>>>,
}

impl CustomOp3 for FocalOp {
    fn name(&self) -> &'static str {
        match self.grad {
            None => "pupil-focal-sum",
            Some(_) => "pupil-focal-grad",
        }
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        /// The op's output, and the cached gradient when the op keeps one.
        fn go<T: Real>(
            x: &[T],
            t: &[T],
            w: &[T],
            k: usize,
            op: &FocalOp,
        ) -> (Vec<T>, Option<Vec<T>>) {
            match (op.grad, &op.cache) {
                (Some(scale), _) => (bwd(x, t, w, k, op.focal, scale), None),
                (None, Some(_)) => {
                    let (sum, dx) = fwd_grad(x, t, w, k, op.focal);
                    (vec![T::f(sum)], Some(dx))
                }
                (None, None) => (vec![T::f(fwd(x, t, w, k, op.focal))], None),
            }
        }
        let k = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let (out, grad) = match s1.dtype() {
            DType::F32 => {
                let (o, g) = go::<f32>(slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?, k, self);
                (CpuStorage::F32(o), g.map(CpuStorage::F32))
            }
            DType::F64 => {
                let (o, g) = go::<f64>(slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?, k, self);
                (CpuStorage::F64(o), g.map(CpuStorage::F64))
            }
            d => candle_core::bail!("focal loss: unsupported dtype {d:?}"),
        };
        if let (Some(cache), Some(g)) = (&self.cache, grad) {
            *cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(g);
        }
        let shape = match self.grad {
            None => Shape::from(()),
            Some(_) => l1.shape().clone(),
        };
        Ok((out, shape))
    }
    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let scale = dy.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        // targets and weights are data, not parameters: no gradient for them
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(g) = cached {
            fn scaled<T: Real>(mut v: Vec<T>, scale: f64, x: &Tensor) -> Result<Tensor> {
                v.iter_mut().for_each(|e| *e = T::f(scale * e.to()));
                Tensor::from_vec(v, x.shape(), x.device())
            }
            let g = match g {
                CpuStorage::F32(v) => scaled(v, scale, x)?,
                CpuStorage::F64(v) => scaled(v, scale, x)?,
                _ => candle_core::bail!("focal loss: cached gradient of an unexpected dtype"),
            };
            return Ok((Some(g), None, None));
        }
        let op = FocalOp {
            focal: self.focal,
            grad: Some(scale),
            cache: None,
        };
        Ok((Some(x.apply_op3_no_bwd(t, w, &op)?), None, None))
    }
}

/// `sum_r w[r] sum_j focal(x[r, j], t[r, j])`: the sigmoid focal loss of logits `x`
/// [..., K] against targets `t` (same shape, in [0, 1]), each row of K weighted by `w`
/// (one value per row: 0 ignores an anchor). One op on CPU in f32 / f64 (the per-element
/// arithmetic in f64); `None` elsewhere, for the caller's composed form. Gradients flow to
/// `x` only.
pub fn weighted_focal_sum(
    x: &Tensor,
    t: &Tensor,
    w: &Tensor,
    alpha: f64,
    gamma: f64,
) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Ok(None);
    }
    let k = x.dims().last().copied().unwrap_or(1);
    if t.shape() != x.shape() || k == 0 || w.elem_count() * k != x.elem_count() {
        candle_core::bail!(
            "focal loss: logits {:?}, targets {:?}, weights {:?}",
            x.shape(),
            t.shape(),
            w.shape()
        )
    }
    if !(gamma >= 0.0) || !alpha.is_finite() {
        candle_core::bail!("focal loss: gamma {gamma} must be >= 0, alpha {alpha} finite")
    }
    let op = FocalOp {
        focal: Focal { alpha, gamma },
        grad: None,
        // a backward will follow only if the logits are tracked
        cache: x.track_op().then(|| Mutex::new(None)),
    };
    let (t, w) = (t.to_dtype(x.dtype())?, w.to_dtype(x.dtype())?);
    Ok(Some(x.contiguous()?.apply_op3(
        &t.contiguous()?.detach(),
        &w.contiguous()?.detach(),
        op,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The composed form, written out independently.
    fn reference(x: f64, t: f64, alpha: f64, gamma: f64) -> f64 {
        let p = 1.0 / (1.0 + (-x).exp());
        let ce = -(t * p.ln() + (1.0 - t) * (1.0 - p).ln());
        let p_t = p * t + (1.0 - p) * (1.0 - t);
        let alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t);
        alpha_t * (1.0 - p_t).max(0.0).powf(gamma) * ce
    }

    #[test]
    fn focal_sum_matches_the_formula_and_finite_differences() {
        let dev = Device::Cpu;
        let (rows, k) = (700, 3);
        let x = Tensor::randn(0f64, 3.0, (rows, k), &dev).unwrap();
        // hard and soft targets; a third of the rows ignored
        let tv: Vec<f64> = (0..rows * k)
            .map(|i| match i % 5 {
                0 => 1.0,
                1 => 0.3,
                _ => 0.0,
            })
            .collect();
        let t = Tensor::from_vec(tv.clone(), (rows, k), &dev).unwrap();
        let wv: Vec<f64> = (0..rows).map(|r| [1.0, 0.0, 2.0][r % 3]).collect();
        let w = Tensor::from_vec(wv.clone(), (rows, 1), &dev).unwrap();
        let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        for gamma in [0.0, 1.0, 1.5, 2.0, 2.5] {
            let want: f64 = (0..rows * k)
                .map(|j| wv[j / k] * reference(xv[j], tv[j], 0.25, gamma))
                .sum();
            let got = weighted_focal_sum(&x, &t, &w, 0.25, gamma)
                .unwrap()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(
                (got - want).abs() < 1e-7 * want.abs().max(1.0),
                "gamma {gamma}: {got} vs {want}"
            );
            let loss = |x: &Tensor| -> Result<Tensor> {
                Ok((weighted_focal_sum(x, &t, &w, 0.25, gamma)?.expect("cpu") * 3.0)?)
            };
            crate::fused::tests::fd_check(&loss, &x, 1e-5);
        }
        // f32 agrees with f64
        let x32 = x.to_dtype(DType::F32).unwrap();
        let a = weighted_focal_sum(&x32, &t, &w, 0.25, 1.5)
            .unwrap()
            .unwrap();
        let b = weighted_focal_sum(&x, &t, &w, 0.25, 1.5).unwrap().unwrap();
        let (a, b) = (
            a.to_scalar::<f32>().unwrap() as f64,
            b.to_scalar::<f64>().unwrap(),
        );
        assert!((a - b).abs() < 1e-5 * b.abs());
        // the gradient the forward cached equals the one the backward recomputes (a second
        // backward of the same graph finds the cache taken)
        let v = candle_core::Var::from_tensor(&x32).unwrap();
        let t32 = t.to_dtype(DType::F32).unwrap();
        let loss = (weighted_focal_sum(v.as_tensor(), &t32, &w, 0.25, 2.0)
            .unwrap()
            .unwrap()
            * 0.5)
            .unwrap();
        let grad = |g: candle_core::backprop::GradStore| -> Vec<f32> {
            g.get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (g1, g2) = (
            grad(loss.backward().unwrap()),
            grad(loss.backward().unwrap()),
        );
        assert!(g1.iter().any(|&e| e != 0.0));
        for (a, b) in g1.iter().zip(&g2) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
        }
        // shapes that do not fit are an error, not a panic
        let bad = Tensor::zeros((rows, k + 1), DType::F64, &dev).unwrap();
        assert!(weighted_focal_sum(&x, &bad, &w, 0.25, 1.5).is_err());
        assert!(weighted_focal_sum(&x, &t, &bad, 0.25, 1.5).is_err());
        assert!(weighted_focal_sum(&x, &t, &w, 0.25, -1.0).is_err());
    }
}
