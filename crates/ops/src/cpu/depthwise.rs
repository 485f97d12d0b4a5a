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

/// Small planes run each tap over the whole plane at once: output row `oy` sits at
/// `oy * pitch` of a scratch buffer, where `pitch` (`sh` rows of the phase-split input) is
/// how far one output row moves every tap's run, so a tap is one long run instead of `oh`
/// short ones. The scratch's extra columns cost `pitch - ow` elements a row, which pays
/// while rows are short or the stride is 1.
#[inline]
fn whole_plane(win: &Window) -> bool {
    // PUPIL_DW_ROWS=1 keeps every plane row by row, for side-by-side timing
    static ROWS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let rows = *ROWS.get_or_init(|| std::env::var_os("PUPIL_DW_ROWS").is_some_and(|v| v == "1"));
    !rows && (win.sh == 1 || win.ow <= FLAT_MAX_OW)
}

/// The whole-plane layout's `(pitch, len)` when `flat`, or `None` for row by row.
#[inline]
fn layout(win: &Window, ph: &Phased, flat: bool) -> Option<(usize, usize)> {
    let pitch = win.sh * ph.len;
    flat.then(|| (pitch, (win.oh - 1) * pitch + win.ow))
}

/// Widest strided output row the whole-plane layout takes (`bench`: the stride-2 layers
/// at 96-px inputs gain, those of 224-px ones lose).
const FLAT_MAX_OW: usize = 32;

/// x: [n, c, h, w], w: [c, 1, kh, kw] -> [n, c, oh, ow].
pub(crate) fn forward<T: Real>(x: &[T], w: &[T], c: usize, win: &Window) -> Vec<T> {
    forward_in(x, w, c, win, whole_plane(win))
}

fn forward_in<T: Real>(x: &[T], w: &[T], c: usize, win: &Window, flat: bool) -> Vec<T> {
    let (plane_in, plane_out, kk) = (win.h * win.w, win.oh * win.ow, win.kh * win.kw);
    let ph = Phased::new(win);
    let flat = layout(win, &ph, flat);
    let mut out = vec![T::ZERO; x.len() / plane_in * plane_out];
    let init = || (Vec::new(), Vec::new());
    crate::par::for_chunks_init(
        &mut out,
        plane_out,
        init,
        #[inline(always)]
        |(buf, tmp), p, o| {
            let xi = &x[p * plane_in..][..plane_in];
            let wk = &w[(p % c) * kk..][..kk];
            ph.fill(xi, win.h, win.w, T::ZERO, buf);
            if let Some((pitch, len)) = flat {
                tmp.clear();
                tmp.resize(len, T::ZERO);
                for i in 0..win.kh {
                    row_taps(
                        tmp,
                        buf,
                        &ph,
                        i * win.dh,
                        &wk[i * win.kw..][..win.kw],
                        win.dw,
                    );
                }
                for (oy, orow) in o.chunks_exact_mut(win.ow).enumerate() {
                    orow.copy_from_slice(&tmp[oy * pitch..][..win.ow]);
                }
                return;
            }
            for (oy, orow) in o.chunks_exact_mut(win.ow).enumerate() {
                for i in 0..win.kh {
                    let r = oy * win.sh + i * win.dh;
                    row_taps(orow, buf, &ph, r, &wk[i * win.kw..][..win.kw], win.dw);
                }
            }
        },
    );
    out
}

/// The output gradient of one plane at the whole-plane layout's pitch, zero between rows.
#[inline]
fn spread<T: Real>(gi: &[T], ow: usize, pitch: usize, len: usize, tmp: &mut Vec<T>) {
    tmp.clear();
    tmp.resize(len, T::ZERO);
    for (oy, grow) in gi.chunks_exact(ow).enumerate() {
        tmp[oy * pitch..][..ow].copy_from_slice(grow);
    }
}

/// Gradient w.r.t. the input: the output gradient scattered back through
/// every tap into the padded, phase-split buffer, then unpadded.
pub(crate) fn backward_input<T: Real>(g: &[T], w: &[T], c: usize, win: &Window) -> Vec<T> {
    backward_input_in(g, w, c, win, whole_plane(win))
}

