mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, check_grads, values, Rng};
use pupil_ops::{log_softmax_last_dim, softmax_last_dim};

#[test]
fn softmax_values_and_stability() {
    let x = Tensor::from_vec(
        vec![1f64, 2., 3., 1000., 1000., 1000.],
        (2, 3),
        &Device::Cpu,
    )
    .unwrap();
    let s = values(&softmax_last_dim(&x).unwrap());
    let z = 1.0 + 1f64.exp() + 2f64.exp();
    let want = [
        1.0 / z,
        1f64.exp() / z,
        2f64.exp() / z,
        1. / 3.,
        1. / 3.,
        1. / 3.,
    ];
    assert_close(&s, &want, 1e-12, "softmax");
    let l = values(&log_softmax_last_dim(&x).unwrap());
    let lw: Vec<f64> = want.iter().map(|v| v.ln()).collect();
    assert_close(&l, &lw, 1e-12, "log_softmax");
}

#[test]
fn softmax_grads_finite_difference() {
    let x = Rng::new(800).tensor(&[3, 4, 7]);
    let x = (x * 3.0).unwrap();
    check_grads(
        std::slice::from_ref(&x),
        |t| softmax_last_dim(&t[0]),
        1e-7,
        "softmax",
    );
    check_grads(&[x], |t| log_softmax_last_dim(&t[0]), 1e-7, "log_softmax");
}
