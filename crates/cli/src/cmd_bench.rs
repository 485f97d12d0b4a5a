//! `pupil bench`: images/s and peak memory of a model's inference and of one training step
//! on synthetic inputs (detection, segmentation or classification), on CPU or CUDA, f32 or
//! mixed precision; one JSON line, for side-by-side runs with PyTorch (bench/gpu.py).
use crate::cmd_train::ConfigArgs;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use pupil_data::batch::{collate, BatchConfig};
use pupil_data::sample::{Image, Plane, Sample};
use pupil_nn::ParamStore;
use pupil_selftrain::model::device;
use pupil_selftrain::optim::Sgd;
use pupil_selftrain::task;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// infer (eval-mode forward) or train (forward, backward, SGD update).
    #[arg(long, default_value = "infer")]
    pub mode: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Square input size in pixels.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Classes (1000 for an ImageNet classifier, 80 for a COCO detector).
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
}

fn sync(dev: &Device) -> Result<()> {
    dev.synchronize()?;
    Ok(())
}

/// Device memory in use now, MB (CUDA: the whole GPU's, sampled; CPU: this process's peak).
fn memory_mb(dev: &Device) -> f64 {
    #[cfg(feature = "cuda")]
    if dev.is_cuda() {
        use candle_core::cuda_backend::cudarc::driver::result::mem_get_info;
        if let Ok((free, total)) = mem_get_info() {
            return (total - free) as f64 / 1048576.0;
        }
    }
    let _ = dev;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Synthetic images with three boxes each (a mid-grey image with a lighter square) and a
/// label map (the square is class 1), so every task has targets.
fn samples(n: usize, size: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let mut img = Image::new(size, size, 3, 110);
            let mut labels = Plane::new(size, size, 0);
            let s = size / 4;
            for y in s..2 * s {
                for x in s..2 * s {
                    for c in 0..3 {
                        img.data[(y * size + x) * 3 + c] = 200;
                    }
                    labels.set(x, y, 1);
                }
            }
            let mut sm = Sample::new(img);
            sm.label_map = Some(labels);
            let f = size as f32;
            sm.boxes = vec![
                [0.25 * f, 0.25 * f, 0.5 * f, 0.5 * f],
                [0.1 * f, 0.6 * f, 0.4 * f, 0.9 * f],
                [0.55 * f, 0.1 * f, 0.95 * f, 0.45 * f],
            ];
            sm.classes = vec![(i % 7) as u32, 1, 2];
            sm.crowd = vec![false; 3];
            sm.image_id = i as u64;
            sm
        })
        .collect()
}

pub fn run(a: BenchArgs) -> Result<()> {
    let cfg = a.cfg.load(None)?;
    if a.mode != "infer" && a.mode != "train" {
        bail!("--mode must be infer or train, got {:?}", a.mode)
    }
    for (flag, v) in [
        ("--batch", a.batch),
        ("--size", a.size),
        ("--classes", a.classes),
        ("--iters", a.iters),
    ] {
        if v == 0 {
            bail!("{flag} must be at least 1, got 0")
        }
    }
    let dev = device(&cfg.device)?;
    let dt = cfg.optim.precision.dtype();
    if dt == candle_core::DType::BF16 && dev.is_cpu() {
        bail!("bf16 needs a CUDA device (candle has no bf16 matmul on CPU)")
    }
    let store = ParamStore::new(&dev, candle_core::DType::F32, cfg.seed);
    let model = task::build(&cfg, a.classes, &store)?;
    // A classifier takes its crop as is; padding 224 to the detectors' multiple of 128 would
    // time 31 % more pixels than the peer does.
    let size_divisor = match cfg.task {
        pupil_selftrain::config::TaskKind::Classification => 1,
        _ => cfg.data.size_divisor,
    };
    let bc = BatchConfig {
        size_divisor,
        ..Default::default()
    };
    let mut batch = collate(&samples(a.batch, a.size), &bc, &dev)?;
    batch.images = batch.images.to_dtype(dt)?;
    let mut opt = Sgd::new(&store, &cfg.optim);
    let mut times = Vec::new();
    // train mode: forward + loss, backward, optimizer step (ms each), to show where time goes
    let mut parts: [Vec<f64>; 3] = Default::default();
    let mut peak = 0f64;
    for i in 0..a.warmup + a.iters {
        sync(&dev)?;
        let t = Instant::now();
        if a.mode == "infer" {
            let mut out = Tensor::zeros((), candle_core::DType::F32, &dev)?;
            for y in model.forward(&batch.images)? {
                out = (out + y.to_dtype(candle_core::DType::F32)?.sum_all()?)?;
            }
            out.to_scalar::<f32>()?;
        } else {
            let (loss, _) = model.loss(&batch, true)?;
            sync(&dev)?;
            let t_fwd = t.elapsed().as_secs_f64();
            let grads = loss.backward()?;
            loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
            // as in the trainer: the graph's activations are freed before the step allocates
            drop(loss);
            sync(&dev)?;
            let t_bwd = t.elapsed().as_secs_f64();
            opt.step(&grads, 0.01)?;
            sync(&dev)?;
            if i >= a.warmup {
                let t_all = t.elapsed().as_secs_f64();
                for (p, v) in parts.iter_mut().zip([t_fwd, t_bwd - t_fwd, t_all - t_bwd]) {
                    p.push(v * 1e3);
                }
            }
        }
        sync(&dev)?;
        peak = peak.max(memory_mb(&dev));
        if i >= a.warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // --iters >= 1 was checked, so every list holds a value
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let ms = median(times);
    let mut line = serde_json::json!({
            "impl": "pupil",
            "task": cfg.task.name(),
            "backbone": cfg.backbone.name,
            "mode": a.mode,
            "device": cfg.device,
            "precision": format!("{:?}", cfg.optim.precision).to_lowercase(),
            "batch": a.batch,
            "size": a.size,
            "ms": r2(ms),
            "img_per_s": ((a.batch as f64 * 1e3 / ms) * 10.0).round() / 10.0,
            "peak_mb": peak.round(),
    });
    if a.mode == "train" {
        for (k, v) in ["forward_ms", "backward_ms", "step_ms"]
            .into_iter()
            .zip(parts)
        {
            line[k] = r2(median(v)).into();
        }
    }
    println!("{line}");
    Ok(())
}
