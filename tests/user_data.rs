//! A user's own data end to end through the binary: a saved model evaluated on a COCO set
//! (its detections scored again give its metrics), prediction over a folder, VOC folders
//! without ImageSets, self-training from a sharded pseudo-label folder, plots of a run,
//! pre-training on a class folder.
use pupil_data::coco::eval::{evaluate_files, EvalParams, STAT_NAMES};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::{fails, ok, run, s};

const TINY: &str = r#"
task = "detection"
seed = 3
[backbone]
name = "efficientnet"
width = 0.25
depth = 0.1
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
policy = "s1"
size = 64
[optim]
steps = 300
batch_size = 2
lr_per_256 = 8.0
warmup_steps = 5
checkpoint_every = 0
log_every = 5
eval_every = 150
"#;

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// A folder for this run of the tests (cleared when the first test asks for it), with a
/// detector trained 300 steps (a few seconds) and the digit validation scenes exported as
/// COCO and VOC.
fn shared() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("user_data");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("tiny.toml"), TINY).unwrap();
        let cfg = d.join("tiny.toml");
        ok(&["train", "--config", s(&cfg), "--out", s(&d.join("teacher"))]);
        let exp = d.join("exp");
        ok(&[
            "data",
            "export",
            "--split",
            "val",
            "--count",
            "6",
            "--image-size",
            "64",
            "--out",
            s(&exp),
        ]);
        d
    })
}

fn teacher() -> PathBuf {
    shared().join("teacher/model.safetensors")
}

