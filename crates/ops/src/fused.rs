//! Fused CPU kernels for the hottest element-wise pieces of training: batch norm with
//! batch statistics (forward and backward in one pass each, instead of a dozen candle ops),
//! batch norm folded into an affine map with its activation (eval), the squeeze-excite gate
//! and SiLU. Other devices use the composed candle ops.
use crate::par;
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(crate) fn slice<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("fused op: input is not contiguous"),
    }
}

/// The one activation type of pupil: configs name it (`"relu"`, `"swish"`), layers apply
/// it and the fused kernels run it in their own pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    #[default]
    None,
    Relu,
    /// x * sigmoid(x): PyTorch's SiLU, TF's swish (the name configs use).
    #[serde(rename = "swish", alias = "silu")]
    Silu,
}

impl Act {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::Relu => x.relu(),
            Act::Silu => silu(x),
            Act::None => Ok(x.clone()),
        }
    }
}

/// Numeric type the kernels run on.
pub(crate) trait Real:
    candle_core::WithDType
    + Copy
    + Send
    + Sync
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + PartialOrd
{
    fn f(v: f64) -> Self;
    fn to(self) -> f64;
    fn exp_(self) -> Self;
}
impl Real for f32 {
    fn f(v: f64) -> Self {
        v as f32
    }
    fn to(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_(self) -> Self {
        exp_f32(self)
    }
}

/// exp for f32 in plain arithmetic, so loops over it vectorise (libm's expf is a call per
/// element: a third of EfficientNet's inference time went to SiLU). Cephes' polynomial;
/// relative error below 3e-7 on [-87, 88]; clamped outside.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // max/min rather than clamp: NaN maps into range (no UB below), callers keep NaN via x.
    let x = x.max(-87.0).min(88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * C1 - n * C2;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // SAFETY: n is an integer in [-126, 127] after the clamp.
    let e = unsafe { n.to_int_unchecked::<i32>() };
    y * f32::from_bits(((e + 127) as u32) << 23)
}
impl Real for f64 {
    fn f(v: f64) -> Self {
        v
    }
    fn to(self) -> f64 {
        self
    }
    fn exp_(self) -> Self {
        self.exp()
    }
}

/// Folds eight lanes in a fixed order.
#[inline(always)]
fn fold8(a: [f64; 8]) -> f64 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// (sum v, sum v^2) in f64 over eight independent lanes: one running sum is a chain of
/// dependent adds the compiler may not reorder; eight of them vectorise.
#[inline(always)]
fn sum_sumsq<T: Real>(v: &[T]) -> (f64, f64) {
    let (mut s, mut q) = ([0f64; 8], [0f64; 8]);
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            let x = c[k].to();
            s[k] += x;
            q[k] += x * x;
        }
    }
    let (mut s, mut q) = (fold8(s), fold8(q));
    for &x in it.remainder() {
        let x = x.to();
        s += x;
        q += x * x;
    }
    (s, q)
}

/// (sum d, sum d (x - mean)) in f64 over eight lanes, as [`sum_sumsq`].
#[inline(always)]
fn sum_centered_dot<T: Real>(d: &[T], x: &[T], mean: f64) -> (f64, f64) {
    let (mut s, mut q) = ([0f64; 8], [0f64; 8]);
    let mut dc = d.chunks_exact(8);
    let mut xc = x.chunks_exact(8);
    for (a, b) in (&mut dc).zip(&mut xc) {
        for k in 0..8 {
            let v = a[k].to();
            s[k] += v;
            q[k] += v * (b[k].to() - mean);
        }
    }
    let (mut s, mut q) = (fold8(s), fold8(q));
    for (&a, &b) in dc.remainder().iter().zip(xc.remainder()) {
        let v = a.to();
        s += v;
        q += v * (b.to() - mean);
    }
    (s, q)
}

/// Per-channel (mean, biased variance) of an NCHW buffer.
fn moments<T: Real>(x: &[T], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    par::map(
        c,
        #[inline(always)]
        |ch| {
            let (mut s, mut ss) = (0f64, 0f64);
            for b in 0..n {
                let (ps, pss) = sum_sumsq(&x[(b * c + ch) * hw..][..hw]);
                s += ps;
                ss += pss;
            }
            let m = (n * hw) as f64;
            let mean = s / m;
            (mean, (ss / m - mean * mean).max(0.0))
        },
    )
}

/// Per-channel (mean, biased variance) of a contiguous NCHW tensor on CPU.
fn batch_moments(x: &Tensor) -> Result<Vec<(f64, f64)>> {
    let (n, c, h, w) = x.dims4()?;
    let (st, l) = x.storage_and_layout();
    match &*st {
        candle_core::Storage::Cpu(cpu) => match cpu.dtype() {
            DType::F32 => Ok(moments(slice::<f32>(cpu, l)?, n, c, h * w)),
            DType::F64 => Ok(moments(slice::<f64>(cpu, l)?, n, c, h * w)),
            d => candle_core::bail!("batch norm: unsupported dtype {d:?}"),
        },
        _ => candle_core::bail!("batch norm: the fused op runs on CPU"),
    }
}

