//! Random samples for the tests: every box is the exact bbox of its mask.
#![allow(dead_code)]
use pupil_data::{Image, Plane, Rng, Sample};

/// How masks are drawn.
#[derive(Clone, Copy, Debug)]
pub enum MaskKind {
    /// Filled rectangles: any crop or resample of one keeps its bbox rule exact.
    Solid,
    /// Random pixels inside a random rectangle (holes and ragged edges).
    Ragged,
}

/// A `w` x `h` sample with `n` boxes, masks, classes `0..n` and a label map whose values are
/// below 100; with `gray_is_label` the image is the label map (so planes and image can be
/// compared pixel by pixel after a nearest-sampled move).
pub fn sample(
    w: usize,
    h: usize,
    channels: usize,
    n: usize,
    kind: MaskKind,
    seed: u64,
    gray_is_label: bool,
) -> Sample {
    let mut r = Rng::new(seed);
    let label: Vec<u8> = (0..w * h).map(|_| r.below(100) as u8).collect();
    let data: Vec<u8> = if gray_is_label {
        label
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, channels))
            .collect()
    } else {
        (0..w * h * channels).map(|_| r.below(256) as u8).collect()
    };
    let mut s = Sample::new(Image::from_raw(w, h, channels, data));
    s.label_map = Some(Plane::from_raw(w, h, label));
    let mut masks = Vec::new();
    for i in 0..n {
        let x0 = r.below(w as u64) as usize;
        let y0 = r.below(h as u64) as usize;
        let x1 = x0 + 1 + r.below((w - x0) as u64) as usize;
        let y1 = y0 + 1 + r.below((h - y0) as u64) as usize;
        let mut m = Plane::new(w, h, 0);
        for y in y0..y1 {
            for x in x0..x1 {
                let on = match kind {
                    MaskKind::Solid => true,
                    MaskKind::Ragged => r.bernoulli(0.5),
                };
                if on {
                    m.set(x, y, 1);
                }
            }
        }
        if m.count_nonzero() == 0 {
            m.set(x0, y0, 1);
        }
        s.boxes.push(m.bbox().unwrap());
        s.classes.push(i as u32);
        s.crowd.push(i % 2 == 1);
        masks.push(m);
    }
    s.masks = Some(masks);
    s
}

/// Every box lies inside the image.
pub fn boxes_inside(s: &Sample) -> Result<(), String> {
    let (w, h) = (s.image.width as f32, s.image.height as f32);
    for b in &s.boxes {
        if !(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h && b[0] <= b[2] && b[1] <= b[3]) {
            return Err(format!("box {b:?} outside {w}x{h}"));
        }
    }
    Ok(())
}

/// The box of each mask's set pixels equals its box within `tol` (empty masks only for boxes
/// thinner than a pixel).
pub fn masks_match_boxes(s: &Sample, tol: f32) -> Result<(), String> {
    for (b, m) in s.boxes.iter().zip(s.masks.as_ref().unwrap()) {
        match m.bbox() {
            Some(mb) => {
                if (0..4).any(|k| (mb[k] - b[k]).abs() > tol) {
                    return Err(format!("mask box {mb:?} vs box {b:?}"));
                }
            }
            None => {
                if b[2] - b[0] >= 1.0 && b[3] - b[1] >= 1.0 {
                    return Err(format!("empty mask for box {b:?}"));
                }
            }
        }
    }
    Ok(())
}

/// The box of each mask's set pixels lies inside its box, up to `tol`.
pub fn masks_inside_boxes(s: &Sample, tol: f32) -> Result<(), String> {
    for (b, m) in s.boxes.iter().zip(s.masks.as_ref().unwrap()) {
        if let Some(mb) = m.bbox() {
            if mb[0] < b[0] - tol || mb[1] < b[1] - tol || mb[2] > b[2] + tol || mb[3] > b[3] + tol
            {
                return Err(format!("mask box {mb:?} not inside box {b:?}"));
            }
        }
    }
    Ok(())
}
