//! Glue between candle's CPU storage and the slice kernels.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, WithDType};

/// Element types the kernels are compiled for.
pub(crate) trait Real: WithDType {
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f32::NEG_INFINITY;
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f64::NEG_INFINITY;
}

/// The contiguous elements behind `layout`; the public wrappers make their
/// inputs contiguous, so anything else is a caller bug.
pub(crate) fn slice<'a, T: Real>(s: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}

pub(crate) fn dims4(layout: &Layout, op: &str) -> Result<[usize; 4]> {
    match layout.dims() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        d => bail!("{op}: expected an NCHW tensor, got shape {d:?}"),
    }
}

/// Runs `f` at the storage's element type (f32 or f64).
macro_rules! dispatch_real {
    ($storage:expr, $op:expr, |$t:ident| $body:expr) => {
        match $storage {
            candle_core::CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            candle_core::CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            s => candle_core::bail!(
                "{}: unsupported dtype {:?}",
                $op,
                candle_core::backend::BackendStorage::dtype(s)
            ),
        }
    };
}
pub(crate) use dispatch_real;

pub(crate) fn same_dtype(a: &CpuStorage, b: &CpuStorage, op: &str) -> Result<()> {
    let (da, db) = (a.dtype(), b.dtype());
    if da != db {
        bail!("{op}: dtype mismatch {da:?} vs {db:?}");
    }
    Ok(())
}
