use crate::{depthwise_conv2d, window_out, Pad2d};
use candle_core::{bail, Result, Tensor};

/// 2D convolution of `x` [N, C_in, H, W] with `w` [C_out, C_in/groups, kh, kw]
/// whose backward works for every size and padding.
///
/// The padded input is cut to the rows/cols the windows read before candle's
/// conv2d (padding 0) runs: candle's backward assumes no trailing unused
/// pixels and fails on e.g. stride-2 convs over odd sizes. Depthwise convs
/// (groups == C_in == C_out, filter [C, 1, kh, kw]) go to [`depthwise_conv2d`].
/// Stride and dilation are square because candle's conv2d only has those.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: Pad2d,
    dilation: usize,
    groups: usize,
) -> Result<Tensor> {
    let (_, c_in, h, wd) = x.dims4()?;
    let (c_out, c_in_g, kh, kw) = w.dims4()?;
    if groups > 1 && groups == c_in && c_out == c_in && c_in_g == 1 {
        return depthwise_conv2d(x, w, bias, (stride, stride), (dilation, dilation), padding);
    }
    let p = padding;
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
