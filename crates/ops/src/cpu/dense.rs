//! Dense and grouped convolution as im2col + GEMM (the `gemm` crate).
//!
//! Work is split into independent tasks (image, group, block of output rows
//! or input channels), each with a single-threaded GEMM, so the im2col and
//! col2im passes run in parallel too.

use super::Window;
use crate::storage::Real;
use crate::Pad2d;
use gemm::Parallelism;
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Elements of one im2col chunk: about L2-sized, so the GEMM reads back what
/// im2col just wrote from cache (1 MiB of f32 measured best; 4x larger
/// chunks were up to 1.5x slower).
const COL_CHUNK: usize = 1 << 18;
/// Multiply-adds below which a conv runs on the calling thread: waking a
/// parked worker costs tens of microseconds, more on a loaded machine.
const PAR_MIN_MACS: usize = 1 << 21;
/// Tasks a parallel conv is cut into, whatever the number of threads: the
/// GEMM shapes (and so the rounding) then depend on the conv alone, and a
/// run gives the same bits on one thread or many.
const SPLIT_TASKS: usize = 16;
/// Partial sums of the filter gradient, at most; each is summed by one
/// thread in task order and the partials are added in order.
const FILTER_PARTS: usize = 8;
/// Bytes the filter gradient's partial sums may take together.
const FILTER_PARTS_BYTES: usize = 64 << 20;

/// Shape of one grouped convolution; `cin`/`cout` are per group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: usize,
    pub groups: usize,
    pub cin: usize,
    pub cout: usize,
    pub win: Window,
}

/// Output columns `lo..hi` of one kernel column tap read real input pixels,
/// the first at input column `ix0`, then every `sw`-th.
#[derive(Clone, Copy, Debug)]
struct Span {
    lo: usize,
    hi: usize,
    ix0: usize,
}

/// Raw output pointer shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Out<T>(*mut T);
// SAFETY: every task writes a region no other task touches (see callers).
unsafe impl<T> Send for Out<T> {}
unsafe impl<T> Sync for Out<T> {}

impl<T> Out<T> {
    /// Pointer `off` elements in; a method so closures capture the whole
    /// (Sync) wrapper rather than its raw field.
    ///
    /// # Safety
    /// `off` must lie within the allocation.
    unsafe fn at(self, off: usize) -> *mut T {
        self.0.add(off)
    }
}

impl Geom {
    fn kk(&self) -> usize {
        self.win.kh * self.win.kw
    }

    /// GEMM depth: rows of the im2col matrix.
    fn k(&self) -> usize {
        self.cin * self.kk()
    }

    fn p(&self) -> usize {
        self.win.oh * self.win.ow
    }

    fn plane(&self) -> usize {
        self.win.h * self.win.w
    }

    /// 1x1, stride 1, unpadded: the input plane already is its im2col matrix.
    fn pointwise(&self) -> bool {
        let w = &self.win;
        w.kh == 1 && w.kw == 1 && w.sh == 1 && w.sw == 1 && w.pad == Pad2d::default()
    }

    fn spans(&self) -> Vec<Span> {
        let w = &self.win;
        (0..w.kw)
            .map(|j| {
                let off = j * w.dw;
                let left = w.pad.left;
                let lo = left.saturating_sub(off).div_ceil(w.sw);
                let hi = (left + w.w).saturating_sub(off).div_ceil(w.sw).min(w.ow);
                let lo = lo.min(hi);
                Span {
                    lo,
                    hi,
                    ix0: (lo * w.sw + off).saturating_sub(left),
                }
            })
            .collect()
    }

    /// Output rows per chunk: at most `budget` elements of `per_col` values
    /// per output column, and at least `min_chunks` chunks per plane.
    fn rows_per_chunk(&self, per_col: usize, budget: usize, min_chunks: usize) -> usize {
        let w = &self.win;
        let by_mem = (budget / (per_col * w.ow).max(1)).max(1);
        let chunks = w.oh.div_ceil(by_mem).max(min_chunks).min(w.oh);
        w.oh.div_ceil(chunks)
    }

