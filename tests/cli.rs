//! End-to-end checks of the `pupil` binary: exports that external readers (and pupil's own)
//! read back, previews, and bad input giving a clear error and a nonzero exit.
use std::path::Path;
mod common;
use common::{fails, ok};

#[test]
fn digits_export_reads_back_as_coco_and_voc() {
    use pupil_data::coco::CocoDataset;
    use pupil_data::digits::{DigitScenes, DigitsConfig, Split};
    use pupil_data::voc::{VocDataset, VocTask};
    use pupil_data::Dataset;

    let d = tempfile::tempdir().unwrap();
    let out = d.path().to_str().unwrap();
    ok(&[
        "data",
        "export",
        "--dataset",
        "digits",
        "--split",
        "val",
        "--count",
        "12",
        "--out",
        out,
    ]);
    let coco = CocoDataset::open(
        d.path().join("coco/annotations.json"),
        d.path().join("coco/images"),
    )
    .unwrap()
    .with_masks(true);
    let voc = VocDataset::open(
        d.path().join("voc"),
        "val",
        VocTask::Segmentation,
        Some(coco.class_names()),
    )
    .unwrap();
    let cfg = DigitsConfig {
        val: 12,
        ..Default::default()
    };
    let orig = DigitScenes::new(&cfg, Split::Val).unwrap();
    assert_eq!(coco.len(), 12);
    assert_eq!(voc.len(), 12);
    for i in 0..12 {
        let (a, b, c) = (
            orig.get(i).unwrap(),
            coco.get(i).unwrap(),
            voc.get(i).unwrap(),
        );
        assert_eq!(a.image, b.image, "PNG export is lossless");
        assert_eq!(a.boxes, b.boxes);
        assert_eq!(a.classes, b.classes);
        assert_eq!(a.masks, b.masks, "RLE masks round trip");
        assert_eq!(a.boxes, c.boxes, "VOC boxes round trip");
        assert_eq!(a.classes, c.classes);
        assert_eq!(a.label_map, c.label_map, "palette label maps round trip");
    }
}

#[test]
fn preview_writes_a_grid() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("grid.png");
    ok(&[
        "data",
        "preview",
        "--split",
        "train",
        "--n",
        "6",
        "--cols",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let img = pupil_data::io::read_image(&out).unwrap();
    // 96-pixel scenes are drawn twice as large, so their labels stay readable
    assert_eq!((img.width, img.height), (3 * 194 + 2, 2 * 194 + 2));
}

#[test]
fn bad_inputs_exit_nonzero_with_the_file_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("broken.json");
    std::fs::write(&p, "{\"images\": [}").unwrap();
    let out = d.path().join("x.png");
    let err = fails(&[
        "data",
        "preview",
        "--dataset",
        "coco",
        "--gt",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("broken.json") && err.contains("line 1"),
        "{err}"
    );
    assert!(!Path::new(&out).exists());
    let err = fails(&[
        "data",
        "export",
        "--split",
        "nope",
        "--out",
        d.path().to_str().unwrap(),
    ]);
    assert!(err.contains("unknown split"), "{err}");
    let err = fails(&[
        "data",
        "preview",
        "--dataset",
        "voc",
        "--root",
        "/nonexistent/voc",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("/nonexistent/voc"), "{err}");
}

/// `pupil bench` on tiny models of each task and mode: one JSON line with the timing keys
/// (train mode also splits forward, backward and step); zero counts are refused.
#[test]
fn bench_prints_one_json_line_for_every_task_and_refuses_zero_counts() {
    let small = [
        "--set",
        "backbone.name=efficientnet",
        "--set",
        "backbone.width=0.25",
        "--set",
        "backbone.depth=0.1",
        "--set",
        "data.size_divisor=32",
        "--size",
        "64",
        "--batch",
        "2",
        "--classes",
        "3",
        "--iters",
        "1",
        "--warmup",
        "0",
    ];
    for task in ["detection", "segmentation", "classification"] {
        for mode in ["infer", "train"] {
            let t = format!("task={task}");
            let mut args = vec!["bench", "--mode", mode, "--set", &t];
            args.extend(small);
            let out = ok(&args);
            let line: serde_json::Value = serde_json::from_str(out.trim())
                .unwrap_or_else(|e| panic!("{task} {mode}: not one JSON line ({e}): {out}"));
            assert_eq!(line["task"], task, "{line}");
            assert_eq!(line["mode"], mode, "{line}");
            assert!(line["ms"].as_f64().unwrap() > 0.0, "{line}");
            assert!(line["img_per_s"].as_f64().unwrap() > 0.0, "{line}");
            assert!(line["peak_mb"].as_f64().unwrap() > 0.0, "{line}");
            for k in ["forward_ms", "backward_ms", "step_ms"] {
                assert_eq!(line.get(k).is_some(), mode == "train", "{k}: {line}");
            }
        }
    }
    for flag in ["--batch", "--iters", "--size", "--classes"] {
        let e = fails(&["bench", flag, "0"]);
        assert!(e.contains(flag) && e.contains("at least 1"), "{flag}: {e}");
    }
    let e = fails(&["bench", "--mode", "fit"]);
    assert!(e.contains("--mode"), "{e}");
}
