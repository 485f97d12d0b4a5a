//! Slice kernels over one NCHW plane at a time; the callers parallelise over
//! planes on candle's thread pool (`crate::par`).

pub(crate) mod dense;
pub(crate) mod depthwise;
pub(crate) mod pool;
pub(crate) mod resize;

use crate::storage::Real;
use crate::Pad2d;

/// Sliding-window geometry along both spatial axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pad: Pad2d,
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        op: &str,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (dh, dw): (usize, usize),
        pad: Pad2d,
    ) -> candle_core::Result<Self> {
        let oh = crate::window_out(h, pad.top, pad.bottom, kh, sh, dh);
        let ow = crate::window_out(w, pad.left, pad.right, kw, sw, dw);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok(Self {
                h,
                w,
                kh,
                kw,
                sh,
                sw,
                dh,
                dw,
                pad,
                oh,
                ow,
            }),
            _ => candle_core::bail!(
                "{op}: window k=({kh},{kw}) s=({sh},{sw}) d=({dh},{dw}) does not fit input {h}x{w} with {pad:?}"
            ),
        }
    }

    /// Padded rows that some window reads; trailing rows no window reaches
    /// are left out.
    pub fn used_h(&self) -> usize {
        (self.oh - 1) * self.sh + (self.kh - 1) * self.dh + 1
    }

    pub fn used_w(&self) -> usize {
        (self.ow - 1) * self.sw + (self.kw - 1) * self.dw + 1
    }
}

/// The padded input plane with its columns split by `col % sw` ("phases"),
/// so that every tap of a strided window row reads a contiguous run:
/// padded column `ox*sw + j*dw` lives in phase `(j*dw) % sw` at `ox + (j*dw) / sw`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Phased {
    pub rows: usize,
    pub len: usize,
    pub sw: usize,
    used_w: usize,
    top: usize,
    left: usize,
}

impl Phased {
    pub fn new(win: &Window) -> Self {
        let used_w = win.used_w();
        Self {
            rows: win.used_h(),
            len: used_w.div_ceil(win.sw),
            sw: win.sw,
            used_w,
            top: win.pad.top,
            left: win.pad.left,
        }
    }

    pub fn size(&self) -> usize {
        self.sw * self.rows * self.len
    }

    /// Start of the run read by kernel column offset `off = j*dw` in padded row `r`.
    #[inline]
    pub fn run_start(&self, r: usize, off: usize) -> usize {
        ((off % self.sw) * self.rows + r) * self.len + off / self.sw
    }

    /// Run of phase `q` that holds real pixels: buffer positions `lo..hi`,
    /// the first being input column `ix0`, then every `sw`-th column.
    fn phase_span(&self, q: usize, w: usize) -> (usize, usize, usize) {
        let end = (self.left + w).min(self.used_w);
        let lo = self.left.saturating_sub(q).div_ceil(self.sw);
        let hi = end.saturating_sub(q).div_ceil(self.sw).max(lo);
        (lo, hi, (lo * self.sw + q).saturating_sub(self.left))
    }

    /// Writes `plane` (h x w) into `buf`, `fill` standing for the padding. Each element
    /// is written once: padding runs are filled, real pixels copied.
    #[inline]
    pub fn fill<T: Real>(&self, plane: &[T], h: usize, w: usize, fill: T, buf: &mut Vec<T>) {
        if buf.len() != self.size() {
            buf.clear();
            buf.resize(self.size(), fill);
        }
        for q in 0..self.sw {
            let (lo, hi, ix0) = self.phase_span(q, w);
            for r in 0..self.rows {
                let row = &mut buf[(q * self.rows + r) * self.len..][..self.len];
                // a phase may hold no real pixel (lo == hi, possibly past the row's end)
                let iy = r.checked_sub(self.top).filter(|&iy| iy < h && lo < hi);
                let Some(iy) = iy else {
                    row.fill(fill);
                    continue;
                };
                row[..lo].fill(fill);
                row[hi..].fill(fill);
                let src = &plane[iy * w..(iy + 1) * w];
                let dst = &mut row[lo..hi];
                if self.sw == 1 {
                    dst.copy_from_slice(&src[ix0..ix0 + dst.len()]);
                } else {
                    for (d, &v) in dst.iter_mut().zip(src[ix0..].iter().step_by(self.sw)) {
                        *d = v;
                    }
                }
            }
        }
    }

