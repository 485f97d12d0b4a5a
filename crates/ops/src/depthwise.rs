use crate::cpu::{depthwise as k, Window};
use crate::storage::{dims4, dispatch_real, same_dtype, slice};
use crate::Pad2d;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

const NAME: &str = "depthwise_conv2d";

#[derive(Clone, Copy, Debug)]
struct Conv {
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: Pad2d,
}

impl Conv {
    fn window(&self, (h, w): (usize, usize), (kh, kw): (usize, usize)) -> Result<Window> {
        Window::new(NAME, (h, w), (kh, kw), self.stride, self.dilation, self.pad)
    }
}

/// Filter dims, checked against the input's channel count.
fn filter_dims(wl: &Layout, c: usize) -> Result<(usize, usize)> {
    match wl.dims() {
        &[wc, 1, kh, kw] if wc == c && kh > 0 && kw > 0 => Ok((kh, kw)),
        d => bail!("{NAME}: filter must be [{c}, 1, kh, kw], got {d:?}"),
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_dtype(xs, ws, NAME)?;
        let [n, c, h, w] = dims4(xl, NAME)?;
        let win = self.window((h, w), filter_dims(wl, c)?)?;
        let out = dispatch_real!(xs, NAME, |T| {
            let y = k::forward(
                slice::<T>(xs, xl, NAME)?,
                slice::<T>(ws, wl, NAME)?,
                c,
                &win,
            );
            T::to_cpu_storage_owned(y)
        });
        Ok((out, Shape::from((n, c, win.oh, win.ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let [n, c, h, w] = dims4(xl, NAME)?;
        let win = self.window((h, w), filter_dims(wl, c)?)?;
        let y = crate::cuda::depthwise_fwd((xs, xl), (ws, wl), n, c, &win)?;
        Ok((y, Shape::from((n, c, win.oh, win.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let gx = grad.apply_op2_no_bwd(
            w,
            &GradInput {
                conv: *self,
                hw: (h, wd),
            },
        )?;
        let gw = x.apply_op2_no_bwd(
            &grad,
            &GradFilter {
                conv: *self,
                k: (kh, kw),
            },
        )?;
        Ok((Some(gx), Some(gw)))
    }
}

/// (grad_out, filter) -> grad_in; the input size cannot be recovered from
/// grad_out alone when trailing pixels were unused, so it is carried.
struct GradInput {
    conv: Conv,
    hw: (usize, usize),
}

impl GradInput {
    /// (n, c, window) of the forward pass, checked against the gradient's shape.
    fn geometry(&self, gl: &Layout, wl: &Layout) -> Result<(usize, usize, Window)> {
        let [n, c, oh, ow] = dims4(gl, NAME)?;
        let win = self.conv.window(self.hw, filter_dims(wl, c)?)?;
        if (win.oh, win.ow) != (oh, ow) {
            bail!(
                "{NAME}: gradient is {oh}x{ow}, forward output was {}x{}",
                win.oh,
                win.ow
            );
        }
        Ok((n, c, win))
    }
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_grad_input"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_dtype(gs, ws, NAME)?;
        let (n, c, win) = self.geometry(gl, wl)?;
        let out = dispatch_real!(gs, NAME, |T| {
            let gx = k::backward_input(
                slice::<T>(gs, gl, NAME)?,
                slice::<T>(ws, wl, NAME)?,
                c,
                &win,
            );
            T::to_cpu_storage_owned(gx)
        });
        Ok((out, Shape::from((n, c, self.hw.0, self.hw.1))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, win) = self.geometry(gl, wl)?;
        let gx = crate::cuda::depthwise_bwd_input((gs, gl), (ws, wl), n, c, &win)?;
        Ok((gx, Shape::from((n, c, self.hw.0, self.hw.1))))
    }
}

/// (input, grad_out) -> grad_filter [c, 1, kh, kw].
struct GradFilter {
    conv: Conv,
    k: (usize, usize),
}

impl GradFilter {
    /// (n, c, window) of the forward pass, checked against the gradient's shape.
    fn geometry(&self, xl: &Layout, gl: &Layout) -> Result<(usize, usize, Window)> {
        let [n, c, h, w] = dims4(xl, NAME)?;
        let win = self.conv.window((h, w), self.k)?;
        if dims4(gl, NAME)? != [n, c, win.oh, win.ow] {
            bail!(
                "{NAME}: gradient shape {:?} does not match the output",
                gl.dims()
            );
        }
        Ok((n, c, win))
    }
}

impl CustomOp2 for GradFilter {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_grad_filter"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_dtype(xs, gs, NAME)?;
        let (n, c, win) = self.geometry(xl, gl)?;
        let out = dispatch_real!(xs, NAME, |T| {
            let gw = k::backward_weight(
                slice::<T>(xs, xl, NAME)?,
                slice::<T>(gs, gl, NAME)?,
                n,
                c,
                &win,
            );
            T::to_cpu_storage_owned(gw)
        });
        Ok((out, Shape::from((c, 1, self.k.0, self.k.1))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, win) = self.geometry(xl, gl)?;
        let gw = crate::cuda::depthwise_bwd_filter((xs, xl), (gs, gl), n, c, &win)?;
        Ok((gw, Shape::from((c, 1, self.k.0, self.k.1))))
    }
}

/// Depthwise (groups = channels) 2D convolution of `x` [N, C, H, W] with
/// `w` [C, 1, kh, kw]; any kernel size, stride, dilation and asymmetric zero
/// padding. Differentiable w.r.t. `x`, `w` and `bias` [C].
pub fn depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    dilation: (usize, usize),
    padding: Pad2d,
) -> Result<Tensor> {
    let conv = Conv {
        stride,
        dilation,
        pad: padding,
    };
    let y = crate::upcast2(x, w, |x, w| x.apply_op2(w, conv))?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}
