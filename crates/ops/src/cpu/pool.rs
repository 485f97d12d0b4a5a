//! Max pooling with -inf padding; ties go to the first maximum in row-major
//! window order (as PyTorch), because taps are visited in that order and only
//! a strictly greater value replaces the current one.

use super::{Phased, Window};
use crate::storage::Real;

pub(crate) fn forward<T: Real>(x: &[T], win: &Window) -> Vec<T> {
    let (plane_in, plane_out) = (win.h * win.w, win.oh * win.ow);
    let ph = Phased::new(win);
    let mut out = vec![T::NEG_INF; x.len() / plane_in * plane_out];
    crate::par::for_chunks_init(
        &mut out,
        plane_out,
        Vec::new,
        #[inline(always)]
        |buf, p, o| {
            let xi = &x[p * plane_in..][..plane_in];
            ph.fill(xi, win.h, win.w, T::NEG_INF, buf);
            for (oy, orow) in o.chunks_exact_mut(win.ow).enumerate() {
                for i in 0..win.kh {
                    let r = oy * win.sh + i * win.dh;
                    for j in 0..win.kw {
                        let run = &buf[ph.run_start(r, j * win.dw)..][..win.ow];
                        for (m, &v) in orow.iter_mut().zip(run) {
                            if v > *m {
                                *m = v;
                            }
                        }
                    }
                }
            }
        },
    );
    out
}

/// Routes each output gradient to its window's argmax (recomputed here).
pub(crate) fn backward<T: Real>(x: &[T], g: &[T], win: &Window) -> Vec<T> {
    let (plane_in, plane_out) = (win.h * win.w, win.oh * win.ow);
    let ph = Phased::new(win);
    let mut gx = vec![T::ZERO; x.len()];
    crate::par::for_chunks_init(
        &mut gx,
        plane_in,
        || (Vec::new(), Vec::new(), Vec::new()),
        #[inline(always)]
        |(buf, best, arg), p, gxi| {
            let xi = &x[p * plane_in..][..plane_in];
            let gi = &g[p * plane_out..][..plane_out];
            ph.fill(xi, win.h, win.w, T::NEG_INF, buf);
            for (oy, grow) in gi.chunks_exact(win.ow).enumerate() {
                best.clear();
                best.resize(win.ow, T::NEG_INF);
                arg.clear();
                arg.resize(win.ow, usize::MAX);
                for i in 0..win.kh {
                    let r = oy * win.sh + i * win.dh;
                    for j in 0..win.kw {
                        let run = &buf[ph.run_start(r, j * win.dw)..][..win.ow];
                        let tap = i * win.kw + j;
                        for ((b, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(run) {
                            // The first tap always claims the slot so a window of
                            // all -inf still has an argmax.
                            if v > *b || *a == usize::MAX {
                                *b = v;
                                *a = tap;
                            }
                        }
                    }
                }
                for (ox, (&tap, &gv)) in arg.iter().zip(grow).enumerate() {
                    let iy = (oy * win.sh + (tap / win.kw) * win.dh).checked_sub(win.pad.top);
                    let ix = (ox * win.sw + (tap % win.kw) * win.dw).checked_sub(win.pad.left);
                    // A window whose maximum is padding sends its gradient nowhere.
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        if iy < win.h && ix < win.w {
                            gxi[iy * win.w + ix] += gv;
                        }
                    }
                }
            }
        },
    );
    gx
}