/// Per-channel (mean, 1 / sqrt(var + eps)) from (mean, variance).
fn inv_std(m: &[(f64, f64)], eps: f64) -> Vec<(f64, f64)> {
    m.iter()
        .map(|&(mu, v)| (mu, 1.0 / (v + eps).sqrt()))
        .collect()
}

/// y = (x - mean) * invstd * gamma + beta with batch statistics; inputs x [N,C,H,W],
/// gamma [C], beta [C].
struct BnTrain {
    act: Act,
    /// Per-channel (mean, 1 / sqrt(var + eps)), computed once for forward and backward.
    stats: Arc<Vec<(f64, f64)>>,
}

fn bn_fwd<T: Real>(
    x: &[T],
    g: &[T],
    b: &[T],
    c: usize,
    hw: usize,
    st: &[(f64, f64)],
    act: Act,
) -> Vec<T> {
    let (s, t) = bn_scale_shift(g, b, st);
    affine_fwd(x, &s, &t, c, hw, act)
}

/// `out = act(x * s + t)` over one plane.
#[inline]
fn affine_plane<T: Real>(out: &mut [T], x: &[T], s: T, t: T, act: Act) {
    match act {
        Act::None => out.iter_mut().zip(x).for_each(|(o, &v)| *o = v * s + t),
        Act::Relu => out
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = relu(v * s + t)),
        Act::Silu => out.iter_mut().zip(x).for_each(|(o, &v)| {
            let z = v * s + t;
            *o = z * sig(z)
        }),
    }
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "pupil-bn-train"
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
        let (_, c, h, w) = l1.shape().dims4()?;
        let out = match s1.dtype() {
            DType::F32 => CpuStorage::F32(bn_fwd(
                slice::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                slice::<f32>(s3, l3)?,
                c,
                h * w,
                &self.stats,
                self.act,
            )),
            DType::F64 => CpuStorage::F64(bn_fwd(
                slice::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                slice::<f64>(s3, l3)?,
                c,
                h * w,
                &self.stats,
                self.act,
            )),
            d => candle_core::bail!("batch norm: unsupported dtype {d:?}"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = x.dim(1)?;
        // gamma and beta travel as one [2C] input: the activation's derivative needs both.
        let gb = Tensor::cat(&[g.detach(), b.detach()], 0)?;
        let packed = x.apply_op3_no_bwd(
            &gb,
            &dy.contiguous()?,
            &BnBackward {
                act: self.act,
                stats: self.stats.clone(),
            },
        )?;
        let dx = packed.narrow(0, 0, x.elem_count())?.reshape(x.shape())?;
        let dg = packed.narrow(0, x.elem_count(), c)?;
        let db = packed.narrow(0, x.elem_count() + c, c)?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

/// Gradients of [`BnTrain`], packed as [dx (flat), dgamma, dbeta].
struct BnBackward {
    act: Act,
    stats: Arc<Vec<(f64, f64)>>,
}

/// `dz = dy * act'(z)` into `d`, z recomputed from x and the statistics; generic over the
/// derivative so it inlines into the loop.
fn through_act<T: Real>(
    d: &mut [T],
    x: &[T],
    dy: &[T],
    (g, beta): (&[T], &[T]),
    (c, hw): (usize, usize),
    st: &[(f64, f64)],
    grad: impl Fn(T) -> T + Sync,
) {
    par::for_chunks(
        d,
        hw,
        #[inline(always)]
        |row, o| {
            let ch = row % c;
            let (mean, inv) = st[ch];
            let scale = inv * g[ch].to();
            let (scale, shift) = (T::f(scale), T::f(beta[ch].to() - mean * scale));
            // zipped slices, not indices: no bounds checks, so the loop vectorises
            let (xs, ds) = (&x[row * hw..][..o.len()], &dy[row * hw..][..o.len()]);
            for ((v, &xv), &d) in o.iter_mut().zip(xs).zip(ds) {
                *v = d * grad(xv * scale + shift);
            }
        },
    );
}

#[allow(clippy::too_many_arguments)]
fn bn_bwd<T: Real>(
    x: &[T],
    gb: &[T],
    dy: &[T],
    n: usize,
    c: usize,
    hw: usize,
    st: &[(f64, f64)],
    act: Act,
) -> Vec<T> {
    let (g, beta) = gb.split_at(c);
    let m = (n * hw) as f64;
    let mut out = vec![T::f(0.0); x.len() + 2 * c];
    let (dx, rest) = out.split_at_mut(x.len());
    // Through the activation first, into dx: dz = dy * act'(z), z recomputed from x;
    // the last pass then rewrites dz into dx in place.
    match act {
        Act::None => dx.copy_from_slice(dy),
        Act::Relu => through_act(dx, x, dy, (g, beta), (c, hw), st, relu_grad),
        Act::Silu => through_act(dx, x, dy, (g, beta), (c, hw), st, silu_grad),
    }
    let dz: &[T] = dx;
    // per channel: sum(dz), sum(dz * (x - mean))
    let sums: Vec<(f64, f64)> = par::map(
        c,
        #[inline(always)]
        |ch| {
            let mean = st[ch].0;
            let (mut sd, mut sdx) = (0f64, 0f64);
            for b in 0..n {
                let o = (b * c + ch) * hw;
                let (a, b) = sum_centered_dot(&dz[o..o + hw], &x[o..o + hw], mean);
                sd += a;
                sdx += b;
            }
            (sd, sdx)
        },
    );
    // dx = g inv (dz - mean(dz) - xhat mean(dz xhat)), with per-channel coefficients so
    // the pass runs in T: dx = p dz + q (x - mean) + r.
    let coef: Vec<(T, T, T, T)> = (0..c)
        .map(|ch| {
            let (mean, inv) = st[ch];
            let (sd, sdx) = sums[ch];
            let k = g[ch].to() * inv;
            let q = -k * inv * inv * sdx / m;
            (T::f(k), T::f(q), T::f(-k * sd / m), T::f(mean))
        })
        .collect();
    par::for_chunks(
        dx,
        hw,
        #[inline(always)]
        |row, o| {
            let (p, q, r, mean) = coef[row % c];
            let xs = &x[row * hw..][..o.len()];
            for (v, &xv) in o.iter_mut().zip(xs) {
                *v = p * *v + q * (xv - mean) + r;
            }
        },
    );
    for ch in 0..c {
        rest[ch] = T::f(sums[ch].1 * st[ch].1);
        rest[c + ch] = T::f(sums[ch].0);
    }
    out
}

impl CustomOp3 for BnBackward {
    fn name(&self) -> &'static str {
        "pupil-bn-train-backward"
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
        let (n, c, h, w) = l1.shape().dims4()?;
        let len = n * c * h * w + 2 * c;
        let out = match s1.dtype() {
            DType::F32 => CpuStorage::F32(bn_bwd(
                slice::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                slice::<f32>(s3, l3)?,
                n,
                c,
                h * w,
                &self.stats,
                self.act,
            )),
            DType::F64 => CpuStorage::F64(bn_bwd(
                slice::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                slice::<f64>(s3, l3)?,
                n,
                c,
                h * w,
                &self.stats,
                self.act,
            )),
            d => candle_core::bail!("batch norm backward: unsupported dtype {d:?}"),
        };
        Ok((out, Shape::from(len)))
    }
}

/// Batch norm with batch statistics; fused on CPU.
pub fn batch_norm_train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(batch_norm_train_act(x, gamma, beta, eps, Act::None)?.0)
}

