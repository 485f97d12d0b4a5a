//! Bad inputs to the readers: cut files, headers that declare huge sizes, values out of range.
//! Each is an error naming the file and the item, refused before a large allocation, never a
//! panic.
use pupil_data::coco::{self, CocoDataset, CocoFile};
use pupil_data::io;
use pupil_data::voc::{VocAnnotation, VocDataset, VocTask};
use pupil_data::{Image, Plane, Sample};
use std::path::Path;
use std::time::Instant;

/// A noisy RGB image: JPEG scans of it are long enough to cut.
fn noisy(w: usize, h: usize) -> Image {
    let mut r = pupil_testkit::SplitMix(7);
    let data = (0..w * h * 3).map(|_| r.next_u64() as u8).collect();
    Image::from_raw(w, h, 3, data)
}

fn jpeg(img: &Image) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(
            &img.data,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn err(r: pupil_data::Result<impl std::fmt::Debug>) -> String {
    r.expect_err("an error").to_string()
}

#[test]
fn a_cut_jpeg_is_an_error_naming_the_file() {
    let bytes = jpeg(&noisy(64, 48));
    let p = Path::new("cut.jpg");
    assert_eq!(io::decode_image(&bytes, p).unwrap().width, 64);
    for keep in [bytes.len() / 3, bytes.len() - 2, 200] {
        let e = err(io::decode_image(&bytes[..keep], p));
        assert!(
            e.contains("cut.jpg") && e.contains("truncated"),
            "{keep}: {e}"
        );
    }
    // bytes after the end-of-image marker are fine, as are FF D9 pairs inside an APP segment
    let mut tail = bytes.clone();
    tail.extend_from_slice(b"trailing camera data");
    io::decode_image(&tail, p).unwrap();
    let mut app = bytes[..2].to_vec();
    app.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD9]);
    app.extend_from_slice(&bytes[2..]);
    io::decode_image(&app, p).unwrap();
    app.truncate(app.len() / 2);
    assert!(err(io::decode_image(&app, p)).contains("truncated"));
}

/// A PNG of `w` x `h` whose IHDR is real and whose data is a few bytes.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = flate2::Crc::new();
        c.update(kind);
        c.update(data);
        v.extend_from_slice(kind);
        v.extend_from_slice(data);
        v.extend_from_slice(&c.sum().to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    v
}

#[test]
fn headers_declaring_20000x20000_are_refused_before_decoding() {
    let t = Instant::now();
    let p = Path::new("big.png");
    let png = png_header(20000, 20000);
    let e = err(io::decode_image(&png, p));
    assert!(e.contains("big.png") && e.contains("20000x20000"), "{e}");
    let e = err(io::decode_label_png(&png, p));
    assert!(e.contains("big.png") && e.contains("20000x20000"), "{e}");
    // the same in a JPEG's frame header
    let mut j = jpeg(&noisy(16, 16));
    let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    j[sof + 5..sof + 9].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]);
    let e = err(io::decode_image(&j, Path::new("big.jpg")));
    assert!(e.contains("big.jpg") && e.contains("20000x20000"), "{e}");
    // 13000 x 13000 is within PIL's limit: refused only later, for its missing data
    assert!(!err(io::decode_label_png(&png_header(13000, 13000), p)).contains("allowed"));
    assert!(t.elapsed().as_secs() < 5, "nothing was decoded");
}

#[test]
fn json_larger_than_the_limit_is_refused_before_it_is_read() {
    let d = tempfile::tempdir().unwrap();
    // "[0,0,0,..." with a billion elements: a sparse file, refused from its size alone
    let f = d.path().join("billion.json");
    std::fs::write(&f, b"[0,").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(2_000_000_001)
        .unwrap();
    let t = Instant::now();
    for e in [
        err(io::read_json::<Vec<u32>>(&f)),
        err(CocoFile::read(&f)),
        err(coco::read_results(&f)),
    ] {
        assert!(e.contains("billion.json") && e.contains("file size"), "{e}");
    }
    assert!(t.elapsed().as_secs() < 2, "the file was not read");
}

const GT: &str = r#"{"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6}],
 "categories": [{"id": 3, "name": "x"}],
 "annotations": [{"id": 4, "image_id": 1, "category_id": 3, "bbox": [1, 1, 3, 2], "area": 6, "iscrowd": 0}]}"#;

fn coco(text: &str) -> pupil_data::Result<CocoFile> {
    CocoFile::from_slice(text.as_bytes(), Path::new("gt.json"))
}

