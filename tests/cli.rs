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
