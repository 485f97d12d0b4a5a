use crate::cpu::{pool as k, Window};
use crate::storage::{dims4, dispatch_real, same_dtype, slice};
use crate::Pad2d;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType,
};

const NAME: &str = "max_pool2d";

#[derive(Clone, Copy, Debug)]
struct MaxPool {
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: Pad2d,
}

impl MaxPool {
    fn window(&self, hw: (usize, usize)) -> Result<Window> {
        Window::new(NAME, hw, self.kernel, self.stride, (1, 1), self.pad)
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let [n, c, h, w] = dims4(xl, NAME)?;
        let win = self.window((h, w))?;
        let out = dispatch_real!(xs, NAME, |T| {
            T::to_cpu_storage_owned(k::forward(slice::<T>(xs, xl, NAME)?, &win))
        });
        Ok((out, Shape::from((n, c, win.oh, win.ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let [n, c, h, w] = dims4(xl, NAME)?;
        let win = self.window((h, w))?;
        let y = crate::cuda::max_pool_fwd((xs, xl), n * c, &win)?;
        Ok((y, Shape::from((n, c, win.oh, win.ow))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let gx = x.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolGrad(*self))?;
        Ok(Some(gx))
    }
}

/// (input, grad_out) -> grad_in; the argmax is recomputed from the input
/// rather than stored by the forward pass.
struct MaxPoolGrad(MaxPool);

impl MaxPoolGrad {
    /// (n, c, window) of the forward pass, checked against the gradient's shape.
    fn geometry(&self, xl: &Layout, gl: &Layout) -> Result<(usize, usize, Window)> {
        let [n, c, h, w] = dims4(xl, NAME)?;
        let win = self.0.window((h, w))?;
        if dims4(gl, NAME)? != [n, c, win.oh, win.ow] {
            bail!(
                "{NAME}: gradient shape {:?} does not match the output",
                gl.dims()
            );
        }
        Ok((n, c, win))
    }
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max_pool2d_grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_dtype(xs, gs, NAME)?;
        let (_, _, win) = self.geometry(xl, gl)?;
        let out = dispatch_real!(xs, NAME, |T| {
            let gx = k::backward(slice::<T>(xs, xl, NAME)?, slice::<T>(gs, gl, NAME)?, &win);
            T::to_cpu_storage_owned(gx)
        });
        Ok((out, xl.shape().clone()))
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
        let gx = crate::cuda::max_pool_bwd((xs, xl), (gs, gl), n * c, &win)?;
        Ok((gx, xl.shape().clone()))
    }
}

/// Max pooling over `x` [N, C, H, W] with -inf padding, so kernel != stride
/// and TF 'SAME' (asymmetric) padding work; the gradient goes to the first
/// maximum of each window in row-major order.
pub fn max_pool2d(
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Pad2d,
) -> Result<Tensor> {
    let op = MaxPool {
        kernel,
        stride,
        pad: padding,
    };
    crate::upcast1(x, |x| x.apply_op1(op))
}