/// Batch norm with batch statistics followed by `act`, one op: the normalised tensor is
/// never stored (the backward recomputes it), which saves one activation per layer. Also
/// returns the per-channel (mean, biased variance) it normalised with, for running averages.
pub fn batch_norm_train_act(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Vec<(f64, f64)>)> {
    let x = x.contiguous()?;
    let m = batch_moments(&x)?;
    let op = BnTrain {
        act,
        stats: Arc::new(inv_std(&m, eps)),
    };
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    Ok((y, m))
}

struct Silu;
struct SiluBackward;

fn sig<T: Real>(v: T) -> T {
    T::f(1.0) / (T::f(1.0) + (T::f(0.0) - v).exp_())
}

/// d silu(z) / dz.
#[inline]
fn silu_grad<T: Real>(z: T) -> T {
    let s = sig(z);
    s + z * s * (T::f(1.0) - s)
}

#[inline]
fn relu<T: Real>(z: T) -> T {
    if z > T::f(0.0) {
        z
    } else {
        T::f(0.0)
    }
}

/// d relu(z) / dz; the gradient passes at 0, as candle's does.
#[inline]
fn relu_grad<T: Real>(z: T) -> T {
    if z >= T::f(0.0) {
        T::f(1.0)
    } else {
        T::f(0.0)
    }
}

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "pupil-silu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(x: &[T]) -> Vec<T> {
            let mut y = vec![T::f(0.0); x.len()];
            par::for_chunks(
                &mut y,
                4096,
                #[inline(always)]
                |k, o| {
                    let i = &x[k * 4096..][..o.len()];
                    for (a, &b) in o.iter_mut().zip(i) {
                        *a = b * sig(b);
                    }
                },
            );
            y
        }
        let out = match s.dtype() {
            DType::F32 => CpuStorage::F32(go(slice::<f32>(s, l)?)),
            DType::F64 => CpuStorage::F64(go(slice::<f64>(s, l)?)),
            d => candle_core::bail!("silu: unsupported dtype {d:?}"),
        };
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &SiluBackward)?))
    }
}

