use candle_core::{Device, Result, Tensor, Var};
use pupil_ops::conv2d;
use std::time::Instant;

fn t(name: &str, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    f()?;
    let mut v = vec![];
    for _ in 0..15 {
        let s = Instant::now();
        f()?;
        v.push(s.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name}: med {:.2} min {:.2} ms", v[7], v[0]);
    Ok(())
}

fn main() -> Result<()> {
    if std::env::var("SPAWN").is_ok() {
        return std::thread::spawn(run).join().unwrap();
    }
    run()
}

fn run() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (n, c, hw, co, k) = (args[0], args[1], args[2], args[3], args[4]);
    let dev = Device::Cpu;
    let (x, w) = if std::env::var("INTS").is_ok() {
        let xv: Vec<f32> = (0..n * c * hw * hw).map(|i| (i % 7) as f32).collect();
        let wv: Vec<f32> = (0..co * c * k * k).map(|i| (i % 5) as f32).collect();
        (
            Tensor::from_vec(xv, (n, c, hw, hw), &dev)?,
            Tensor::from_vec(wv, (co, c, k, k), &dev)?,
        )
    } else {
        (
            Tensor::randn(0f32, 1., (n, c, hw, hw), &dev)?,
            Tensor::randn(0f32, 1., (co, c, k, k), &dev)?,
        )
    };
    let st = args.get(5).copied().unwrap_or(1);
    let p = pupil_ops::same_padding(hw, hw, k, st, 1);
    let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
    if std::env::var("LOOP").is_ok() {
        for _ in 0..300 {
            conv2d(xv.as_tensor(), &w, None, st, p, 1, 1)?
                .sum_all()?
                .backward()?;
        }
        return Ok(());
    }
    t("fwd", || conv2d(&x, &w, None, st, p, 1, 1).map(|_| ()))?;
    t("fwd+gx", || {
        conv2d(xv.as_tensor(), &w, None, st, p, 1, 1)?
            .sum_all()?
            .backward()
            .map(|_| ())
    })?;
    t("fwd+gw", || {
        conv2d(&x, wv.as_tensor(), None, st, p, 1, 1)?
            .sum_all()?
            .backward()
            .map(|_| ())
    })?;
    t("fwd+both", || {
        conv2d(xv.as_tensor(), wv.as_tensor(), None, st, p, 1, 1)?
            .sum_all()?
            .backward()
            .map(|_| ())
    })?;
    let y = conv2d(&x, &w, None, st, p, 1, 1)?;
    t("sum_all+backward of y only", || {
        let yv = Var::from_tensor(&y)?;
        yv.as_tensor().sum_all()?.backward().map(|_| ())
    })?;
    Ok(())
}
