//! COCO segmentation encodings: run-length (compressed string and uncompressed counts) and
//! polygons, decoded exactly as pycocotools' maskApi does (column-major runs, polygons
//! rasterised on a 5x upsampled boundary).
use crate::sample::Plane;

/// A run-length encoding in COCO's column-major order, starting with a run of zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rle {
    pub height: usize,
    pub width: usize,
    pub counts: Vec<u32>,
}

impl Rle {
    /// Decodes the mask; fails if the runs do not cover exactly height * width pixels or
    /// the mask is larger than [`crate::io::MAX_IMAGE_PIXELS`].
    pub fn to_plane(&self) -> Result<Plane, String> {
        let (h, w) = (self.height, self.width);
        let pixels = (h as u64)
            .checked_mul(w as u64)
            .filter(|&p| p <= crate::io::MAX_IMAGE_PIXELS)
            .ok_or_else(|| format!("a {h}x{w} mask is larger than allowed"))?;
        let total: u64 = self.counts.iter().map(|&c| c as u64).sum();
        if total != pixels {
            return Err(format!(
                "RLE counts sum to {total} but the mask has {h}x{w} = {pixels} pixels"
            ));
        }
        let mut col = vec![0u8; h * w];
        let mut p = 0usize;
        let mut v = 0u8;
        for &c in &self.counts {
            let c = c as usize;
            if v == 1 {
                col[p..p + c].fill(1);
            }
            p += c;
            v ^= 1;
        }
        // column-major -> row-major
        let mut data = vec![0u8; h * w];
        for x in 0..w {
            for y in 0..h {
                data[y * w + x] = col[x * h + y];
            }
        }
        Ok(Plane::from_raw(w, h, data))
    }

    /// Encodes a mask (non-zero = foreground).
    pub fn from_plane(p: &Plane) -> Rle {
        let (h, w) = (p.height, p.width);
        let mut counts = Vec::new();
        let mut cur = 0u8;
        let mut run = 0u32;
        for x in 0..w {
            for y in 0..h {
                let v = (p.data[y * w + x] != 0) as u8;
                if v != cur {
                    counts.push(run);
                    run = 0;
                    cur = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Rle {
            height: h,
            width: w,
            counts,
        }
    }

    /// Foreground pixel count.
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| c as u64)
            .sum()
    }

    /// pycocotools' compressed string form (LEB128-like, 5 bits a character, deltas from the
    /// count two places back after the third).
    pub fn to_compressed(&self) -> String {
        let mut s = String::new();
        for i in 0..self.counts.len() {
            let mut x = self.counts[i] as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c + 48) as char);
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// Parses the compressed string form.
    pub fn from_compressed(s: &str, height: usize, width: usize) -> Result<Rle, String> {
        let b = s.as_bytes();
        let mut counts: Vec<u32> = Vec::new();
        let mut p = 0usize;
        while p < b.len() {
            let mut x: i64 = 0;
            let mut k = 0u32;
            loop {
                if p >= b.len() {
                    return Err("compressed RLE string ends inside a count".into());
                }
                if b[p] < 48 || b[p] > 48 + 63 {
                    return Err(format!(
                        "invalid character {:?} in compressed RLE",
                        b[p] as char
                    ));
                }
                let c = (b[p] - 48) as i64;
                if k >= 12 {
                    return Err("compressed RLE count is too long".into());
                }
                x |= (c & 0x1f) << (5 * k);
                let more = c & 0x20 != 0;
                p += 1;
                k += 1;
                if !more {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            if counts.len() > 2 {
                x += counts[counts.len() - 2] as i64;
            }
            if x < 0 || x > u32::MAX as i64 {
                return Err(format!("compressed RLE decodes to an invalid count {x}"));
            }
            counts.push(x as u32);
        }
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    /// Rasterises one polygon `[x0, y0, x1, y1, ...]` as pycocotools' `rleFrPoly`. A
    /// polygon whose traced outline would exceed [`MAX_OUTLINE`] points (coordinates far
    /// outside any image) is refused before it is traced.
    pub fn from_polygon(xy: &[f64], height: usize, width: usize) -> Result<Rle, String> {
        let (h, w) = (height as i64, width as i64);
        let k = xy.len() / 2;
        if k == 0 {
            return Ok(Rle {
                height,
                width,
                counts: vec![(height * width) as u32],
            });
        }
        let points = outline_points(xy);
        if !(points <= MAX_OUTLINE as f64) {
            return Err(format!(
                "a polygon's outline of {points:.0} points is longer than the {MAX_OUTLINE} allowed (coordinates far outside the image?)"
            ));
        }
        let (u, v) = upsampled_outline(xy);
        let mut a = boundary_crossings(&u, &v, h, w);
        a.push(h * w);
        a.sort_unstable();
        let mut prev = 0i64;
        for e in a.iter_mut() {
            let t = *e;
            *e -= prev;
            prev = t;
        }
        Ok(Rle {
            height,
            width,
            counts: merge_empty_runs(&a).into_iter().map(|c| c as u32).collect(),
        })
    }
}

/// Points a polygon's outline may have when traced on the fine grid.
pub const MAX_OUTLINE: usize = 1 << 25;

/// At least as many points as [`upsampled_outline`] traces (NaN for NaN coordinates).
fn outline_points(xy: &[f64]) -> f64 {
    let k = xy.len() / 2;
    let at = |j: usize| POLY_SCALE * xy[j % (2 * k)];
    (0..k)
        .map(|j| (at(2 * j + 2) - at(2 * j)).abs() + (at(2 * j + 3) - at(2 * j + 1)).abs() + 2.0)
        .sum()
}

/// pycocotools' polygon scale: outlines are traced on a 5x finer grid.
const POLY_SCALE: f64 = 5.0;

/// The closed polygon traced point by point on the fine grid (rleFrPoly's first pass).
fn upsampled_outline(xy: &[f64]) -> (Vec<i64>, Vec<i64>) {
    let k = xy.len() / 2;
    // C casts truncate toward zero.
    let at = |j: usize| (POLY_SCALE * xy[j] + 0.5) as i64;
    let mut x: Vec<i64> = (0..k).map(|j| at(2 * j)).collect();
    let mut y: Vec<i64> = (0..k).map(|j| at(2 * j + 1)).collect();
    x.push(x[0]);
    y.push(y[0]);
    let (mut u, mut v) = (Vec::new(), Vec::new());
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        let s = if dx >= dy {
            if dx == 0 {
                0.0
            } else {
                (ye - ys) as f64 / dx as f64
            }
        } else {
            (xe - xs) as f64 / dy as f64
        };
        if dx >= dy {
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push((ys as f64 + s * t as f64 + 0.5) as i64);
            }
        } else {
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push((xs as f64 + s * t as f64 + 0.5) as i64);
            }
        }
    }
    (u, v)
}

/// Column-major pixel indices where the outline crosses a column, downsampled to pixels.
fn boundary_crossings(u: &[i64], v: &[i64], h: i64, w: i64) -> Vec<i64> {
    let mut a = Vec::new();
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let mut xd = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 } as f64;
        xd = (xd + 0.5) / POLY_SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > (w - 1) as f64 {
            continue;
        }
        let mut yd = if v[j] < v[j - 1] { v[j] } else { v[j - 1] } as f64;
        yd = (yd + 0.5) / POLY_SCALE - 0.5;
        yd = yd.clamp(0.0, h as f64).ceil();
        a.push(xd as i64 * h + yd as i64);
    }
    a
}

