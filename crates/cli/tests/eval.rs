//! `pupil eval detection|segmentation` end to end: fixture numbers through the binary, output
//! formats, and bad inputs (exit 1, a message naming the file and the item, no panic).
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pupil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pupil"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim().lines().count(),
        1,
        "one JSON object on one line: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

/// Exit code 1, `error: ` with every `needles` in the message, and no panic.
fn fails_with(out: Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

#[test]
fn detection_json_matches_pycocotools_on_every_case() {
    for case in pupil_testkit::fixture_cases("coco_eval") {
        let exp: Value =
            serde_json::from_slice(&std::fs::read(case.join("expected.json")).unwrap()).unwrap();
        let out = ok_json(pupil(&[
            "eval",
            "detection",
            "--gt",
            s(&case.join("gt.json")),
            "--dt",
            s(&case.join("dt.json")),
            "--json",
        ]));
        for (name, e) in exp["stat_names"]
            .as_array()
            .unwrap()
            .iter()
            .zip(exp["stats"].as_array().unwrap())
        {
            let (got, e) = (
                out[name.as_str().unwrap()].as_f64().unwrap(),
                e.as_f64().unwrap(),
            );
            assert!(
                (got - e).abs() <= 1e-9,
                "{}: {name} {got} vs {e}",
                case.display()
            );
        }
        let per_cat = out["per_category"].as_array().unwrap();
        let expected = exp["per_category_AP"].as_object().unwrap();
        assert_eq!(per_cat.len(), expected.len());
        for c in per_cat {
            let id = c["id"].as_u64().unwrap().to_string();
            let (got, e) = (c["AP"].as_f64().unwrap(), expected[&id].as_f64().unwrap());
            assert!(
                (got - e).abs() <= 1e-9,
                "{}: category {id}: {got} vs {e}",
                case.display()
            );
            assert!(c["name"].is_string());
        }
    }
}

#[test]
fn detection_table_looks_like_pycocotools_summarize() {
    let case = &pupil_testkit::fixture_cases("coco_eval")[0];
    let out = pupil(&[
        "eval",
        "detection",
        "--gt",
        s(&case.join("gt.json")),
        "--dt",
        s(&case.join("dt.json")),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "),
        "{text}"
    );
    assert!(
        text.contains(" Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = "),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.contains("@[ IoU=")).count(), 12);
}

#[test]
fn segmentation_json_matches_numpy_on_every_case() {
    for case in pupil_testkit::fixture_cases("miou") {
        let exp: Value =
            serde_json::from_slice(&std::fs::read(case.join("expected.json")).unwrap()).unwrap();
        let n = exp["num_classes"].to_string();
        let out = ok_json(pupil(&[
            "eval",
            "segmentation",
            "--gt",
            s(&case.join("gt")),
            "--pred",
            s(&case.join("pred")),
            "--num-classes",
            &n,
            "--json",
        ]));
        let miou = out["mIoU"].as_f64().unwrap();
        assert!(
            (miou - exp["miou"].as_f64().unwrap()).abs() <= 1e-12,
            "{}",
            case.display()
        );
        let got = out["per_class_iou"].as_array().unwrap();
        let want = exp["per_class_iou"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            match (g.as_f64(), w.as_f64()) {
                (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-12),
                (None, None) => assert!(g.is_null()),
                other => panic!("{}: {other:?}", case.display()),
            }
        }
        let pa = out["pixel_accuracy"].as_f64().unwrap();
        assert!((pa - exp["pixel_accuracy"].as_f64().unwrap()).abs() <= 1e-12);
    }
}

// ---- bad input ------------------------------------------------------------------------

const GT_OK: &str = r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
 "categories": [{"id": 5, "name": "x"}],
 "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10], "area": 100, "iscrowd": 0}]}"#;
const DT_OK: &str = r#"[{"image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10], "score": 0.9}]"#;

fn detection(gt: &str, dt: &str) -> (Output, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (g, d) = (dir.path().join("gt.json"), dir.path().join("dt.json"));
    std::fs::write(&g, gt).unwrap();
    std::fs::write(&d, dt).unwrap();
    let out = pupil(&["eval", "detection", "--gt", s(&g), "--dt", s(&d), "--json"]);
    (out, s(&g).to_string(), s(&d).to_string(), dir)
}

#[test]
fn small_good_files_work() {
    let (out, _, _, _d) = detection(GT_OK, DT_OK);
    let v = ok_json(out);
    assert!((v["AP"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(v["per_category"][0]["name"], "x");
}

#[test]
fn malformed_gt_json() {
    let (out, g, _, _d) = detection("{\"images\": [\n  {\"id\": 1,, }]}", DT_OK);
    fails_with(out, &[&g, "line 2", "column"]);
}

#[test]
fn malformed_dt_json() {
    let (out, _, d, _d) = detection(GT_OK, "[{\"image_id\": 1,\n \"score\": }]");
    fails_with(out, &[&d, "line 2", "column"]);
}

#[test]
fn dt_with_unknown_image_id() {
    let (out, _, d, _d) = detection(GT_OK, &DT_OK.replace("\"image_id\": 1", "\"image_id\": 77"));
    fails_with(out, &[&d, "detection 0", "image id 77"]);
}

#[test]
fn gt_annotation_with_unknown_category_id() {
    let (out, g, _, _d) = detection(
        &GT_OK.replace("\"category_id\": 5", "\"category_id\": 6"),
        DT_OK,
    );
    fails_with(out, &[&g, "annotation id 1", "unknown category id 6"]);
}

#[test]
fn boxes_with_negative_size() {
    let (out, g, _, _d) = detection(&GT_OK.replace("[1, 2, 10, 10]", "[1, 2, 10, -1]"), DT_OK);
    fails_with(out, &[&g, "annotation id 1", "negative size"]);
    let (out, _, d, _d) = detection(GT_OK, &DT_OK.replace("[1, 2, 10, 10]", "[1, 2, -4, 10]"));
    fails_with(out, &[&d, "detection 0", "negative size"]);
}

#[test]
fn missing_input_files() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("nope.json");
    let out = pupil(&["eval", "detection", "--gt", s(&g), "--dt", s(&g), "--json"]);
    fails_with(out, &[s(&g)]);
}

/// gt/ and pred/ with two identical 4x3 gray label maps written by hand-made PNG bytes.
fn label_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (g, p) = (dir.path().join("gt"), dir.path().join("pred"));
    std::fs::create_dir_all(&g).unwrap();
    std::fs::create_dir_all(&p).unwrap();
    let plane = pupil_data::Plane::from_raw(4, 3, vec![0, 1, 1, 255, 0, 0, 1, 1, 2, 2, 2, 0]);
    for name in ["000.png", "001.png"] {
        pupil_data::io::write_label_png(g.join(name), &plane).unwrap();
        pupil_data::io::write_label_png(p.join(name), &plane).unwrap();
    }
    (dir, g, p)
}

fn segmentation(g: &Path, p: &Path) -> Output {
    pupil(&[
        "eval",
        "segmentation",
        "--gt",
        s(g),
        "--pred",
        s(p),
        "--num-classes",
        "3",
        "--json",
    ])
}

#[test]
fn segmentation_on_identical_maps() {
    let (_d, g, p) = label_dirs();
    let v = ok_json(segmentation(&g, &p));
    assert_eq!(v["mIoU"], 1.0);
    let out = pupil(&[
        "eval",
        "segmentation",
        "--gt",
        s(&g),
        "--pred",
        s(&p),
        "--num-classes",
        "4",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("mIoU"));
    let v = ok_json(pupil(&[
        "eval",
        "segmentation",
        "--gt",
        s(&g),
        "--pred",
        s(&p),
        "--num-classes",
        "4",
        "--json",
    ]));
    assert!(v["per_class_iou"][3].is_null());
}

#[test]
fn missing_pred_png() {
    let (_d, g, p) = label_dirs();
    std::fs::remove_file(p.join("001.png")).unwrap();
    fails_with(segmentation(&g, &p), &[s(&p.join("001.png")), "not found"]);
}

#[test]
fn label_map_of_a_different_size() {
    let (_d, g, p) = label_dirs();
    pupil_data::io::write_label_png(p.join("000.png"), &pupil_data::Plane::new(4, 5, 0)).unwrap();
    fails_with(segmentation(&g, &p), &[s(&p.join("000.png")), "4x5", "4x3"]);
}

#[test]
fn truncated_png() {
    let (_d, g, p) = label_dirs();
    let f = g.join("001.png");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 20]).unwrap();
    fails_with(segmentation(&g, &p), &[s(&f)]);
}

#[test]
fn predicted_class_out_of_range() {
    let (_d, g, p) = label_dirs();
    let out = pupil(&[
        "eval",
        "segmentation",
        "--gt",
        s(&g),
        "--pred",
        s(&p),
        "--num-classes",
        "2",
        "--json",
    ]);
    fails_with(out, &[s(&g.join("000.png")), "pixel (x=0, y=2)"]);
}

#[test]
fn num_classes_outside_1_to_256() {
    let (_d, g, p) = label_dirs();
    for n in ["0", "1000000"] {
        let out = pupil(&[
            "eval",
            "segmentation",
            "--gt",
            s(&g),
            "--pred",
            s(&p),
            "--num-classes",
            n,
        ]);
        fails_with(out, &["num_classes", n]);
    }
}

#[test]
fn empty_detection_list_scores_zero() {
    let (out, _, _, _d) = detection(GT_OK, "[]");
    let v = ok_json(out);
    assert_eq!(v["AP"], 0.0);
    assert_eq!(v["AR100"], 0.0);
}
