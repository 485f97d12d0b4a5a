//! Launchers for `cuda/kernels.cu` (compiled to PTX by build.rs), called from the ops'
//! `cuda_fwd`. Inputs are contiguous (the public functions make them so); f32 and f64 run
//! natively, half precision is upcast by the public wrappers.
use crate::cpu::Window;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/pupil_kernels.ptx"));
const MODULE: &str = "pupil_ops";

/// Mirror of `struct Win` in kernels.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Win {
    h: i32,
    w: i32,
    kh: i32,
    kw: i32,
    sh: i32,
    sw: i32,
    dh: i32,
    dw: i32,
    pt: i32,
    pl: i32,
    oh: i32,
    ow: i32,
}

// SAFETY: plain-old-data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for Win {}

impl Win {
    fn new(g: &Window) -> Self {
        let i = |v: usize| v as i32;
        Win {
            h: i(g.h),
            w: i(g.w),
            kh: i(g.kh),
            kw: i(g.kw),
            sh: i(g.sh),
            sw: i(g.sw),
            dh: i(g.dh),
            dw: i(g.dw),
            pt: i(g.pad.top),
            pl: i(g.pad.left),
            oh: i(g.oh),
            ow: i(g.ow),
        }
    }
}

/// Element types the kernels exist for.
pub(crate) trait Elem: CudaDType + DeviceRepr + ValidAsZeroBits + Copy + 'static {
    const SUFFIX: &'static str;
    fn from_f64(v: f64) -> Self;
}
impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}
impl Elem for f64 {
    const SUFFIX: &'static str = "f64";
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Runs `$body` with `$t` bound to the storage's element type.
macro_rules! by_dtype {
    ($dtype:expr, $op:expr, |$t:ident| $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            d => bail!("{}: no CUDA kernel for {d:?}", $op),
        }
    };
}

fn view<'a, T: Elem>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<T>()?.slice(a..b)),
        None => bail!("{op}: input must be contiguous"),
    }
}

