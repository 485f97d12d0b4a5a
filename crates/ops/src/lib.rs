//! Kernels candle 0.11.1 lacks or gets wrong, as differentiable ops on
//! `candle_core::Tensor` (NCHW; f32 and f64 natively, half precision through f32).
//!
//! Layout: `cpu/` holds plain slice kernels generic over the element type;
//! each op module wraps them in a candle `CustomOp` (`cpu_fwd` + `bwd`). The
//! `cuda` feature adds `cuda_fwd` to the same op structs, with the kernels in
//! `cuda/kernels.cu` (compiled to PTX by build.rs) launched from `cuda.rs`.
//! `fused` holds the fused CPU element-wise kernels (batch norm, affine + activation,
//! SiLU, the squeeze-excite gate), `focal` the detector's class loss, `dist` the collectives of data-parallel training, `par`
//! the CPU parallel loops.

mod conv;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod depthwise;
pub mod dist;
pub mod focal;
pub mod fused;
pub mod par;
mod pool;
mod resize;
pub mod sgd;
pub mod simd;
mod softmax;
mod storage;
pub mod xent;

pub use conv::conv2d;
pub use depthwise::depthwise_conv2d;
pub use fused::Act;
pub use pool::max_pool2d;
pub use resize::{resize_bilinear, resize_nearest};
pub use softmax::{log_softmax_last_dim, softmax_last_dim};

/// Asks mimalloc (when it is the global allocator) to keep freed memory mapped instead of
/// returning it to the kernel after 10 ms: each training step would otherwise fault its
/// large activation buffers in again and pay for the kernel zeroing them.
pub fn keep_freed_memory() {
    // mi_option_purge_delay in mimalloc.h; -1 disables purging.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// Runs a one-input op at f32 when `x` is half precision (the kernels exist for f32 and
/// f64) and casts the result back; contiguous input in every case.
pub(crate) fn upcast1(
    x: &candle_core::Tensor,
    f: impl FnOnce(&candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::DType;
    match x.dtype() {
        DType::F16 | DType::BF16 => f(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype()),
        _ => f(&x.contiguous()?),
    }
}

/// [`upcast1`] for two inputs of the same dtype.
pub(crate) fn upcast2(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    f: impl FnOnce(
        &candle_core::Tensor,
        &candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor>,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::DType;
    match x.dtype() {
        DType::F16 | DType::BF16 => {
            f(&x.to_dtype(DType::F32)?, &w.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
        }
        _ => f(&x.contiguous()?, &w.contiguous()?),
    }
}

/// Zero (or -inf for pooling) padding added around the spatial dims, in pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pad2d {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad2d {
    pub fn new(top: usize, bottom: usize, left: usize, right: usize) -> Self {
        Self {
            top,
            bottom,
            left,
            right,
        }
    }

    /// The same padding on all four sides (PyTorch style).
    pub fn uniform(p: usize) -> Self {
        Self::new(p, p, p, p)
    }
}

/// TensorFlow 'SAME' padding: output = ceil(in / stride), the odd pixel of
/// padding going to the bottom/right.
pub fn same_padding(in_h: usize, in_w: usize, k: usize, stride: usize, dilation: usize) -> Pad2d {
    let (top, bottom) = same_padding_1d(in_h, k, stride, dilation);
    let (left, right) = same_padding_1d(in_w, k, stride, dilation);
    Pad2d::new(top, bottom, left, right)
}

/// [`same_padding`] along one axis: (before, after).
pub fn same_padding_1d(len: usize, k: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = len.div_ceil(stride.max(1));
    let span = (k.max(1) - 1) * dilation + 1;
    let total = (out.saturating_sub(1) * stride + span).saturating_sub(len);
    (total / 2, total - total / 2)
}

/// Output length of a sliding window along one axis, `None` when the padded
/// input is shorter than the dilated kernel.
pub(crate) fn window_out(
    len: usize,
    before: usize,
    after: usize,
    k: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    if k == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let span = (k - 1) * dilation + 1;
    let padded = len + before + after;
    (padded >= span).then(|| (padded - span) / stride + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tf_examples() {
        // 224 -> 112 with k3 s2 needs one pixel, all of it after.
        assert_eq!(same_padding(224, 224, 3, 2, 1), Pad2d::new(0, 1, 0, 1));
        // Odd 7x9, k3 s2: out 4x5, totals 2 and 2.
        assert_eq!(same_padding(7, 9, 3, 2, 1), Pad2d::new(1, 1, 1, 1));
        // k5 s2 on 14: out 7, total (6*2+5)-14 = 3 -> 1 before, 2 after.
        assert_eq!(same_padding(14, 14, 5, 2, 1), Pad2d::new(1, 2, 1, 2));
        // Stride 1, dilation 2, k3: span 5, total 4.
        assert_eq!(same_padding(10, 11, 3, 1, 2), Pad2d::uniform(2));
        // Kernel smaller than stride leaves nothing to pad.
        assert_eq!(same_padding(8, 8, 1, 2, 1), Pad2d::default());
    }

    #[test]
    fn window_out_counts_and_rejects() {
        assert_eq!(window_out(7, 1, 1, 3, 2, 1), Some(4));
        assert_eq!(window_out(9, 0, 0, 3, 1, 2), Some(5));
        assert_eq!(window_out(2, 0, 0, 3, 1, 1), None);
        assert_eq!(window_out(5, 0, 0, 0, 1, 1), None);
        assert_eq!(window_out(5, 0, 0, 3, 0, 1), None);
    }
}
