//! Image bytes as pupil decodes them: JPEG / PNG images and label-map PNGs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.img");
    let _ = pupil_data::io::decode_image(data, p);
    let _ = pupil_data::io::decode_label_png(data, p);
});
