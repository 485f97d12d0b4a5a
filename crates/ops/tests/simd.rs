//! The AVX2 build of the kernels gives the same bits as the baseline build: forward
//! outputs and gradients of every CPU op, and the fused SGD step. Its own test binary, as
//! it switches the path for the whole process.
use candle_core::{DType, Device, Tensor, Var};
use pupil_ops::{fused, Act, Pad2d};
use std::sync::Arc;

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Outputs and input gradients of a chain through every op, in f32, at odd sizes so
/// vector tails are exercised.
fn run_all() -> Vec<Vec<u32>> {
    let dev = Device::Cpu;
    let gen = |shape: &[usize], seed: u64| {
        // a fixed pattern, not the RNG: both runs must see the same inputs
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i as u64 * 2_654_435_761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let x = Var::from_tensor(&gen(&[2, 6, 19, 23], 1)).unwrap();
    let wd = Var::from_tensor(&gen(&[6, 1, 3, 3], 2)).unwrap();
    let wc = Var::from_tensor(&gen(&[10, 6, 3, 3], 3)).unwrap();
    let g = Var::from_tensor(&(gen(&[10], 4) + 1.5).unwrap()).unwrap();
    let b = Var::from_tensor(&gen(&[10], 5)).unwrap();

    let y = pupil_ops::depthwise_conv2d(
        x.as_tensor(),
        wd.as_tensor(),
        None,
        (2, 2),
        (1, 1),
        Pad2d::new(1, 1, 1, 1),
    )
    .unwrap();
    let y = fused::silu(&y).unwrap();
    let y = pupil_ops::conv2d(&y, wc.as_tensor(), None, 1, Pad2d::new(1, 1, 1, 1), 1, 1).unwrap();
    let (y, _) =
        fused::batch_norm_train_act(&y, g.as_tensor(), b.as_tensor(), 1e-3, Act::Silu).unwrap();
    let (z, _) =
        fused::batch_norm_train_add_relu(&y, g.as_tensor(), b.as_tensor(), 1e-3, &y).unwrap();
    let z = pupil_ops::max_pool2d(&z, (3, 3), (2, 2), Pad2d::new(1, 1, 1, 1)).unwrap();
    let z = pupil_ops::resize_bilinear(&z, 13, 17, false).unwrap();
    let (n, c, h, w) = z.dims4().unwrap();
    let logits = z
        .permute((0, 2, 3, 1))
        .unwrap()
        .reshape((n * h * w, c))
        .unwrap();
    let t = gen(&[n * h * w, c], 6)
        .ge(0.6)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let rw = gen(&[n * h * w, 1], 7)
        .ge(-0.8)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let focal = pupil_ops::focal::weighted_focal_sum(&logits, &t, &rw, 0.25, 1.5)
        .unwrap()
        .unwrap();
    let labels: Vec<u32> = (0..n * h * w).map(|i| (i % (c + 1)) as u32).collect();
    let xent = pupil_ops::xent::softmax_xent_sum(&z, &Arc::new(labels), c as u32)
        .unwrap()
        .unwrap();
    let loss = (focal + xent).unwrap();
    let grads = loss.backward().unwrap();
    let mut out = vec![bits(&loss.reshape(1).unwrap()), bits(&z)];
    for v in [&x, &wd, &wc, &g, &b] {
        out.push(bits(grads.get(v.as_tensor()).unwrap()));
    }
    // the fused SGD step on a tensor above its parallel threshold and one below
    for len in [100_003, 999] {
        let w = gen(&[len], 8);
        let gr = gen(&[len], 9);
        let buf = gen(&[len], 10);
        let st = pupil_ops::sgd::step_stats(&w, &gr, Some(&buf), 1e-4).unwrap();
        out.push(vec![
            (st.sumsq as f32).to_bits(),
            (st.max_d as f32).to_bits(),
            (st.max_w as f32).to_bits(),
        ]);
        pupil_ops::sgd::step_update(&w, &gr, &buf, 1e-4, 0.5, 0.9, 0.1).unwrap();
        out.push(bits(&w));
        out.push(bits(&buf));
    }
    out
}

#[test]
fn avx2_and_baseline_paths_give_the_same_bits() {
    if !pupil_ops::simd::has_avx2() {
        eprintln!("this CPU has no AVX2 (or PUPIL_NO_AVX2=1): both runs take the baseline path");
    }
    let wide = run_all();
    pupil_ops::simd::set_enabled(false);
    assert!(!pupil_ops::simd::has_avx2());
    let base = run_all();
    pupil_ops::simd::set_enabled(true);
    assert_eq!(wide.len(), base.len());
    for (i, (a, b)) in wide.iter().zip(&base).enumerate() {
        assert_eq!(a.len(), b.len(), "output {i}");
        let diff = a.iter().zip(b).filter(|(p, q)| p != q).count();
        assert_eq!(diff, 0, "output {i}: {diff} of {} values differ", a.len());
    }
}
