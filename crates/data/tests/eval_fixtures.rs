//! COCO bbox evaluation and mIoU against the golden fixtures (pycocotools / numpy outputs),
//! a few hand-made semantic checks, and bad inputs (errors that name the file and the item).
use pupil_data::coco::eval::{evaluate, evaluate_files, CocoEval, EvalParams, STAT_NAMES};
use pupil_data::coco::{CocoAnnotation, CocoCategory, CocoDetection, CocoFile, CocoImage, Flag};
use pupil_data::io::write_label_png;
use pupil_data::metrics::{evaluate_label_dirs, ConfusionMatrix};
use pupil_data::Plane;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn coco_eval_cases_match_pycocotools() {
    for case in pupil_testkit::fixture_cases("coco_eval") {
        let exp = read_json(&case.join("expected.json"));
        let r = evaluate_files(
            case.join("gt.json"),
            case.join("dt.json"),
            &EvalParams::default(),
        )
        .unwrap();
        let names: Vec<&str> = exp["stat_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(names, STAT_NAMES);
        for (i, e) in exp["stats"].as_array().unwrap().iter().enumerate() {
            let e = e.as_f64().unwrap();
            assert!(
                (r.stats[i] - e).abs() <= 1e-9,
                "{}: {} = {} expected {}",
                case.display(),
                STAT_NAMES[i],
                r.stats[i],
                e
            );
        }
        let per_cat = exp["per_category_AP"].as_object().unwrap();
        assert_eq!(per_cat.len(), r.per_category.len(), "{}", case.display());
        for (id, _, ap) in &r.per_category {
            let e = per_cat[&id.to_string()].as_f64().unwrap();
            assert!(
                (ap - e).abs() <= 1e-9,
                "{}: category {id} AP {ap} expected {e}",
                case.display()
            );
        }
    }
}

#[test]
fn in_memory_evaluation_equals_the_file_one() {
    for case in pupil_testkit::fixture_cases("coco_eval") {
        let gt = CocoFile::read(case.join("gt.json")).unwrap();
        let dets = pupil_data::coco::read_results(case.join("dt.json")).unwrap();
        let from_files = evaluate_files(
            case.join("gt.json"),
            case.join("dt.json"),
            &EvalParams::default(),
        )
        .unwrap();
        let mut ev = CocoEval::new(&gt);
        ev.extend(dets.iter().cloned());
        assert_eq!(ev.evaluate().unwrap(), from_files);
        assert_eq!(
            evaluate(&gt, &dets, &EvalParams::default()).unwrap(),
            from_files
        );
    }
}

#[test]
fn miou_cases_match_numpy() {
    for case in pupil_testkit::fixture_cases("miou") {
        let exp = read_json(&case.join("expected.json"));
        let n = exp["num_classes"].as_u64().unwrap() as usize;
        let ignore = exp["ignore_index"].as_u64().unwrap() as u8;
        let cm =
            evaluate_label_dirs(&case.join("gt"), &case.join("pred"), n, Some(ignore)).unwrap();
        let rows: Vec<Vec<u64>> =
            serde_json::from_value(exp["confusion_matrix_rows_gt_cols_pred"].clone()).unwrap();
        assert_eq!(cm.rows(), rows, "{}", case.display());
        let iou = cm.per_class_iou();
        for (c, e) in exp["per_class_iou"].as_array().unwrap().iter().enumerate() {
            match (iou[c], e.as_f64()) {
                (None, None) => {}
                (Some(v), Some(e)) => assert!(
                    (v - e).abs() <= 1e-12,
                    "{}: class {c}: {v} vs {e}",
                    case.display()
                ),
                (v, e) => panic!("{}: class {c}: {v:?} vs {e:?}", case.display()),
            }
        }
        let miou = cm.mean_iou().unwrap();
        let e = exp["miou"].as_f64().unwrap();
        assert!(
            (miou - e).abs() <= 1e-12,
            "{}: mIoU {miou} vs {e}",
            case.display()
        );
        let pa = exp["pixel_accuracy"].as_f64().unwrap();
        assert!((cm.pixel_accuracy().unwrap() - pa).abs() <= 1e-12);
        // Plane-by-plane accumulation gives the same matrix.
        let mut cm2 = ConfusionMatrix::with_ignore_index(n, Some(ignore));
        for f in std::fs::read_dir(case.join("gt")).unwrap() {
            let name = f.unwrap().file_name();
            let g = pupil_data::io::read_label_png(case.join("gt").join(&name)).unwrap();
            let p = pupil_data::io::read_label_png(case.join("pred").join(&name)).unwrap();
            cm2.update_planes(&g, &p).unwrap();
        }
        assert_eq!(cm2, cm);
    }
}

// ---- hand-made semantics -------------------------------------------------------------

fn small_gt(crowd_region: bool) -> CocoFile {
    let ann = |id, bbox: [f64; 4], crowd: bool| CocoAnnotation {
        id,
        image_id: 7,
        category_id: 3,
        bbox,
        area: bbox[2] * bbox[3],
        iscrowd: Flag::Int(crowd as i64),
        segmentation: None,
    };
    let mut annotations = vec![ann(1, [10.0, 10.0, 40.0, 40.0], false)];
    if crowd_region {
        annotations.push(ann(2, [100.0, 100.0, 80.0, 80.0], true));
    }
    CocoFile {
        images: vec![CocoImage {
            id: 7,
            file_name: "a.jpg".into(),
            width: 200,
            height: 200,
        }],
        annotations,
        categories: vec![CocoCategory {
            id: 3,
            name: "thing".into(),
            supercategory: None,
        }],
        ..Default::default()
    }
}

/// pycocotools' precision is tp / (tp + fp + eps), so a perfect AP is 1 - 2^-52.
fn assert_perfect(ap: f64) {
    assert_eq!(ap, 1.0 / (1.0 + f64::EPSILON), "AP {ap}");
}

fn det(bbox: [f64; 4], score: f64) -> CocoDetection {
    CocoDetection {
        image_id: 7,
        category_id: 3,
        bbox,
        score,
        segmentation: None,
    }
}

#[test]
fn a_detection_inside_a_crowd_region_is_ignored_not_a_false_positive() {
    let hit = det([10.0, 10.0, 40.0, 40.0], 0.8);
    let in_crowd = det([110.0, 110.0, 20.0, 20.0], 0.9);
    let p = EvalParams::default();
    let with_crowd = evaluate(&small_gt(true), &[in_crowd.clone(), hit.clone()], &p).unwrap();
    assert_perfect(with_crowd.stats[0]);
    let without = evaluate(&small_gt(false), &[in_crowd, hit], &p).unwrap();
    assert!(without.stats[0] < 0.6, "{:?}", without.stats);
}

#[test]
fn score_ties_keep_input_order() {
    let hit = det([10.0, 10.0, 40.0, 40.0], 0.5);
    let miss = det([150.0, 10.0, 40.0, 40.0], 0.5);
    let p = EvalParams::default();
    let first = evaluate(&small_gt(false), &[hit.clone(), miss.clone()], &p).unwrap();
    let second = evaluate(&small_gt(false), &[miss, hit], &p).unwrap();
    assert_perfect(first.stats[0]);
    assert!(second.stats[0] < 0.6, "{:?}", second.stats);
}

#[test]
fn max_dets_cut_is_per_image() {
    // The only hit ranks 11th: found with maxDets 100, not with 10.
    let mut dets: Vec<CocoDetection> = (0..10)
        .map(|i| det([150.0, 5.0 * i as f64, 10.0, 10.0], 0.9))
        .collect();
    dets.push(det([10.0, 10.0, 40.0, 40.0], 0.1));
    let r = evaluate(&small_gt(false), &dets, &EvalParams::default()).unwrap();
    assert_eq!((r.stats[6], r.stats[7], r.stats[8]), (0.0, 0.0, 1.0));
}

#[test]
fn other_categories_are_ignored_and_unknown_images_rejected() {
    let mut other = det([10.0, 10.0, 40.0, 40.0], 0.9);
    other.category_id = 99;
    let p = EvalParams::default();
    let r = evaluate(
        &small_gt(false),
        &[other, det([10.0, 10.0, 40.0, 40.0], 0.5)],
        &p,
    )
    .unwrap();
    assert_perfect(r.stats[0]);
    let mut stray = det([10.0, 10.0, 40.0, 40.0], 0.9);
    stray.image_id = 8;
    let e = evaluate(&small_gt(false), &[det([0.0; 4], 0.1), stray], &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("detection 1") && e.contains("image id 8"), "{e}");
}

#[test]
fn add_xyxy_maps_train_ids_to_coco_ids() {
    let gt = small_gt(false);
    let mut ev = CocoEval::new(&gt);
    ev.add_xyxy(7, &[[10.0, 10.0, 50.0, 50.0]], &[0], &[0.7])
        .unwrap();
    assert_eq!(ev.detections()[0].category_id, 3);
    assert_eq!(ev.detections()[0].bbox, [10.0, 10.0, 40.0, 40.0]);
    assert_perfect(ev.evaluate().unwrap().stats[0]);
    assert!(ev.add_xyxy(7, &[[0.0; 4]], &[1], &[0.5]).is_err());
    assert!(ev.add_xyxy(7, &[[0.0; 4]], &[0], &[]).is_err());
}

// ---- bad input ------------------------------------------------------------------------

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GT_OK: &str = r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
 "categories": [{"id": 5, "name": "x"}],
 "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10], "area": 100, "iscrowd": 0}]}"#;
const DT_OK: &str = r#"[{"image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10], "score": 0.9}]"#;

fn eval_err(gt: &str, dt: &str) -> (String, PathBuf, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let g = write(dir.path(), "gt.json", gt);
    let d = write(dir.path(), "dt.json", dt);
    let e = evaluate_files(&g, &d, &EvalParams::default())
        .unwrap_err()
        .to_string();
    (e, g, d, dir)
}

#[test]
fn good_small_files_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let g = write(dir.path(), "gt.json", GT_OK);
    let d = write(dir.path(), "dt.json", DT_OK);
    assert_perfect(
        evaluate_files(&g, &d, &EvalParams::default())
            .unwrap()
            .stats[0],
    );
}

