//! Bilinear and nearest resizing with PyTorch's `F.interpolate` coordinates.

use crate::storage::Real;

/// One output coordinate's two source pixels and their weights.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tap<T> {
    pub i0: usize,
    pub i1: usize,
    pub l0: T,
    pub l1: T,
}

/// PyTorch's `area_pixel_compute_source_index` plus the neighbour rule of its
/// bilinear kernel (the right neighbour is clamped to the last pixel).
pub(crate) fn bilinear_taps<T: Real>(inp: usize, out: usize, align_corners: bool) -> Vec<Tap<T>> {
    let scale = if align_corners {
        if out > 1 {
            (inp as f64 - 1.0) / (out as f64 - 1.0)
        } else {
            0.0
        }
    } else {
        inp as f64 / out as f64
    };
    (0..out)
        .map(|d| {
            let src = if align_corners {
                scale * d as f64
            } else {
                (scale * (d as f64 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(inp - 1);
            let i1 = (i0 + 1).min(inp - 1);
            let l1 = (src - i0 as f64).clamp(0.0, 1.0);
            Tap {
                i0,
                i1,
                l0: T::from_f64(1.0 - l1),
                l1: T::from_f64(l1),
            }
        })
        .collect()
}

/// PyTorch 'nearest': floor(dst * in/out) in f32, as its CPU kernel computes it.
pub(crate) fn nearest_index(inp: usize, out: usize) -> Vec<usize> {
    let scale = inp as f32 / out as f32;
    (0..out)
        .map(|d| ((d as f32 * scale).floor() as usize).min(inp - 1))
        .collect()
}

pub(crate) fn bilinear_forward<T: Real>(
    x: &[T],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    align_corners: bool,
) -> Vec<T> {
    let ty = bilinear_taps::<T>(h, oh, align_corners);
    let tx = bilinear_taps::<T>(w, ow, align_corners);
    let mut out = vec![T::ZERO; x.len() / (h * w) * oh * ow];
    crate::par::for_chunks(
        &mut out,
        oh * ow,
        #[inline(always)]
        |p, o| {
            let xi = &x[p * h * w..][..h * w];
            for (orow, y) in o.chunks_exact_mut(ow).zip(&ty) {
                let r0 = &xi[y.i0 * w..][..w];
                let r1 = &xi[y.i1 * w..][..w];
                for (v, t) in orow.iter_mut().zip(&tx) {
                    *v = y.l0 * (t.l0 * r0[t.i0] + t.l1 * r0[t.i1])
                        + y.l1 * (t.l0 * r1[t.i0] + t.l1 * r1[t.i1]);
                }
            }
        },
    );
    out
}

/// Each output gradient is split over its four source pixels with the
/// forward weights.
pub(crate) fn bilinear_backward<T: Real>(
    g: &[T],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    align_corners: bool,
) -> Vec<T> {
    let ty = bilinear_taps::<T>(h, oh, align_corners);
    let tx = bilinear_taps::<T>(w, ow, align_corners);
    let mut gx = vec![T::ZERO; g.len() / (oh * ow) * h * w];
    crate::par::for_chunks(
        &mut gx,
        h * w,
        #[inline(always)]
        |p, gxi| {
            let gi = &g[p * oh * ow..][..oh * ow];
            for (grow, y) in gi.chunks_exact(ow).zip(&ty) {
                for (&gv, t) in grow.iter().zip(&tx) {
                    let (a, b) = (y.l0 * gv, y.l1 * gv);
                    gxi[y.i0 * w + t.i0] += a * t.l0;
                    gxi[y.i0 * w + t.i1] += a * t.l1;
                    gxi[y.i1 * w + t.i0] += b * t.l0;
                    gxi[y.i1 * w + t.i1] += b * t.l1;
                }
            }
        },
    );
    gx
}

pub(crate) fn nearest_forward<T: Real>(
    x: &[T],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<T> {
    let iy = nearest_index(h, oh);
    let ix = nearest_index(w, ow);
    let mut out = vec![T::ZERO; x.len() / (h * w) * oh * ow];
    crate::par::for_chunks(
        &mut out,
        oh * ow,
        #[inline(always)]
        |p, o| {
            let xi = &x[p * h * w..][..h * w];
            for (orow, &y) in o.chunks_exact_mut(ow).zip(&iy) {
                let r = &xi[y * w..][..w];
                for (v, &x) in orow.iter_mut().zip(&ix) {
                    *v = r[x];
                }
            }
        },
    );
    out
}

pub(crate) fn nearest_backward<T: Real>(
    g: &[T],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<T> {
    let iy = nearest_index(h, oh);
    let ix = nearest_index(w, ow);
    let mut gx = vec![T::ZERO; g.len() / (oh * ow) * h * w];
    crate::par::for_chunks(
        &mut gx,
        h * w,
        #[inline(always)]
        |p, gxi| {
            let gi = &g[p * oh * ow..][..oh * ow];
            for (grow, &y) in gi.chunks_exact(ow).zip(&iy) {
                let r = &mut gxi[y * w..][..w];
                for (&gv, &x) in grow.iter().zip(&ix) {
                    r[x] += gv;
                }
            }
        },
    );
    gx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_matches_pytorch_indices() {
        // torch: interpolate(arange(3), size=5, mode='nearest') -> [0,0,1,1,2]
        assert_eq!(nearest_index(3, 5), vec![0, 0, 1, 1, 2]);
        assert_eq!(nearest_index(2, 4), vec![0, 0, 1, 1]);
        // Downsampling 5 -> 2 picks floor(0*2.5), floor(1*2.5).
        assert_eq!(nearest_index(5, 2), vec![0, 2]);
    }

    #[test]
    fn bilinear_taps_half_pixel_and_corners() {
        let t = bilinear_taps::<f64>(2, 4, false);
        // src = (d + 0.5) / 2 - 0.5 -> [-0.25 -> 0, 0.25, 0.75, 1.25]
        let got: Vec<(usize, usize, f64)> = t.iter().map(|t| (t.i0, t.i1, t.l1)).collect();
        assert_eq!(
            got,
            vec![(0, 1, 0.0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0.25)]
        );
        let t = bilinear_taps::<f64>(3, 5, true);
        let src: Vec<f64> = t.iter().map(|t| t.i0 as f64 + t.l1).collect();
        assert_eq!(src, vec![0.0, 0.5, 1.0, 1.5, 2.0]);
    }
}