/// Run lengths with the zero-length runs folded into their neighbours.
fn merge_empty_runs(a: &[i64]) -> Vec<i64> {
    let mut b: Vec<i64> = Vec::with_capacity(a.len());
    b.push(a[0]);
    let mut j = 1;
    while j < a.len() {
        if a[j] > 0 {
            b.push(a[j]);
            j += 1;
        } else {
            j += 1;
            if j < a.len() {
                if let Some(last) = b.last_mut() {
                    *last += a[j];
                }
                j += 1;
            }
        }
    }
    b
}

/// Union of several masks of the same size.
pub fn union(planes: impl IntoIterator<Item = Plane>) -> Option<Plane> {
    let mut it = planes.into_iter();
    let mut acc = it.next()?;
    for p in it {
        for (a, b) in acc.data.iter_mut().zip(p.data) {
            *a |= (b != 0) as u8;
        }
    }
    for a in acc.data.iter_mut() {
        *a = (*a != 0) as u8;
    }
    Some(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_round_trip_matches_pycocotools_string() {
        // pycocotools: mask 4x3 (h=4, w=3) with column 1 rows 1..3 set -> counts [5,2,5]
        let r = Rle {
            height: 4,
            width: 3,
            counts: vec![5, 2, 5],
        };
        let s = r.to_compressed();
        assert_eq!(s, "525");
        assert_eq!(Rle::from_compressed(&s, 4, 3).unwrap(), r);
        // large counts and negative deltas
        let r = Rle {
            height: 300,
            width: 400,
            counts: vec![1000, 30000, 5, 70000, 10000, 8995],
        };
        let s = r.to_compressed();
        assert_eq!(Rle::from_compressed(&s, 300, 400).unwrap(), r);
        let p = r.to_plane().unwrap();
        assert_eq!(Rle::from_plane(&p), r);
        assert_eq!(p.count_nonzero() as u64, r.area());
    }

    #[test]
    fn rectangle_polygon_covers_the_expected_pixels() {
        // pycocotools: frPyObjects([[1,1, 4,1, 4,3, 1,3]], 5, 6) -> pixels x in 1..4, y in 1..3
        let r = Rle::from_polygon(&[1., 1., 4., 1., 4., 3., 1., 3.], 5, 6).unwrap();
        let p = r.to_plane().unwrap();
        let bbox = p.bbox().unwrap();
        assert_eq!(bbox, [1., 1., 4., 3.]);
        assert_eq!(p.count_nonzero(), 3 * 2);
    }

    #[test]
    fn bad_counts_are_rejected() {
        let r = Rle {
            height: 2,
            width: 2,
            counts: vec![1, 1],
        };
        assert!(r.to_plane().is_err());
        assert!(Rle::from_compressed("5\u{7f}", 2, 2).is_err());
    }
}