/// An element-wise map of two inputs of one shape: the one-line backward kernels.
trait Zip2 {
    const NAME: &'static str;
    fn f<T: Real>(a: T, b: T) -> T;
}

fn zip2_cpu<Z: Zip2>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    fn go<T: Real, Z: Zip2>(a: &[T], b: &[T]) -> Vec<T> {
        let mut out = vec![T::f(0.0); a.len()];
        par::for_chunks(
            &mut out,
            4096,
            #[inline(always)]
            |k, o| {
                let (xs, ys) = (&a[k * 4096..][..o.len()], &b[k * 4096..][..o.len()]);
                for ((o, &p), &q) in o.iter_mut().zip(xs).zip(ys) {
                    *o = Z::f(p, q);
                }
            },
        );
        out
    }
    if l1.shape() != l2.shape() {
        candle_core::bail!("{}: {:?} against {:?}", Z::NAME, l1.shape(), l2.shape())
    }
    let out = match s1.dtype() {
        DType::F32 => CpuStorage::F32(go::<f32, Z>(slice(s1, l1)?, slice(s2, l2)?)),
        DType::F64 => CpuStorage::F64(go::<f64, Z>(slice(s1, l1)?, slice(s2, l2)?)),
        d => candle_core::bail!("{}: unsupported dtype {d:?}", Z::NAME),
    };
    Ok((out, l1.shape().clone()))
}

/// Inputs (x, dy): dy * silu'(x).
impl Zip2 for SiluBackward {
    const NAME: &'static str = "pupil-silu-backward";
    #[inline(always)]
    fn f<T: Real>(x: T, dy: T) -> T {
        dy * silu_grad(x)
    }
}

impl CustomOp2 for SiluBackward {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip2_cpu::<Self>(s1, l1, s2, l2)
    }
}

/// x * sigmoid(x); fused on CPU.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        x.contiguous()?.apply_op1(Silu)
    } else {
        x.silu()
    }
}

struct Affine {
    act: Act,
}

fn affine_fwd<T: Real>(x: &[T], a: &[T], b: &[T], c: usize, hw: usize, act: Act) -> Vec<T> {
    let mut y = vec![T::f(0.0); x.len()];
    par::for_chunks(
        &mut y,
        hw,
        #[inline(always)]
        |plane, o| {
            affine_plane(o, &x[plane * hw..][..hw], a[plane % c], b[plane % c], act);
        },
    );
    y
}

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "pupil-affine-act"
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
        let dims = l1.shape().dims();
        let (c, hw) = (dims[1], dims[2..].iter().product::<usize>().max(1));
        let out = match s1.dtype() {
            DType::F32 => CpuStorage::F32(affine_fwd(
                slice::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                slice::<f32>(s3, l3)?,
                c,
                hw,
                self.act,
            )),
            DType::F64 => CpuStorage::F64(affine_fwd(
                slice::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                slice::<f64>(s3, l3)?,
                c,
                hw,
                self.act,
            )),
            d => candle_core::bail!("affine: unsupported dtype {d:?}"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Rare (gradients through eval-mode batch norm): composed ops are enough.
        let (x, a, b, dy) = (&x.detach(), a.detach(), b.detach(), &dy.detach());
        let c = a.dim(0)?;
        let mut bshape = vec![1usize; x.rank()];
        bshape[1] = c;
        let (ar, br) = (a.reshape(bshape.clone())?, b.reshape(bshape)?);
        let dz = match self.act {
            Act::None => dy.clone(),
            Act::Relu => {
                let z = x.broadcast_mul(&ar)?.broadcast_add(&br)?;
                (dy * z.ge(0.0)?.to_dtype(dy.dtype())?)?
            }
            Act::Silu => {
                let z = x.broadcast_mul(&ar)?.broadcast_add(&br)?;
                z.apply_op2_no_bwd(&dy.contiguous()?, &SiluBackward)?
            }
        };
        let reduce = |t: &Tensor| -> Result<Tensor> {
            let t = t.transpose(0, 1)?.contiguous()?;
            t.reshape((c, ()))?.sum(1)
        };
        Ok((
            Some(dz.broadcast_mul(&ar)?),
            Some(reduce(&(&dz * x)?)?),
            Some(reduce(&dz)?),
        ))
    }
}