#[test]
fn coco_values_out_of_range_name_the_item() {
    coco(GT).unwrap();
    for (from, to, needle) in [
        (
            r#""width": 8, "height": 6"#,
            r#""width": 20000, "height": 20000"#,
            "image id 1",
        ),
        (r#""area": 6"#, r#""area": -6"#, "annotation id 4"),
        ("[1, 1, 3, 2]", "[1, 1, 3, -2]", "negative size"),
        ("[1, 1, 3, 2]", "[1, 1, 1e400, 2]", "gt.json"),
        (
            r#""image_id": 1,"#,
            r#""image_id": 9,"#,
            "unknown image id 9",
        ),
    ] {
        let e = err(coco(&GT.replace(from, to)));
        assert!(e.contains("gt.json") && e.contains(needle), "{to}: {e}");
    }
}

/// The masks of GT's one annotation with `segmentation` set to `seg` (JSON).
fn masks(seg: &str, bbox: &str) -> pupil_data::Result<Vec<Plane>> {
    let text = GT
        .replace(
            r#""iscrowd": 0"#,
            &format!(r#""iscrowd": 0, "segmentation": {seg}"#),
        )
        .replace("[1, 1, 3, 2]", bbox);
    let text = text.replace(r#", "segmentation": null"#, "");
    let ds = CocoDataset::new("gt.json".into(), Path::new("."), coco(&text)?).with_masks(true);
    let mut s = Sample::new(Image::new(8, 6, 3, 0));
    ds.targets(0, &mut s)?;
    Ok(s.masks.unwrap())
}

#[test]
fn masks_that_would_be_huge_are_refused() {
    assert_eq!(masks("null", "[1, 1, 3, 2]").unwrap()[0].count_nonzero(), 6);
    // a box beyond the image gives an empty mask, not a panic
    assert_eq!(
        masks("null", "[30, 1, 3, 2]").unwrap()[0].count_nonzero(),
        0
    );
    let t = Instant::now();
    let e = err(masks(r#"[[0, 0, 1e15, 0, 1e15, 1e15]]"#, "[1, 1, 3, 2]"));
    assert!(
        e.contains("annotation id 4") && e.contains("outline"),
        "{e}"
    );
    let e = err(masks(
        r#"{"size": [100000, 100000], "counts": [4000000000]}"#,
        "[1, 1, 3, 2]",
    ));
    assert!(e.contains("annotation id 4"), "{e}");
    let e = err(masks(
        r#"{"size": [6, 8], "counts": [40, 9]}"#,
        "[1, 1, 3, 2]",
    ));
    assert!(e.contains("48 pixels"), "{e}");
    assert!(t.elapsed().as_secs() < 2);
}

#[test]
fn unknown_categories_are_counted_and_ignored_as_pycocotools_does() {
    let gt = coco(GT).unwrap();
    let det = |c| coco::CocoDetection {
        image_id: 1,
        category_id: c,
        bbox: [1.0, 1.0, 3.0, 2.0],
        score: 0.9,
        segmentation: None,
    };
    let p = coco::eval::EvalParams::default();
    let one = coco::eval::evaluate(&gt, &[det(3)], &p).unwrap();
    let more = coco::eval::evaluate(&gt, &[det(3), det(77), det(78)], &p).unwrap();
    assert_eq!((one.unknown_category, more.unknown_category), (0, 2));
    assert_eq!(one.stats, more.stats);
}

#[test]
fn voc_sizes_and_label_values_out_of_range() {
    let xml = "<annotation><size><width>-5</width><height>3</height></size></annotation>";
    let e = err(VocAnnotation::parse(xml, Path::new("a.xml")));
    assert!(e.contains("a.xml") && e.contains("negative"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    io::write_png(r.join("JPEGImages/a.png"), &Image::new(4, 3, 3, 9)).unwrap();
    let mut l = Plane::new(4, 3, 0);
    l.set(2, 1, 255);
    io::write_label_png(r.join("SegmentationClass/a.png"), &l).unwrap();
    std::fs::create_dir_all(r.join("ImageSets/Segmentation")).unwrap();
    std::fs::write(r.join("ImageSets/Segmentation/train.txt"), "a\n").unwrap();
    let ds = VocDataset::open(r, "train", VocTask::Segmentation, None).unwrap();
    use pupil_data::Dataset;
    ds.get(0).unwrap();
    l.set(3, 2, 21);
    io::write_label_png(r.join("SegmentationClass/a.png"), &l).unwrap();
    let e = err(ds.get(0));
    assert!(
        e.contains("SegmentationClass/a.png") && e.contains("pixel (x=3, y=2)") && e.contains("21"),
        "{e}"
    );
}

#[test]
fn a_missing_file_names_the_os_error_once() {
    let e = io::read_json::<u32>("/no/such/file.json").unwrap_err();
    assert!(std::error::Error::source(&e).is_none());
    let msg = e.to_string();
    assert_eq!(msg.matches("os error 2").count(), 1, "{msg}");
    assert!(msg.contains("/no/such/file.json"), "{msg}");
}

#[test]
fn temporaries_of_killed_writers_are_removed_and_held_ones_kept() {
    let d = tempfile::tempdir().unwrap();
    for n in [
        ".a.json.123.tmp",
        ".a.json.tmp",
        ".b.json.9.tmp",
        "a.json",
        ".a.json.x1.tmp",
    ] {
        std::fs::write(d.path().join(n), "x").unwrap();
    }
    // a writer at work holds its temporary
    let held = std::fs::File::open(d.path().join(".b.json.9.tmp")).unwrap();
    held.lock().unwrap();
    let left = || {
        let mut v: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    io::remove_stale_temporaries(d.path()).unwrap();
    assert_eq!(
        left(),
        [".a.json.tmp", ".a.json.x1.tmp", ".b.json.9.tmp", "a.json"]
    );
    drop(held);
    io::remove_stale_temporaries(d.path()).unwrap();
    assert_eq!(left(), [".a.json.tmp", ".a.json.x1.tmp", "a.json"]);
    io::write_atomic(d.path().join("a.json"), b"y").unwrap();
    assert_eq!(std::fs::read(d.path().join("a.json")).unwrap(), b"y");
}
