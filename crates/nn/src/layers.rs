//! Layers built on the parameter store: convolution with PyTorch, TF 'SAME' or TF fixed
//! padding, batch norm with train-mode statistics and running averages, linear, activations,
//! stochastic depth and dropout.
use crate::params::{Init, ParamKind, Vb};
use candle_core::{DType, Module, Result, Tensor, Var, D};
use pupil_ops::dist::Collective;
use pupil_ops::same_padding_1d;
pub use pupil_ops::{Act, Pad2d};
use std::sync::Arc;

/// How a convolution or pooling pads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// timm / PyTorch static symmetric padding `((s - 1) + d * (k - 1)) / 2` on every side.
    Torch,
    /// TensorFlow 'SAME': depends on the input size; the odd pixel goes bottom/right.
    Same,
    /// TF detection's `conv2d_fixed_padding`: stride > 1 pads `(k-1)/2` before and the rest
    /// after, independent of the input size; stride 1 is 'SAME'.
    Fixed,
    /// Explicit symmetric padding.
    Sym(usize),
}

impl PadMode {
    pub fn pads(
        self,
        h: usize,
        w: usize,
        k: (usize, usize),
        s: (usize, usize),
        d: (usize, usize),
    ) -> Pad2d {
        let one = |input: usize, k: usize, s: usize, d: usize| -> (usize, usize) {
            match self {
                PadMode::Torch => {
                    let p = ((s - 1) + d * (k - 1)) / 2;
                    (p, p)
                }
                PadMode::Same => same_padding_1d(input, k, s, d),
                PadMode::Fixed => {
                    if s > 1 {
                        let total = (k - 1) * d;
                        (total / 2, total - total / 2)
                    } else {
                        same_padding_1d(input, k, s, d)
                    }
                }
                PadMode::Sym(p) => (p, p),
            }
        };
        let (top, bottom) = one(h, k.0, s.0, d.0);
        let (left, right) = one(w, k.1, s.1, d.1);
        Pad2d {
            top,
            bottom,
            left,
            right,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub kernel: usize,
    pub pad: PadMode,
}

#[derive(Clone, Copy, Debug)]
pub struct ConvCfg {
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    pub pad: PadMode,
    pub init: Init,
}

impl Default for ConvCfg {
    fn default() -> Self {
        ConvCfg {
            stride: 1,
            dilation: 1,
            groups: 1,
            bias: false,
            pad: PadMode::Torch,
            init: Init::KaimingFanOut,
        }
    }
}

impl Conv2d {
    /// Weight `[cout, cin / groups, k, k]` named `weight`, bias `[cout]` named `bias`.
    pub fn new(vb: &Vb, cin: usize, cout: usize, k: usize, cfg: ConvCfg) -> Result<Self> {
        if cin % cfg.groups != 0 || cout % cfg.groups != 0 {
            candle_core::bail!(
                "{}: channels {cin}->{cout} not divisible by groups {}",
                vb.path(),
                cfg.groups
            )
        }
        let weight = vb.get(
            (cout, cin / cfg.groups, k, k),
            "weight",
            cfg.init,
            ParamKind::Kernel,
        )?;
        let bias = if cfg.bias {
            Some(vb.get(cout, "bias", Init::Const(0.0), ParamKind::Bias)?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            stride: cfg.stride,
            dilation: cfg.dilation,
            groups: cfg.groups,
            kernel: k,
            pad: cfg.pad,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let k = (self.kernel, self.kernel);
        let s = (self.stride, self.stride);
        let d = (self.dilation, self.dilation);
        let pad = self.pad.pads(h, w, k, s, d);
        if self.kernel == 1
            && self.stride == 1
            && self.groups == 1
            && pad == Pad2d::default()
            && !x.device().is_cpu()
        {
            // Off the CPU a 1x1 convolution is a matmul over the channel axis. On the CPU
            // pupil's conv op does the same GEMM as one graph node, where reshape + matmul +
            // reshape cost candle's backward three gradient buffers over the activation.
            let (n, cin, _, _) = x.dims4()?;
            let cout = self.weight.dim(0)?;
            let wm = self.weight.to_dtype(x.dtype())?.reshape((cout, cin))?;
            let y = wm
                .broadcast_matmul(&x.reshape((n, cin, h * w))?)?
                .reshape((n, cout, h, w))?;
            return match &self.bias {
                Some(b) => y.broadcast_add(&b.to_dtype(x.dtype())?.reshape((1, cout, 1, 1))?),
                None => Ok(y),
            };
        }
        pupil_ops::conv2d(
            x,
            // Mixed precision: f32 master weights meet the activations' dtype here.
            &self.weight.to_dtype(x.dtype())?,
            self.bias
                .as_ref()
                .map(|b| b.to_dtype(x.dtype()))
                .transpose()?
                .as_ref(),
            self.stride,
            pad,
            self.dilation,
            self.groups,
        )
    }
}

/// 2-D batch norm. `momentum` follows PyTorch: `running = (1 - m) * running + m * batch`.
/// Built from a store with a norm group ([`crate::ParamStore::with_norm_group`]), its
/// training statistics are those of the global batch of a data-parallel job.
#[derive(Clone)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
    pub eps: f64,
    pub momentum: f64,
    group: Option<Arc<dyn Collective>>,
}

impl BatchNorm2d {
    /// Names as PyTorch: `weight`, `bias`, `running_mean`, `running_var`.
    pub fn new(vb: &Vb, c: usize, eps: f64, momentum: f64) -> Result<Self> {
        let weight = vb.get(c, "weight", Init::Const(1.0), ParamKind::Norm)?;
        let bias = vb.get(c, "bias", Init::Const(0.0), ParamKind::Norm)?;
        vb.get(c, "running_mean", Init::Const(0.0), ParamKind::Buffer)?;
        vb.get(c, "running_var", Init::Const(1.0), ParamKind::Buffer)?;
        let store = vb.store();
        let running_mean = store.var(&vb.name("running_mean")).expect("just created");
        let running_var = store.var(&vb.name("running_var")).expect("just created");
        Ok(BatchNorm2d {
            weight,
            bias,
            running_mean,
            running_var,
            eps,
            momentum,
            group: store.norm_group(),
        })
    }

    /// Batch norm followed by `act`; in eval mode both run as one pass.
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        if !train {
            let (scale, shift) = self.eval_affine()?;
            return pupil_ops::fused::affine_act(x, &scale, &shift, act);
        }
        self.train_forward(x, act)
    }

    /// Running statistics folded into one per-channel scale and shift.
    fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let inv = (self.running_var.as_detached_tensor() + self.eps)?
            .sqrt()?
            .recip()?;
        let scale = (&self.weight * &inv)?;
        let shift = (&self.bias - (self.running_mean.as_detached_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            let (scale, shift) = self.eval_affine()?;
            return pupil_ops::fused::affine_act(x, &scale, &shift, Act::None);
        }
        self.train_forward(x, Act::None)
    }

    /// `relu(bn(x) + shortcut)`, a residual block's tail, as one pass on CPU: the normalised
    /// tensor and the sum are never stored.
    pub fn forward_add_relu(&self, x: &Tensor, shortcut: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            let (scale, shift) = self.eval_affine()?;
            return pupil_ops::fused::affine_add_relu(x, &scale, &shift, shortcut);
        }
        self.train_forward_with(x, Act::Relu, Some(shortcut))
    }

    fn train_forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        self.train_forward_with(x, act, None)
    }

