//! A PASCAL VOC annotation XML as `VocDataset` reads it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pupil_data::voc::VocAnnotation::parse(text, Path::new("fuzz.xml"));
    }
});
