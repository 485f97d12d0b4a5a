//! An online (EMA-teacher) student: a run resumed from its mid-way checkpoint ends with the
//! same student, teacher and log as the run that went through; the log holds the teacher's
//! diagnostics and the run folder its teacher.
use pupil_selftrain::config::{parse_config, TrainConfig};
use pupil_selftrain::dist::Runtime;
use pupil_selftrain::experiment::train_online;
use std::path::Path;

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
[detector.post]
# the random-init teacher's scores sit near the focal prior (0.01): keep them
score_threshold = 0.002
pre_nms_top_k = 50
max_detections = 10
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
train = 8
unlabeled = 6
val = 2
[augment]
policy = "s4"
size = 64
[optim]
steps = 8
batch_size = 2
lr_per_256 = 2.0
warmup_steps = 2
checkpoint_every = 4
log_every = 1
ema_decay = 0.9
[selftrain]
mode = "online"
ema_decay = 0.8
burn_in_steps = 2
weak_scale = [0.7, 1.3]
score_threshold = 0.01
ignore_from = 0.005
silent_warn_steps = 3
unlabeled = "digits:unlabeled"
"#;

fn config() -> TrainConfig {
    parse_config(Some(TINY), "tiny", None, &[]).unwrap()
}

/// The metrics log without its timings.
fn log(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("images_per_s");
            v
        })
        .collect()
}

#[test]
fn an_online_run_resumed_mid_way_ends_as_the_run_that_went_through() {
    let cfg = config();
    let rt = Runtime::single("cpu").unwrap();
    let d = tempfile::tempdir().unwrap();
    let full = d.path().join("full");
    let o = train_online(&cfg, &rt, &full, true, true).unwrap();
    assert_eq!(o.steps, 8);
    assert!(o.teacher_metrics.is_some() && o.final_metrics.is_some());

    // the run stopped at its step-4 checkpoint: only that checkpoint and the log
    let cut = d.path().join("cut");
    let ck = cut.join("checkpoints");
    std::fs::create_dir_all(&ck).unwrap();
    let name = "step-0000004.safetensors";
    std::fs::copy(full.join("checkpoints").join(name), ck.join(name)).unwrap();
    let latest = serde_json::json!({"file": name, "step": 4}).to_string();
    std::fs::write(ck.join("latest.json"), latest).unwrap();
    std::fs::copy(full.join("metrics.jsonl"), cut.join("metrics.jsonl")).unwrap();
    let header = pupil_nn::params::parse_header(&std::fs::read(ck.join(name)).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(header["step"], 4);
    let names = pupil_testkit::safetensors_bits(&ck.join(name));
    assert!(
        names.iter().any(|(n, _)| n.starts_with("teacher.")),
        "the checkpoint holds the teacher"
    );
    train_online(&cfg, &rt, &cut, true, true).unwrap();

    for file in ["model.safetensors", "teacher.safetensors"] {
        let (a, b) = (
            pupil_testkit::safetensors_bits(&full.join(file)),
            pupil_testkit::safetensors_bits(&cut.join(file)),
        );
        assert_eq!(a.len(), b.len());
        for ((na, va), (nb, vb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(va, vb, "{file}: {na} differs after resume");
        }
    }
    let (a, b) = (log(&full), log(&cut));
    assert_eq!(a, b, "the resumed log differs");

    // burn-in steps are supervised; then L_h, L_p and the teacher's labels every step
    let steps: Vec<&serde_json::Value> = a.iter().filter(|v| v["loss"].is_number()).collect();
    assert_eq!(steps.len(), 8);
    for v in &steps[..2] {
        assert_eq!(v["burn_in"], true, "{v}");
        assert!(v.get("L_p").is_none(), "{v}");
    }
    for v in &steps[2..] {
        for k in ["L_h", "L_p", "pseudo_labels_per_image", "pseudo_per_class"] {
            assert!(!v[k].is_null(), "{k}: {v}");
        }
        // the digit scenes' unlabeled split has ground truth: precision and recall
        assert!(v["pseudo_recall"].is_number(), "{v}");
        assert_eq!(v["pseudo_images"], 2);
    }
    assert!(
        steps[2..]
            .iter()
            .any(|v| v["teacher_labels"].as_u64() > Some(0)),
        "the teacher labeled nothing: the test does not reach the student's pseudo loss"
    );
    assert!(a.iter().any(|v| v["eval_teacher"].is_object()));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(full.join("online.json")).unwrap()).unwrap();
    assert_eq!(summary["total"]["images"], 12, "{summary}");
    assert!(
        summary["teacher_metrics"]["primary"].is_number(),
        "{summary}"
    );
}