    /// Batch statistics, then `act(bn(x) + shortcut)` (the shortcut only with ReLU).
    fn train_forward_with(
        &self,
        x: &Tensor,
        act: Act,
        shortcut: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let shape = (1, c, 1, 1);
        let mut count = (n * h * w) as f64;
        let dev = x.device();
        let sync = self.group.clone();
        let fused = sync.is_none() && dev.is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
        let fused = fused && shortcut.is_none_or(|r| r.dtype() == x.dtype());
        let (y, bm, bv) = if fused {
            let (g, b) = (
                self.weight.to_dtype(x.dtype())?,
                self.bias.to_dtype(x.dtype())?,
            );
            let (y, moments) = match shortcut {
                Some(r) => pupil_ops::fused::batch_norm_train_add_relu(x, &g, &b, self.eps, r)?,
                None => pupil_ops::fused::batch_norm_train_act(x, &g, &b, self.eps, act)?,
            };
            let (bm, bv): (Vec<f64>, Vec<f64>) = moments.into_iter().unzip();
            (
                y,
                Tensor::from_vec(bm, c, dev)?,
                Tensor::from_vec(bv, c, dev)?,
            )
        } else {
            // Composed ops: on GPU, or with the statistics synchronized over a data-parallel
            // group through a differentiable all-reduce (so the backward also sees the other
            // ranks). Mean first, then centred squares: E[x^2] - mean^2 in f32 loses too
            // much. Statistics in f32 at least (half-precision inputs are upcast).
            let inner = match x.dtype() {
                DType::F16 | DType::BF16 => DType::F32,
                d => d,
            };
            let xf = x.to_dtype(inner)?;
            let mut sum = xf.sum_keepdim((0, 2, 3))?;
            if let Some(group) = &sync {
                let local = Tensor::cat(
                    &[
                        sum.flatten_all()?,
                        Tensor::new(&[count], dev)?.to_dtype(inner)?,
                    ],
                    0,
                )?;
                let total = pupil_ops::dist::all_reduce(&local, group)?;
                count = total
                    .narrow(0, c, 1)?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?[0];
                sum = total.narrow(0, 0, c)?.reshape(shape)?;
            }
            let mean = (sum / count)?;
            let centred = xf.broadcast_sub(&mean)?;
            let mut squares = centred.sqr()?.sum_keepdim((0, 2, 3))?;
            if let Some(group) = &sync {
                squares = pupil_ops::dist::all_reduce(&squares, group)?;
            }
            let var = (squares / count)?;
            let inv = (&var + self.eps)?.sqrt()?.recip()?;
            let scale = self
                .weight
                .to_dtype(inner)?
                .reshape(shape)?
                .broadcast_mul(&inv)?;
            let mut y = centred
                .broadcast_mul(&scale)?
                .broadcast_add(&self.bias.to_dtype(inner)?.reshape(shape)?)?;
            if let Some(r) = shortcut {
                y = (y + r.to_dtype(inner)?)?;
            }
            let y = match act {
                Act::Silu => y.silu()?,
                a => a.apply(&y)?,
            }
            .to_dtype(x.dtype())?;
            (y, mean.detach().flatten_all()?, var.detach().flatten_all()?)
        };
        // Running statistics, outside the graph; the running variance is unbiased as PyTorch's.
        let m = self.momentum;
        let unbias = count / (count - 1.0).max(1.0);
        let bm = bm.to_dtype(self.running_mean.dtype())?;
        let bv = (bv.to_dtype(DType::F64)? * unbias)?.to_dtype(self.running_var.dtype())?;
        let rm = ((self.running_mean.as_detached_tensor() * (1.0 - m))? + (bm * m)?)?;
        let rv = ((self.running_var.as_detached_tensor() * (1.0 - m))? + (bv * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(y)
    }
}

#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vb: &Vb, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        let weight = vb.get(
            (cout, cin),
            "weight",
            Init::KaimingUniformFanIn,
            ParamKind::Kernel,
        )?;
        let bound = 1.0 / (cin as f64).sqrt();
        let bias = if bias {
            Some(vb.get(
                cout,
                "bias",
                Init::Uniform {
                    lo: -bound,
                    hi: bound,
                },
                ParamKind::Bias,
            )?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.to_dtype(x.dtype())?.t()?)?;
        match &self
            .bias
            .as_ref()
            .map(|b| b.to_dtype(x.dtype()))
            .transpose()?
        {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    // 1 / (1 + exp(-x)), differentiable through candle's own ops.
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Stochastic depth: drops whole samples of a residual branch with probability `rate` and
/// rescales the kept ones by 1 / (1 - rate).
pub fn drop_path(x: &Tensor, rate: f64, train: bool, vb: &Vb) -> Result<Tensor> {
    if !train || rate <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - rate;
    let n = x.dim(0)?;
    let mask: Vec<f32> = {
        let mut rng = vb.store().noise_rng();
        (0..n)
            .map(|_| (keep + rng.uniform()).floor() as f32 / keep as f32)
            .collect()
    };
    let mut shape = vec![1usize; x.rank()];
    shape[0] = n;
    let m = Tensor::from_vec(mask, shape, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&m)
}

/// Element-wise dropout with rescaling.
pub fn dropout(x: &Tensor, rate: f64, train: bool, vb: &Vb) -> Result<Tensor> {
    if !train || rate <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - rate;
    let n = x.elem_count();
    let mask: Vec<f32> = {
        let mut rng = vb.store().noise_rng();
        (0..n)
            .map(|_| {
                if rng.uniform() < keep {
                    1.0 / keep as f32
                } else {
                    0.0
                }
            })
            .collect()
    };
    let m = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * m
}

/// Channel dropout of [N, C, H, W] feature maps (PyTorch's `Dropout2d`): each channel of
/// each image is zeroed with probability `rate`, the kept ones rescaled by 1 / (1 - rate).
/// One draw per channel keeps the noise cheap on large maps and drops whole features.
pub fn dropout2d(x: &Tensor, rate: f64, train: bool, vb: &Vb) -> Result<Tensor> {
    if !train || rate <= 0.0 {
        return Ok(x.clone());
    }
    let (n, c, _, _) = x.dims4()?;
    let keep = 1.0 - rate;
    let mask: Vec<f32> = {
        let mut rng = vb.store().noise_rng();
        (0..n * c)
            .map(|_| {
                if rng.uniform() < keep {
                    1.0 / keep as f32
                } else {
                    0.0
                }
            })
            .collect()
    };
    let m = Tensor::from_vec(mask, (n, c, 1, 1), x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&m)
}

/// Mean over H and W, keeping [N, C].
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean(D::Minus1)?.mean(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamStore;
    use candle_core::Device;

    #[test]
    fn same_padding_matches_the_fixture_table() {
        assert_eq!(same_padding_1d(224, 3, 2, 1), (0, 1));
        assert_eq!(same_padding_1d(56, 5, 2, 1), (1, 2));
        assert_eq!(same_padding_1d(7, 3, 1, 1), (1, 1));
        assert_eq!(same_padding_1d(7, 3, 2, 2), (2, 2));
        let p = PadMode::Torch.pads(10, 10, (5, 5), (2, 2), (1, 1));
        assert_eq!((p.top, p.bottom), (2, 2));
        let p = PadMode::Fixed.pads(9, 9, (3, 3), (2, 2), (1, 1));
        assert_eq!((p.top, p.bottom), (1, 1));
    }

    #[test]
    fn batch_norm_train_normalises_and_updates_running_stats() {
        let s = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let bn = BatchNorm2d::new(&s.root().pp("bn"), 2, 1e-5, 0.1).unwrap();
        let x = Tensor::from_vec(
            (0..16).map(|v| v as f32).collect::<Vec<_>>(),
            (2, 2, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let y = bn.forward_t(&x, true).unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        // channel 0 holds 0..4 and 8..12: mean 5.5
        let c0: Vec<f32> = [0, 1, 2, 3, 8, 9, 10, 11].iter().map(|&i| yv[i]).collect();
        let m: f32 = c0.iter().sum::<f32>() / 8.0;
        let v: f32 = c0.iter().map(|a| (a - m).powi(2)).sum::<f32>() / 8.0;
        assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-3, "{m} {v}");
        let rm: Vec<f32> = bn.running_mean.as_tensor().to_vec1().unwrap();
        assert!(
            (rm[0] - 0.55).abs() < 1e-5 && (rm[1] - 0.95).abs() < 1e-5,
            "{rm:?}"
        );
        // unbiased batch variance of channel 0 = 138 / 7; running = 0.9 + 0.1 * that
        let rv: Vec<f32> = bn.running_var.as_tensor().to_vec1().unwrap();
        assert!((rv[0] - (0.9 + 0.1 * 138.0 / 7.0)).abs() < 1e-4, "{rv:?}");
        // eval uses running stats
        let e = bn
            .forward_t(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((e[0] - (0.0 - rm[0]) / (rv[0] + 1e-5).sqrt()).abs() < 1e-5);
    }

    #[test]
    fn batch_norm_add_relu_matches_the_separate_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (2, 3, 4, 5), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (2, 3, 4, 5), &dev).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let close = |a: &[f32], b: &[f32], what: &str| {
            let d = a
                .iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(a.len() == b.len() && d < 1e-5, "{what}: {d}");
        };
        for train in [true, false] {
            let mut outs = Vec::new();
            for fused in [true, false] {
                let s = ParamStore::new(&dev, DType::F32, 0);
                let bn = BatchNorm2d::new(&s.root().pp("bn"), 3, 1e-5, 0.1).unwrap();
                let gamma = Tensor::new(&[1.5f32, -0.5, 2.0], &dev).unwrap();
                s.var("bn.weight").unwrap().set(&gamma).unwrap();
                bn.running_var
                    .set(&Tensor::new(&[0.5f32, 2.0, 1.0], &dev).unwrap())
                    .unwrap();
                let (xv, rv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&r).unwrap());
                let y = if fused {
                    bn.forward_add_relu(xv.as_tensor(), rv.as_tensor(), train)
                        .unwrap()
                } else {
                    (bn.forward_t(xv.as_tensor(), train).unwrap() + rv.as_tensor())
                        .unwrap()
                        .relu()
                        .unwrap()
                };
                let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let grad = |t: &Tensor| flat(g.get(t).unwrap());
                outs.push([
                    flat(&y),
                    grad(xv.as_tensor()),
                    grad(rv.as_tensor()),
                    grad(&bn.weight),
                    grad(&bn.bias),
                    flat(bn.running_mean.as_tensor()),
                    flat(bn.running_var.as_tensor()),
                ]);
            }
            let names = [
                "output",
                "dx",
                "dshortcut",
                "dgamma",
                "dbeta",
                "mean",
                "var",
            ];
            for (k, name) in names.iter().enumerate() {
                close(&outs[0][k], &outs[1][k], &format!("train={train} {name}"));
            }
        }
    }
}