/// `act(x * a[c] + b[c])` over the channel axis (dim 1) of `x`, in one pass on CPU.
pub fn affine_act(x: &Tensor, a: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    let c = x.dim(1)?;
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        let a = a.to_dtype(x.dtype())?.contiguous()?;
        let b = b.to_dtype(x.dtype())?.contiguous()?;
        if a.elem_count() != c || b.elem_count() != c {
            candle_core::bail!(
                "affine: {c} channels, scale {:?}, shift {:?}",
                a.shape(),
                b.shape()
            )
        }
        return x.contiguous()?.apply_op3(&a, &b, Affine { act });
    }
    let mut shape = vec![1usize; x.rank()];
    shape[1] = c;
    let z = x
        .broadcast_mul(&a.to_dtype(x.dtype())?.reshape(shape.clone())?)?
        .broadcast_add(&b.to_dtype(x.dtype())?.reshape(shape)?)?;
    act.apply(&z)
}

/// `relu(x * s[c] + t[c] + r)` over NCHW buffers: a residual block's last batch norm, the
/// shortcut and the ReLU in one pass, so neither the normalised tensor nor the sum is stored.
fn affine_add_relu_fwd<T: Real>(x: &[T], s: &[T], t: &[T], r: &[T], c: usize, hw: usize) -> Vec<T> {
    let mut y = vec![T::f(0.0); x.len()];
    par::for_chunks(
        &mut y,
        hw,
        #[inline(always)]
        |plane, o| {
            let (a, b) = (s[plane % c], t[plane % c]);
            let (xs, rs) = (&x[plane * hw..][..hw], &r[plane * hw..][..hw]);
            for ((o, &v), &q) in o.iter_mut().zip(xs).zip(rs) {
                *o = relu(v * a + b + q);
            }
        },
    );
    y
}

/// The per-channel scale and shift of a batch norm with batch statistics.
fn bn_scale_shift<T: Real>(g: &[T], b: &[T], st: &[(f64, f64)]) -> (Vec<T>, Vec<T>) {
    st.iter()
        .zip(g.iter().zip(b))
        .map(|(&(mean, inv), (&g, &b))| {
            let s = inv * g.to();
            (T::f(s), T::f(b.to() - mean * s))
        })
        .unzip()
}

/// `relu(bn(x) + r)` with batch statistics; inputs x [N,C,H,W], [gamma; beta] [2C], r like x.
struct BnAddRelu {
    stats: Arc<Vec<(f64, f64)>>,
}

/// `relu(x * a[c] + b[c] + r)` (eval batch norm, shortcut, ReLU); inputs x, [a; b] [2C], r.
struct AffineAddRelu;

fn add_relu_cpu(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
    stats: Option<&[(f64, f64)]>,
) -> Result<(CpuStorage, Shape)> {
    if l1.shape() != l3.shape() {
        candle_core::bail!(
            "batch norm + shortcut: {:?} against {:?}",
            l1.shape(),
            l3.shape()
        )
    }
    let (_, c, h, w) = l1.shape().dims4()?;
    fn go<T: Real>(
        x: &[T],
        p: &[T],
        r: &[T],
        c: usize,
        hw: usize,
        st: Option<&[(f64, f64)]>,
    ) -> Vec<T> {
        let (g, b) = p.split_at(c);
        match st {
            Some(st) => {
                let (s, t) = bn_scale_shift(g, b, st);
                affine_add_relu_fwd(x, &s, &t, r, c, hw)
            }
            None => affine_add_relu_fwd(x, g, b, r, c, hw),
        }
    }
    let out = match s1.dtype() {
        DType::F32 => CpuStorage::F32(go(
            slice::<f32>(s1, l1)?,
            slice::<f32>(s2, l2)?,
            slice::<f32>(s3, l3)?,
            c,
            h * w,
            stats,
        )),
        DType::F64 => CpuStorage::F64(go(
            slice::<f64>(s1, l1)?,
            slice::<f64>(s2, l2)?,
            slice::<f64>(s3, l3)?,
            c,
            h * w,
            stats,
        )),
        d => candle_core::bail!("batch norm + shortcut: unsupported dtype {d:?}"),
    };
    Ok((out, l1.shape().clone()))
}

impl CustomOp3 for BnAddRelu {
    fn name(&self) -> &'static str {
        "pupil-bn-add-relu"
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
        add_relu_cpu((s1, l1), (s2, l2), (s3, l3), Some(&self.stats))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The ReLU's mask comes from the output, so only x and y are kept from the forward.
        let dz = dy.contiguous()?.apply_op2_no_bwd(y, &ReluMask)?;
        let packed = x.apply_op3_no_bwd(
            gb,
            &dz,
            &BnBackward {
                act: Act::None,
                stats: self.stats.clone(),
            },
        )?;
        let n = x.elem_count();
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgb = packed.narrow(0, n, gb.elem_count())?;
        Ok((Some(dx), Some(dgb), Some(dz)))
    }
}

