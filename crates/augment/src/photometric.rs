//! Colour ops on 8-bit images, computed the way PIL (`ImageOps`, `ImageEnhance`) computes
//! them, per channel for RGB and on the single channel for grey images.
use pupil_data::{Image, Rng};

/// Applies one 256-entry table per channel.
fn apply_luts(img: &mut Image, luts: &[[u8; 256]]) {
    if img.channels == 1 || luts.len() == 1 {
        let lut = &luts[0];
        img.data.iter_mut().for_each(|v| *v = lut[*v as usize]);
    } else {
        let (r, g, b) = (&luts[0], &luts[1], &luts[2]);
        for px in img.data.chunks_exact_mut(3) {
            px[0] = r[px[0] as usize];
            px[1] = g[px[1] as usize];
            px[2] = b[px[2] as usize];
        }
    }
}

fn histograms(img: &Image) -> Vec<[u32; 256]> {
    if img.channels == 1 {
        let mut h = [0u32; 256];
        img.data.iter().for_each(|&v| h[v as usize] += 1);
        return vec![h];
    }
    let (mut r, mut g, mut b) = ([0u32; 256], [0u32; 256], [0u32; 256]);
    for px in img.data.chunks_exact(3) {
        r[px[0] as usize] += 1;
        g[px[1] as usize] += 1;
        b[px[2] as usize] += 1;
    }
    vec![r, g, b]
}

fn identity_lut() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// `ImageOps.equalize`: per channel, `step = (N - count of the last used level) // 256`
/// and `lut[i] = (step/2 + #pixels below i) / step`, clipped; identity when `step` is 0.
pub fn equalize(img: &mut Image) {
    let luts: Vec<[u8; 256]> = histograms(img)
        .iter()
        .map(|h| {
            let last = h.iter().rev().find(|&&v| v != 0).copied().unwrap_or(0) as u64;
            let total: u64 = h.iter().map(|&v| v as u64).sum();
            let step = (total - last) / 256;
            if step == 0 {
                return identity_lut();
            }
            let mut n = step / 2;
            std::array::from_fn(|i| {
                let v = (n / step).min(255) as u8;
                n += h[i] as u64;
                v
            })
        })
        .collect();
    apply_luts(img, &luts);
}

/// `ImageOps.autocontrast` with no cutoff: per channel, `[min, max]` is stretched to
/// `[0, 255]` (truncating), unless the channel is flat.
pub fn autocontrast(img: &mut Image) {
    let luts: Vec<[u8; 256]> = histograms(img)
        .iter()
        .map(|h| {
            let lo = h.iter().position(|&v| v != 0).unwrap_or(0);
            let hi = h.iter().rposition(|&v| v != 0).unwrap_or(0);
            if hi <= lo {
                return identity_lut();
            }
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            std::array::from_fn(|i| (i as f64 * scale + offset).clamp(0.0, 255.0) as u8)
        })
        .collect();
    apply_luts(img, &luts);
}

/// Keeps the top `bits` bits of every value (0 bits gives black, as PIL's mask does).
pub fn posterize(img: &mut Image, bits: u32) {
    let mask = if bits >= 8 {
        0xff
    } else {
        !(0xffu32 >> bits) as u8
    };
    img.data.iter_mut().for_each(|v| *v &= mask);
}

/// Values at or above `threshold` become `255 - v`.
pub fn solarize(img: &mut Image, threshold: u32) {
    let lut: [u8; 256] = std::array::from_fn(|i| {
        if (i as u32) < threshold {
            i as u8
        } else {
            255 - i as u8
        }
    });
    apply_luts(img, &[lut]);
}

/// Adds `addition` to values below `threshold`, clipping to [0, 255] (TF `solarize_add`).
pub fn solarize_add(img: &mut Image, addition: i32, threshold: u8) {
    let lut: [u8; 256] = std::array::from_fn(|i| {
        if i < threshold as usize {
            (i as i32 + addition).clamp(0, 255) as u8
        } else {
            i as u8
        }
    });
    apply_luts(img, &[lut]);
}

/// `255 - v`.
pub fn invert(img: &mut Image) {
    img.data.iter_mut().for_each(|v| *v = 255 - *v);
}

/// PIL `Image.blend(degenerate, image, factor)` for one value: `d + f (v - d)` in f32,
/// truncated, clipped when extrapolating (Rust's saturating float-to-int cast does both).
#[inline]
pub fn blend_value(degenerate: u8, value: u8, factor: f32) -> u8 {
    (degenerate as f32 + factor * (value as f32 - degenerate as f32)) as u8
}

/// `blend_value(d, v, factor)` for every (d, v), indexed `d * 256 + v`: one table per call
/// beats a float op per pixel and is exact by construction.
fn blend_table(factor: f32) -> Vec<u8> {
    (0..256 * 256)
        .map(|i| blend_value((i >> 8) as u8, (i & 255) as u8, factor))
        .collect()
}