    /// Inverse of `fill` for gradients: reads the unpadded plane back out of
    /// `buf`; pixels no window touched get zero.
    #[inline]
    pub fn unfill<T: Real>(&self, buf: &[T], h: usize, w: usize, plane: &mut [T]) {
        for iy in 0..h {
            let dst = &mut plane[iy * w..(iy + 1) * w];
            let r = iy + self.top;
            if r >= self.rows {
                dst.fill(T::ZERO);
                continue;
            }
            if self.left + w > self.used_w {
                // Trailing columns no window reached keep a zero gradient.
                dst.fill(T::ZERO);
            }
            for q in 0..self.sw {
                let (lo, hi, ix0) = self.phase_span(q, w);
                if lo == hi {
                    continue;
                }
                let src = &buf[(q * self.rows + r) * self.len..][lo..hi];
                if self.sw == 1 {
                    dst[ix0..ix0 + src.len()].copy_from_slice(src);
                } else {
                    for (d, &v) in dst[ix0..].iter_mut().step_by(self.sw).zip(src) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// `y += a * x`, written so it vectorises.
#[inline]
pub(crate) fn axpy<T: Real>(y: &mut [T], x: &[T], a: T) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Dot product with eight independent accumulators, so float addition does
/// not serialise the loop.
#[inline]
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::ZERO; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            acc[k] += xa[k] * xb[k];
        }
    }
    let mut tail = T::ZERO;
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    let s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    s + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(h: usize, w: usize, k: usize, s: usize, d: usize, pad: Pad2d) -> Window {
        Window::new("t", (h, w), (k, k), (s, s), (d, d), pad).unwrap()
    }

    #[test]
    fn phased_roundtrip_and_runs() {
        for &(s, d) in &[(1, 1), (2, 1), (2, 2), (3, 1)] {
            let pad = Pad2d::new(1, 2, 2, 1);
            let wi = win(7, 9, 3, s, d, pad);
            let ph = Phased::new(&wi);
            let plane: Vec<f64> = (0..63).map(|v| v as f64 + 1.0).collect();
            // a reused buffer of stale values: fill must overwrite every element
            let mut buf = vec![1e9; ph.size()];
            ph.fill(&plane, 7, 9, -1.0, &mut buf);
            assert!(buf.iter().all(|&v| v != 1e9));
            // Every tap run must hold the padded pixels a direct lookup gives.
            for oy in 0..wi.oh {
                for i in 0..3 {
                    let r = oy * s + i * d;
                    for j in 0..3 {
                        let start = ph.run_start(r, j * d);
                        for ox in 0..wi.ow {
                            let iy = r as isize - pad.top as isize;
                            let ix = (ox * s + j * d) as isize - pad.left as isize;
                            let want = if (0..7).contains(&iy) && (0..9).contains(&ix) {
                                plane[iy as usize * 9 + ix as usize]
                            } else {
                                -1.0
                            };
                            assert_eq!(buf[start + ox], want, "s{s} d{d} oy{oy} i{i} j{j} ox{ox}");
                        }
                    }
                }
            }
            let mut back = vec![0.0; 63];
            ph.unfill(&buf, 7, 9, &mut back);
            for iy in 0..7 {
                for ix in 0..9 {
                    let used = iy + pad.top < wi.used_h() && ix + pad.left < wi.used_w();
                    let want = if used { plane[iy * 9 + ix] } else { 0.0 };
                    assert_eq!(back[iy * 9 + ix], want);
                }
            }
        }
    }

    #[test]
    fn dot_matches_sum() {
        let a: Vec<f64> = (0..19).map(|v| v as f64 * 0.5).collect();
        let b: Vec<f64> = (0..19).map(|v| 3.0 - v as f64).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-12);
    }
}