#[test]
fn malformed_gt_json_names_file_line_and_column() {
    let (e, g, _, _d) = eval_err("{\"images\": [\n  {\"id\": 1,, }]}", DT_OK);
    assert!(
        e.contains(&g.display().to_string()) && e.contains("line 2") && e.contains("column"),
        "{e}"
    );
}

#[test]
fn malformed_dt_json_names_file_line_and_column() {
    let (e, _, d, _d) = eval_err(GT_OK, "[{\"image_id\": 1,\n \"score\": }]");
    assert!(
        e.contains(&d.display().to_string()) && e.contains("line 2") && e.contains("column"),
        "{e}"
    );
}

#[test]
fn dt_with_unknown_image_id_names_file_and_detection() {
    let dt = r#"[{"image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 10], "score": 0.9},
                {"image_id": 42, "category_id": 5, "bbox": [1, 2, 10, 10], "score": 0.9}]"#;
    let (e, _, d, _d) = eval_err(GT_OK, dt);
    assert!(
        e.contains(&d.display().to_string()) && e.contains("detection 1") && e.contains("42"),
        "{e}"
    );
}

#[test]
fn gt_with_unknown_category_id_names_file_and_annotation() {
    let gt = GT_OK.replace("\"category_id\": 5", "\"category_id\": 6");
    let (e, g, _, _d) = eval_err(&gt, DT_OK);
    assert!(
        e.contains(&g.display().to_string())
            && e.contains("annotation id 1")
            && e.contains("category id 6"),
        "{e}"
    );
}