impl CustomOp3 for AffineAddRelu {
    fn name(&self) -> &'static str {
        "pupil-affine-add-relu"
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
        add_relu_cpu((s1, l1), (s2, l2), (s3, l3), None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        ab: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Rare (gradients through eval-mode batch norm): composed ops are enough.
        let (x, ab) = (&x.detach(), ab.detach());
        let c = x.dim(1)?;
        let dz = dy.contiguous()?.apply_op2_no_bwd(y, &ReluMask)?;
        let a = ab.narrow(0, 0, c)?.reshape((1, c, 1, 1))?;
        let reduce = |t: &Tensor| -> Result<Tensor> { t.sum((0, 2, 3)) };
        let dab = Tensor::cat(&[reduce(&(&dz * x)?)?, reduce(&dz)?], 0)?;
        Ok((Some(dz.broadcast_mul(&a)?), Some(dab), Some(dz)))
    }
}

/// `dy` where `y > 0`, else 0: a ReLU's backward read from its output.
struct ReluMask;

/// Inputs (dy, y).
impl Zip2 for ReluMask {
    const NAME: &'static str = "pupil-relu-mask";
    #[inline(always)]
    fn f<T: Real>(dy: T, y: T) -> T {
        if y > T::f(0.0) {
            dy
        } else {
            T::f(0.0)
        }
    }
}

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip2_cpu::<Self>(s1, l1, s2, l2)
    }
}

fn fused_ok(x: &Tensor, r: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.dtype() == r.dtype()
        && x.rank() == 4
}

/// `relu(bn(x) + r)` with batch statistics, one op on CPU (the residual block's tail):
/// stores only x and the output. Also returns the per-channel (mean, biased variance).
pub fn batch_norm_train_add_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    r: &Tensor,
) -> Result<(Tensor, Vec<(f64, f64)>)> {
    if !fused_ok(x, r) {
        candle_core::bail!("batch norm + shortcut: the fused op runs on CPU in f32 / f64")
    }
    let x = x.contiguous()?;
    let m = batch_moments(&x)?;
    let op = BnAddRelu {
        stats: Arc::new(inv_std(&m, eps)),
    };
    let gb = Tensor::cat(&[gamma.flatten_all()?, beta.flatten_all()?], 0)?;
    let y = x.apply_op3(&gb.to_dtype(x.dtype())?, &r.contiguous()?, op)?;
    Ok((y, m))
}

/// `relu(x * a[c] + b[c] + r)` over NCHW: eval batch norm, shortcut and ReLU in one pass on
/// CPU, composed ops elsewhere.
pub fn affine_add_relu(x: &Tensor, a: &Tensor, b: &Tensor, r: &Tensor) -> Result<Tensor> {
    if fused_ok(x, r) {
        let ab = Tensor::cat(&[a.flatten_all()?, b.flatten_all()?], 0)?.to_dtype(x.dtype())?;
        if ab.elem_count() != 2 * x.dim(1)? {
            candle_core::bail!("affine: {} channels, scale {:?}", x.dim(1)?, a.shape())
        }
        return x
            .contiguous()?
            .apply_op3(&ab, &r.contiguous()?, AffineAddRelu);
    }
    (affine_act(x, a, b, Act::None)? + r)?.relu()
}

struct PlaneScale;

impl CustomOp2 for PlaneScale {
    fn name(&self) -> &'static str {
        "pupil-plane-scale"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real>(x: &[T], g: &[T]) -> Vec<T> {
            let hw = (x.len() / g.len().max(1)).max(1);
            let mut y = vec![T::f(0.0); x.len()];
            par::for_chunks(
                &mut y,
                hw,
                #[inline(always)]
                |p, o| {
                    let (i, s) = (&x[p * hw..][..o.len()], g[p]);
                    o.iter_mut().zip(i).for_each(|(o, &v)| *o = v * s)
                },
            );
            y
        }
        let out = match s1.dtype() {
            DType::F32 => CpuStorage::F32(go(slice::<f32>(s1, l1)?, slice::<f32>(s2, l2)?)),
            DType::F64 => CpuStorage::F64(go(slice::<f64>(s1, l1)?, slice::<f64>(s2, l2)?)),
            d => candle_core::bail!("plane scale: unsupported dtype {d:?}"),
        };
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, g, dy) = (&x.detach(), &g.detach(), &dy.detach());
        let dx = dy.contiguous()?.apply_op2_no_bwd(g, &PlaneScale)?;
        let (n, c) = (x.dim(0)?, x.dim(1)?);
        let dg = (dy * x)?
            .reshape((n, c, ()))?
            .sum_keepdim(2)?
            .reshape(g.shape())?;
        Ok((Some(dx), Some(dg)))
    }
}