    /// Whether the conv is big enough to be worth waking the pool's threads.
    fn parallel(&self) -> bool {
        self.n * self.groups * self.cout * self.k() * self.p() >= PAR_MIN_MACS
    }

    /// Tasks per (image, group) wanted so that a parallel conv has about
    /// [`SPLIT_TASKS`] of them (a fixed count, for thread-independent bits).
    fn min_split(&self) -> usize {
        match self.parallel() {
            true => SPLIT_TASKS.div_ceil(self.n * self.groups),
            false => 1,
        }
    }
}

thread_local! {
    static SCRATCH: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
}

/// This thread's im2col buffer, kept across calls: a fresh multi-MB buffer
/// per call costs a page fault for every 4 KiB it touches.
struct Scratch<T> {
    buf: Vec<u64>,
    _t: PhantomData<T>,
}

impl<T: Real> Scratch<T> {
    fn take() -> Self {
        assert!(size_of::<T>() <= 8 && align_of::<T>() <= 8);
        Self {
            buf: SCRATCH.take(),
            _t: PhantomData,
        }
    }

    /// `len` elements of unspecified (but valid) values.
    fn get(&mut self, len: usize) -> &mut [T] {
        let words = (len * size_of::<T>()).div_ceil(8);
        if self.buf.len() < words {
            self.buf.resize(words, 0);
        }
        // SAFETY: the u64 storage is aligned for T (checked in `take`), holds
        // at least `len` of them, and T is a float, valid for any bits.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast(), len) }
    }
}

impl<T> Drop for Scratch<T> {
    fn drop(&mut self) {
        SCRATCH.set(std::mem::take(&mut self.buf));
    }
}

/// Runs `task(t, state, scratch)` for every `t < n`, in parallel when
/// `parallel`: the tasks are cut into `parts` contiguous runs, each run by
/// one thread in order into its own state; the states come back in run
/// order, so partial sums do not depend on which thread took which run.
///
/// Runs on candle's barrier pool, not rayon: candle's element-wise ops use
/// that pool and its workers spin for a while after each op, so rayon
/// threads started right after one fight them for the cores (on 2 cores
/// this made forward+backward 1.3-1.8x slower and candle's own ops ~10x).
fn run_tasks<T: Real, S: Default + Send>(
    n: usize,
    parts: usize,
    parallel: bool,
    task: impl Fn(usize, &mut S, &mut Scratch<T>) + Sync,
) -> Vec<S> {
    let parts = parts.clamp(1, n.max(1));
    let run = |part: usize, st: &mut S, scratch: &mut Scratch<T>| {
        crate::simd::wide(
            #[inline(always)]
            || {
                for t in part * n / parts..(part + 1) * n / parts {
                    task(t, st, scratch);
                }
            },
        )
    };
    if !parallel || parts < 2 {
        let mut scratch = Scratch::take();
        return (0..parts)
            .map(|part| {
                let mut st = S::default();
                run(part, &mut st, &mut scratch);
                st
            })
            .collect();
    }
    let next = AtomicUsize::new(0);
    let states = Mutex::new(Vec::with_capacity(parts));
    candle_core::utils::barrier_pool().execute(|_| {
        let mut scratch = Scratch::take();
        let mut mine = Vec::new();
        // A shared cursor lets a thread that got descheduled fall behind
        // without the others waiting for its share.
        loop {
            let part = next.fetch_add(1, Ordering::Relaxed);
            if part >= parts {
                break;
            }
            let mut st = S::default();
            run(part, &mut st, &mut scratch);
            mine.push((part, st));
        }
        // one lock per thread, not per part
        states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(mine);
    });
    let mut states = states.into_inner().unwrap_or_else(|e| e.into_inner());
    states.sort_by_key(|s| s.0);
    states.into_iter().map(|s| s.1).collect()
}

/// `dst[m x n] (+)= lhs[m x k] * rhs[k x n]`, row-major `dst` with row stride
/// `dst_rs`; `lhs`/`rhs` strides given as (row, col).
///
/// # Safety
/// All pointers must address the full extents their strides imply.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const T,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        if accumulate { T::ONE } else { T::ZERO },
        T::ONE,
        false,
        false,
        false,
        // The callers already keep every thread busy with tasks.
        Parallelism::None,
    )
}