#[test]
fn negative_box_sizes_name_file_and_item() {
    let gt = GT_OK.replace("[1, 2, 10, 10]", "[1, 2, -10, 10]");
    let (e, g, _, _d) = eval_err(&gt, DT_OK);
    assert!(
        e.contains(&g.display().to_string())
            && e.contains("annotation id 1")
            && e.contains("negative"),
        "{e}"
    );
    let dt = DT_OK.replace("[1, 2, 10, 10]", "[1, 2, 10, -3]");
    let (e, _, d, _d) = eval_err(GT_OK, &dt);
    assert!(
        e.contains(&d.display().to_string()) && e.contains("detection 0") && e.contains("negative"),
        "{e}"
    );
}

fn label_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (g, p) = (dir.path().join("gt"), dir.path().join("pred"));
    std::fs::create_dir_all(&g).unwrap();
    std::fs::create_dir_all(&p).unwrap();
    let plane = Plane::from_raw(4, 3, vec![0, 1, 1, 255, 0, 0, 1, 1, 2, 2, 2, 0]);
    for name in ["a.png", "b.png"] {
        write_label_png(g.join(name), &plane).unwrap();
        write_label_png(p.join(name), &plane).unwrap();
    }
    (dir, g, p)
}

#[test]
fn identical_label_maps_give_miou_one() {
    let (_d, g, p) = label_dirs();
    let cm = evaluate_label_dirs(&g, &p, 3, Some(255)).unwrap();
    assert_eq!(cm.mean_iou(), Some(1.0));
    assert_eq!(cm.total(), 22);
}

