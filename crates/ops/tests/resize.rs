mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, bilinear_ref, check_grads, values, Rng};
use pupil_ops::{resize_bilinear, resize_nearest};

fn t2x2() -> Tensor {
    Tensor::from_vec(vec![1f64, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap()
}

#[test]
fn bilinear_matches_pytorch_known_values() {
    // torch.nn.functional.interpolate([[1,2],[3,4]], size=(4,4), mode='bilinear')
    let y = resize_bilinear(&t2x2(), 4, 4, false).unwrap();
    #[rustfmt::skip]
    let want = [
        1.0, 1.25, 1.75, 2.0,
        1.5, 1.75, 2.25, 2.5,
        2.5, 2.75, 3.25, 3.5,
        3.0, 3.25, 3.75, 4.0,
    ];
    assert_close(&values(&y), &want, 1e-12, "align_corners=False");
    // Same with align_corners=True: thirds between the corners.
    let y = resize_bilinear(&t2x2(), 4, 4, true).unwrap();
    let thirds: Vec<f64> = (0..4)
        .flat_map(|r| (0..4).map(move |c| 1.0 + 2.0 * r as f64 / 3.0 + c as f64 / 3.0))
        .collect();
    assert_close(&values(&y), &thirds, 1e-12, "align_corners=True");
    // Downsampling 4x4 ramp to 2x2 without corners averages 2x2 blocks.
    let x = Tensor::from_vec(
        (0..16).map(|v| v as f64).collect::<Vec<_>>(),
        (1, 1, 4, 4),
        &Device::Cpu,
    )
    .unwrap();
    let y = resize_bilinear(&x, 2, 2, false).unwrap();
    assert_close(&values(&y), &[2.5, 4.5, 10.5, 12.5], 1e-12, "downsample");
}

#[test]
fn bilinear_forward_matches_naive() {
    for (i, &(dims, oh, ow)) in [
        ([2, 3, 7, 9], 14, 18),
        ([1, 2, 7, 9], 4, 5),
        ([1, 1, 5, 3], 11, 2),
        ([1, 2, 6, 6], 1, 1),
        ([1, 1, 1, 4], 3, 7),
    ]
    .iter()
    .enumerate()
    {
        let x = Rng::new(i as u64).tensor(&dims);
        for align in [false, true] {
            let y = resize_bilinear(&x, oh, ow, align).unwrap();
            assert_eq!(y.dims(), &[dims[0], dims[1], oh, ow]);
            let want = bilinear_ref(&values(&x), dims, oh, ow, align);
            assert_close(
                &values(&y),
                &want,
                1e-12,
                &format!("case {i} align {align}"),
            );
        }
    }
}

#[test]
fn bilinear_grads_finite_difference() {
    for (i, &(dims, oh, ow)) in [
        ([2, 2, 7, 9], 14, 17),
        ([1, 3, 7, 9], 4, 5),
        ([1, 2, 5, 6], 5, 13),
        ([1, 1, 8, 3], 3, 1),
    ]
    .iter()
    .enumerate()
    {
        for align in [false, true] {
            let x = Rng::new(400 + i as u64).tensor(&dims);
            check_grads(
                &[x],
                |t| resize_bilinear(&t[0], oh, ow, align),
                1e-7,
                &format!("bilinear case {i} align {align}"),
            );
        }
    }
}

#[test]
fn nearest_matches_pytorch_and_naive() {
    // torch: interpolate([[1,2],[3,4]], size=(3,5), mode='nearest')
    let y = resize_nearest(&t2x2(), 3, 5).unwrap();
    #[rustfmt::skip]
    let want = [
        1., 1., 1., 2., 2.,
        1., 1., 1., 2., 2.,
        3., 3., 3., 4., 4.,
    ];
    assert_eq!(values(&y), want);
    let x = Rng::new(9).tensor(&[2, 3, 7, 9]);
    let y = resize_nearest(&x, 14, 4).unwrap();
    let xv = values(&x);
    let mut want = Vec::new();
    for pl in 0..6 {
        for oy in 0..14 {
            for ox in 0..4 {
                let (iy, ix) = (oy * 7 / 14, ox * 9 / 4);
                want.push(xv[(pl * 7 + iy) * 9 + ix]);
            }
        }
    }
    assert_eq!(values(&y), want);
}

#[test]
fn nearest_grads_sum_into_source_pixels() {
    for (i, &(dims, oh, ow)) in [
        ([2, 2, 7, 9], 14, 18),
        ([1, 3, 7, 9], 3, 4),
        ([1, 1, 5, 5], 8, 13),
    ]
    .iter()
    .enumerate()
    {
        let x = Rng::new(500 + i as u64).tensor(&dims);
        check_grads(
            &[x],
            |t| resize_nearest(&t[0], oh, ow),
            1e-7,
            &format!("nearest case {i}"),
        );
    }
    // 2x upsampling: each source pixel collects its 2x2 block.
    let x = candle_core::Var::from_tensor(&t2x2()).unwrap();
    let y = resize_nearest(x.as_tensor(), 4, 4).unwrap();
    let w = Tensor::from_vec(
        (0..16).map(|v| v as f64).collect::<Vec<_>>(),
        (1, 1, 4, 4),
        &Device::Cpu,
    )
    .unwrap();
    let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(
        values(g.get(x.as_tensor()).unwrap()),
        vec![10., 18., 42., 50.]
    );
}
