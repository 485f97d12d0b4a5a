//! Depthwise convolution: each channel is convolved with its own kh x kw filter.

use super::{axpy, dot, Phased, Window};
use crate::storage::Real;

/// All kw taps of one kernel row in a single pass over the output row, so the
/// accumulator stays in registers (K fixed for the common 3 and 5).
#[inline]
fn taps_fixed<T: Real, const K: usize>(out: &mut [T], runs: [&[T]; K], ws: [T; K]) {
    let ow = out.len();
    let runs = runs.map(|r| &r[..ow]);
    for x in 0..ow {
        let mut acc = out[x];
        for j in 0..K {
            acc += ws[j] * runs[j][x];
        }
        out[x] = acc;
    }
}

#[inline]
fn row_taps<T: Real>(out: &mut [T], buf: &[T], ph: &Phased, r: usize, wrow: &[T], dw: usize) {
    let ow = out.len();
    let run = |j: usize| &buf[ph.run_start(r, j * dw)..][..ow];
    match wrow.len() {
        3 => taps_fixed::<T, 3>(out, [run(0), run(1), run(2)], [wrow[0], wrow[1], wrow[2]]),
        5 => taps_fixed::<T, 5>(
            out,
            [run(0), run(1), run(2), run(3), run(4)],
            [wrow[0], wrow[1], wrow[2], wrow[3], wrow[4]],
        ),
        _ => {
            for (j, &wv) in wrow.iter().enumerate() {
                axpy(out, run(j), wv);
            }
        }
    }
}

/// x: [n, c, h, w], w: [c, 1, kh, kw] -> [n, c, oh, ow].
pub(crate) fn forward<T: Real>(x: &[T], w: &[T], c: usize, win: &Window) -> Vec<T> {
    let (plane_in, plane_out, kk) = (win.h * win.w, win.oh * win.ow, win.kh * win.kw);
    let ph = Phased::new(win);
    let mut out = vec![T::ZERO; x.len() / plane_in * plane_out];
    crate::par::for_chunks_init(&mut out, plane_out, Vec::new, #[inline(always)] |buf, p, o| {
        let xi = &x[p * plane_in..][..plane_in];
        let wk = &w[(p % c) * kk..][..kk];
        ph.fill(xi, win.h, win.w, T::ZERO, buf);
        for (oy, orow) in o.chunks_exact_mut(win.ow).enumerate() {
            for i in 0..win.kh {
                let r = oy * win.sh + i * win.dh;
                row_taps(orow, buf, &ph, r, &wk[i * win.kw..][..win.kw], win.dw);
            }
        }
    });
    out
}

/// Gradient w.r.t. the input: the output gradient scattered back through
/// every tap into the padded, phase-split buffer, then unpadded.
pub(crate) fn backward_input<T: Real>(g: &[T], w: &[T], c: usize, win: &Window) -> Vec<T> {
    let (plane_in, plane_out, kk) = (win.h * win.w, win.oh * win.ow, win.kh * win.kw);
    let ph = Phased::new(win);
    let mut gx = vec![T::ZERO; g.len() / plane_out * plane_in];
    crate::par::for_chunks_init(&mut gx, plane_in, Vec::new, #[inline(always)] |buf, p, gxi| {
        let gi = &g[p * plane_out..][..plane_out];
        let wk = &w[(p % c) * kk..][..kk];
        buf.clear();
        buf.resize(ph.size(), T::ZERO);
        for (oy, grow) in gi.chunks_exact(win.ow).enumerate() {
            for i in 0..win.kh {
                let r = oy * win.sh + i * win.dh;
                for j in 0..win.kw {
                    let start = ph.run_start(r, j * win.dw);
                    axpy(&mut buf[start..start + win.ow], grow, wk[i * win.kw + j]);
                }
            }
        }
        ph.unfill(buf, win.h, win.w, gxi);
    });
    gx
}

/// Gradient w.r.t. the filter: per channel, the correlation of each tap's
/// input run with the output gradient, summed over the batch.
pub(crate) fn backward_weight<T: Real>(
    x: &[T],
    g: &[T],
    n: usize,
    c: usize,
    win: &Window,
) -> Vec<T> {
    let (plane_in, plane_out, kk) = (win.h * win.w, win.oh * win.ow, win.kh * win.kw);
    let ph = Phased::new(win);
    let mut gw = vec![T::ZERO; c * kk];
    crate::par::for_chunks_init(&mut gw, kk, Vec::new, #[inline(always)] |buf, ch, gwk| {
        for b in 0..n {
            let p = b * c + ch;
            ph.fill(&x[p * plane_in..][..plane_in], win.h, win.w, T::ZERO, buf);
            let gi = &g[p * plane_out..][..plane_out];
            for (oy, grow) in gi.chunks_exact(win.ow).enumerate() {
                for i in 0..win.kh {
                    let r = oy * win.sh + i * win.dh;
                    for j in 0..win.kw {
                        let start = ph.run_start(r, j * win.dw);
                        gwk[i * win.kw + j] += dot(grow, &buf[start..start + win.ow]);
                    }
                }
            }
        }
    });
    gw
}