#[test]
fn missing_pred_png_names_the_file() {
    let (_d, g, p) = label_dirs();
    std::fs::remove_file(p.join("b.png")).unwrap();
    let e = evaluate_label_dirs(&g, &p, 3, Some(255))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&p.join("b.png").display().to_string()) && e.contains("not found"),
        "{e}"
    );
    // And the other way round.
    let (_d, g, p) = label_dirs();
    std::fs::remove_file(g.join("a.png")).unwrap();
    let e = evaluate_label_dirs(&g, &p, 3, Some(255))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&g.join("a.png").display().to_string()), "{e}");
}

#[test]
fn label_map_of_another_size_names_file_and_both_sizes() {
    let (_d, g, p) = label_dirs();
    write_label_png(p.join("a.png"), &Plane::new(5, 3, 0)).unwrap();
    let e = evaluate_label_dirs(&g, &p, 3, Some(255))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&p.join("a.png").display().to_string())
            && e.contains("5x3")
            && e.contains("4x3"),
        "{e}"
    );
}

#[test]
fn truncated_png_names_the_file() {
    let (_d, g, p) = label_dirs();
    let f = p.join("b.png");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = evaluate_label_dirs(&g, &p, 3, Some(255))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&f.display().to_string()), "{e}");
}

#[test]
fn predicted_class_out_of_range_names_file_and_pixel() {
    let (_d, g, p) = label_dirs();
    let e = evaluate_label_dirs(&g, &p, 2, Some(255))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gt") && e.contains("pixel (x=0, y=2)") && e.contains("class 2"),
        "{e}"
    );
    let (_d, g, p) = label_dirs();
    let mut bad = Plane::from_raw(4, 3, vec![0, 1, 1, 255, 0, 0, 1, 1, 2, 2, 2, 0]);
    bad.data[1] = 9;
    write_label_png(p.join("a.png"), &bad).unwrap();
    let e = evaluate_label_dirs(&g, &p, 3, Some(255))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&p.join("a.png").display().to_string()) && e.contains("pixel (x=1, y=0)"),
        "{e}"
    );
}
