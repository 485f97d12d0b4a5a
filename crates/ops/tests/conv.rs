mod common;

use candle_core::{DType, Tensor, Var};
use common::{assert_close, check_grads, conv_ref, values, Rng};
use pupil_ops::{conv2d, same_padding, Pad2d};

struct Case {
    x: [usize; 4],
    w: [usize; 4],
    s: usize,
    d: usize,
    p: Pad2d,
    g: usize,
}

fn cases() -> Vec<Case> {
    vec![
        // Stride 2 over odd sizes with TF 'SAME' (asymmetric) padding.
        Case {
            x: [2, 3, 7, 9],
            w: [4, 3, 3, 3],
            s: 2,
            d: 1,
            p: same_padding(7, 9, 3, 2, 1),
            g: 1,
        },
        // Stride 2, no padding, even size: the last row/col is unused.
        Case {
            x: [1, 2, 8, 8],
            w: [3, 2, 3, 3],
            s: 2,
            d: 1,
            p: Pad2d::default(),
            g: 1,
        },
        // Unused trailing row but no unused column: candle alone fails here.
        Case {
            x: [1, 2, 8, 7],
            w: [3, 2, 3, 3],
            s: 2,
            d: 1,
            p: Pad2d::default(),
            g: 1,
        },
        Case {
            x: [2, 3, 8, 9],
            w: [2, 3, 3, 3],
            s: 2,
            d: 1,
            p: Pad2d::uniform(1),
            g: 1,
        },
        // Dilation 2 with asymmetric padding.
        Case {
            x: [1, 2, 9, 7],
            w: [2, 2, 3, 3],
            s: 1,
            d: 2,
            p: Pad2d::new(2, 1, 0, 3),
            g: 1,
        },
        // Grouped (not depthwise), k5 s2 'SAME'.
        Case {
            x: [1, 4, 9, 11],
            w: [6, 2, 5, 5],
            s: 2,
            d: 1,
            p: same_padding(9, 11, 5, 2, 1),
            g: 2,
        },
        // 1x1 stride 2 projection shortcut on an odd size.
        Case {
            x: [2, 3, 7, 7],
            w: [5, 3, 1, 1],
            s: 2,
            d: 1,
            p: Pad2d::default(),
            g: 1,
        },
        // 1x1 stride 1 unpadded: the input is its own im2col matrix.
        Case {
            x: [2, 5, 6, 7],
            w: [4, 5, 1, 1],
            s: 1,
            d: 1,
            p: Pad2d::default(),
            g: 1,
        },
        // Grouped 1x1.
        Case {
            x: [1, 4, 5, 5],
            w: [6, 2, 1, 1],
            s: 1,
            d: 1,
            p: Pad2d::default(),
            g: 2,
        },
        // Stride 2 with dilation 2 and lopsided padding.
        Case {
            x: [1, 3, 11, 10],
            w: [2, 3, 3, 3],
            s: 2,
            d: 2,
            p: Pad2d::new(1, 2, 0, 1),
            g: 1,
        },
        // Non-square kernel over a tall plane.
        Case {
            x: [1, 2, 13, 6],
            w: [3, 2, 3, 2],
            s: 1,
            d: 1,
            p: Pad2d::new(1, 1, 0, 1),
            g: 1,
        },
        // Depthwise route through conv2d.
        Case {
            x: [1, 3, 7, 9],
            w: [3, 1, 3, 3],
            s: 2,
            d: 1,
            p: same_padding(7, 9, 3, 2, 1),
            g: 3,
        },
    ]
}

#[test]
fn conv2d_forward_matches_naive() {
    for (i, c) in cases().iter().enumerate() {
        let mut rng = Rng::new(600 + i as u64);
        let (x, w, b) = (rng.tensor(&c.x), rng.tensor(&c.w), rng.tensor(&[c.w[0]]));
        let y = conv2d(&x, &w, Some(&b), c.s, c.p, c.d, c.g).unwrap();
        let (mut want, oh, ow) = conv_ref(
            &values(&x),
            c.x,
            &values(&w),
            c.w,
            (c.s, c.s),
            (c.d, c.d),
            c.p,
            c.g,
        );
        let bv = values(&b);
        for (k, v) in want.iter_mut().enumerate() {
            *v += bv[k / (oh * ow) % c.w[0]];
        }
        assert_eq!(y.dims(), &[c.x[0], c.w[0], oh, ow], "case {i}");
        assert_close(&values(&y), &want, 1e-12, &format!("conv case {i}"));
    }
}

#[test]
fn conv2d_grads_finite_difference() {
    for (i, c) in cases().iter().enumerate() {
        let mut rng = Rng::new(700 + i as u64);
        let inputs = [rng.tensor(&c.x), rng.tensor(&c.w), rng.tensor(&[c.w[0]])];
        check_grads(
            &inputs,
            |t| conv2d(&t[0], &t[1], Some(&t[2]), c.s, c.p, c.d, c.g),
            1e-7,
            &format!("conv case {i}"),
        );
    }
}

#[test]
fn conv2d_without_bias_grads_finite_difference() {
    for (i, c) in cases().iter().enumerate() {
        let mut rng = Rng::new(800 + i as u64);
        let inputs = [rng.tensor(&c.x), rng.tensor(&c.w)];
        check_grads(
            &inputs,
            |t| conv2d(&t[0], &t[1], None, c.s, c.p, c.d, c.g),
            1e-7,
            &format!("conv no-bias case {i}"),
        );
    }
}

