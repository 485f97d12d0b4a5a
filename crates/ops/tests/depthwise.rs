mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_close, check_grads, conv_ref, values, Rng};
use proptest::prelude::*;
use pupil_ops::{conv2d, depthwise_conv2d, same_padding, Pad2d};

struct Case {
    x: [usize; 4],
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
    p: Pad2d,
}

fn forward_matches_ref(case: &Case, seed: u64) {
    let mut rng = Rng::new(seed);
    let [n, c, _, _] = case.x;
    let x = rng.tensor(&case.x);
    let wt = rng.tensor(&[c, 1, case.k.0, case.k.1]);
    let y = depthwise_conv2d(&x, &wt, None, case.s, case.d, case.p).unwrap();
    let (want, oh, ow) = conv_ref(
        &values(&x),
        case.x,
        &values(&wt),
        [c, 1, case.k.0, case.k.1],
        case.s,
        case.d,
        case.p,
        c,
    );
    assert_eq!(y.dims(), &[n, c, oh, ow]);
    assert_close(&values(&y), &want, 1e-12, "depthwise forward");
}

#[test]
fn depthwise_forward_matches_naive_on_odd_shapes() {
    let cases = [
        Case {
            x: [2, 3, 7, 9],
            k: (3, 3),
            s: (2, 2),
            d: (1, 1),
            p: same_padding(7, 9, 3, 2, 1),
        },
        Case {
            x: [1, 4, 9, 7],
            k: (5, 5),
            s: (2, 2),
            d: (1, 1),
            p: same_padding(9, 7, 5, 2, 1),
        },
        Case {
            x: [2, 2, 8, 11],
            k: (3, 3),
            s: (1, 1),
            d: (2, 2),
            p: Pad2d::uniform(2),
        },
        Case {
            x: [1, 3, 10, 6],
            k: (2, 4),
            s: (3, 1),
            d: (1, 2),
            p: Pad2d::new(0, 3, 1, 0),
        },
        Case {
            x: [1, 2, 5, 5],
            k: (7, 7),
            s: (1, 1),
            d: (1, 1),
            p: Pad2d::uniform(3),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        forward_matches_ref(case, 100 + i as u64);
    }
}

#[test]
fn depthwise_hand_computed_values() {
    // 3x3 box filter over 1..9 with zero padding 1: each output sums its 3x3 neighbourhood.
    let x = Tensor::from_vec(
        (1..=9).map(|v| v as f64).collect::<Vec<_>>(),
        (1, 1, 3, 3),
        &Device::Cpu,
    )
    .unwrap();
    let w = Tensor::ones((1, 1, 3, 3), DType::F64, &Device::Cpu).unwrap();
    let y = depthwise_conv2d(&x, &w, None, (1, 1), (1, 1), Pad2d::uniform(1)).unwrap();
    assert_eq!(
        values(&y),
        vec![12., 21., 16., 27., 45., 33., 24., 39., 28.]
    );
    // TF 'SAME' stride 2 on 3x3: pad 1 each side, outputs at (0,0),(0,2),(2,0),(2,2).
    let y = depthwise_conv2d(&x, &w, None, (2, 2), (1, 1), same_padding(3, 3, 3, 2, 1)).unwrap();
    assert_eq!(values(&y), vec![12., 16., 24., 28.]);
}

#[test]
fn depthwise_bias_and_f32_agree_with_f64() {
    let mut rng = Rng::new(7);
    let x = rng.tensor(&[2, 5, 11, 13]);
    let w = rng.tensor(&[5, 1, 5, 5]);
    let b = rng.tensor(&[5]);
    let p = same_padding(11, 13, 5, 2, 1);
    let y64 = depthwise_conv2d(&x, &w, Some(&b), (2, 2), (1, 1), p).unwrap();
    let no_bias = depthwise_conv2d(&x, &w, None, (2, 2), (1, 1), p).unwrap();
    let diff = (&y64 - &no_bias).unwrap().mean((0, 2, 3)).unwrap();
    assert_close(&values(&diff), &values(&b), 1e-12, "bias");
    let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let y32 = depthwise_conv2d(&f(&x), &f(&w), Some(&f(&b)), (2, 2), (1, 1), p).unwrap();
    assert_close(
        &values(&y32.to_dtype(DType::F64).unwrap()),
        &values(&y64),
        1e-5,
        "f32",
    );
}

#[test]
fn depthwise_grads_finite_difference() {
    let cases = [
        Case {
            x: [2, 3, 7, 9],
            k: (3, 3),
            s: (2, 2),
            d: (1, 1),
            p: same_padding(7, 9, 3, 2, 1),
        },
        Case {
            x: [1, 2, 9, 7],
            k: (5, 5),
            s: (2, 2),
            d: (1, 1),
            p: same_padding(9, 7, 5, 2, 1),
        },
        Case {
            x: [2, 2, 7, 9],
            k: (3, 3),
            s: (1, 1),
            d: (2, 2),
            p: Pad2d::new(2, 1, 0, 2),
        },
        // No padding and trailing rows/cols that no window reaches.
        Case {
            x: [1, 2, 8, 10],
            k: (3, 3),
            s: (2, 3),
            d: (1, 1),
            p: Pad2d::default(),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut rng = Rng::new(200 + i as u64);
        let c = case.x[1];
        let inputs = [
            rng.tensor(&case.x),
            rng.tensor(&[c, 1, case.k.0, case.k.1]),
            rng.tensor(&[c]),
        ];
        check_grads(
            &inputs,
            |t| depthwise_conv2d(&t[0], &t[1], Some(&t[2]), case.s, case.d, case.p),
            1e-7,
            &format!("depthwise case {i}"),
        );
    }
}

#[test]
fn depthwise_f32_backward_runs_and_matches_f64() {
    let mut rng = Rng::new(11);
    let x = rng.tensor(&[2, 4, 15, 15]);
    let w = rng.tensor(&[4, 1, 3, 3]);
    let p = same_padding(15, 15, 3, 2, 1);
    let grads_of = |dt: DType| {
        let xv = candle_core::Var::from_tensor(&x.to_dtype(dt).unwrap()).unwrap();
        let wv = candle_core::Var::from_tensor(&w.to_dtype(dt).unwrap()).unwrap();
        let y = depthwise_conv2d(xv.as_tensor(), wv.as_tensor(), None, (2, 2), (1, 1), p).unwrap();
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let get = |v: &candle_core::Var| {
            values(&g.get(v.as_tensor()).unwrap().to_dtype(DType::F64).unwrap())
        };
        (get(&xv), get(&wv))
    };
    let (gx32, gw32) = grads_of(DType::F32);
    let (gx64, gw64) = grads_of(DType::F64);
    assert_close(&gx32, &gx64, 1e-4, "f32 grad x");
    assert_close(&gw32, &gw64, 1e-4, "f32 grad w");
}

#[test]
fn conv2d_dispatches_depthwise() {
    let mut rng = Rng::new(3);
    let x = rng.tensor(&[1, 6, 9, 9]);
    let w = rng.tensor(&[6, 1, 3, 3]);
    let p = same_padding(9, 9, 3, 2, 1);
    let a = conv2d(&x, &w, None, 2, p, 1, 6).unwrap();
    let b = depthwise_conv2d(&x, &w, None, (2, 2), (1, 1), p).unwrap();
    assert_eq!(values(&a), values(&b));
}

#[test]
fn depthwise_rejects_bad_shapes() {
    let mut rng = Rng::new(5);
    let x = rng.tensor(&[1, 3, 4, 4]);
    // Channel mismatch.
    assert!(depthwise_conv2d(
        &x,
        &rng.tensor(&[2, 1, 3, 3]),
        None,
        (1, 1),
        (1, 1),
        Pad2d::uniform(1)
    )
    .is_err());
    // Kernel larger than the padded input.
    assert!(depthwise_conv2d(
        &x,
        &rng.tensor(&[3, 1, 5, 5]),
        None,
        (1, 1),
        (1, 1),
        Pad2d::default()
    )
    .is_err());
    // Integer dtypes are refused.
    let xi = x.to_dtype(DType::U32).unwrap();
    let wi = rng.tensor(&[3, 1, 3, 3]).to_dtype(DType::U32).unwrap();
    assert!(depthwise_conv2d(&xi, &wi, None, (1, 1), (1, 1), Pad2d::uniform(1)).is_err());
}

// Random geometry: forward against the naive loops, and the backward pass
// checked as the exact adjoint of the (bilinear) forward:
// <y, g> = <x, dL/dx> = <w, dL/dw> for L = <y, g>.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn depthwise_random_geometry(
        (n, c, h, w) in (1usize..3, 1usize..4, 1usize..13, 1usize..13),
        (kh, kw, sh, sw, dh, dw) in (1usize..6, 1usize..6, 1usize..4, 1usize..4, 1usize..3, 1usize..3),
        p in [0usize..4, 0..4, 0..4, 0..4],
        seed in 0u64..1000,
    ) {
        let pad = Pad2d::new(p[0], p[1], p[2], p[3]);
        prop_assume!(h + p[0] + p[1] > (kh - 1) * dh && w + p[2] + p[3] > (kw - 1) * dw);
        let case = Case { x: [n, c, h, w], k: (kh, kw), s: (sh, sw), d: (dh, dw), p: pad };
        forward_matches_ref(&case, seed);

        let mut rng = Rng::new(seed ^ 0xABC);
        let xv = candle_core::Var::from_tensor(&rng.tensor(&[n, c, h, w])).unwrap();
        let wv = candle_core::Var::from_tensor(&rng.tensor(&[c, 1, kh, kw])).unwrap();
        let y = depthwise_conv2d(xv.as_tensor(), wv.as_tensor(), None, (sh, sw), (dh, dw), pad).unwrap();
        let g = rng.tensor(y.dims());
        let inner = |a: &Tensor, b: &Tensor| (a * b).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let yg = inner(&y, &g);
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let xg = inner(xv.as_tensor(), grads.get(xv.as_tensor()).unwrap());
        let wg = inner(wv.as_tensor(), grads.get(wv.as_tensor()).unwrap());
        prop_assert!((yg - xg).abs() < 1e-10 * (1.0 + yg.abs()), "x adjoint {yg} vs {xg}");
        prop_assert!((yg - wg).abs() < 1e-10 * (1.0 + yg.abs()), "w adjoint {yg} vs {wg}");
    }
}
