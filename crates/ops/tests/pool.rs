mod common;

use candle_core::{Device, Tensor, Var};
use common::{assert_close, check_grads, max_pool_ref, values, Rng};
use proptest::prelude::*;
use pupil_ops::{max_pool2d, same_padding, Pad2d};

#[test]
fn max_pool_hand_computed_same_3x3_s2() {
    // 4x4 ramp, TF 'SAME' 3x3/s2: pad (0,1,0,1); windows start at rows/cols 0 and 2.
    let x = Tensor::from_vec(
        (0..16).map(|v| v as f64).collect::<Vec<_>>(),
        (1, 1, 4, 4),
        &Device::Cpu,
    )
    .unwrap();
    let p = same_padding(4, 4, 3, 2, 1);
    assert_eq!(p, Pad2d::new(0, 1, 0, 1));
    let y = max_pool2d(&x, (3, 3), (2, 2), p).unwrap();
    assert_eq!(values(&y), vec![10., 11., 14., 15.]);
    // Negative inputs: -inf padding must never win over them.
    let y = max_pool2d(&(x - 100.).unwrap(), (3, 3), (2, 2), Pad2d::uniform(1)).unwrap();
    assert_eq!(values(&y), vec![-95., -93., -87., -85.]);
}

#[test]
fn max_pool_forward_matches_naive() {
    for (i, &(dims, k, s, p)) in [
        ([2, 3, 7, 9], (3, 3), (2, 2), same_padding(7, 9, 3, 2, 1)),
        ([1, 2, 8, 8], (2, 2), (2, 2), Pad2d::default()),
        ([1, 2, 9, 6], (3, 2), (1, 2), Pad2d::new(1, 0, 0, 1)),
        ([1, 1, 5, 5], (5, 5), (1, 1), Pad2d::uniform(2)),
    ]
    .iter()
    .enumerate()
    {
        let x = Rng::new(i as u64).tensor(&dims);
        let y = max_pool2d(&x, k, s, p).unwrap();
        let (want, oh, ow) = max_pool_ref(&values(&x), dims, k, s, p);
        assert_eq!(y.dims(), &[dims[0], dims[1], oh, ow]);
        assert_eq!(values(&y), want, "case {i}");
    }
}

#[test]
fn max_pool_ties_send_grad_to_first_max() {
    // Overlapping 3x3/s1 windows over a constant plane: every window's first
    // element (row-major) gets its gradient, as PyTorch does.
    let x = Var::from_tensor(
        &Tensor::ones((1, 1, 4, 4), candle_core::DType::F64, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let y = max_pool2d(x.as_tensor(), (3, 3), (1, 1), Pad2d::default()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = values(g.get(x.as_tensor()).unwrap());
    let mut want = vec![0.0; 16];
    for (oy, ox) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        want[oy * 4 + ox] += 1.0;
    }
    assert_eq!(gx, want);
    // With padding, a tie between a pixel and nothing else still goes to the pixel.
    let y = max_pool2d(x.as_tensor(), (3, 3), (2, 2), same_padding(4, 4, 3, 2, 1)).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = values(g.get(x.as_tensor()).unwrap());
    let mut want = vec![0.0; 16];
    for idx in [0, 2, 8, 10] {
        want[idx] = 1.0;
    }
    assert_eq!(gx, want);
}

#[test]
fn max_pool_grads_finite_difference() {
    for (i, &(dims, k, s, p)) in [
        ([2, 3, 7, 9], (3, 3), (2, 2), same_padding(7, 9, 3, 2, 1)),
        ([1, 2, 9, 9], (3, 3), (2, 2), Pad2d::uniform(1)),
        ([1, 2, 8, 7], (2, 3), (2, 1), Pad2d::new(0, 1, 1, 1)),
        ([1, 2, 6, 6], (2, 2), (2, 2), Pad2d::default()),
    ]
    .iter()
    .enumerate()
    {
        let x = Rng::new(300 + i as u64).tensor(&dims);
        check_grads(
            &[x],
            |t| max_pool2d(&t[0], k, s, p),
            1e-7,
            &format!("max_pool case {i}"),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn max_pool_random_geometry(
        n in 1usize..3, c in 1usize..3, h in 1usize..12, w in 1usize..12,
        kh in 1usize..5, kw in 1usize..5, sh in 1usize..4, sw in 1usize..4,
        pt in 0usize..3, pb in 0usize..3, pl in 0usize..3, pr in 0usize..3, seed in 0u64..1000,
    ) {
        // Each window must see at least one pixel (true whenever pad < kernel).
        prop_assume!(pt < kh && pb < kh && pl < kw && pr < kw);
        prop_assume!(h + pt + pb >= kh && w + pl + pr >= kw);
        let p = Pad2d::new(pt, pb, pl, pr);
        let dims = [n, c, h, w];
        let mut rng = Rng::new(seed);
        let x = Var::from_tensor(&rng.tensor(&dims)).unwrap();
        let y = max_pool2d(x.as_tensor(), (kh, kw), (sh, sw), p).unwrap();
        let (want, _, _) = max_pool_ref(&values(x.as_tensor()), dims, (kh, kw), (sh, sw), p);
        prop_assert_eq!(values(&y), want);
        // Every output's gradient lands on an input equal to that output.
        let g = rng.tensor(y.dims());
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = grads.get(x.as_tensor()).unwrap();
        let lhs = (gx * x.as_tensor()).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let rhs = (&y * &g).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        prop_assert!((lhs - rhs).abs() < 1e-10 * (1.0 + rhs.abs()));
        assert_close(&[values(gx).iter().sum::<f64>()], &[values(&g).iter().sum::<f64>()], 1e-10, "grad mass");
    }
}