/// `x * g` for `x` [N, C, ...] and a gate `g` [N, C, 1, 1] (squeeze-excite), one pass on CPU.
pub fn scale_planes(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    if x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && g.elem_count() == n * c
    {
        return x.contiguous()?.apply_op2(&g.contiguous()?, PlaneScale);
    }
    x.broadcast_mul(g)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Gradient of the scalar `f` at `x` against central differences (every 7th element).
    pub(crate) fn fd_check(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor, tol: f64) {
        let v = Var::from_tensor(x).unwrap();
        let g = f(v.as_tensor()).unwrap().backward().unwrap();
        // a gradient that keeps a graph keeps the tensors of its backward alive
        assert!(
            !g.get(v.as_tensor()).unwrap().track_op(),
            "gradient holds a graph"
        );
        let ga: Vec<f64> = g
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-6;
        for i in (0..base.len()).step_by(7) {
            let mut p = base.clone();
            p[i] += eps;
            let fp = f(&Tensor::from_vec(p.clone(), x.shape(), x.device()).unwrap())
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            p[i] -= 2.0 * eps;
            let fm = f(&Tensor::from_vec(p, x.shape(), x.device()).unwrap())
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let num = (fp - fm) / (2.0 * eps);
            assert!(
                (num - ga[i]).abs() <= tol * (1.0 + num.abs()),
                "element {i}: analytic {} numeric {num}",
                ga[i]
            );
        }
    }

    #[test]
    fn bn_train_matches_composed_ops_and_finite_differences() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 2.0, (3, 4, 5, 7), &dev).unwrap();
        let g = Tensor::new(&[1.5f64, 0.5, -1.0, 2.0], &dev).unwrap();
        let b = Tensor::new(&[0.1f64, -0.2, 0.3, 0.0], &dev).unwrap();
        let y = batch_norm_train(&x, &g, &b, 1e-3).unwrap();
        let mean = x
            .mean_keepdim(3)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(0)
            .unwrap();
        let xc = x.broadcast_sub(&mean).unwrap();
        let var = xc
            .sqr()
            .unwrap()
            .mean_keepdim(3)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(0)
            .unwrap();
        let want = xc
            .broadcast_div(&(var + 1e-3).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&g.reshape((1, 4, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        let d = (y - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-10, "{d}");
        // a loss that is not symmetric in the outputs, so dx is non-trivial
        let w = Tensor::randn(0f64, 1.0, (3, 4, 5, 7), &dev).unwrap();
        let gg = g.clone();
        let bb = b.clone();
        fd_check(
            &|x: &Tensor| (batch_norm_train(x, &gg, &bb, 1e-3)?.sqr()? * &w)?.sum_all(),
            &x,
            1e-5,
        );
        let xx = x.clone();
        let ww = w.clone();
        fd_check(
            &|g: &Tensor| (batch_norm_train(&xx, g, &bb, 1e-3)? * &ww)?.sum_all(),
            &g,
            1e-5,
        );
        let xx = x.clone();
        fd_check(
            &|b: &Tensor| (batch_norm_train(&xx, &g, b, 1e-3)?.sqr()? * &w)?.sum_all(),
            &b,
            1e-5,
        );
        // With the activation fused in: same values as the two ops, gradients by finite
        // differences.
        for a in [Act::Silu, Act::Relu] {
            let fused = batch_norm_train_act(&x, &g, &b, 1e-3, a).unwrap().0;
            let two = a
                .apply(&batch_norm_train(&x, &g, &b, 1e-3).unwrap())
                .unwrap();
            let d = (fused - two).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
            let (gg, bb) = (g.clone(), b.clone());
            let act = |x: &Tensor, g: &Tensor, b: &Tensor| -> Result<Tensor> {
                Ok(batch_norm_train_act(x, g, b, 1e-3, a)?.0)
            };
            fd_check(&|x: &Tensor| (act(x, &gg, &bb)? * &w)?.sum_all(), &x, 1e-5);
            let xx = x.clone();
            fd_check(&|g: &Tensor| (act(&xx, g, &bb)? * &w)?.sum_all(), &g, 1e-5);
            fd_check(&|b: &Tensor| (act(&xx, &gg, b)? * &w)?.sum_all(), &b, 1e-5);
        }
    }

    #[test]
    fn bn_add_relu_matches_composed_ops_and_finite_differences() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 2.0, (3, 4, 5, 7), &dev).unwrap();
        let r = Tensor::randn(0f64, 1.0, (3, 4, 5, 7), &dev).unwrap();
        let g = Tensor::new(&[1.5f64, 0.5, -1.0, 2.0], &dev).unwrap();
        let b = Tensor::new(&[0.1f64, -0.2, 0.3, 0.0], &dev).unwrap();
        let w = Tensor::randn(0f64, 1.0, (3, 4, 5, 7), &dev).unwrap();
        let max_diff = |a: Tensor, b: Tensor| -> f64 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        // training: against batch norm, add and ReLU as separate ops
        let (fused, m) = batch_norm_train_add_relu(&x, &g, &b, 1e-3, &r).unwrap();
        let (bn, m2) = batch_norm_train_act(&x, &g, &b, 1e-3, Act::None).unwrap();
        assert_eq!(m, m2);
        assert!(max_diff(fused, (bn + &r).unwrap().relu().unwrap()) < 1e-12);
        let f = |x: &Tensor, g: &Tensor, b: &Tensor, r: &Tensor| -> Result<Tensor> {
            (batch_norm_train_add_relu(x, g, b, 1e-3, r)?.0 * &w)?.sum_all()
        };
        fd_check(&|t: &Tensor| f(t, &g, &b, &r), &x, 1e-5);
        fd_check(&|t: &Tensor| f(&x, t, &b, &r), &g, 1e-5);
        fd_check(&|t: &Tensor| f(&x, &g, t, &r), &b, 1e-5);
        fd_check(&|t: &Tensor| f(&x, &g, &b, t), &r, 1e-5);
        // eval: against affine then add and ReLU
        let (a, s) = (g.clone(), b.clone());
        let want = (affine_act(&x, &a, &s, Act::None).unwrap() + &r)
            .unwrap()
            .relu()
            .unwrap();
        assert!(max_diff(affine_add_relu(&x, &a, &s, &r).unwrap(), want) < 1e-12);
        let f = |x: &Tensor, a: &Tensor, s: &Tensor, r: &Tensor| -> Result<Tensor> {
            (affine_add_relu(x, a, s, r)? * &w)?.sum_all()
        };
        fd_check(&|t: &Tensor| f(t, &a, &s, &r), &x, 1e-5);
        fd_check(&|t: &Tensor| f(&x, t, &s, &r), &a, 1e-5);
        fd_check(&|t: &Tensor| f(&x, &a, t, &r), &s, 1e-5);
        fd_check(&|t: &Tensor| f(&x, &a, &s, t), &r, 1e-5);
        // a shortcut of another shape is an error, not a panic
        let bad = Tensor::zeros((3, 4, 5, 6), DType::F64, &dev).unwrap();
        assert!(batch_norm_train_add_relu(&x, &g, &b, 1e-3, &bad).is_err());
        assert!(affine_add_relu(&x, &a, &s, &bad).is_err());
    }

    #[test]
    fn silu_matches_candle_and_finite_differences() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 3.0, (5, 9), &dev).unwrap();
        let d = (silu(&x).unwrap() - x.silu().unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12);
        let w = Tensor::randn(0f64, 1.0, (5, 9), &dev).unwrap();
        fd_check(&|x: &Tensor| (silu(x)? * &w)?.sum_all(), &x, 1e-6);
    }

    #[test]
    fn affine_act_matches_composed_ops_and_finite_differences() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 2.0, (2, 3, 4, 5), &dev).unwrap();
        let a = Tensor::new(&[1.5f64, -0.5, 2.0], &dev).unwrap();
        let b = Tensor::new(&[0.1f64, -0.2, 0.3], &dev).unwrap();
        let z = x
            .broadcast_mul(&a.reshape((1, 3, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap())
            .unwrap();
        for (act, want) in [
            (Act::None, z.clone()),
            (Act::Relu, z.relu().unwrap()),
            (Act::Silu, z.silu().unwrap()),
        ] {
            let got = affine_act(&x, &a, &b, act).unwrap();
            let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
            let w = Tensor::randn(0f64, 1.0, (2, 3, 4, 5), &dev).unwrap();
            let (aa, bb, xx) = (a.clone(), b.clone(), x.clone());
            fd_check(
                &|x: &Tensor| (affine_act(x, &aa, &bb, act)? * &w)?.sum_all(),
                &x,
                1e-6,
            );
            fd_check(
                &|a: &Tensor| (affine_act(&xx, a, &bb, act)? * &w)?.sum_all(),
                &a,
                1e-6,
            );
            fd_check(
                &|b: &Tensor| (affine_act(&xx, &aa, b, act)? * &w)?.sum_all(),
                &b,
                1e-6,
            );
        }
    }

    #[test]
    fn scale_planes_matches_broadcast_mul_and_finite_differences() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 2.0, (2, 3, 4, 5), &dev).unwrap();
        let g = Tensor::randn(0f64, 1.0, (2, 3, 1, 1), &dev).unwrap();
        let d = (scale_planes(&x, &g).unwrap() - x.broadcast_mul(&g).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
        let w = Tensor::randn(0f64, 1.0, (2, 3, 4, 5), &dev).unwrap();
        let gg = g.clone();
        fd_check(
            &|x: &Tensor| (scale_planes(x, &gg)? * &w)?.sum_all(),
            &x,
            1e-6,
        );
        let xx = x.clone();
        fd_check(
            &|g: &Tensor| (scale_planes(&xx, g)? * &w)?.sum_all(),
            &g,
            1e-6,
        );
    }

    #[test]
    fn exp_f32_is_accurate_over_its_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(1000.0) > 1e38);
        assert!(exp_f32(f32::NEG_INFINITY) >= 0.0);
        assert!(
            silu(&Tensor::new(&[f32::NAN], &candle_core::Device::Cpu).unwrap())
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0]
                .is_nan()
        );
    }
}