/// candle's own conv2d on the explicitly padded input, plus the bias.
fn candle_conv(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    s: usize,
    p: Pad2d,
    d: usize,
    g: usize,
) -> Tensor {
    let xp = x
        .pad_with_zeros(2, p.top, p.bottom)
        .unwrap()
        .pad_with_zeros(3, p.left, p.right)
        .unwrap();
    xp.conv2d(w, 0, s, d, g)
        .unwrap()
        .broadcast_add(&b.reshape((1, (), 1, 1)).unwrap())
        .unwrap()
}

#[test]
fn conv2d_f32_matches_candle() {
    // (x, w, stride, dilation, padding, groups). All but the last are big
    // enough (>= 2M multiply-adds) to be split into parallel row chunks; the
    // first also has more im2col rows than one chunk holds; the last runs on
    // the calling thread.
    type Shape = ([usize; 4], [usize; 4], usize, usize, Pad2d, usize);
    let shapes: [Shape; 7] = [
        ([2, 64, 40, 40], [32, 64, 3, 3], 1, 1, Pad2d::uniform(1), 1),
        (
            [1, 16, 67, 61],
            [32, 16, 3, 3],
            2,
            1,
            same_padding(67, 61, 3, 2, 1),
            1,
        ),
        (
            [1, 24, 37, 39],
            [24, 12, 3, 3],
            1,
            2,
            Pad2d::new(2, 1, 1, 2),
            2,
        ),
        ([1, 64, 30, 30], [64, 64, 1, 1], 1, 1, Pad2d::default(), 1),
        ([2, 64, 41, 41], [48, 64, 1, 1], 2, 1, Pad2d::default(), 1),
        ([1, 16, 24, 24], [16, 16, 5, 5], 1, 1, Pad2d::uniform(2), 1),
        ([1, 8, 1, 5], [4, 8, 1, 3], 1, 1, Pad2d::default(), 1),
    ];
    for (i, &(xd, wd, s, d, p, g)) in shapes.iter().enumerate() {
        let mut rng = Rng::new(900 + i as u64);
        let f32t = |t: Tensor| t.to_dtype(DType::F32).unwrap();
        let (x, w, b) = (
            f32t(rng.tensor(&xd)),
            f32t(rng.tensor(&wd)),
            f32t(rng.tensor(&[wd[0]])),
        );
        let got = conv2d(&x, &w, Some(&b), s, p, d, g).unwrap();
        let want = candle_conv(&x, &w, &b, s, p, d, g);
        assert_eq!(got.dims(), want.dims(), "shape {i}");
        let f64v = |t: &Tensor| values(&t.to_dtype(DType::F64).unwrap());
        assert_close(
            &f64v(&got),
            &f64v(&want),
            1e-4,
            &format!("f32 vs candle, shape {i}"),
        );
    }
}

#[test]
fn conv2d_grads_match_candle_on_parallel_sizes() {
    // (x, w, stride, padding, groups), f64, sizes where no trailing pixel is
    // unused (candle's backward needs that). The first: batch 8, one task
    // per image, and 48x48x64 puts several im2col row chunks in each task.
    // The second: one image in 2 groups, so the input gradient is split
    // into channel blocks and the rest into row chunks, with stride 2.
    let cases = [
        ([8, 64, 48, 48], [16, 64, 3, 3], 1, Pad2d::uniform(1), 1),
        ([1, 48, 45, 45], [64, 24, 3, 3], 2, Pad2d::uniform(1), 2),
    ];
    for (i, (xd, wd, s, p, g)) in cases.into_iter().enumerate() {
        let mut rng = Rng::new(1000 + i as u64);
        let vars: Vec<Var> = [rng.tensor(&xd), rng.tensor(&wd), rng.tensor(&[wd[0]])]
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let (x, w, b) = (
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        );
        let ours = conv2d(x, w, Some(b), s, p, 1, g).unwrap();
        let r = rng.tensor(ours.dims());
        let loss = |y: Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let ours = loss(ours);
        let theirs = loss(candle_conv(x, w, b, s, p, 1, g));
        for (k, t) in [x, w, b].into_iter().enumerate() {
            assert_close(
                &values(ours.get(t).unwrap()),
                &values(theirs.get(t).unwrap()),
                1e-10,
                &format!("case {i}: grad of input {k}"),
            );
        }
    }
}

#[test]
fn conv2d_skips_gradient_of_untracked_input() {
    let mut rng = Rng::new(1100);
    let x = rng.tensor(&[2, 3, 7, 9]);
    let wt = rng.tensor(&[4, 3, 3, 3]);
    let p = same_padding(7, 9, 3, 2, 1);
    let w = Var::from_tensor(&wt).unwrap();
    let grads = conv2d(&x, w.as_tensor(), None, 2, p, 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(&x).is_none());
    // Same filter gradient as when the input is tracked too.
    let xv = Var::from_tensor(&x).unwrap();
    let both = conv2d(xv.as_tensor(), w.as_tensor(), None, 2, p, 1, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(
        &values(grads.get(w.as_tensor()).unwrap()),
        &values(both.get(w.as_tensor()).unwrap()),
        0.0,
        "filter grad",
    );
    assert!(both.get(xv.as_tensor()).is_some());
}
