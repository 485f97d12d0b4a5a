mod common;

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
