use crate::cpu::resize as k;
use crate::storage::{dims4, dispatch_real, slice};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bilinear { align_corners: bool },
    Nearest,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Bilinear { .. } => "resize_bilinear",
            Mode::Nearest => "resize_nearest",
        }
    }
}

/// Resize of an NCHW tensor to `out` (forward) or, with `grad`, the
/// adjoint from `out` back to `inp`.
#[derive(Clone, Copy, Debug)]
struct Resize {
    mode: Mode,
    inp: (usize, usize),
    out: (usize, usize),
    grad: bool,
}

impl Resize {
    /// (n, c, output size), the input's size checked against the direction.
    fn output_dims(&self, l: &Layout) -> Result<(usize, usize, (usize, usize))> {
        let name = self.mode.name();
        let [n, c, h, w] = dims4(l, name)?;
        let (from, to) = if self.grad {
            (self.out, self.inp)
        } else {
            (self.inp, self.out)
        };
        if (h, w) != from {
            bail!("{name}: expected spatial size {from:?}, got ({h}, {w})");
        }
        Ok((n, c, to))
    }
}

impl CustomOp1 for Resize {
    fn name(&self) -> &'static str {
        self.mode.name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.mode.name();
        let (n, c, to) = self.output_dims(l)?;
        let out = dispatch_real!(s, name, |T| {
            let x = slice::<T>(s, l, name)?;
            let y = match (self.mode, self.grad) {
                (Mode::Bilinear { align_corners }, false) => {
                    k::bilinear_forward(x, self.inp, self.out, align_corners)
                }
                (Mode::Bilinear { align_corners }, true) => {
                    k::bilinear_backward(x, self.inp, self.out, align_corners)
                }
                (Mode::Nearest, false) => k::nearest_forward(x, self.inp, self.out),
                (Mode::Nearest, true) => k::nearest_backward(x, self.inp, self.out),
            };
            T::to_cpu_storage_owned(y)
        });
        Ok((out, Shape::from((n, c, to.0, to.1))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{AxisTaps, ResizeKind};
        let (n, c, to) = self.output_dims(l)?;
        // The taps are the CPU op's own, so both devices sample the same pixels.
        let axis = |inp: usize, out: usize, ac: bool| {
            let t = k::bilinear_taps::<f64>(inp, out, ac);
            AxisTaps {
                index: t.iter().flat_map(|t| [t.i0 as i32, t.i1 as i32]).collect(),
                weight: t.iter().flat_map(|t| [t.l0, t.l1]).collect(),
            }
        };
        let nearest = |inp: usize, out: usize| -> Vec<i32> {
            k::nearest_index(inp, out)
                .into_iter()
                .map(|v| v as i32)
                .collect()
        };
        let y = match self.mode {
            Mode::Bilinear { align_corners } => {
                let ty = axis(self.inp.0, self.out.0, align_corners);
                let tx = axis(self.inp.1, self.out.1, align_corners);
                let kind = ResizeKind::Bilinear { ty: &ty, tx: &tx };
                crate::cuda::resize((s, l), n * c, self.inp, self.out, kind, self.grad)?
            }
            Mode::Nearest => {
                let (iy, ix) = (
                    nearest(self.inp.0, self.out.0),
                    nearest(self.inp.1, self.out.1),
                );
                let kind = ResizeKind::Nearest { iy: &iy, ix: &ix };
                crate::cuda::resize((s, l), n * c, self.inp, self.out, kind, self.grad)?
            }
        };
        Ok((y, Shape::from((n, c, to.0, to.1))))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if self.grad {
            bail!(
                "{}: second-order gradients are not supported",
                self.mode.name()
            );
        }
        let adjoint = Resize {
            grad: true,
            ..*self
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&adjoint)?))
    }
}

fn resize(x: &Tensor, mode: Mode, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        bail!("{}: empty size {h}x{w} -> {out_h}x{out_w}", mode.name());
    }
    let op = Resize {
        mode,
        inp: (h, w),
        out: (out_h, out_w),
        grad: false,
    };
    crate::upcast1(x, |x| x.apply_op1(op))
}

/// Bilinear resize of `x` [N, C, H, W] to `out_h` x `out_w`, matching
/// PyTorch `F.interpolate(mode='bilinear', align_corners=...)` given a size.
pub fn resize_bilinear(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align_corners: bool,
) -> Result<Tensor> {
    resize(x, Mode::Bilinear { align_corners }, out_h, out_w)
}

/// Nearest resize matching PyTorch `mode='nearest'` (source = floor(dst * in / out));
/// its gradient sums into each source pixel.
pub fn resize_nearest(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    resize(x, Mode::Nearest, out_h, out_w)
}
