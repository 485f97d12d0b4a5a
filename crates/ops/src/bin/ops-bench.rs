//! Times pupil-ops' convolutions against candle's conv2d, forward and
//! forward+backward, f32: depthwise convs of EfficientNet-B0 (against
//! candle's grouped conv, groups = C) and dense convs (stem, RetinaNet-like
//! 3x3 layers, a 1x1 projection). Prints markdown tables; compare with
//! bench/ops.py.
//!
//! Usage: ops-bench [--quick] [depthwise] [dense]
//! (--quick: batch-1 shapes only; naming a section runs only the named ones)

use candle_core::{Device, Result, Tensor, Var};
use pupil_ops::{conv2d, depthwise_conv2d, same_padding, Pad2d};
use std::time::{Duration, Instant};

/// (N, C, H/W, k, stride) of the depthwise layers timed.
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (8, 96, 112, 3, 2),
    (8, 144, 56, 3, 1),
    (8, 240, 28, 5, 1),
    (8, 672, 14, 5, 2),
    (1, 96, 112, 3, 2),
    (1, 144, 56, 3, 1),
    (1, 240, 28, 5, 1),
    (1, 672, 14, 5, 2),
];

/// (N, C_in, H/W, C_out, k, stride) of the dense convs timed, TF 'SAME'
/// padding (symmetric for stride 1, one extra pixel after for the stem).
const DENSE: &[(usize, usize, usize, usize, usize, usize)] = &[
    (8, 96, 32, 96, 3, 1),
    (8, 48, 64, 48, 3, 1),
    (8, 3, 224, 32, 3, 2),
    (8, 256, 16, 256, 3, 1),
    (8, 240, 28, 40, 1, 1),
    (1, 96, 32, 96, 3, 1),
    (1, 48, 64, 48, 3, 1),
    (1, 3, 224, 32, 3, 2),
    (1, 256, 16, 256, 3, 1),
    (1, 240, 28, 40, 1, 1),
];

/// Median wall time of `f`, after one warm-up call, over at least 3 runs
/// or ~2 s, whichever is more.
fn time(mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    f()?;
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 3 || (start.elapsed() < Duration::from_secs(2) && runs.len() < 50) {
        let t = Instant::now();
        f()?;
        runs.push(t.elapsed());
    }
    runs.sort();
    Ok(runs[runs.len() / 2])
}

/// Candle's own (grouped) conv on the explicitly padded input, cut to the
/// rows/cols the windows read so that its backward accepts every shape.
fn candle_conv(
    x: &Tensor,
    w: &Tensor,
    k: usize,
    s: usize,
    p: Pad2d,
    groups: usize,
) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    let used = |len: usize, a: usize, b: usize| ((len + a + b - k) / s) * s + k;
    let xp = x
        .pad_with_zeros(2, p.top, p.bottom)?
        .pad_with_zeros(3, p.left, p.right)?;
    let xp = xp
        .narrow(2, 0, used(h, p.top, p.bottom))?
        .narrow(3, 0, used(wd, p.left, p.right))?;
    xp.contiguous()?.conv2d(w, 0, s, 1, groups)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

type Conv<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Result<Tensor>;

/// Forward and forward+backward (`sum().backward()`, input and filter
/// gradients) times of both convs, after checking they agree.
fn time_pair(x: &Tensor, w: &Tensor, ours: Conv, theirs: Conv) -> Result<[Duration; 4]> {
    // Both must compute the same thing before their times mean anything.
    let diff = (ours(x, w)? - theirs(x, w)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(diff < 1e-3, "outputs differ by {diff}");
    let fwd_ours = time(|| ours(x, w).map(|_| ()))?;
    let fwd_theirs = time(|| theirs(x, w).map(|_| ()))?;
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let train = |f: Conv| {
        time(|| {
            let g = f(xv.as_tensor(), wv.as_tensor())?.sum_all()?.backward()?;
            assert!(g.get(xv.as_tensor()).is_some() && g.get(wv.as_tensor()).is_some());
            Ok(())
        })
    };
    Ok([fwd_ours, fwd_theirs, train(ours)?, train(theirs)?])
}

fn row(shape: String, t: [Duration; 4]) {
    println!(
        "| {shape} | {} | {} | {} | {} |",
        ms(t[0]),
        ms(t[1]),
        ms(t[2]),
        ms(t[3])
    );
}

fn depthwise(quick: bool) -> Result<()> {
    let dev = Device::Cpu;
    println!("| shape [N,C,H,W] | k/s | pupil fwd ms | candle fwd ms | pupil fwd+bwd ms | candle fwd+bwd ms |");
    println!("|---|---|---|---|---|---|");
    for &(n, c, hw, k, s) in SHAPES {
        if quick && n != 1 {
            continue;
        }
        let x = Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?;
        let w = (Tensor::randn(0f32, 1., (c, 1, k, k), &dev)? * 0.1)?;
        let p = same_padding(hw, hw, k, s, 1);
        let ours = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, None, (s, s), (1, 1), p);
        let theirs = |x: &Tensor, w: &Tensor| candle_conv(x, w, k, s, p, c);
        row(
            format!("[{n},{c},{hw},{hw}] | {k}/{s}"),
            time_pair(&x, &w, &ours, &theirs)?,
        );
    }
    Ok(())
}

/// Dense convs with a bias: inside pupil's op, a broadcast add after candle's.
fn dense(quick: bool) -> Result<()> {
    let dev = Device::Cpu;
    println!("| shape [N,C,H,W] -> C_out | k/s | pupil fwd ms | candle fwd ms | pupil fwd+bwd ms | candle fwd+bwd ms |");
    println!("|---|---|---|---|---|---|");
    for &(n, c, hw, co, k, s) in DENSE {
        if quick && n != 1 {
            continue;
        }
        let x = Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?;
        let w = (Tensor::randn(0f32, 1., (co, c, k, k), &dev)? * 0.1)?;
        let b = Tensor::randn(0f32, 1., co, &dev)?;
        let p = same_padding(hw, hw, k, s, 1);
        let ours = |x: &Tensor, w: &Tensor| conv2d(x, w, Some(&b), s, p, 1, 1);
        let theirs = |x: &Tensor, w: &Tensor| {
            candle_conv(x, w, k, s, p, 1)?.broadcast_add(&b.reshape((1, co, 1, 1))?)
        };
        row(
            format!("[{n},{c},{hw},{hw}] -> {co} | {k}/{s}"),
            time_pair(&x, &w, &ours, &theirs)?,
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let named = |s: &str| args.iter().any(|a| a == s);
    let all = !named("depthwise") && !named("dense");
    println!(
        "threads: {} (candle's pool: RAYON_NUM_THREADS or all cores)",
        candle_core::utils::barrier_pool().n_workers() + 1
    );
    if all || named("depthwise") {
        depthwise(quick)?;
    }
    if all || named("dense") {
        dense(quick)?;
    }
    Ok(())
}
