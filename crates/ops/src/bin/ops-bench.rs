//! Times depthwise convolution on EfficientNet-B0 shapes: pupil-ops'
//! kernel against candle's grouped conv2d (groups = C), forward and
//! forward+backward, f32. Prints a markdown table; compare with bench/ops.py.
//!
//! Usage: ops-bench [--quick]   (--quick: batch-1 shapes only)

use candle_core::{Device, Result, Tensor, Var};
use pupil_ops::{depthwise_conv2d, same_padding, Pad2d};
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

/// Candle's own grouped conv on the explicitly padded input, cut to the
/// rows/cols the windows read so that its backward accepts every shape.
fn candle_dw(x: &Tensor, w: &Tensor, k: usize, s: usize, p: Pad2d) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let used = |len: usize, a: usize, b: usize| ((len + a + b - k) / s) * s + k;
    let xp = x
        .pad_with_zeros(2, p.top, p.bottom)?
        .pad_with_zeros(3, p.left, p.right)?;
    let xp = xp
        .narrow(2, 0, used(h, p.top, p.bottom))?
        .narrow(3, 0, used(wd, p.left, p.right))?;
    xp.contiguous()?.conv2d(w, 0, s, 1, c)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let dev = Device::Cpu;
    println!(
        "threads: {} (RAYON_NUM_THREADS or all cores)",
        rayon::current_num_threads()
    );
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
        let theirs = |x: &Tensor, w: &Tensor| candle_dw(x, w, k, s, p);
        // Both must compute the same thing before their times mean anything.
        let diff = (ours(&x, &w)? - theirs(&x, &w)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-3, "outputs differ by {diff}");
        let fwd_ours = time(|| ours(&x, &w).map(|_| ()))?;
        let fwd_theirs = time(|| theirs(&x, &w).map(|_| ()))?;
        let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
        let train = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| {
            time(|| {
                let g = f(xv.as_tensor(), wv.as_tensor())?.sum_all()?.backward()?;
                assert!(g.get(wv.as_tensor()).is_some());
                Ok(())
            })
        };
        let bwd_ours = train(&ours)?;
        let bwd_theirs = train(&theirs)?;
        println!(
            "| [{n},{c},{hw},{hw}] | {k}/{s} | {} | {} | {} | {} |",
            ms(fwd_ours),
            ms(fwd_theirs),
            ms(bwd_ours),
            ms(bwd_theirs)
        );
    }
    Ok(())
}