fn backward_input_in<T: Real>(g: &[T], w: &[T], c: usize, win: &Window, flat: bool) -> Vec<T> {
    let (plane_in, plane_out, kk) = (win.h * win.w, win.oh * win.ow, win.kh * win.kw);
    let ph = Phased::new(win);
    let flat = layout(win, &ph, flat);
    let mut gx = vec![T::ZERO; g.len() / plane_out * plane_in];
    let init = || (Vec::new(), Vec::new());
    crate::par::for_chunks_init(
        &mut gx,
        plane_in,
        init,
        #[inline(always)]
        |(buf, tmp), p, gxi| {
            let gi = &g[p * plane_out..][..plane_out];
            let wk = &w[(p % c) * kk..][..kk];
            buf.clear();
            buf.resize(ph.size(), T::ZERO);
            if let Some((pitch, len)) = flat {
                spread(gi, win.ow, pitch, len, tmp);
                for i in 0..win.kh {
                    for j in 0..win.kw {
                        let start = ph.run_start(i * win.dh, j * win.dw);
                        axpy(&mut buf[start..start + len], tmp, wk[i * win.kw + j]);
                    }
                }
            } else {
                for (oy, grow) in gi.chunks_exact(win.ow).enumerate() {
                    for i in 0..win.kh {
                        let r = oy * win.sh + i * win.dh;
                        for j in 0..win.kw {
                            let start = ph.run_start(r, j * win.dw);
                            axpy(&mut buf[start..start + win.ow], grow, wk[i * win.kw + j]);
                        }
                    }
                }
            }
            ph.unfill(buf, win.h, win.w, gxi);
        },
    );
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
    backward_weight_in(x, g, n, c, win, whole_plane(win))
}

fn backward_weight_in<T: Real>(
    x: &[T],
    g: &[T],
    n: usize,
    c: usize,
    win: &Window,
    flat: bool,
) -> Vec<T> {
    let (plane_in, plane_out, kk) = (win.h * win.w, win.oh * win.ow, win.kh * win.kw);
    let ph = Phased::new(win);
    let flat = layout(win, &ph, flat);
    let mut gw = vec![T::ZERO; c * kk];
    let init = || (Vec::new(), Vec::new());
    crate::par::for_chunks_init(
        &mut gw,
        kk,
        init,
        #[inline(always)]
        |(buf, tmp), ch, gwk| {
            for b in 0..n {
                let p = b * c + ch;
                ph.fill(&x[p * plane_in..][..plane_in], win.h, win.w, T::ZERO, buf);
                let gi = &g[p * plane_out..][..plane_out];
                if let Some((pitch, len)) = flat {
                    spread(gi, win.ow, pitch, len, tmp);
                    for i in 0..win.kh {
                        for j in 0..win.kw {
                            let start = ph.run_start(i * win.dh, j * win.dw);
                            gwk[i * win.kw + j] += dot(tmp, &buf[start..start + len]);
                        }
                    }
                    continue;
                }
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
        },
    );
    gw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pad2d;

    fn data(n: usize, seed: u32) -> Vec<f64> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f64 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn the_whole_plane_layout_matches_row_by_row() {
        // (h, w, k, stride, dilation, pad (t, b, l, r)): odd sizes, both strides, asymmetric pads
        let cases = [
            (7, 9, 3, 1, 1, (1, 1, 1, 1)),
            (12, 12, 5, 1, 1, (2, 2, 2, 2)),
            (9, 11, 3, 2, 1, (0, 1, 0, 1)),
            (13, 6, 5, 2, 1, (1, 2, 2, 1)),
            (10, 10, 3, 1, 2, (2, 2, 2, 2)),
            (5, 5, 3, 2, 2, (1, 1, 1, 1)),
            (3, 3, 3, 1, 1, (1, 1, 1, 1)),
        ];
        let (n, c) = (2, 3);
        for (h, w, k, s, d, (t, b, l, r)) in cases {
            let pad = Pad2d {
                top: t,
                bottom: b,
                left: l,
                right: r,
            };
            let win = Window::new("dw", (h, w), (k, k), (s, s), (d, d), pad).unwrap();
            let x = data(n * c * h * w, 1);
            let wt = data(c * k * k, 2);
            let g = data(n * c * win.oh * win.ow, 3);
            let what = format!("{h}x{w} k{k} s{s} d{d} {pad:?}");
            let close = |a: &[f64], b: &[f64], name: &str| {
                assert_eq!(a.len(), b.len());
                for (i, (p, q)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-12 * (1.0 + q.abs()),
                        "{name} {what} [{i}]: {p} vs {q}"
                    );
                }
            };
            // the forward adds the taps in the same order either way: same bits
            assert_eq!(
                forward_in(&x, &wt, c, &win, true),
                forward_in(&x, &wt, c, &win, false),
                "{what}"
            );
            close(
                &backward_input_in(&g, &wt, c, &win, true),
                &backward_input_in(&g, &wt, c, &win, false),
                "input grad",
            );
            close(
                &backward_weight_in(&x, &g, n, c, &win, true),
                &backward_weight_in(&x, &g, n, c, &win, false),
                "weight grad",
            );
        }
    }
}