#[test]
fn eval_model_detections_scored_again_give_its_metrics() {
    let d = shared();
    let (gt, images) = (
        d.join("exp/coco/annotations.json"),
        d.join("exp/coco/images"),
    );
    let out = d.join("eval-coco");
    let stdout = ok(&[
        "eval",
        "model",
        "--checkpoint",
        s(&teacher()),
        "--out",
        s(&out),
        "--set",
        "data.dataset=coco",
        "--set",
        &format!("data.val_json={}", s(&gt)),
        "--set",
        &format!("data.val_images={}", s(&images)),
    ]);
    assert!(
        stdout.contains("Average Precision") && stdout.contains("6 images"),
        "{stdout}"
    );
    let metrics = json(&out.join("metrics.json"));
    let dets = json(&out.join("detections.json"));
    let dets = dets.as_array().unwrap();
    assert!(!dets.is_empty());
    let gt_json = json(&gt);
    let ids = |k: &str| -> Vec<u64> {
        gt_json[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["id"].as_u64().unwrap())
            .collect()
    };
    let (img_ids, cat_ids) = (ids("images"), ids("categories"));
    for det in dets {
        assert!(
            img_ids.contains(&det["image_id"].as_u64().unwrap()),
            "{det}"
        );
        assert!(
            cat_ids.contains(&det["category_id"].as_u64().unwrap()),
            "{det}"
        );
        assert_eq!(det["bbox"].as_array().unwrap().len(), 4);
    }
    // the project's evaluator (pycocotools' numbers) on the two files gives metrics.json
    let r = evaluate_files(&gt, out.join("detections.json"), &EvalParams::default()).unwrap();
    for (name, v) in STAT_NAMES.iter().zip(r.stats) {
        assert_eq!(metrics[*name].as_f64().unwrap(), v, "{name}");
    }
    assert!(
        r.stats[8] > 0.0,
        "the trained model finds some digits: AR100 {}",
        r.stats[8]
    );
    assert_eq!(metrics["per_category"], r.to_json()["per_category"]);

    // on its own digit scenes (no instances file) the ground truth is written beside them
    let own = d.join("eval-digits");
    ok(&[
        "eval",
        "model",
        "--checkpoint",
        s(&teacher()),
        "--out",
        s(&own),
    ]);
    let r = evaluate_files(
        own.join("ground_truth.json"),
        own.join("detections.json"),
        &EvalParams::default(),
    )
    .unwrap();
    assert_eq!(
        json(&own.join("metrics.json"))["AP"].as_f64().unwrap(),
        r.stats[0]
    );

    // a VOC export reads its own class list; a set of other classes is refused
    let voc = d.join("eval-voc");
    ok(&[
        "eval",
        "model",
        "--checkpoint",
        s(&teacher()),
        "--out",
        s(&voc),
        "--set",
        "data.dataset=voc",
        "--set",
        &format!("data.voc_root={}", s(&d.join("exp/voc"))),
    ]);
    assert!(json(&voc.join("metrics.json"))["AP"].is_number());
    let plain = d.join("voc-plain");
    copy_dir(&d.join("exp/voc"), &plain);
    std::fs::remove_file(plain.join("labels.txt")).unwrap();
    let e = fails(&[
        "eval",
        "model",
        "--checkpoint",
        s(&teacher()),
        "--out",
        s(&voc),
        "--set",
        "data.dataset=voc",
        "--set",
        &format!("data.voc_root={}", s(&plain)),
    ]);
    assert!(e.contains("classes") && e.contains("aeroplane"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn predict_over_a_folder_writes_coco_results_and_drawings() {
    let d = shared();
    let input = d.join("predict-in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    for i in 1..=3 {
        let f = format!("{i:06}.png");
        std::fs::copy(d.join("exp/coco/images").join(&f), input.join(&f)).unwrap();
    }
    std::fs::copy(
        d.join("exp/voc/JPEGImages/000004.jpg"),
        input.join("sub/000004.jpg"),
    )
    .unwrap();
    let out = d.join("predict-out");
    let stdout = ok(&[
        "predict",
        "--checkpoint",
        s(&teacher()),
        "--images",
        s(&input),
        "--out",
        s(&out),
        "--score-threshold",
        "0",
        "--batch-size",
        "3",
    ]);
    assert!(stdout.contains("4 images"), "{stdout}");
    let dets = json(&out.join("detections.json"));
    let dets = dets.as_array().unwrap();
    assert!(!dets.is_empty());
    let names = ["000001.png", "000002.png", "000003.png", "sub/000004.jpg"];
    for det in dets {
        let f = det["file_name"].as_str().unwrap();
        let k = names
            .iter()
            .position(|n| *n == f)
            .unwrap_or_else(|| panic!("{det}"));
        assert_eq!(det["image_id"].as_u64(), Some(k as u64 + 1), "{det}");
    }
    let seen: std::collections::HashSet<&str> = dets
        .iter()
        .map(|d| d["file_name"].as_str().unwrap())
        .collect();
    assert_eq!(seen.len(), 4, "every image has detections at threshold 0");
    for v in ["000001.png", "000002.png", "000003.png", "sub/000004.png"] {
        let img = pupil_data::io::read_image(out.join("vis").join(v)).unwrap();
        assert_eq!(
            img.width,
            64 * 5,
            "{v}: a 64-pixel image is drawn 5 times larger"
        );
    }
    // the threshold filters what is written
    let high = d.join("predict-high");
    ok(&[
        "predict",
        "--checkpoint",
        s(&teacher()),
        "--images",
        s(&input),
        "--out",
        s(&high),
        "--score-threshold",
        "0.99",
    ]);
    assert!(
        json(&high.join("detections.json"))
            .as_array()
            .unwrap()
            .len()
            < dets.len()
    );
    // the single-image form keeps working
    let vis = d.join("one.png");
    let js = d.join("one.json");
    ok(&[
        "predict",
        "--checkpoint",
        s(&teacher()),
        "--image",
        s(&input.join("000001.png")),
        "--out",
        s(&vis),
        "--json",
        s(&js),
        "--score-threshold",
        "0",
    ]);
    assert!(vis.exists() && !json(&js).as_array().unwrap().is_empty());
    let e = fails(&[
        "predict",
        "--checkpoint",
        s(&teacher()),
        "--images",
        "/nonexistent/imgs",
        "--out",
        s(&high),
    ]);
    assert!(e.contains("/nonexistent/imgs"), "{e}");
}

#[test]
fn voc_detection_folder_without_image_sets_previews() {
    let d = shared();
    // Annotations/ and JPEGImages/ only, as labelme and many exporters write them
    let voc = d.join("voc-det");
    for sub in ["Annotations", "JPEGImages"] {
        copy_dir(&d.join("exp/voc").join(sub), &voc.join(sub));
    }
    std::fs::copy(d.join("exp/voc/labels.txt"), voc.join("labels.txt")).unwrap();
    let grid = d.join("voc-grid.png");
    let stdout = ok(&[
        "data",
        "preview",
        "--dataset",
        "voc",
        "--root",
        s(&voc),
        "--out",
        s(&grid),
    ]);
    assert!(stdout.contains("6 samples"), "{stdout}");
    // a segmentation set needs label maps: the folder is named, the cause said once
    let e = fails(&[
        "data",
        "preview",
        "--dataset",
        "voc",
        "--root",
        s(&voc),
        "--voc-task",
        "segmentation",
        "--out",
        s(&grid),
    ]);
    assert!(e.contains("SegmentationClass"), "{e}");
    assert_eq!(e.matches("os error").count(), 1, "{e}");
}

#[test]
fn self_train_from_a_sharded_folder_and_its_refusal_when_a_shard_is_missing() {
    let d = shared();
    let pl = d.join("pl");
    let shard = |i: &str| {
        ok(&[
            "pseudo-label",
            "--teacher",
            s(&teacher()),
            "--images",
            "digits:unlabeled",
            "--out",
            s(&pl),
            "--score-threshold",
            "0.2",
            "--shard",
            i,
        ])
    };
    shard("1/2");
    let st = d.join("student");
    let e = fails(&["self-train", "--pseudo", s(&pl), "--out", s(&st)]);
    assert!(
        e.contains("1 of 2 shards are missing") && e.contains("shard-00000-of-00002.json"),
        "{e}"
    );
    shard("0/2");
    let o = run(&[
        "self-train",
        "--pseudo",
        s(&pl),
        "--out",
        s(&st),
        "--set",
        "optim.steps=6",
        "--set",
        "optim.log_every=1",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("trained 6 steps") && err.contains("pseudo labels from"),
        "{out}{err}"
    );
    assert!(
        !st.join("round-0/pseudo").exists(),
        "the folder is used, not labeled again"
    );
    let run = st.join("round-0/student");
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(log.contains("\"L_p\""), "{log}");
    // the student's config took the folder's threshold
    let header = pupil_selftrain::model::read_model_header(&run.join("model.safetensors"));
    assert_eq!(header.unwrap().config.selftrain.score_threshold, 0.2);
    assert!(run.join("metrics.png").exists(), "a student run is plotted");
    // a teacher other than the folder's is refused
    let e = fails(&[
        "self-train",
        "--pseudo",
        s(&pl),
        "--teacher",
        s(&run.join("model.safetensors")),
        "--out",
        s(&d.join("student2")),
    ]);
    assert!(e.contains("labeled by"), "{e}");
    // the folder's labels can be looked at
    let grid = d.join("pseudo-grid.png");
    let stdout = ok(&[
        "data",
        "preview",
        "--dataset",
        "pseudo",
        "--pseudo",
        s(&pl),
        "--n",
        "4",
        "--out",
        s(&grid),
    ]);
    assert!(stdout.contains("4 samples"), "{stdout}");
}

#[test]
fn a_tiny_run_is_plotted() {
    let d = shared();
    let run = d.join("teacher");
    let auto = run.join("metrics.png");
    let img = pupil_data::io::read_image(&auto).unwrap();
    // four panels (loss, lr, validation over two columns) with their legends
    assert!(
        img.width > 1200 && img.height > 700,
        "{}x{}",
        img.width,
        img.height
    );
    let out = d.join("plot.png");
    let stdout = ok(&["plot", s(&run), "--out", s(&out)]);
    assert!(stdout.contains("plot.png") && out.exists());
    let e = fails(&["plot", s(&d.join("exp"))]);
    assert!(e.contains("metrics.jsonl"), "{e}");
}

#[test]
fn pretrain_reads_a_class_folder() {
    let d = shared();
    let root = d.join("classes");
    for (c, v) in [("ant", 40u8), ("bee", 220u8)] {
        for i in 0..6 {
            let img = pupil_data::Image::new(20 + i, 16, 3, v);
            pupil_data::io::write_png(root.join(c).join(format!("{i}.png")), &img).unwrap();
        }
    }
    let out = d.join("pretrain");
    ok(&[
        "pretrain",
        "--dataset",
        &format!("folder:{}", s(&root)),
        "--out",
        s(&out),
        "--set",
        "optim.steps=3",
        "--set",
        "optim.batch_size=4",
        "--set",
        "backbone.name=efficientnet",
        "--set",
        "backbone.width=0.25",
        "--set",
        "backbone.depth=0.1",
    ]);
    let h = pupil_selftrain::model::read_model_header(&out.join("model.safetensors")).unwrap();
    assert_eq!(h.class_names, ["ant", "bee"]);
    let e = fails(&[
        "pretrain",
        "--dataset",
        "folder:/nonexistent/classes",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("/nonexistent/classes"), "{e}");
}
