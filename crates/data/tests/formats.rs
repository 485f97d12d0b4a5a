//! Format readers and writers against pycocotools' own outputs and real files, and every bad
//! input giving an error that names the file and the item.
use pupil_data::coco::mask::Rle;
use pupil_data::coco::{self, CocoDataset, CocoDetection, CocoFile, Segmentation};
use pupil_data::io;
use pupil_data::voc::{VocAnnotation, VocDataset, VocObject, VocTask};
use pupil_data::{Dataset, Image, Plane};
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[derive(serde::Deserialize)]
struct Golden {
    height: usize,
    width: usize,
    polygons: Vec<Vec<f64>>,
    rle_compressed: String,
    mask_rows: Vec<String>,
    area: u64,
    bbox: [f32; 4],
}

#[test]
fn polygons_and_rle_match_pycocotools() {
    let cases: Vec<Golden> = io::read_json(data("mask_golden.json")).unwrap();
    assert_eq!(cases.len(), 40);
    for (k, c) in cases.iter().enumerate() {
        let want: Vec<u8> = c
            .mask_rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| b - b'0'))
            .collect();
        let seg = Segmentation::Polygons(c.polygons.clone());
        let got = coco::decode_segmentation(&seg, c.height, c.width).unwrap();
        assert_eq!(
            got.data, want,
            "case {k}: polygon raster differs from pycocotools"
        );
        let rle = Rle::from_plane(&got);
        assert_eq!(
            rle.to_compressed(),
            c.rle_compressed,
            "case {k}: compressed string"
        );
        assert_eq!(rle.area(), c.area, "case {k}");
        let back = Rle::from_compressed(&c.rle_compressed, c.height, c.width).unwrap();
        assert_eq!(back.to_plane().unwrap().data, want, "case {k}");
        if c.area > 0 {
            let b = got.bbox().unwrap();
            assert_eq!([b[0], b[1], b[2] - b[0], b[3] - b[1]], c.bbox, "case {k}");
        }
    }
}

#[test]
fn reads_the_real_coco_sample() {
    // Its `area` fields are the whole image's area on purpose; its PNG is a palette image.
    let ds = CocoDataset::open(data("terrain2_coco.json"), data(""))
        .unwrap()
        .with_masks(true);
    assert_eq!(ds.len(), 1);
    assert_eq!(ds.class_names(), vec!["car"]);
    let s = ds.get(0).unwrap();
    assert_eq!((s.width(), s.height(), s.image.channels), (1024, 682, 3));
    assert_eq!(s.boxes.len(), 5);
    assert_eq!(s.boxes[0], [218.0, 448.0, 440.0, 609.0]);
    assert!(s.classes.iter().all(|&c| c == 0));
    let masks = s.masks.as_ref().unwrap();
    // Rectangle polygons rasterise to their boxes.
    assert_eq!(masks[0].bbox().unwrap(), [218.0, 448.0, 440.0, 609.0]);
    s.check().unwrap();
}

