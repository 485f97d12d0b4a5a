//! Fused SGD for f32 tensors on CPU. A guarded momentum step written with tensor ops reads
//! and writes each parameter about fifteen times and launches as many ops per tensor (on a
//! model of 300 small tensors that is 4,500 ops a step); here one read pass gathers what the
//! guards need and two in-place passes apply the update. Tensors below `PAR_MIN` elements
//! run on the calling thread: splitting them costs more in pool wake-ups than it saves.
use crate::par::{for_chunks_init, for_ranges};
use candle_core::{
    bail, CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Storage, Tensor,
};
use std::sync::Mutex;

const PAR_MIN: usize = 1 << 16;
const CHUNK: usize = 1 << 14;

/// What the guards of one tensor's step need, with `d = g + wd * w` (the decayed gradient).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// sum of d^2, accumulated in f64
    pub sumsq: f64,
    /// max |d|
    pub max_d: f64,
    /// max |momentum buffer| (0 without one)
    pub max_buf: f64,
    /// max |w|
    pub max_w: f64,
}

impl StepStats {
    fn merge(self, o: StepStats) -> StepStats {
        StepStats {
            sumsq: self.sumsq + o.sumsq,
            max_d: self.max_d.max(o.max_d),
            max_buf: self.max_buf.max(o.max_buf),
            max_w: self.max_w.max(o.max_w),
        }
    }
}

/// True when the fused kernels take this parameter: an f32 CPU tensor laid out
/// contiguously (the gradient is made contiguous by the callers here).
pub fn fusable(w: &Tensor, g: &Tensor) -> bool {
    w.device().is_cpu()
        && w.dtype() == DType::F32
        && g.dtype() == DType::F32
        && w.is_contiguous()
        && w.dims() == g.dims()
}

fn max_abs_nan(m: f32, x: f32) -> f32 {
    // NaN must win (f32::max would drop it) so the caller's finiteness guard sees it.
    if x.is_nan() || m.is_nan() {
        f32::NAN
    } else {
        m.max(x.abs())
    }
}

#[inline(always)]
fn stats_range(w: &[f32], g: &[f32], b: Option<&[f32]>, wd: f32) -> StepStats {
    let n = w.len().min(g.len());
    let (w, g) = (&w[..n], &g[..n]);
    // eight independent lanes: one running f64 sum is a chain of dependent adds
    let (mut sq, mut md, mut mw) = ([0f64; 8], [0f32; 8], [0f32; 8]);
    for (wc, gc) in w.chunks_exact(8).zip(g.chunks_exact(8)) {
        for k in 0..8 {
            let d = gc[k] + wd * wc[k];
            sq[k] += (d as f64) * (d as f64);
            md[k] = max_abs_nan(md[k], d);
            mw[k] = max_abs_nan(mw[k], wc[k]);
        }
    }
    let mut sum = ((sq[0] + sq[4]) + (sq[1] + sq[5])) + ((sq[2] + sq[6]) + (sq[3] + sq[7]));
    let (mut d_max, mut w_max) = (0f32, 0f32);
    for k in 0..8 {
        d_max = max_abs_nan(d_max, md[k]);
        w_max = max_abs_nan(w_max, mw[k]);
    }
    for i in n / 8 * 8..n {
        let d = g[i] + wd * w[i];
        sum += (d as f64) * (d as f64);
        d_max = max_abs_nan(d_max, d);
        w_max = max_abs_nan(w_max, w[i]);
    }
    let mut mb = 0f32;
    if let Some(b) = b {
        for &x in b {
            mb = max_abs_nan(mb, x);
        }
    }
    StepStats {
        sumsq: sum,
        max_d: d_max as f64,
        max_buf: mb as f64,
        max_w: w_max as f64,
    }
}

fn cpu_f32<'a>(s: &'a Storage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let Storage::Cpu(c) = s else {
        bail!("fused sgd: {what} must be a CPU tensor")
    };
    src_slice(c, l, what)
}

