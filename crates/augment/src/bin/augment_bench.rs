//! Single-threaded throughput of the named ladders on a 640x480 RGB image with 10 boxes.
//! Prints one JSON object per pipeline: `{"pipeline": "s1", "images_per_sec": ...,
//! "images_per_cpu_sec": ...}` (the second divides by this thread's CPU time).
//!
//! Usage: `augment-bench [--seconds S] [--size N] [PIPELINE ...]` (default pipelines s1 s4).
use pupil_augment::{ladder, parse_pipeline, Augment, Pipeline, Size};
use pupil_data::{Image, Rng, Sample};
use std::time::{Duration, Instant};

/// A smooth image with texture (so equalize / autocontrast see a realistic histogram) and
/// 10 boxes spread over it.
fn bench_sample() -> Sample {
    let (w, h) = (640usize, 480usize);
    let mut rng = Rng::new(42);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let n = rng.below(32) as usize;
            data.push(((x * 255 / w + n) % 256) as u8);
            data.push(((y * 255 / h + n) % 256) as u8);
            data.push((((x + y) * 128 / (w + h)) + n) as u8);
        }
    }
    let mut s = Sample::new(Image::from_raw(w, h, 3, data));
    for i in 0..10 {
        let x0 = rng.uniform(0.0, 560.0) as f32;
        let y0 = rng.uniform(0.0, 400.0) as f32;
        let bw = rng.uniform(20.0, 80.0) as f32;
        let bh = rng.uniform(20.0, 80.0) as f32;
        s.boxes.push([x0, y0, x0 + bw, y0 + bh]);
        s.classes.push(i % 3);
        s.crowd.push(false);
    }
    s.image_id = 1;
    s
}

/// CPU time of this thread in seconds (Linux `schedstat`), so a busy machine does not count
/// against us; `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}

/// Returns (images, images per wall second, images per CPU second).
fn measure(p: &Pipeline, base: &Sample, budget: Duration) -> (usize, f64, f64) {
    // Warm-up, then as many whole images as fit in the budget.
    for i in 0..5 {
        let mut s = base.clone();
        p.apply(&mut s, &mut Rng::for_sample(0, 0, i));
    }
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut n = 0u64;
    let mut checksum = 0u64;
    while start.elapsed() < budget {
        let mut s = base.clone();
        p.apply(&mut s, &mut Rng::for_sample(1, 0, n));
        checksum = checksum
            .wrapping_add(s.image.data[s.image.data.len() / 2] as u64 + s.boxes.len() as u64);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => secs,
    };
    std::hint::black_box(checksum);
    (n as usize, n as f64 / secs, n as f64 / cpu)
}

fn main() {
    let mut seconds = 3.0f64;
    let mut size = 640usize;
    let mut names: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds S")
            }
            "--size" => size = args.next().and_then(|v| v.parse().ok()).expect("--size N"),
            "-h" | "--help" => {
                eprintln!("augment-bench [--seconds S] [--size N] [PIPELINE ...]");
                return;
            }
            _ => names.push(a),
        }
    }
    if names.is_empty() {
        names = vec!["s1".into(), "s4".into()];
    }
    let base = bench_sample();
    for name in names {
        let p = match ladder(&name, Size::square(size)) {
            Ok(p) => p,
            Err(_) => match parse_pipeline(&name) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            },
        };
        let (n, wall, cpu) = measure(&p, &base, Duration::from_secs_f64(seconds));
        println!(
            "{{\"pipeline\": \"{}\", \"steps\": \"{}\", \"images\": {}, \"images_per_sec\": {:.1}, \"images_per_cpu_sec\": {:.1}}}",
            name,
            p.describe(),
            n,
            wall,
            cpu
        );
    }
}