#[test]
fn crowd_rle_regions_decode() {
    let fixtures = pupil_testkit::fixtures();
    let gt = fixtures.join("coco_eval/case_01/gt.json");
    let f = CocoFile::read(&gt).unwrap();
    let crowd: Vec<_> = f
        .annotations
        .iter()
        .filter(|a| a.iscrowd.is_set())
        .collect();
    assert!(!crowd.is_empty());
    for a in crowd {
        let im = f.images.iter().find(|i| i.id == a.image_id).unwrap();
        let m = coco::decode_segmentation(a.segmentation.as_ref().unwrap(), im.height, im.width)
            .unwrap();
        let [x, y, w, h] = a.bbox;
        assert_eq!(
            m.bbox().unwrap(),
            [x as f32, y as f32, (x + w) as f32, (y + h) as f32]
        );
        assert_eq!(m.count_nonzero() as f64, w * h);
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GT: &str = r#"{"images":[{"id":7,"file_name":"a.png","width":4,"height":3}],
"categories":[{"id":5,"name":"x"}],
"annotations":[ANN]}"#;

fn gt_with(ann: &str) -> String {
    GT.replace("ANN", ann)
}

#[test]
fn coco_bad_inputs_name_the_file_and_item() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "broken.json", "{\"images\": [");
    let e = CocoFile::read(&p).unwrap_err().to_string();
    assert!(e.contains("broken.json") && e.contains("line 1"), "{e}");

    let p = write(
        d.path(),
        "unknown_cat.json",
        &gt_with(r#"{"id":3,"image_id":7,"category_id":9,"bbox":[0,0,1,1]}"#),
    );
    let e = CocoFile::read(&p).unwrap_err().to_string();
    assert!(
        e.contains("unknown_cat.json")
            && e.contains("annotation id 3")
            && e.contains("unknown category id 9"),
        "{e}"
    );

    let p = write(
        d.path(),
        "neg.json",
        &gt_with(r#"{"id":4,"image_id":7,"category_id":5,"bbox":[0,0,-1,1]}"#),
    );
    let e = CocoFile::read(&p).unwrap_err().to_string();
    assert!(
        e.contains("neg.json") && e.contains("annotation id 4") && e.contains("negative size"),
        "{e}"
    );

    let p = write(
        d.path(),
        "unknown_img.json",
        &gt_with(r#"{"id":5,"image_id":8,"category_id":5,"bbox":[0,0,1,1]}"#),
    );
    let e = CocoFile::read(&p).unwrap_err().to_string();
    assert!(
        e.contains("annotation id 5") && e.contains("unknown image id 8"),
        "{e}"
    );

    // Missing image, then a truncated one, then one of the wrong size.
    let p = write(
        d.path(),
        "ok.json",
        &gt_with(r#"{"id":1,"image_id":7,"category_id":5,"bbox":[0,0,1,1]}"#),
    );
    let ds = CocoDataset::open(&p, d.path()).unwrap();
    let e = ds.get(0).unwrap_err().to_string();
    assert!(e.contains("a.png"), "{e}");
    let png = io::encode_png(&Image::new(4, 3, 3, 7)).unwrap();
    std::fs::write(d.path().join("a.png"), &png[..png.len() - 20]).unwrap();
    let e = ds.get(0).unwrap_err().to_string();
    assert!(e.contains("a.png"), "{e}");
    io::write_png(d.path().join("a.png"), &Image::new(5, 3, 3, 7)).unwrap();
    let e = ds.get(0).unwrap_err().to_string();
    assert!(
        e.contains("a.png") && e.contains("image id 7") && e.contains("5x3"),
        "{e}"
    );
    io::write_png(d.path().join("a.png"), &Image::new(4, 3, 3, 7)).unwrap();
    assert_eq!(ds.get(0).unwrap().boxes, vec![[0.0, 0.0, 1.0, 1.0]]);

    // A bad polygon is reported with its annotation when masks are decoded.
    let p = write(
        d.path(),
        "poly.json",
        &gt_with(
            r#"{"id":6,"image_id":7,"category_id":5,"bbox":[0,0,1,1],"segmentation":[[1,2,3]]}"#,
        ),
    );
    let ds = CocoDataset::open(&p, d.path()).unwrap().with_masks(true);
    let e = ds.get(0).unwrap_err().to_string();
    assert!(
        e.contains("poly.json") && e.contains("annotation id 6"),
        "{e}"
    );
}

#[test]
fn results_round_trip_and_bad_results() {
    let d = tempfile::tempdir().unwrap();
    let dets = vec![
        CocoDetection {
            image_id: 3,
            category_id: 18,
            bbox: [1.5, 2.0, 10.25, 4.0],
            score: 0.875,
            segmentation: None,
        },
        CocoDetection {
            image_id: 4,
            category_id: 1,
            bbox: [0.0, 0.0, 1.0, 1.0],
            score: 0.1,
            segmentation: None,
        },
    ];
    let p = d.path().join("sub/dt.json");
    coco::write_results(&p, &dets).unwrap();
    assert_eq!(coco::read_results(&p).unwrap(), dets);
    let bad = write(
        d.path(),
        "bad_dt.json",
        r#"[{"image_id":1,"category_id":1,"bbox":[0,0,-2,1],"score":0.5}]"#,
    );
    let e = coco::read_results(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad_dt.json") && e.contains("detection 0") && e.contains("negative size"),
        "{e}"
    );
    let bad = write(
        d.path(),
        "bad2.json",
        r#"[{"image_id":1,"category_id":1,"bbox":[0,0,2],"score":0.5}]"#,
    );
    let e = coco::read_results(&bad).unwrap_err().to_string();
    assert!(e.contains("bad2.json") && e.contains("line 1"), "{e}");
}

fn voc_tree(d: &Path, label_size: (usize, usize)) {
    for sub in [
        "Annotations",
        "JPEGImages",
        "SegmentationClass",
        "ImageSets/Main",
        "ImageSets/Segmentation",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    io::write_png(d.join("JPEGImages/img1.png"), &Image::new(6, 4, 3, 50)).unwrap();
    let ann = VocAnnotation {
        filename: "img1.png".into(),
        width: 6,
        height: 4,
        depth: 3,
        objects: vec![
            VocObject {
                name: "cat".into(),
                bndbox: [2.0, 1.0, 5.0, 3.0],
                difficult: false,
                truncated: true,
            },
            VocObject {
                name: "dog".into(),
                bndbox: [1.0, 1.0, 6.0, 4.0],
                difficult: true,
                truncated: false,
            },
        ],
    };
    std::fs::write(d.join("Annotations/img1.xml"), ann.to_xml()).unwrap();
    let mut l = Plane::new(label_size.1, label_size.0, 0);
    l.set(1, 1, 8);
    l.set(0, 0, 255);
    io::write_label_png_palette(d.join("SegmentationClass/img1.png"), &l).unwrap();
    std::fs::write(d.join("ImageSets/Main/train.txt"), "img1\n").unwrap();
    std::fs::write(d.join("ImageSets/Segmentation/train.txt"), "img1  1\n\n").unwrap();
}

#[test]
fn voc_detection_and_segmentation() {
    let d = tempfile::tempdir().unwrap();
    voc_tree(d.path(), (4, 6));
    let det = VocDataset::open(d.path(), "train", VocTask::Detection, None).unwrap();
    let s = det.get(0).unwrap();
    assert_eq!(s.boxes, vec![[1.0, 0.0, 5.0, 3.0], [0.0, 0.0, 6.0, 4.0]]);
    assert_eq!(s.classes, vec![7, 11]);
    assert_eq!(
        s.crowd,
        vec![false, true],
        "difficult objects are ignored like crowd"
    );
    let seg = VocDataset::open(d.path(), "train", VocTask::Segmentation, None).unwrap();
    let s = seg.get(0).unwrap();
    let l = s.label_map.unwrap();
    assert_eq!((l.get(1, 1), l.get(0, 0), l.get(2, 2)), (8, 255, 0));

    // Unknown class and a label map of the wrong size name the file and the item.
    let only_cats = VocDataset::open(
        d.path(),
        "train",
        VocTask::Detection,
        Some(vec!["cat".into()]),
    )
    .unwrap();
    let e = only_cats.get(0).unwrap_err().to_string();
    assert!(
        e.contains("img1.xml") && e.contains("object 1") && e.contains("dog"),
        "{e}"
    );
    let d2 = tempfile::tempdir().unwrap();
    voc_tree(d2.path(), (5, 6));
    let seg = VocDataset::open(d2.path(), "train", VocTask::Segmentation, None).unwrap();
    let e = seg.get(0).unwrap_err().to_string();
    assert!(
        e.contains("SegmentationClass") && e.contains("img1") && e.contains("6x5"),
        "{e}"
    );
    // Malformed XML.
    std::fs::write(
        d2.path().join("Annotations/img1.xml"),
        "<annotation><object>",
    )
    .unwrap();
    let det = VocDataset::open(d2.path(), "train", VocTask::Detection, None).unwrap();
    let e = det.get(0).unwrap_err().to_string();
    assert!(e.contains("img1.xml") && e.contains("XML"), "{e}");
}