/// The guard statistics of one parameter `w` with gradient `g`, weight decay `wd` and its
/// momentum buffer, in one read of each.
pub fn step_stats(w: &Tensor, g: &Tensor, buf: Option<&Tensor>, wd: f64) -> Result<StepStats> {
    if !fusable(w, g) {
        bail!("fused sgd: needs f32 CPU tensors of one shape")
    }
    let g = g.contiguous()?;
    let (ws, wl) = w.storage_and_layout();
    let (gs, gl) = g.storage_and_layout();
    let wv = cpu_f32(&ws, wl, "weight")?;
    let gv = cpu_f32(&gs, gl, "gradient")?;
    let bguard = buf.map(|b| b.storage_and_layout());
    let bv = match &bguard {
        Some((s, l)) => {
            let v = cpu_f32(s, l, "momentum buffer")?;
            if v.len() != wv.len() {
                bail!(
                    "fused sgd: momentum buffer has {} elements, weight {}",
                    v.len(),
                    wv.len()
                )
            }
            Some(v)
        }
        None => None,
    };
    let wd = wd as f32;
    let n = wv.len();
    if n < PAR_MIN {
        return Ok(crate::simd::wide(|| stats_range(wv, gv, bv, wd)));
    }
    let parts = Mutex::new(Vec::new());
    for_ranges(
        n.div_ceil(CHUNK),
        #[inline(always)]
        |r| {
            let (a, b) = (r.start * CHUNK, (r.end * CHUNK).min(n));
            let s = stats_range(&wv[a..b], &gv[a..b], bv.map(|v| &v[a..b]), wd);
            parts.lock().unwrap_or_else(|e| e.into_inner()).push((a, s));
        },
    );
    let mut parts = parts.into_inner().unwrap_or_else(|e| e.into_inner());
    // merged in element order, not in the order the threads finished
    parts.sort_by_key(|p| p.0);
    Ok(parts
        .into_iter()
        .map(|p| p.1)
        .fold(StepStats::default(), StepStats::merge))
}

/// `buf = momentum * buf + scale * (g + wd * w)`, in place on `buf`.
#[derive(Clone, Copy)]
struct Velocity {
    wd: f32,
    scale: f32,
    momentum: f32,
}

/// `w -= lr * buf`, in place on `w`.
struct Descend {
    lr: f32,
}

fn apply(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() < PAR_MIN {
        crate::simd::wide(|| f(0, out));
    } else {
        for_chunks_init(
            out,
            CHUNK,
            || (),
            #[inline(always)]
            |_, i, piece| f(i * CHUNK, piece),
        );
    }
}

/// The element range of a contiguous layout.
fn span(l: &Layout, what: &str) -> Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => bail!("fused sgd: {what} must be contiguous"),
    }
}

fn dst_slice<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("fused sgd: {what} must be f32")
    };
    Ok(&mut v[span(l, what)?])
}

fn src_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("fused sgd: {what} must be f32")
    };
    Ok(&v[span(l, what)?])
}

impl InplaceOp3 for Velocity {
    fn name(&self) -> &'static str {
        "sgd-velocity"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<()> {
        let b = dst_slice(dst, dst_l, "momentum buffer")?;
        let g = src_slice(gs, gl, "gradient")?;
        let w = src_slice(ws, wl, "weight")?;
        if g.len() != b.len() || w.len() != b.len() {
            bail!("fused sgd: buffer, gradient and weight differ in size")
        }
        let Velocity {
            wd,
            scale,
            momentum,
        } = *self;
        apply(b, |at, piece| {
            for (j, x) in piece.iter_mut().enumerate() {
                let k = at + j;
                *x = momentum * *x + scale * (g[k] + wd * w[k]);
            }
        });
        Ok(())
    }
}

impl InplaceOp2 for Descend {
    fn name(&self) -> &'static str {
        "sgd-descend"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<()> {
        let w = dst_slice(dst, dst_l, "weight")?;
        let v = src_slice(vs, vl, "momentum buffer")?;
        if v.len() != w.len() {
            bail!("fused sgd: buffer and weight differ in size")
        }
        let lr = self.lr;
        apply(w, |at, piece| {
            for (j, x) in piece.iter_mut().enumerate() {
                *x -= lr * v[at + j];
            }
        });
        Ok(())
    }
}

