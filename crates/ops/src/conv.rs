use crate::cpu::{dense as k, Window};
use crate::storage::{dims4, dispatch_real, same_dtype, slice};
use crate::{depthwise_conv2d, window_out, Pad2d};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
    WithDType,
};

const NAME: &str = "conv2d";

/// Hyper-parameters of a dense/grouped convolution.
#[derive(Clone, Copy, Debug)]
struct Conv {
    stride: usize,
    dilation: usize,
    pad: Pad2d,
    groups: usize,
}

impl Conv {
    /// Geometry of x `xd` [n, c_in, h, w] convolved with a filter `wd`
    /// [c_out, c_in/groups, kh, kw], checked.
    fn geom(&self, xd: [usize; 4], wd: [usize; 4]) -> Result<k::Geom> {
        let ([n, c_in, h, w], [c_out, c_in_g, kh, kw]) = (xd, wd);
        let g = self.groups;
        if g == 0 || c_in != c_in_g * g || c_out % g != 0 || c_in_g == 0 {
            bail!("{NAME}: input {xd:?} and filter {wd:?} do not fit groups {g}");
        }
        let (s, d) = ((self.stride, self.stride), (self.dilation, self.dilation));
        let win = Window::new(NAME, (h, w), (kh, kw), s, d, self.pad)?;
        Ok(k::Geom {
            n,
            groups: g,
            cin: c_in_g,
            cout: c_out / g,
            win,
        })
    }

    fn forward(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        same_dtype(xs, ws, NAME)?;
        let g = self.geom(dims4(xl, NAME)?, dims4(wl, NAME)?)?;
        let c_out = g.cout * g.groups;
        if let Some((bs, bl)) = bias {
            same_dtype(xs, bs, NAME)?;
            if bl.dims() != [c_out] {
                bail!("{NAME}: bias must be [{c_out}], got {:?}", bl.dims());
            }
        }
        let out = dispatch_real!(xs, NAME, |T| {
            let b = match bias {
                Some((bs, bl)) => Some(slice::<T>(bs, bl, NAME)?),
                None => None,
            };
            let y = k::forward(slice::<T>(xs, xl, NAME)?, slice::<T>(ws, wl, NAME)?, b, &g);
            T::to_cpu_storage_owned(y)
        });
        Ok((out, Shape::from((g.n, c_out, g.win.oh, g.win.ow))))
    }

    /// Input and filter gradients, each only when its tensor is tracked.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let gx = match x.track_op() {
            true => Some(grad.apply_op2_no_bwd(
                w,
                &GradInput {
                    conv: *self,
                    hw: (h, wd),
                },
            )?),
            false => None,
        };
        let gw = match w.track_op() {
            true => Some(x.apply_op2_no_bwd(
                grad,
                &GradFilter {
                    conv: *self,
                    filter: w.dims4()?,
                },
            )?),
            false => None,
        };
        Ok((gx, gw))
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
        self.forward(xs, xl, ws, wl, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, &grad.contiguous()?)
    }
}

/// The same op with the bias added inside the GEMM (its output starts as the
/// bias), saving a broadcast add and its gradient bookkeeping.
impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(xs, xl, ws, wl, Some((bs, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gx, gw) = self.grads(x, w, &grad)?;
        let gb = match b.track_op() {
            true => Some(grad.apply_op1_no_bwd(&GradBias)?),
            false => None,
        };
        Ok((gx, gw, gb))
    }
}

/// (grad_out, filter) -> grad_in; the input size is carried because trailing
/// pixels no window reads leave no trace in grad_out's shape.
struct GradInput {
    conv: Conv,
    hw: (usize, usize),
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "conv2d_grad_input"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_dtype(gs, ws, NAME)?;
        let [n, c_out, oh, ow] = dims4(gl, NAME)?;
        let wd = dims4(wl, NAME)?;
        let c_in = wd[1] * self.conv.groups;
        let g = self.conv.geom([n, c_in, self.hw.0, self.hw.1], wd)?;
        if [c_out, oh, ow] != [g.cout * g.groups, g.win.oh, g.win.ow] {
            bail!(
                "{NAME}: gradient shape {:?} does not match the output",
                gl.dims()
            );
        }
        let out = dispatch_real!(gs, NAME, |T| {
            let dx = k::backward_input(slice::<T>(gs, gl, NAME)?, slice::<T>(ws, wl, NAME)?, &g);
            T::to_cpu_storage_owned(dx)
        });
        Ok((out, Shape::from((n, c_in, self.hw.0, self.hw.1))))
    }
}

