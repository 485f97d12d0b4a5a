//! Built from candle ops that all have backward rules, so no custom kernel is
//! needed. The max is detached: softmax does not depend on the shift, and
//! leaving it attached would only add a zero-sum gradient path.

use candle_core::{Result, Tensor, D};

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let e = shifted.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// log(softmax(x)) over the last dimension, computed as x - max - log(sum(exp(x - max)))
/// so large logits do not overflow.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}