/// One momentum step in place: `buf = momentum * buf + scale * (g + wd * w)`, then
/// `w -= lr * buf`. `buf` must be a tensor of its own (not sharing storage with `w` or `g`).
#[allow(clippy::too_many_arguments)]
pub fn step_update(
    w: &Tensor,
    g: &Tensor,
    buf: &Tensor,
    wd: f64,
    scale: f64,
    momentum: f64,
    lr: f64,
) -> Result<()> {
    if !fusable(w, g) || !buf.is_contiguous() || buf.dims() != w.dims() {
        bail!("fused sgd: needs contiguous f32 CPU tensors of one shape")
    }
    let g = g.contiguous()?;
    buf.inplace_op3(
        &g,
        w,
        &Velocity {
            wd: wd as f32,
            scale: scale as f32,
            momentum: momentum as f32,
        },
    )?;
    w.inplace_op2(buf, &Descend { lr: lr as f32 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn stats_and_update_follow_the_formulas() {
        let w = t(&[1.0, -2.0, 3.0]);
        let g = t(&[0.5, 0.5, -1.0]);
        let b = t(&[0.1, -4.0, 0.0]);
        let s = step_stats(&w, &g, Some(&b), 0.1).unwrap();
        // d = g + 0.1 w = [0.6, 0.3, -0.7]
        assert!((s.sumsq - (0.36 + 0.09 + 0.49)).abs() < 1e-6, "{s:?}");
        assert!((s.max_d - 0.7).abs() < 1e-6 && s.max_buf == 4.0 && s.max_w == 3.0);
        step_update(&w, &g, &b, 0.1, 0.5, 0.9, 2.0).unwrap();
        // buf = 0.9 b + 0.5 d = [0.39, -3.45, -0.35]; w - 2 buf
        let bv = b.to_vec1::<f32>().unwrap();
        let wv = w.to_vec1::<f32>().unwrap();
        for (x, y) in bv.iter().zip([0.39, -3.45, -0.35]) {
            assert!((x - y).abs() < 1e-6, "{bv:?}");
        }
        for (x, y) in wv.iter().zip([0.22, 4.9, 3.7]) {
            assert!((x - y).abs() < 1e-5, "{wv:?}");
        }
    }

    #[test]
    fn large_tensors_split_across_the_pool_give_the_same_numbers() {
        let n = 3 * PAR_MIN + 123;
        let w = Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap();
        let g = Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap();
        let (wv, gv, bv) = (
            w.to_vec1::<f32>().unwrap(),
            g.to_vec1::<f32>().unwrap(),
            b.to_vec1::<f32>().unwrap(),
        );
        let s = step_stats(&w, &g, Some(&b), 0.01).unwrap();
        let whole = stats_range(&wv, &gv, Some(&bv), 0.01);
        assert!((s.sumsq - whole.sumsq).abs() < 1e-9 * whole.sumsq);
        assert_eq!(
            (s.max_d, s.max_buf, s.max_w),
            (whole.max_d, whole.max_buf, whole.max_w)
        );
        step_update(&w, &g, &b, 0.01, 1.0, 0.9, 0.1).unwrap();
        let (w2, b2) = (w.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        for i in [0, PAR_MIN - 1, PAR_MIN, n - 1] {
            let v = 0.9 * bv[i] + (gv[i] + 0.01 * wv[i]);
            assert_eq!(b2[i], v);
            assert_eq!(w2[i], wv[i] - 0.1 * v);
        }
    }

    #[test]
    fn a_nan_shows_in_the_statistics_and_bad_inputs_are_refused() {
        let s = step_stats(&t(&[1.0, 2.0]), &t(&[f32::NAN, 0.0]), None, 0.0).unwrap();
        assert!(s.sumsq.is_nan() && s.max_d.is_nan());
        let f64w = Tensor::new(&[1f64], &Device::Cpu).unwrap();
        assert!(!fusable(&f64w, &f64w));
        assert!(step_stats(&t(&[1.0]), &t(&[1.0, 2.0]), None, 0.0).is_err());
        let b = t(&[0.0, 0.0]);
        assert!(step_update(&t(&[1.0]), &t(&[1.0]), &b, 0.0, 1.0, 0.9, 0.1).is_err());
    }
}
