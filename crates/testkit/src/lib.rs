//! Test support for the pupil crates (a dev-dependency only).
use std::path::{Path, PathBuf};

/// The workspace root (this crate sits at `crates/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The golden fixtures: `$PUPIL_FIXTURES` (relative to the workspace root, or absolute) or
/// `<workspace>/../shared/fixtures`. A missing folder fails the calling test, naming the
/// folder: fixture checks must never pass by being skipped.
pub fn fixtures() -> PathBuf {
    let root = workspace_root();
    let dir = match std::env::var_os("PUPIL_FIXTURES") {
        Some(v) => root.join(v),
        None => root.join("../shared/fixtures"),
    };
    assert!(
        dir.is_dir(),
        "PUPIL_FIXTURES is missing: fixture folder {} not found (set PUPIL_FIXTURES to the golden fixtures folder)",
        dir.display()
    );
    dir
}

/// A file of the fixtures folder; fails the test naming it when it is absent.
pub fn fixture(name: &str) -> PathBuf {
    let p = fixtures().join(name);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// The `case_*` folders of a fixtures sub-folder (`coco_eval`, `miou`), sorted; none fails.
pub fn fixture_cases(kind: &str) -> Vec<PathBuf> {
    let dir = fixtures().join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("PUPIL_FIXTURES is missing {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("case_"))
        })
        .collect();
    v.sort();
    assert!(
        !v.is_empty(),
        "PUPIL_FIXTURES is missing the {} cases",
        dir.display()
    );
    v
}

/// Deterministic test inputs without a rand dependency (the workspace's SplitMix64).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        pupil_data::rng::splitmix64(&mut self.0)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
