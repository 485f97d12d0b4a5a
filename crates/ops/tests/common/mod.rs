//! Shared test helpers: a seeded generator, tensor builders, a central
//! finite-difference gradient check and plain-loop reference ops.
#![allow(dead_code)]

use candle_core::{Device, Result, Tensor, Var};
use pupil_ops::Pad2d;

/// Deterministic inputs without a rand dependency.
pub struct Rng(pupil_testkit::SplitMix);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(pupil_testkit::SplitMix(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.unit() * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }

    pub fn tensor(&mut self, dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(self.vec(n), dims, &Device::Cpu).unwrap()
    }
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Checks the gradients that `backward()` gives for every input of `f`
/// against central differences of the scalar loss sum(f(inputs) * r), r random.
pub fn check_grads(
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    tol: f64,
    what: &str,
) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors).unwrap();
    let r = Rng::new(0xD1FF).tensor(out.dims());
    let loss = |ts: &[Tensor]| -> f64 {
        let y = f(ts).unwrap();
        assert_eq!(y.dims(), r.dims(), "{what}: output shape changed");
        (y * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let grads = (&out * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let eps = 1e-5;
    for (k, input) in inputs.iter().enumerate() {
        let analytic = values(
            grads
                .get(vars[k].as_tensor())
                .unwrap_or_else(|| panic!("{what}: no gradient for input {k}")),
        );
        let base = values(input);
        let mut numeric = Vec::with_capacity(base.len());
        for e in 0..base.len() {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[e] += delta;
                let mut ts = inputs.to_vec();
                ts[k] = Tensor::from_vec(v, input.dims(), &Device::Cpu).unwrap();
                loss(&ts)
            };
            numeric.push((at(eps) - at(-eps)) / (2.0 * eps));
        }
        assert_close(
            &analytic,
            &numeric,
            tol,
            &format!("{what}: grad of input {k}"),
        );
    }
}

/// Plain grouped convolution with zero padding: x [n,ci,h,w], w [co,ci/g,kh,kw].
#[allow(clippy::too_many_arguments)]
pub fn conv_ref(
    x: &[f64],
    [n, ci, h, w]: [usize; 4],
    wt: &[f64],
    [co, cig, kh, kw]: [usize; 4],
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
    p: Pad2d,
    groups: usize,
) -> (Vec<f64>, usize, usize) {
    let oh = (h + p.top + p.bottom - (kh - 1) * dh - 1) / sh + 1;
    let ow = (w + p.left + p.right - (kw - 1) * dw - 1) / sw + 1;
    let cog = co / groups;
    let mut out = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for o in 0..co {
            let g = o / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0.0;
                    for ic in 0..cig {
                        let c = g * cig + ic;
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (oy * sh + i * dh) as isize - p.top as isize;
                                let ix = (ox * sw + j * dw) as isize - p.left as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * ci + c) * h + iy as usize) * w + ix as usize];
                                s += xv * wt[((o * cig + ic) * kh + i) * kw + j];
                            }
                        }
                    }
                    out[((b * co + o) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    (out, oh, ow)
}

/// Plain max pooling; padding never wins because it is skipped.
pub fn max_pool_ref(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    p: Pad2d,
) -> (Vec<f64>, usize, usize) {
    let oh = (h + p.top + p.bottom - kh) / sh + 1;
    let ow = (w + p.left + p.right - kw) / sw + 1;
    let mut out = vec![f64::NEG_INFINITY; n * c * oh * ow];
    for pl in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let o = &mut out[(pl * oh + oy) * ow + ox];
                for i in 0..kh {
                    for j in 0..kw {
                        let iy = (oy * sh + i) as isize - p.top as isize;
                        let ix = (ox * sw + j) as isize - p.left as isize;
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            *o = o.max(x[(pl * h + iy as usize) * w + ix as usize]);
                        }
                    }
                }
            }
        }
    }
    (out, oh, ow)
}

/// Bilinear resize straight from PyTorch's definition, one pixel at a time.
pub fn bilinear_ref(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    oh: usize,
    ow: usize,
    align_corners: bool,
) -> Vec<f64> {
    let src = |d: usize, inp: usize, out: usize| -> f64 {
        if align_corners {
            if out == 1 {
                0.0
            } else {
                d as f64 * (inp - 1) as f64 / (out - 1) as f64
            }
        } else {
            ((d as f64 + 0.5) * inp as f64 / out as f64 - 0.5).max(0.0)
        }
    };
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for pl in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (sy, sx) = (src(oy, h, oh), src(ox, w, ow));
                let (y0, x0) = (
                    (sy.floor() as usize).min(h - 1),
                    (sx.floor() as usize).min(w - 1),
                );
                let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                let (fy, fx) = (sy - y0 as f64, sx - x0 as f64);
                let v = |y: usize, xx: usize| x[(pl * h + y) * w + xx];
                out.push(
                    (1.0 - fy) * ((1.0 - fx) * v(y0, x0) + fx * v(y0, x1))
                        + fy * ((1.0 - fx) * v(y1, x0) + fx * v(y1, x1)),
                );
            }
        }
    }
    out
}
