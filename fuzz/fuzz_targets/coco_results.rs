//! A COCO results file as `pupil eval detection` reads it, evaluated against a small GT.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pupil_data::coco::{self, eval, CocoFile};
use std::path::Path;
use std::sync::OnceLock;

const GT: &str = r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
  {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
 "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "area": 100},
  {"id": 2, "image_id": 2, "category_id": 3, "bbox": [5, 5, 30, 20], "area": 600, "iscrowd": 1},
  {"id": 0, "image_id": 2, "category_id": 1, "bbox": [0, 0, 64, 48], "area": 3072}]}"#;

fuzz_target!(|data: &[u8]| {
    static GT_FILE: OnceLock<CocoFile> = OnceLock::new();
    let gt = GT_FILE.get_or_init(|| CocoFile::from_slice(GT.as_bytes(), Path::new("gt")).unwrap());
    if let Ok(dets) = coco::parse_results(data, Path::new("fuzz.json")) {
        let _ = eval::evaluate(gt, &dets, &eval::EvalParams::default());
    }
});