/// Writes `v` to `len` possibly uninitialised elements from `dst`.
///
/// # Safety
/// `dst..dst+len` must be inside one allocation and written by no one else.
unsafe fn fill_raw<T: Copy>(dst: *mut T, len: usize, v: T) {
    for e in std::slice::from_raw_parts_mut(dst.cast::<MaybeUninit<T>>(), len) {
        e.write(v);
    }
}

/// im2col of output rows `oy0..oy1` of one image-group `x` [cin, h, w] into
/// `col` [cin*kh*kw, (oy1-oy0)*ow]; padding reads as zero.
#[inline]
fn im2col<T: Real>(x: &[T], g: &Geom, spans: &[Span], (oy0, oy1): (usize, usize), col: &mut [T]) {
    let w = &g.win;
    let pc = (oy1 - oy0) * w.ow;
    let mut rows = col.chunks_exact_mut(pc);
    for plane in x.chunks_exact(g.plane()).take(g.cin) {
        for i in 0..w.kh {
            for sp in spans {
                let row = rows.next().expect("col holds cin*kh*kw rows");
                for (oy, out) in (oy0..oy1).zip(row.chunks_exact_mut(w.ow)) {
                    // Rows above the padding wrap around to a huge index.
                    let iy = (oy * w.sh + i * w.dh).wrapping_sub(w.pad.top);
                    if iy >= w.h || sp.lo == sp.hi {
                        out.fill(T::ZERO);
                        continue;
                    }
                    out[..sp.lo].fill(T::ZERO);
                    out[sp.hi..].fill(T::ZERO);
                    let src = &plane[iy * w.w + sp.ix0..];
                    let dst = &mut out[sp.lo..sp.hi];
                    if w.sw == 1 {
                        dst.copy_from_slice(&src[..dst.len()]);
                    } else {
                        for (d, &s) in dst.iter_mut().zip(src.iter().step_by(w.sw)) {
                            *d = s;
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col`]: adds `col` [cb*kh*kw, (oy1-oy0)*ow] back onto the
/// pixels of `dx` [cb, h, w] it was read from; padding taps are dropped.
#[inline]
fn col2im<T: Real>(col: &[T], g: &Geom, spans: &[Span], (oy0, oy1): (usize, usize), dx: &mut [T]) {
    let w = &g.win;
    let pc = (oy1 - oy0) * w.ow;
    let mut rows = col.chunks_exact(pc);
    for plane in dx.chunks_exact_mut(g.plane()) {
        for i in 0..w.kh {
            for sp in spans {
                let row = rows.next().expect("col holds cb*kh*kw rows");
                if sp.lo == sp.hi {
                    continue;
                }
                for (oy, src) in (oy0..oy1).zip(row.chunks_exact(w.ow)) {
                    let iy = (oy * w.sh + i * w.dh).wrapping_sub(w.pad.top);
                    if iy >= w.h {
                        continue;
                    }
                    let src = &src[sp.lo..sp.hi];
                    let dst = &mut plane[iy * w.w + sp.ix0..];
                    if w.sw == 1 {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (d, &s) in dst.iter_mut().step_by(w.sw).zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

/// x [n, groups*cin, h, w], w [groups*cout, cin, kh, kw], bias [groups*cout]
/// -> y [n, groups*cout, oh, ow].
pub(crate) fn forward<T: Real>(x: &[T], wt: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let (k, p, win) = (g.k(), g.p(), g.win);
    let rows = g.rows_per_chunk(k, COL_CHUNK, g.min_split());
    let chunks = win.oh.div_ceil(rows);
    let tasks = g.n * g.groups * chunks;
    let spans = g.spans();
    // Left uninitialised: each task fills its own part right before its GEMM,
    // so the first-touch page faults and the fill run in parallel and hot.
    let len = g.n * g.groups * g.cout * p;
    let mut y: Vec<T> = Vec::with_capacity(len);
    let out = Out(y.as_mut_ptr());
    run_tasks(
        tasks,
        tasks,
        g.parallel(),
        #[inline(always)]
        |t, _: &mut (), scratch: &mut Scratch<T>| {
            let (ng, ch) = (t / chunks, t % chunks);
            let (oy0, oy1) = (ch * rows, ((ch + 1) * rows).min(win.oh));
            let (p0, pc) = (oy0 * win.ow, (oy1 - oy0) * win.ow);
            let xg = &x[ng * g.cin * g.plane()..][..g.cin * g.plane()];
            let wg = &wt[ng % g.groups * g.cout * k..][..g.cout * k];
            // SAFETY: task t alone writes columns p0..p0+pc of the cout rows of
            // its image-group, all inside y.
            let dst = unsafe { out.at(ng * g.cout * p + p0) };
            for o in 0..g.cout {
                // The GEMM adds onto the bias; without one it still starts from
                // zeros, as gemm may read a partial tile's old values.
                let v = bias.map_or(T::ZERO, |b| b[ng % g.groups * g.cout + o]);
                unsafe { fill_raw(dst.add(o * p), pc, v) };
            }
            let (rhs, rhs_rs) = if g.pointwise() {
                (xg[p0..].as_ptr(), p)
            } else {
                let col = scratch.get(k * pc);
                im2col(xg, g, &spans, (oy0, oy1), col);
                (col.as_ptr(), pc)
            };
            unsafe {
                matmul(
                    (g.cout, pc, k),
                    dst,
                    p,
                    true,
                    wg.as_ptr(),
                    (k, 1),
                    rhs,
                    (rhs_rs, 1),
                )
            };
        },
    );
    // SAFETY: the tasks' parts cover y and each was filled before its GEMM.
    unsafe { y.set_len(len) };
    y
}

/// Gradient w.r.t. the input: col2im(W_g^T dY), one task per image, group
/// and block of input channels (which own disjoint parts of dx).
pub(crate) fn backward_input<T: Real>(dy: &[T], wt: &[T], g: &Geom) -> Vec<T> {
    let (k, kk, p, win, plane) = (g.k(), g.kk(), g.p(), g.win, g.plane());
    let blocks = g.min_split().min(g.cin);
    let cb = g.cin.div_ceil(blocks);
    let blocks = g.cin.div_ceil(cb);
    let tasks = g.n * g.groups * blocks;
    let spans = g.spans();
    let rows = g.rows_per_chunk(cb * kk, COL_CHUNK, 1);
    // Uninitialised; each task zeroes its own channel block first.
    let len = g.n * g.groups * g.cin * plane;
    let mut dx: Vec<T> = Vec::with_capacity(len);
    let out = Out(dx.as_mut_ptr());
    run_tasks(
        tasks,
        tasks,
        g.parallel(),
        #[inline(always)]
        |t, _: &mut (), scratch: &mut Scratch<T>| {
            let (ng, blk) = (t / blocks, t % blocks);
            let (c0, c1) = (blk * cb, ((blk + 1) * cb).min(g.cin));
            let grp = ng % g.groups;
            let dyg = &dy[ng * g.cout * p..][..g.cout * p];
            // W_g^T restricted to the block's rows (c, i, j): element (r, o) is
            // w[grp*cout + o][c0*kk + r].
            let lhs = wt[(grp * g.cout * k + c0 * kk)..].as_ptr();
            let m = (c1 - c0) * kk;
            // SAFETY: the block's channels of this image are written by task t only.
            let dxb = unsafe {
                let start = out.at((ng * g.cin + c0) * plane);
                fill_raw(start, (c1 - c0) * plane, T::ZERO);
                std::slice::from_raw_parts_mut(start, (c1 - c0) * plane)
            };
            if g.pointwise() {
                unsafe {
                    matmul(
                        (m, p, g.cout),
                        dxb.as_mut_ptr(),
                        p,
                        false,
                        lhs,
                        (1, k),
                        dyg.as_ptr(),
                        (p, 1),
                    )
                };
                return;
            }
            for oy0 in (0..win.oh).step_by(rows) {
                let oy1 = (oy0 + rows).min(win.oh);
                let pc = (oy1 - oy0) * win.ow;
                let col = scratch.get(m * pc);
                unsafe {
                    matmul(
                        (m, pc, g.cout),
                        col.as_mut_ptr(),
                        pc,
                        false,
                        lhs,
                        (1, k),
                        dyg[oy0 * win.ow..].as_ptr(),
                        (p, 1),
                    )
                };
                col2im(col, g, &spans, (oy0, oy1), dxb);
            }
        },
    );
    // SAFETY: the tasks' channel blocks cover dx and each was zeroed first.
    unsafe { dx.set_len(len) };
    dx
}

/// Gradient w.r.t. the filter: sum over images of dY_n,g x col_n,g^T; tasks
/// (image, group, row chunk) accumulate in order into a fixed number of
/// partial sums, added in order.
pub(crate) fn backward_filter<T: Real>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let (k, p, win) = (g.k(), g.p(), g.win);
    let len = g.groups * g.cout * k;
    let rows = g.rows_per_chunk(k, COL_CHUNK, g.min_split());
    let chunks = win.oh.div_ceil(rows);
    let tasks = g.n * g.groups * chunks;
    let spans = g.spans();
    let parts = match g.parallel() {
        true => (FILTER_PARTS_BYTES / (len * size_of::<T>()).max(1)).clamp(1, FILTER_PARTS),
        false => 1,
    };
    let parts = run_tasks(
        tasks,
        parts,
        g.parallel(),
        #[inline(always)]
        |t, acc: &mut Vec<T>, scratch: &mut Scratch<T>| {
            acc.resize(len, T::ZERO);
            let (ng, ch) = (t / chunks, t % chunks);
            let (oy0, oy1) = (ch * rows, ((ch + 1) * rows).min(win.oh));
            let (p0, pc) = (oy0 * win.ow, (oy1 - oy0) * win.ow);
            let xg = &x[ng * g.cin * g.plane()..][..g.cin * g.plane()];
            let dyg = &dy[ng * g.cout * p + p0..];
            // col^T: element (q, r) of the [pc, k] operand is col[r][q].
            let (rhs, rhs_cs) = if g.pointwise() {
                (xg[p0..].as_ptr(), p)
            } else {
                let col = scratch.get(k * pc);
                im2col(xg, g, &spans, (oy0, oy1), col);
                (col.as_ptr(), pc)
            };
            let dst = acc[ng % g.groups * g.cout * k..].as_mut_ptr();
            unsafe {
                matmul(
                    (g.cout, k, pc),
                    dst,
                    k,
                    true,
                    dyg.as_ptr(),
                    (p, 1),
                    rhs,
                    (1, rhs_cs),
                )
            };
        },
    );
    let mut parts = parts.into_iter().filter(|a| !a.is_empty());
    let mut sum = parts.next().unwrap_or_else(|| vec![T::ZERO; len]);
    for part in parts {
        for (s, &v) in sum.iter_mut().zip(&part) {
            *s += v;
        }
    }
    sum
}

/// Gradient w.r.t. the bias: dY [n, c, oh, ow] summed over all but channels.
pub(crate) fn backward_bias<T: Real>(dy: &[T], c: usize, plane: usize) -> Vec<T> {
    let n = dy.len() / (c * plane).max(1);
    let mut db = vec![T::ZERO; c];
    let out = Out(db.as_mut_ptr());
    run_tasks(
        c,
        c,
        dy.len() >= PAR_MIN_MACS,
        #[inline(always)]
        |o, _: &mut (), _: &mut Scratch<T>| {
            let s = (0..n).fold(T::ZERO, |s, b| s + sum(&dy[(b * c + o) * plane..][..plane]));
            // SAFETY: task o alone writes db[o].
            unsafe { *out.at(o) = s };
        },
    );
    db
}

/// Sum with eight independent accumulators, so the adds vectorise.
fn sum<T: Real>(v: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let mut chunks = v.chunks_exact(8);
    for ch in &mut chunks {
        for k in 0..8 {
            acc[k] += ch[k];
        }
    }
    let tail = chunks.remainder().iter().fold(T::ZERO, |s, &x| s + x);
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}
