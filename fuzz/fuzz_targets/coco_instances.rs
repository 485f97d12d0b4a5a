//! COCO instances JSON as `CocoDataset` reads it: parse, validate, then every image's
//! boxes, classes and masks (polygons, RLE, boxes) without reading image files.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pupil_data::coco::{CocoDataset, CocoFile};
use pupil_data::{Image, Sample};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = CocoFile::from_slice(data, Path::new("fuzz.json")) else {
        return;
    };
    let ds = CocoDataset::new("fuzz.json".into(), Path::new("."), file).with_masks(true);
    for i in 0..ds.file.images.len().min(64) {
        let im = &ds.file.images[i];
        // Masks are full-size planes: stay within the fuzzer's memory limit.
        if im.width * im.height > 1 << 20 {
            continue;
        }
        let mut s = Sample::new(Image::new(1, 1, 3, 0));
        let _ = ds.targets(i, &mut s);
    }
});
