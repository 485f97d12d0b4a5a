//! Each colour op pinned on small hand-made images (values worked out from PIL's formulas).
use pupil_augment::photometric::*;
use pupil_data::{Image, Rng};

fn gray(w: usize, h: usize, v: &[u8]) -> Image {
    Image::from_raw(w, h, 1, v.to_vec())
}

#[test]
fn equalize_spreads_a_two_level_image() {
    // 1024 pixels, half at 10 and half at 200: step = (1024 - 512) / 256 = 2,
    // lut = 0 up to level 10, then (1 + 512) / 2 = 256 -> clipped to 255.
    let mut v = vec![10u8; 512];
    v.extend(vec![200u8; 512]);
    let mut img = gray(32, 32, &v);
    equalize(&mut img);
    assert!(img.data[..512].iter().all(|&p| p == 0));
    assert!(img.data[512..].iter().all(|&p| p == 255));
}

#[test]
fn equalize_leaves_small_or_flat_channels() {
    // Under 256 pixels below the top level PIL's step is 0: no change.
    let mut img = gray(4, 2, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let before = img.clone();
    equalize(&mut img);
    assert_eq!(img, before);
    // RGB works per channel: red two-level, green flat.
    let mut data = Vec::new();
    for i in 0..1024 {
        data.extend_from_slice(&[if i < 512 { 10 } else { 200 }, 77, 3]);
    }
    let mut img = Image::from_raw(32, 32, 3, data);
    equalize(&mut img);
    assert_eq!(img.pixel(0, 0), &[0, 77, 3]);
    assert_eq!(img.pixel(31, 31), &[255, 77, 3]);
}

#[test]
fn autocontrast_stretches_each_channel() {
    // [50, 150] -> [0, 255], scale 2.55, truncating: 100 -> 127.5 -> 127.
    let mut img = gray(3, 1, &[50, 100, 150]);
    autocontrast(&mut img);
    assert_eq!(img.data, vec![0, 127, 255]);
    // A flat channel is left alone; the others stretch independently.
    let mut img = Image::from_raw(2, 1, 3, vec![10, 9, 0, 20, 9, 128]);
    autocontrast(&mut img);
    assert_eq!(img.data, vec![0, 9, 0, 255, 9, 255]);
}

#[test]
fn posterize_keeps_top_bits() {
    let v = 0b1011_0111u8; // 183
    for (bits, want) in [
        (0, 0u8),
        (1, 128),
        (2, 128),
        (4, 0b1011_0000),
        (7, 0b1011_0110),
        (8, v),
    ] {
        let mut img = gray(1, 1, &[v]);
        posterize(&mut img, bits);
        assert_eq!(img.data[0], want, "bits {bits}");
    }
}

#[test]
fn solarize_inverts_at_and_above_threshold() {
    let mut img = gray(5, 1, &[0, 127, 128, 200, 255]);
    solarize(&mut img, 128);
    assert_eq!(img.data, vec![0, 127, 127, 55, 0]);
    // Level 10 maps to threshold 256: nothing changes.
    let mut img = gray(2, 1, &[0, 255]);
    solarize(&mut img, 256);
    assert_eq!(img.data, vec![0, 255]);
    // Threshold 0 inverts everything.
    solarize(&mut img, 0);
    assert_eq!(img.data, vec![255, 0]);
}

#[test]
fn solarize_add_adds_below_128_with_clipping() {
    let mut img = gray(5, 1, &[0, 100, 127, 128, 250]);
    solarize_add(&mut img, 110, 128);
    assert_eq!(img.data, vec![110, 210, 237, 128, 250]);
    let mut img = gray(2, 1, &[100, 127]);
    solarize_add(&mut img, 200, 128);
    assert_eq!(img.data, vec![255, 255]);
}

#[test]
fn invert_is_255_minus() {
    let mut img = Image::from_raw(1, 1, 3, vec![0, 100, 255]);
    invert(&mut img);
    assert_eq!(img.data, vec![255, 155, 0]);
}

#[test]
fn pil_blend_truncates_and_clips() {
    assert_eq!(blend_value(10, 200, 1.0), 200);
    assert_eq!(blend_value(10, 200, 0.0), 10);
    // 76 + 0.5 * 179 = 165.5 -> 165 (truncated, not rounded)
    assert_eq!(blend_value(76, 255, 0.5), 165);
    assert_eq!(blend_value(76, 0, 0.5), 38);
    assert_eq!(blend_value(100, 200, 1.9), 255);
    assert_eq!(blend_value(100, 20, 1.9), 0);
    // 100 + 1.3 * 50 = 165
    assert_eq!(blend_value(100, 150, 1.3), 165);
}

#[test]
fn color_blends_with_grey() {
    // Red's PIL grey is 76.
    let mut img = Image::from_raw(1, 1, 3, vec![255, 0, 0]);
    color(&mut img, 0.0);
    assert_eq!(img.data, vec![76, 76, 76]);
    let mut img = Image::from_raw(1, 1, 3, vec![255, 0, 0]);
    color(&mut img, 0.5);
    assert_eq!(img.data, vec![165, 38, 38]);
    let mut img = Image::from_raw(1, 1, 3, vec![255, 0, 0]);
    color(&mut img, 1.9);
    assert_eq!(img.data, vec![255, 0, 0]);
    // Grey images are their own degenerate.
    let mut g = gray(2, 1, &[3, 250]);
    color(&mut g, 0.0);
    assert_eq!(g.data, vec![3, 250]);
}

#[test]
fn contrast_blends_with_rounded_mean_grey() {
    // mean 127.5 -> 128; 128 + 0.5 (0 - 128) = 64, 128 + 0.5 (255 - 128) = 191.5 -> 191.
    let mut img = gray(2, 1, &[0, 255]);
    contrast(&mut img, 0.5);
    assert_eq!(img.data, vec![64, 191]);
    let mut img = gray(2, 1, &[0, 255]);
    contrast(&mut img, 2.0);
    assert_eq!(img.data, vec![0, 255]);
    let mut img = gray(2, 1, &[0, 255]);
    contrast(&mut img, 0.0);
    assert_eq!(img.data, vec![128, 128]);
    // RGB: the mean is taken on the PIL grey image (pure red -> 76, pure blue -> 29; mean 52.5 -> 53).
    let mut img = Image::from_raw(2, 1, 3, vec![255, 0, 0, 0, 0, 255]);
    contrast(&mut img, 0.0);
    assert_eq!(img.data, vec![53; 6]);
}

#[test]
fn brightness_scales_towards_black() {
    let mut img = gray(3, 1, &[100, 200, 101]);
    brightness(&mut img, 1.5);
    assert_eq!(img.data, vec![150, 255, 151]);
    let mut img = gray(1, 1, &[101]);
    brightness(&mut img, 0.55);
    assert_eq!(img.data, vec![55]); // 55.55 truncated
}

#[test]
fn sharpness_smooths_interior_and_keeps_border() {
    #[rustfmt::skip]
    let v = [
        10, 20, 30, 40,
        50, 255, 0, 60,
        70, 80, 90, 100,
        110, 120, 130, 140,
    ];
    let img = gray(4, 4, &v);
    let sm = smooth(&img);
    // (1,1): neighbours 10+20+30+50+0+70+80+90 = 350, centre 5 * 255 = 1275 -> 1625 / 13 = 125
    assert_eq!(sm.get_px(1, 1), 125);
    // (2,1): 20+30+40+255+60+80+90+100 = 675, centre 0 -> 675 / 13 = 51.9 -> 52 (rounded)
    assert_eq!(sm.get_px(2, 1), 52);
    for (x, y) in [(0, 0), (3, 0), (0, 2), (3, 3), (1, 3), (3, 1)] {
        assert_eq!(
            sm.get_px(x, y),
            img.get_px(x, y),
            "border ({x}, {y}) must not change"
        );
    }
    let mut s0 = img.clone();
    sharpness(&mut s0, 0.0);
    assert_eq!(s0, sm);
    let mut s2 = img.clone();
    sharpness(&mut s2, 2.0);
    // 125 + 2 (255 - 125) = 385 -> 255; 52 + 2 (0 - 52) = -52 -> 0
    assert_eq!((s2.get_px(1, 1), s2.get_px(2, 1)), (255, 0));
    assert_eq!(s2.get_px(0, 0), 10);
    // Tiny images are all border.
    let mut t = gray(2, 2, &[0, 255, 255, 0]);
    sharpness(&mut t, 0.0);
    assert_eq!(t.data, vec![0, 255, 255, 0]);
}

#[test]
fn sharpness_works_per_channel() {
    let mut data = vec![0u8; 27];
    data[4 * 3 + 1] = 130; // green centre of a 3x3 RGB image
    let mut img = Image::from_raw(3, 3, 3, data);
    sharpness(&mut img, 0.0);
    assert_eq!(img.pixel(1, 1), &[0, 50, 0]); // 5 * 130 / 13
}

#[test]
fn cutout_fills_a_clipped_square() {
    let mut img = Image::new(10, 8, 3, 0);
    cutout_at(&mut img, 1, 6, 3, 3, 128);
    // columns 0..4, rows 3..8
    let filled: usize = img.data.chunks(3).filter(|p| p == &[128, 128, 128]).count();
    assert_eq!(filled, 4 * 5);
    assert_eq!(img.pixel(3, 3), &[128, 128, 128]);
    assert_eq!(img.pixel(4, 3), &[0, 0, 0]);
    assert_eq!(img.pixel(3, 2), &[0, 0, 0]);
    // Random centre: a 2 pad square somewhere, grey and rgb alike.
    let mut img = Image::new(20, 20, 1, 0);
    cutout(&mut img, 2, 128, &mut Rng::new(1));
    let n = img.data.iter().filter(|&&v| v == 128).count();
    assert!((1..=16).contains(&n), "{n}");
}

trait Px {
    fn get_px(&self, x: usize, y: usize) -> u8;
}
impl Px for Image {
    fn get_px(&self, x: usize, y: usize) -> u8 {
        self.pixel(x, y)[0]
    }
}