fn launch_config(n: usize) -> LaunchConfig {
    // A grid-stride loop covers whatever the capped grid does not.
    let blocks = n.div_ceil(256).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The kernel `name` for element type `T` (candle's function type is not nameable here).
macro_rules! func {
    ($dev:expr, $t:ty, $name:expr) => {
        $dev.get_or_load_custom_func(&format!("{}_{}", $name, <$t as Elem>::SUFFIX), MODULE, PTX)
    };
}

fn wrap<T: Elem>(s: CudaSlice<T>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(s, dev.clone())
}

fn same_dtype(a: &CudaStorage, b: &CudaStorage, op: &str) -> Result<DType> {
    if a.dtype() != b.dtype() {
        bail!("{op}: dtype mismatch {:?} vs {:?}", a.dtype(), b.dtype());
    }
    Ok(a.dtype())
}

/// `name(a, b, out, c, total, win)` with one thread per output element: the depthwise
/// forward (x, filter) and input gradient (grad, filter) kernels.
fn launch_depthwise(
    op: &str,
    name: &str,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    c: usize,
    total: usize,
    g: &Window,
) -> Result<CudaStorage> {
    let dev = a.0.device().clone();
    by_dtype!(same_dtype(a.0, b.0, op)?, op, |T| {
        let (av, bv) = (view::<T>(a.0, a.1, op)?, view::<T>(b.0, b.1, op)?);
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<T>(total)? };
        let f = func!(dev, T, name)?;
        let (ci, ti, win) = (c as i32, total as i64, Win::new(g));
        let mut lb = f.builder();
        lb.arg(&av).arg(&bv).arg(&out).arg(&ci).arg(&ti).arg(&win);
        // SAFETY: argument types match the kernel's signature.
        unsafe { lb.launch(launch_config(total)) }.w()?;
        Ok(wrap(out, &dev))
    })
}

pub(crate) fn depthwise_fwd(
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    n: usize,
    c: usize,
    g: &Window,
) -> Result<CudaStorage> {
    let total = n * c * g.oh * g.ow;
    launch_depthwise("depthwise_conv2d", "depthwise_fwd", x, w, c, total, g)
}

pub(crate) fn depthwise_bwd_input(
    gy: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    n: usize,
    c: usize,
    g: &Window,
) -> Result<CudaStorage> {
    let total = n * c * g.h * g.w;
    launch_depthwise(
        "depthwise_conv2d_grad_input",
        "depthwise_bwd_input",
        gy,
        w,
        c,
        total,
        g,
    )
}

pub(crate) fn depthwise_bwd_filter(
    x: (&CudaStorage, &Layout),
    gy: (&CudaStorage, &Layout),
    n: usize,
    c: usize,
    g: &Window,
) -> Result<CudaStorage> {
    const OP: &str = "depthwise_conv2d_grad_filter";
    let dev = x.0.device().clone();
    by_dtype!(same_dtype(x.0, gy.0, OP)?, OP, |T| {
        let (xv, gv) = (view::<T>(x.0, x.1, OP)?, view::<T>(gy.0, gy.1, OP)?);
        let taps = c * g.kh * g.kw;
        // SAFETY: one block per element, each writes its own.
        let out = unsafe { dev.alloc::<T>(taps)? };
        let f = func!(dev, T, "depthwise_bwd_filter")?;
        let (ni, ci, win) = (n as i32, c as i32, Win::new(g));
        let mut b = f.builder();
        b.arg(&xv).arg(&gv).arg(&out).arg(&ni).arg(&ci).arg(&win);
        let cfg = LaunchConfig {
            grid_dim: (taps as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types match the kernel's signature; 256 threads fill its
        // 256-entry shared array.
        unsafe { b.launch(cfg) }.w()?;
        Ok(wrap(out, &dev))
    })
}

pub(crate) fn max_pool_fwd(
    x: (&CudaStorage, &Layout),
    planes: usize,
    g: &Window,
) -> Result<CudaStorage> {
    const OP: &str = "max_pool2d";
    let dev = x.0.device().clone();
    by_dtype!(x.0.dtype(), OP, |T| {
        let xv = view::<T>(x.0, x.1, OP)?;
        let total = planes * g.oh * g.ow;
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<T>(total)? };
        let f = func!(dev, T, "max_pool_fwd")?;
        let (ti, win) = (total as i64, Win::new(g));
        let mut b = f.builder();
        b.arg(&xv).arg(&out).arg(&ti).arg(&win);
        // SAFETY: argument types match the kernel's signature.
        unsafe { b.launch(launch_config(total)) }.w()?;
        Ok(wrap(out, &dev))
    })
}

pub(crate) fn max_pool_bwd(
    x: (&CudaStorage, &Layout),
    gy: (&CudaStorage, &Layout),
    planes: usize,
    g: &Window,
) -> Result<CudaStorage> {
    const OP: &str = "max_pool2d_grad";
    let dev = x.0.device().clone();
    by_dtype!(same_dtype(x.0, gy.0, OP)?, OP, |T| {
        let (xv, gv) = (view::<T>(x.0, x.1, OP)?, view::<T>(gy.0, gy.1, OP)?);
        let out = dev.alloc_zeros::<T>(planes * g.h * g.w)?;
        let total = planes * g.oh * g.ow;
        let f = func!(dev, T, "max_pool_bwd")?;
        let (ti, win) = (total as i64, Win::new(g));
        let mut b = f.builder();
        b.arg(&xv).arg(&gv).arg(&out).arg(&ti).arg(&win);
        // SAFETY: argument types match the kernel's signature.
        unsafe { b.launch(launch_config(total)) }.w()?;
        Ok(wrap(out, &dev))
    })
}

/// Bilinear taps of one axis, as `(i0, i1)` pairs and `(l0, l1)` weight pairs.
pub(crate) struct AxisTaps {
    pub index: Vec<i32>,
    pub weight: Vec<f64>,
}

/// Which resize: `grad` runs the adjoint (from the output size back to the input size).
pub(crate) enum ResizeKind<'a> {
    Bilinear { ty: &'a AxisTaps, tx: &'a AxisTaps },
    Nearest { iy: &'a [i32], ix: &'a [i32] },
}

pub(crate) fn resize(
    s: (&CudaStorage, &Layout),
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    kind: ResizeKind,
    grad: bool,
) -> Result<CudaStorage> {
    const OP: &str = "resize";
    let dev = s.0.device().clone();
    by_dtype!(s.0.dtype(), OP, |T| {
        let sv = view::<T>(s.0, s.1, OP)?;
        let total = planes * oh * ow;
        let out = match grad {
            true => dev.alloc_zeros::<T>(planes * h * w)?,
            // SAFETY: every element is written by the kernel.
            false => unsafe { dev.alloc::<T>(total)? },
        };
        let (ti, hi, wi, ohi, owi) = (total as i64, h as i32, w as i32, oh as i32, ow as i32);
        let dir = if grad { "bwd" } else { "fwd" };
        match kind {
            ResizeKind::Bilinear { ty, tx } => {
                let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
                let yi = dev.clone_htod(&ty.index)?;
                let yl = dev.clone_htod(&cast(&ty.weight))?;
                let xi = dev.clone_htod(&tx.index)?;
                let xl = dev.clone_htod(&cast(&tx.weight))?;
                let f = func!(dev, T, &format!("bilinear_{dir}"))?;
                let mut b = f.builder();
                b.arg(&sv)
                    .arg(&out)
                    .arg(&ti)
                    .arg(&hi)
                    .arg(&wi)
                    .arg(&ohi)
                    .arg(&owi);
                b.arg(&yi).arg(&yl).arg(&xi).arg(&xl);
                // SAFETY: argument types match the kernel's signature.
                unsafe { b.launch(launch_config(total)) }.w()?;
            }
            ResizeKind::Nearest { iy, ix } => {
                let (iyd, ixd) = (dev.clone_htod(iy)?, dev.clone_htod(ix)?);
                let f = func!(dev, T, &format!("nearest_{dir}"))?;
                let mut b = f.builder();
                b.arg(&sv)
                    .arg(&out)
                    .arg(&ti)
                    .arg(&hi)
                    .arg(&wi)
                    .arg(&ohi)
                    .arg(&owi);
                b.arg(&iyd).arg(&ixd);
                // SAFETY: argument types match the kernel's signature.
                unsafe { b.launch(launch_config(total)) }.w()?;
            }
        }
        Ok(wrap(out, &dev))
    })
}
