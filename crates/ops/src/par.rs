//! Data parallelism on candle's CPU thread pool.
//!
//! candle's element-wise ops run on its own barrier pool, whose workers spin for a while
//! after each op. Kernels on a second pool (rayon) started right after one fight those
//! spinning threads for the cores; on 2 cores that cost up to 1.5x on whole models. Every
//! pupil kernel therefore runs on the same pool through these helpers.
use std::ops::Range;

/// Runs `f(range)` over `0..n` split into ranges, on candle's pool; inline when called
/// from a pool worker.
pub fn for_ranges(n: usize, f: impl Fn(Range<usize>) + Sync) {
    thread_local! {
        static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    // candle runs nested calls from its workers inline, but the calling thread also works
    // on the batch and a nested call from it would deadlock on the pool's lock.
    if INSIDE.with(|i| i.get()) {
        crate::simd::wide(
            #[inline(always)]
            || f(0..n),
        );
        return;
    }
    candle_core::utils::barrier_pool().execute_chunked(n, |r| {
        let was = INSIDE.with(|i| i.replace(true));
        crate::simd::wide(
            #[inline(always)]
            || f(r),
        );
        INSIDE.with(|i| i.set(was));
    });
}

struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: only used to hand disjoint sub-slices of one `&mut [T]` to the pool's threads.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// Calls `f(state, i, chunk_i)` for every `chunk`-sized piece of `out` (the last may be
/// shorter) in parallel; `init` makes one scratch state per grabbed range.
pub fn for_chunks_init<T: Send, S>(
    out: &mut [T],
    chunk: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync,
) {
    let chunk = chunk.max(1);
    let len = out.len();
    let ptr = SendPtr(out.as_mut_ptr());
    for_ranges(
        len.div_ceil(chunk),
        #[inline(always)]
        |r| {
            let p = ptr;
            let mut state = init();
            for i in r {
                let start = i * chunk;
                let n = chunk.min(len - start);
                // SAFETY: chunk i covers start..start+n of `out`, disjoint from every other
                // chunk, and `out` is mutably borrowed for the whole call.
                let piece = unsafe { std::slice::from_raw_parts_mut(p.0.add(start), n) };
                f(&mut state, i, piece);
            }
        },
    );
}

/// Calls `f(i, chunk_i)` for every `chunk`-sized piece of `out` in parallel.
pub fn for_chunks<T: Send>(out: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    for_chunks_init(
        out,
        chunk,
        || (),
        #[inline(always)]
        |_, i, c| f(i, c),
    );
}

/// `(0..n).map(f).collect()` in parallel.
pub fn map<R: Send + Default + Clone>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let mut out = vec![R::default(); n];
    for_chunks(
        &mut out,
        1,
        #[inline(always)]
        |i, o| o[0] = f(i),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_element_once_with_a_short_tail() {
        let mut v = vec![0u32; 1003];
        for_chunks(&mut v, 10, |i, c| {
            for (j, x) in c.iter_mut().enumerate() {
                *x += (i * 10 + j) as u32 + 1;
            }
        });
        assert!(v.iter().enumerate().all(|(k, &x)| x == k as u32 + 1));
        assert_eq!(map(5, |i| i * i), vec![0, 1, 4, 9, 16]);
        // nested use runs inline instead of deadlocking
        let mut w = vec![0u8; 64];
        for_chunks(&mut w, 8, |_, c| {
            let mut inner = vec![0u8; 4];
            for_chunks(&mut inner, 1, |_, x| x[0] = 1);
            c[0] = inner.iter().sum();
        });
        assert_eq!(w.iter().map(|&x| x as usize).sum::<usize>(), 32);
    }
}
