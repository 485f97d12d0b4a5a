//! EfficientNet-B0 speed on CPU: inference and one training step (forward in train mode,
//! backward, SGD update) at 224 px. `backbones-bench MODE BATCH [ITERS]`, MODE = infer|train;
//! prints one JSON line with the median milliseconds and the peak resident memory.
use candle_core::{DType, Device, Tensor};
use pupil_backbones::efficientnet::{EfficientNet, EfficientNetConfig};
use pupil_backbones::Classifier;
use pupil_nn::ParamStore;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() -> candle_core::Result<()> {
    pupil_ops::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("infer");
    let batch: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(1);
    let iters: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(10);
    let dev = Device::Cpu;
    let store = ParamStore::new(&dev, DType::F32, 0);
    let model = EfficientNet::new(&store.root(), &EfficientNetConfig::variant("b0").unwrap())?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &dev)?;
    let labels = Tensor::from_vec(
        (0..batch as u32).map(|i| i % 1000).collect::<Vec<_>>(),
        (batch, 1),
        &dev,
    )?;
    let vars: Vec<_> = store.trainable().into_iter().map(|(_, v, _)| v).collect();
    let mut times = Vec::new();
    for i in 0..iters + 2 {
        let t = Instant::now();
        match mode {
            "infer" => {
                let y = model.logits_t(&x, false)?;
                y.sum_all()?.to_scalar::<f32>()?;
            }
            "train" => {
                let logits = model.logits_t(&x, true)?;
                let lp = pupil_ops::log_softmax_last_dim(&logits)?;
                let loss = (lp.gather(&labels, 1)?.sum_all()?.neg()? / batch as f64)?;
                let g = loss.backward()?;
                for v in &vars {
                    if let Some(gr) = g.get(v.as_tensor()) {
                        // plain SGD with momentum-free update: the peer does the same
                        v.set(&(v.as_tensor().detach() - (gr * 0.01)?)?)?;
                    }
                }
            }
            m => candle_core::bail!("mode must be infer or train, got {m}"),
        }
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    println!("{{\"impl\": \"pupil\", \"mode\": \"{mode}\", \"batch\": {batch}, \"ms\": {median:.2}, \"img_per_s\": {:.2}, \"peak_rss_mb\": {:.1}}}", batch as f64 * 1e3 / median, peak_rss_mb());
    Ok(())
}
