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

/// The fuzz seeds of one target (`fuzz/seeds/<target>`), as bytes; none fails.
pub fn fuzz_seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = workspace_root().join("fuzz/seeds").join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// `seed` changed by `edits` of (position, byte, kind): kind 0 overwrites a byte, 1 cuts the
/// input there, 2 inserts the byte, 3 repeats the next 16 bytes (as libFuzzer mutates).
pub fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(pos, byte, kind) in edits {
        let at = if v.is_empty() { 0 } else { pos % v.len() };
        match kind % 4 {
            0 if !v.is_empty() => v[at] = byte,
            1 => v.truncate(at),
            2 => v.insert(at, byte),
            _ => {
                let piece: Vec<u8> = v.iter().skip(at).take(16).copied().collect();
                v.splice(at..at, piece);
            }
        }
    }
    v
}

/// The tensors of a safetensors file, sorted by name, each as the bit patterns of its values
/// in f32 (bit-identity checks: `-0.0` and `0.0` differ, as they must for "the same weights").
pub fn safetensors_bits(p: &Path) -> Vec<(String, Vec<u32>)> {
    let t = candle_core::safetensors::load(p, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut v: Vec<(String, Vec<u32>)> = t
        .into_iter()
        .map(|(k, t)| {
            let f: Vec<f32> = t
                .flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.to_vec1())
                .unwrap_or_else(|e| panic!("{}: {k}: {e}", p.display()));
            (k, f.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
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
