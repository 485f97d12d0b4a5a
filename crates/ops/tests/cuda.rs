//! CUDA kernels against the CPU ops on random inputs, odd sizes included, forward and
//! backward. Built with `--features cuda` only; it needs a GPU and fails (does not skip)
//! without one.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Result, Tensor, Var};
use pupil_ops::{conv2d, depthwise_conv2d, max_pool2d, resize_bilinear, resize_nearest, Pad2d};

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests need a CUDA GPU (device 0)")
}

/// max |a - b| / max |b|.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let (a, b) = (cpu(a), cpu(b));
    let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
    let s = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f64>().unwrap() / s.to_scalar::<f64>().unwrap().max(1e-12)
}

/// Output and input gradients of `sum(f(inputs) * proj)` on `dev`.
fn run(
    dev: &Device,
    inputs: &[Tensor],
    proj: Option<&Tensor>,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    dtype: DType,
) -> (Tensor, Vec<Tensor>, Tensor) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap().to_device(dev).unwrap()).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let proj = match proj {
        Some(p) => p.clone(),
        None => Tensor::randn(0f32, 1.0, y.shape(), &Device::Cpu).unwrap(),
    };
    let p = proj.to_dtype(dtype).unwrap().to_device(dev).unwrap();
    let g = (&y * p).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = vars
        .iter()
        .map(|v| g.get(v.as_tensor()).expect("gradient").clone())
        .collect();
    (y, grads, proj)
}

/// Compares the GPU op with the CPU op, forward and every input gradient.
fn check(what: &str, inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) {
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        let (yc, gc, proj) = run(&Device::Cpu, inputs, None, f, dtype);
        let (yg, gg, _) = run(&gpu(), inputs, Some(&proj), f, dtype);
        assert_eq!(yg.dims(), yc.dims(), "{what}: output shape");
        let d = rel_diff(&yg, &yc);
        assert!(d <= tol, "{what} {dtype:?}: forward differs by {d}");
        for (i, (a, b)) in gg.iter().zip(&gc).enumerate() {
            let d = rel_diff(a, b);
            assert!(
                d <= tol,
                "{what} {dtype:?}: gradient of input {i} differs by {d}"
            );
        }
    }
}

fn rand(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
}

#[test]
fn depthwise_matches_cpu_on_odd_sizes_strides_dilations_and_same_padding() {
    // (n, c, h, w, k, stride, dilation, pad)
    let cases = [
        (2, 3, 7, 9, 3, 2, 1, Pad2d::new(0, 1, 0, 1)),
        (1, 5, 11, 6, 5, 1, 1, Pad2d::uniform(2)),
        (3, 4, 13, 13, 5, 2, 1, Pad2d::new(1, 2, 1, 2)),
        (2, 2, 9, 10, 3, 1, 2, Pad2d::uniform(2)),
        (1, 6, 8, 8, 3, 3, 1, Pad2d::default()),
    ];
    for (n, c, h, w, k, s, d, p) in cases {
        let inputs = [rand(&[n, c, h, w]), rand(&[c, 1, k, k])];
        check(
            &format!("depthwise {n}x{c}x{h}x{w} k{k} s{s} d{d}"),
            &inputs,
            &|t| depthwise_conv2d(&t[0], &t[1], None, (s, s), (d, d), p),
        );
    }
}

#[test]
fn max_pool_matches_cpu_with_kernel_other_than_stride() {
    for (h, w, k, s, p) in [
        (9, 7, 3, 2, Pad2d::uniform(1)),
        (8, 8, 2, 2, Pad2d::default()),
        (11, 5, 3, 1, Pad2d::new(0, 1, 1, 0)),
    ] {
        let inputs = [rand(&[2, 3, h, w])];
        check(&format!("max_pool {h}x{w} k{k} s{s}"), &inputs, &|t| {
            max_pool2d(&t[0], (k, k), (s, s), p)
        });
    }
}

#[test]
fn resizes_match_cpu_both_ways_and_both_corner_modes() {
    for (h, w, oh, ow) in [(5, 7, 11, 9), (12, 9, 5, 4), (1, 3, 4, 6)] {
        let inputs = [rand(&[2, 3, h, w])];
        for ac in [false, true] {
            check(
                &format!("bilinear {h}x{w}->{oh}x{ow} ac={ac}"),
                &inputs,
                &|t| resize_bilinear(&t[0], oh, ow, ac),
            );
        }
        check(&format!("nearest {h}x{w}->{oh}x{ow}"), &inputs, &|t| {
            resize_nearest(&t[0], oh, ow)
        });
    }
}

#[test]
fn dense_conv_on_gpu_matches_cpu_for_stride_two_on_odd_sizes() {
    for (h, w, k, s, groups) in [(9, 7, 3, 2, 1), (10, 11, 1, 2, 1), (7, 7, 3, 1, 2)] {
        let inputs = [
            rand(&[2, 4, h, w]),
            rand(&[6, 4 / groups, k, k]),
            rand(&[6]),
        ];
        check(
            &format!("conv2d {h}x{w} k{k} s{s} g{groups}"),
            &inputs,
            &|t| {
                conv2d(
                    &t[0],
                    &t[1],
                    Some(&t[2]),
                    s,
                    Pad2d::new(1, 0, 0, 1),
                    1,
                    groups,
                )
            },
        );
    }
}

#[test]
fn half_precision_inputs_run_through_the_f32_kernels() {
    let x = rand(&[1, 3, 9, 9])
        .to_dtype(DType::BF16)
        .unwrap()
        .to_device(&gpu())
        .unwrap();
    let w = rand(&[3, 1, 3, 3])
        .to_dtype(DType::BF16)
        .unwrap()
        .to_device(&gpu())
        .unwrap();
    let y = depthwise_conv2d(&x, &w, None, (2, 2), (1, 1), Pad2d::uniform(1)).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_eq!(y.dims(), &[1, 3, 5, 5]);
    let r = resize_bilinear(&y, 10, 10, false).unwrap();
    assert_eq!(r.dtype(), DType::BF16);
}