/// (input, grad_out) -> grad_filter [c_out, c_in/groups, kh, kw].
struct GradFilter {
    conv: Conv,
    filter: (usize, usize, usize, usize),
}

impl CustomOp2 for GradFilter {
    fn name(&self) -> &'static str {
        "conv2d_grad_filter"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_dtype(xs, gs, NAME)?;
        let (co, ci, kh, kw) = self.filter;
        let g = self.conv.geom(dims4(xl, NAME)?, [co, ci, kh, kw])?;
        if dims4(gl, NAME)? != [g.n, co, g.win.oh, g.win.ow] {
            bail!(
                "{NAME}: gradient shape {:?} does not match the output",
                gl.dims()
            );
        }
        let out = dispatch_real!(xs, NAME, |T| {
            let dw = k::backward_filter(slice::<T>(xs, xl, NAME)?, slice::<T>(gs, gl, NAME)?, &g);
            T::to_cpu_storage_owned(dw)
        });
        Ok((out, Shape::from(self.filter)))
    }
}

/// grad_out [n, c_out, oh, ow] -> grad_bias [c_out].
struct GradBias;

impl CustomOp1 for GradBias {
    fn name(&self) -> &'static str {
        "conv2d_grad_bias"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [_, c, oh, ow] = dims4(gl, NAME)?;
        let out = dispatch_real!(gs, NAME, |T| {
            let db = k::backward_bias(slice::<T>(gs, gl, NAME)?, c, oh * ow);
            T::to_cpu_storage_owned(db)
        });
        Ok((out, Shape::from(c)))
    }
}

/// 2D convolution of `x` [N, C_in, H, W] with `w` [C_out, C_in/groups, kh, kw]
/// and optional `bias` [C_out]: any stride, dilation, asymmetric zero padding
/// and group count, differentiable w.r.t. all three.
///
/// Depthwise convs (groups == C_in == C_out, filter [C, 1, kh, kw]) go to
/// [`depthwise_conv2d`]; other f32/f64 CPU convs to an im2col + GEMM op with
/// its own backward. Other devices and dtypes use candle's conv2d on the
/// padded input. Stride and dilation are square because candle's are.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: Pad2d,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    let (_, c_in, _, _) = x.dims4()?;
    let (c_out, c_in_g, _, _) = w.dims4()?;
    if groups > 1 && groups == c_in && c_out == c_in && c_in_g == 1 {
        return depthwise_conv2d(x, w, bias, (stride, stride), (dilation, dilation), padding);
    }
    let native = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    if !native {
        return candle_conv2d(x, w, bias, stride, padding, dilation, groups);
    }
    let op = Conv {
        stride,
        dilation,
        pad: padding,
        groups,
    };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// candle's conv2d on the padded input, cut to the rows/cols the windows
/// read: candle's backward assumes no trailing unused pixels and fails on
/// e.g. stride-2 convs over odd sizes.
fn candle_conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    p: Pad2d,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let (Some(oh), Some(ow)) = (
        window_out(h, p.top, p.bottom, kh, stride, dilation),
        window_out(wd, p.left, p.right, kw, stride, dilation),
    ) else {
        bail!("conv2d: kernel {kh}x{kw} (stride {stride}, dilation {dilation}) does not fit {h}x{wd} with {p:?}");
    };
    let used_h = (oh - 1) * stride + (kh - 1) * dilation + 1;
    let used_w = (ow - 1) * stride + (kw - 1) * dilation + 1;
    let mut xp = x.clone();
    if p.top + p.bottom > 0 {
        xp = xp.pad_with_zeros(2, p.top, p.bottom)?;
    }
    if p.left + p.right > 0 {
        xp = xp.pad_with_zeros(3, p.left, p.right)?;
    }
    if used_h < xp.dim(2)? {
        xp = xp.narrow(2, 0, used_h)?;
    }
    if used_w < xp.dim(3)? {
        xp = xp.narrow(3, 0, used_w)?;
    }
    let y = xp
        .contiguous()?
        .conv2d(&w.contiguous()?, 0, stride, dilation, groups)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}
