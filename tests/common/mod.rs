//! Helpers shared by the binary's end-to-end tests (each test file includes this module and
//! uses a part of it).
#![allow(dead_code)]
use std::path::Path;
use std::process::{Command, Output};

/// A small detector on tiny digit scenes, trained `STEPS` steps with Augment-S4; its
/// `[optim]` table comes last, so keys appended to the text land there.
const TINY: &str = r#"
task = "detection"
seed = 3
[backbone]
name = "efficientnet"
width = 0.25
depth = 0.1
drop_path = 0.2
[detector]
head_convs = 1
head_channels = 16
[detector.neck]
channels = 16
min_level = 3
max_level = 5
bn_momentum = 0.1
[detector.anchors]
min_level = 3
max_level = 5
anchor_size = 2.0
[data]
size_divisor = 32
workers = 1
[data.digits]
image_size = 64
max_digit_size = 30
train = 12
unlabeled = 10
val = 6
[augment]
policy = "s4"
size = 64
[optim]
steps = STEPS
batch_size = 2
lr_per_256 = 2.0
warmup_steps = 5
checkpoint_every = 5
ema_decay = 0.9
"#;

/// [`TINY`] for `steps` steps with `optim_extra` (lines of `[optim]` keys) appended.
pub fn tiny_config(steps: usize, optim_extra: &str) -> String {
    TINY.replace("STEPS", &steps.to_string()) + optim_extra
}

/// `pupil args` on one compute thread (runs give the same bits), without backtraces.
pub fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pupil"));
    c.args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("RUST_BACKTRACE");
    c
}

pub fn run(args: &[&str]) -> Output {
    cmd(args).output().expect("run pupil")
}

fn succeeded(args: &[&str], o: &Output) {
    assert!(
        o.status.success(),
        "pupil {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs, asserts success; the stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    succeeded(args, &o);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs, asserts success; the stdout followed by the stderr (progress and warnings).
pub fn ok_logs(args: &[&str]) -> String {
    let o = run(args);
    succeeded(args, &o);
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Runs, asserts an error exit (1, as a returned error gives) without a panic; the stderr.
pub fn fails(args: &[&str]) -> String {
    let o = run(args);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "pupil {args:?} should fail with 1: {e}"
    );
    assert!(!e.contains("panicked"), "pupil {args:?} panicked: {e}");
    e
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
