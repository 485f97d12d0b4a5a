//! Kernel loops compiled for the widest vector unit the CPU has, picked at run time. The
//! binary targets baseline x86-64, where the compiler vectorises an f32 loop 4 lanes wide
//! (SSE2); on a CPU with AVX2 the same loops run 8 lanes wide.
//!
//! No float operation is contracted into an FMA or reordered on either path (Rust does
//! neither without being asked), so both give the same bits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Runs `f` inside a function compiled with AVX2 and FMA where the CPU has both, else as
/// is. `f` and what it inlines take on the wider vectors, so the kernel loops belong in it.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { avx2(f) };
    }
    f()
}

/// Off: [`wide`] runs the baseline build of its closure. Starts off when the environment
/// sets `PUPIL_NO_AVX2=1` (to compare the two paths on one binary).
static ENABLED: OnceLock<AtomicBool> = OnceLock::new();

fn enabled() -> &'static AtomicBool {
    ENABLED
        .get_or_init(|| AtomicBool::new(std::env::var_os("PUPIL_NO_AVX2").is_none_or(|v| v != "1")))
}

/// Turns the AVX2 path on or off for the whole process (tests compare the two).
pub fn set_enabled(on: bool) {
    enabled().store(on, Ordering::Relaxed);
}

/// Whether [`wide`] takes the AVX2 path: the CPU has AVX2 and FMA, and it is enabled.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // std caches the detection: a few atomic loads per kernel call
        enabled().load(Ordering::Relaxed)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