fn blend_constant(img: &mut Image, degenerate: u8, factor: f32) {
    let lut: [u8; 256] = std::array::from_fn(|i| blend_value(degenerate, i as u8, factor));
    apply_luts(img, &[lut]);
}

/// `ImageEnhance.Color`: blend with the grey version (0 = grey, 1 = unchanged).
pub fn color(img: &mut Image, factor: f32) {
    if img.channels == 1 {
        return; // grey is its own degenerate
    }
    let table = blend_table(factor);
    for px in img.data.chunks_exact_mut(3) {
        // PIL's L conversion, as `Image::to_gray`.
        let g = (px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 0x8000) >> 16;
        let row = &table[(g as usize) << 8..((g as usize) << 8) + 256];
        for v in px {
            *v = row[*v as usize];
        }
    }
}

/// `ImageEnhance.Contrast`: blend with a flat image at the rounded mean grey level.
pub fn contrast(img: &mut Image, factor: f32) {
    let sum: u64 = if img.channels == 3 {
        img.data
            .chunks_exact(3)
            .map(|p| {
                ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16)
                    as u64
            })
            .sum()
    } else {
        img.data.iter().map(|&v| v as u64).sum()
    };
    let n = (img.width * img.height).max(1) as f64;
    let mean = (sum as f64 / n + 0.5) as u8;
    blend_constant(img, mean, factor);
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn brightness(img: &mut Image, factor: f32) {
    blend_constant(img, 0, factor);
}

/// PIL's `ImageFilter.SMOOTH` (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded) of the
/// interior of row `y`, written to `out` (`stride - 2 c` values, from column 1).
fn smooth_row(src: &[u8], stride: usize, c: usize, y: usize, out: &mut [u8]) {
    let n = stride - 2 * c;
    let row = |r: usize| &src[r * stride..(r + 1) * stride];
    let (u, m, d) = (row(y - 1), row(y), row(y + 1));
    // Column sums of the three rows, then a horizontal 3-tap: all slices of equal length,
    // so both loops vectorise.
    let col: Vec<u16> = u
        .iter()
        .zip(m)
        .zip(d)
        .map(|((&a, &b), &c)| a as u16 + b as u16 + c as u16)
        .collect();
    let (l, mid, r) = (&col[..n], &col[c..c + n], &col[2 * c..2 * c + n]);
    for ((((o, &a), &b), &e), &centre) in
        out[..n].iter_mut().zip(l).zip(mid).zip(r).zip(&m[c..c + n])
    {
        *o = ((a + b + e + 4 * centre as u16 + 6) / 13) as u8;
    }
}

/// PIL's `ImageFilter.SMOOTH` on the interior; border rows and columns are copied unchanged.
pub fn smooth(img: &Image) -> Image {
    let (w, h, c) = (img.width, img.height, img.channels);
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let stride = w * c;
    let mut buf = vec![0u8; stride - 2 * c];
    for y in 1..h - 1 {
        smooth_row(&img.data, stride, c, y, &mut buf);
        out.data[y * stride + c..(y + 1) * stride - c].copy_from_slice(&buf);
    }
    out
}

/// `ImageEnhance.Sharpness`: blend with [`smooth`] (0 = smoothed, 1 = unchanged, 2 = sharper).
pub fn sharpness(img: &mut Image, factor: f32) {
    let (w, h, c) = (img.width, img.height, img.channels);
    if w < 3 || h < 3 {
        return; // all border: the degenerate is the image itself
    }
    let src = img.data.clone();
    let table = blend_table(factor);
    let stride = w * c;
    let mut buf = vec![0u8; stride - 2 * c];
    for y in 1..h - 1 {
        smooth_row(&src, stride, c, y, &mut buf);
        for (v, &d) in img.data[y * stride + c..(y + 1) * stride - c]
            .iter_mut()
            .zip(&buf)
        {
            *v = table[(d as usize) << 8 | *v as usize];
        }
    }
}

/// Fills the square `[cx - pad, cx + pad) x [cy - pad, cy + pad)` (clipped) with `fill`.
pub fn cutout_at(img: &mut Image, cx: usize, cy: usize, pad_x: usize, pad_y: usize, fill: u8) {
    let (w, h, c) = (img.width, img.height, img.channels);
    let (x0, x1) = (cx.saturating_sub(pad_x), (cx + pad_x).min(w));
    let (y0, y1) = (cy.saturating_sub(pad_y), (cy + pad_y).min(h));
    for y in y0..y1 {
        img.data[(y * w + x0) * c..(y * w + x1) * c].fill(fill);
    }
}

/// TF `cutout`: a `2 pad` square centred on a uniform pixel of the image, filled with `fill`.
pub fn cutout(img: &mut Image, pad: usize, fill: u8, rng: &mut Rng) {
    if img.width == 0 || img.height == 0 {
        return;
    }
    let cy = rng.below(img.height as u64) as usize;
    let cx = rng.below(img.width as u64) as usize;
    cutout_at(img, cx, cy, pad, pad, fill);
}
