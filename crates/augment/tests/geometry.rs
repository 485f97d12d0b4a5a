//! Properties of every geometric op over random images, boxes and masks.
mod common;

use common::{boxes_inside, masks_inside_boxes, masks_match_boxes, sample, MaskKind};
use proptest::prelude::*;
use pupil_augment::geometric::{self, crop_pad, hflip, resize, Affine, FILL};
use pupil_augment::{Augment, ScaleJitter, Size};
use pupil_data::{Rng, Sample, IGNORE};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3usize)]
}

fn checked(s: &Sample) -> Result<(), TestCaseError> {
    s.check().map_err(TestCaseError::fail)?;
    boxes_inside(s).map_err(TestCaseError::fail)
}

/// Each surviving box (known by its class, which is its original index) is `expect` of its
/// original box; dropped ones are exactly those `expect` leaves empty.
fn kept_as_expected(
    before: &Sample,
    after: &Sample,
    expect: impl Fn([f32; 4]) -> [f32; 4],
) -> Result<(), TestCaseError> {
    let mut k = 0;
    for (i, b) in before.boxes.iter().enumerate() {
        let e = expect(*b);
        let alive = e[2] > e[0] && e[3] > e[1];
        if alive {
            prop_assert!(k < after.boxes.len(), "box {i} {e:?} was dropped");
            prop_assert_eq!(after.classes[k], i as u32);
            prop_assert_eq!(after.crowd[k], before.crowd[i]);
            for c in 0..4 {
                prop_assert!(
                    (after.boxes[k][c] - e[c]).abs() < 1e-3,
                    "box {i}: {:?} vs {e:?}",
                    after.boxes[k]
                );
            }
            k += 1;
        }
    }
    prop_assert_eq!(k, after.boxes.len(), "boxes kept that should be dropped");
    Ok(())
}

/// Image made of the label map, moved with nearest sampling: wherever the label map is padding
/// the image is `fill`, elsewhere the two agree, and masks are empty on padding.
fn planes_move_with_image(s: &Sample, fill: u8) -> Result<(), TestCaseError> {
    let l = s.label_map.as_ref().unwrap();
    let c = s.image.channels;
    for i in 0..l.data.len() {
        let px = s.image.data[i * c];
        if l.data[i] == IGNORE {
            prop_assert_eq!(px, fill, "pixel {} is padding in the label map", i);
            for m in s.masks.as_ref().unwrap() {
                prop_assert_eq!(m.data[i], 0);
            }
        } else {
            prop_assert_eq!(px, l.data[i], "pixel {} differs from its label", i);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hflip_moves_masks_exactly_and_twice_is_identity(w in 1usize..40, h in 1usize..40, c in channels(), n in 0usize..5, seed: u64) {
        let s0 = sample(w, h, c, n, MaskKind::Ragged, seed, false);
        let mut s = s0.clone();
        hflip(&mut s);
        checked(&s)?;
        masks_match_boxes(&s, 0.0).map_err(TestCaseError::fail)?;
        let wf = w as f32;
        kept_as_expected(&s0, &s, |b| [wf - b[2], b[1], wf - b[0], b[3]])?;
        for (b, b0) in s.boxes.iter().zip(&s0.boxes) {
            let back = s.meta.to_original(*b);
            prop_assert!((0..4).all(|k| (back[k] - b0[k]).abs() < 1e-3));
        }
        hflip(&mut s);
        prop_assert_eq!(s, s0);
    }

    #[test]
    fn resize_keeps_masks_on_boxes(w in 2usize..40, h in 2usize..40, ow in 1usize..64, oh in 1usize..64, c in channels(), n in 0usize..5, seed: u64) {
        let s0 = sample(w, h, c, n, MaskKind::Solid, seed, false);
        let mut s = s0.clone();
        resize(&mut s, Size::new(ow, oh));
        checked(&s)?;
        prop_assert_eq!((s.image.width, s.image.height), (ow, oh));
        masks_match_boxes(&s, 1.0).map_err(TestCaseError::fail)?;
        let (sx, sy) = (ow as f32 / w as f32, oh as f32 / h as f32);
        kept_as_expected(&s0, &s, |b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy])?;
        prop_assert!(!s.label_map.as_ref().unwrap().data.contains(&IGNORE), "a resize pads nothing");
        let m = s.meta;
        for (b, b0) in s.boxes.iter().zip(&s0.boxes) {
            let back = m.to_original(*b);
            prop_assert!((0..4).all(|k| (back[k] - b0[k]).abs() < 1e-3), "{back:?} {b0:?}");
        }
    }

    #[test]
    fn crop_pad_clips_drops_and_pads(w in 2usize..40, h in 2usize..40, x0 in -20isize..40, y0 in -20isize..40, ow in 1usize..50, oh in 1usize..50, c in channels(), n in 0usize..6, seed: u64) {
        let s0 = sample(w, h, c, n, MaskKind::Solid, seed, false);
        let mut s = s0.clone();
        crop_pad(&mut s, x0, y0, Size::new(ow, oh), [FILL; 3]);
        checked(&s)?;
        masks_match_boxes(&s, 0.0).map_err(TestCaseError::fail)?;
        let (fx, fy, cw, ch) = (x0 as f32, y0 as f32, ow as f32, oh as f32);
        kept_as_expected(&s0, &s, |b| [
            (b[0] - fx).clamp(0.0, cw), (b[1] - fy).clamp(0.0, ch),
            (b[2] - fx).clamp(0.0, cw), (b[3] - fy).clamp(0.0, ch),
        ])?;
        let (l0, l) = (s0.label_map.as_ref().unwrap(), s.label_map.as_ref().unwrap());
        for y in 0..oh {
            for x in 0..ow {
                let (sx, sy) = (x as isize + x0, y as isize + y0);
                let inside = sx >= 0 && sy >= 0 && (sx as usize) < w && (sy as usize) < h;
                let want = if inside { l0.get(sx as usize, sy as usize) } else { IGNORE };
                prop_assert_eq!(l.get(x, y), want);
                // a crop copies pixels exactly; padding is the fill
                let want_px = if inside { s0.image.pixel(sx as usize, sy as usize)[0] } else { FILL };
                prop_assert_eq!(s.image.pixel(x, y)[0], want_px);
            }
        }
    }

    #[test]
    fn scale_jitter_keeps_masks_boxes_and_padding(w in 2usize..48, h in 2usize..48, dw in 4usize..40, dh in 4usize..40, lo in 0.3f64..1.2, span in 0.0f64..1.5, pad in prop_oneof![Just(1usize), Just(8), Just(16)], c in channels(), n in 0usize..6, seed: u64) {
        let s0 = sample(w, h, c, n, MaskKind::Solid, seed, false);
        let mut s = s0.clone();
        let j = ScaleJitter { size: Size::new(dw, dh), scale: (lo, lo + span), pad_multiple: pad, fill: [7, 8, 9] };
        let win = j.window(w, h, &mut Rng::new(seed ^ 1));
        j.apply(&mut s, &mut Rng::new(seed ^ 1));
        checked(&s)?;
        prop_assert_eq!((s.image.width, s.image.height), (dw.div_ceil(pad) * pad, dh.div_ceil(pad) * pad));
        masks_match_boxes(&s, 1.0).map_err(TestCaseError::fail)?;
        // The meta maps every original box onto its new box (before clipping).
        let m = s.meta;
        kept_as_expected(&s0, &s, |b| {
            let t = m.to_current(b);
            [t[0].clamp(0.0, dw as f32), t[1].clamp(0.0, dh as f32), t[2].clamp(0.0, dw as f32), t[3].clamp(0.0, dh as f32)]
        })?;
        for b in &s.boxes {
            prop_assert!(b[2] <= dw as f32 && b[3] <= dh as f32, "box {:?} beyond the desired size", b);
        }
        // Content: the first min(desired, scaled - offset) pixels; the rest is padding.
        let vw = dw.min(win.scaled.width - win.offset.0 as usize);
        let vh = dh.min(win.scaled.height - win.offset.1 as usize);
        let l = s.label_map.as_ref().unwrap();
        for y in 0..l.height {
            for x in 0..l.width {
                let content = x < vw && y < vh;
                prop_assert_eq!(l.get(x, y) != IGNORE, content, "label at ({}, {})", x, y);
                if !content {
                    // grey images get the luma of the fill colour
                    prop_assert_eq!(s.image.pixel(x, y)[0], if c == 3 { 7 } else { 8 });
                    for mk in s.masks.as_ref().unwrap() {
                        prop_assert_eq!(mk.get(x, y), 0);
                    }
                }
            }
        }
        prop_assert!(s.meta.scale.0 > 0.0);
    }

    #[test]
    fn translate_moves_masks_exactly(w in 2usize..40, h in 2usize..40, t in -50i64..50, vertical: bool, c in channels(), n in 0usize..5, seed: u64) {
        let s0 = sample(w, h, c, n, MaskKind::Solid, seed, true);
        let mut s = s0.clone();
        if vertical { geometric::translate_y(&mut s, t, FILL) } else { geometric::translate_x(&mut s, t, FILL) }
        checked(&s)?;
        planes_move_with_image(&s, FILL)?;
        prop_assert_eq!(s.meta, s0.meta);
        // Solid masks: the clipped moved box is exactly the moved mask's box when the mask
        // survives; a box pushed out of the image collapses to the 5% sliver rule.
        for (b, m) in s.boxes.iter().zip(s.masks.as_ref().unwrap()) {
            if let Some(mb) = m.bbox() {
                prop_assert!((0..4).all(|k| (mb[k] - b[k]).abs() <= 1.0), "{mb:?} vs {b:?}");
            }
        }
        // Ragged masks: inside the moved box.
        let mut s = sample(w, h, c, n, MaskKind::Ragged, seed, true);
        if vertical { geometric::translate_y(&mut s, t, FILL) } else { geometric::translate_x(&mut s, t, FILL) }
        masks_inside_boxes(&s, 0.0).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn rotate_keeps_masks_inside_boxes(w in 2usize..40, h in 2usize..40, deg in -180.0f64..180.0, c in channels(), n in 0usize..5, seed: u64) {
        let mut s = sample(w, h, c, n, MaskKind::Ragged, seed, true);
        geometric::rotate(&mut s, deg, FILL);
        checked(&s)?;
        masks_inside_boxes(&s, 1.0).map_err(TestCaseError::fail)?;
        planes_move_with_image(&s, FILL)?;
    }

    #[test]
    fn shear_keeps_masks_inside_boxes(w in 2usize..40, h in 2usize..40, k in -0.6f64..0.6, vertical: bool, c in channels(), n in 0usize..5, seed: u64) {
        let mut s = sample(w, h, c, n, MaskKind::Ragged, seed, true);
        if vertical { geometric::shear_y(&mut s, k, FILL) } else { geometric::shear_x(&mut s, k, FILL) }
        checked(&s)?;
        masks_inside_boxes(&s, 1.0).map_err(TestCaseError::fail)?;
        planes_move_with_image(&s, FILL)?;
    }
}

#[test]
fn rotation_by_90_degrees_turns_a_box() {
    // 20x10 image, box in the top-left quarter; +90 degrees (counter-clockwise on screen)
    // about (10, 5) sends (x, y) to (10 + (y - 5), 5 - (x - 10)).
    let mut s = sample(20, 10, 1, 0, MaskKind::Solid, 1, true);
    s.boxes = vec![[2.0, 1.0, 6.0, 3.0]];
    s.classes = vec![0];
    s.crowd = vec![false];
    s.masks = None;
    geometric::rotate(&mut s, 90.0, FILL);
    let b = s.boxes[0];
    let want = [6.0, 9.0, 8.0, 10.0]; // x: 10 + (1..3) - 5, y: 5 - (2..6) + 10 clipped to 10
    for k in 0..4 {
        assert!((b[k] - want[k]).abs() < 1e-4, "{b:?}");
    }
}

#[test]
fn shear_x_matches_tf_direction() {
    // Output (x, y) reads input (x + k y, y): with k = 0.5 a pixel at (10, 4) moves to (8, 4).
    let mut s = sample(20, 8, 1, 0, MaskKind::Solid, 2, true);
    s.image.data.fill(0);
    s.image.data[4 * 20 + 10] = 200;
    s.label_map = None;
    geometric::shear_x(&mut s, 0.5, FILL);
    // centre (x + 0.5, 4.5) reads x + 2.75, which is in pixel 10 only for x = 8
    let hits: Vec<usize> = (0..20)
        .filter(|&x| s.image.data[4 * 20 + x] == 200)
        .collect();
    assert_eq!(hits, vec![8]);
    let b = Affine::shear_x(0.5).map_box([10.0, 4.0, 11.0, 5.0]);
    // forward corners: x - 0.5 y -> [7.5, 9], which holds output pixel 8
    assert_eq!(b, [7.5, 4.0, 9.0, 5.0]);
}

#[test]
fn degenerate_boxes_widen_like_tf() {
    // A box pushed off the right edge collapses onto x = W and gets min = 0.95 W.
    let mut s = sample(40, 20, 3, 0, MaskKind::Solid, 3, false);
    s.boxes = vec![[30.0, 5.0, 35.0, 10.0]];
    s.classes = vec![1];
    s.crowd = vec![false];
    s.masks = None;
    geometric::translate_x(&mut s, -20, FILL);
    assert_eq!(s.boxes[0], [38.0, 5.0, 40.0, 10.0]);
    let mut b = [0.0, 3.0, 0.0, 4.0];
    geometric::widen_degenerate(&mut b, 40, 20);
    assert_eq!(b, [0.0, 3.0, 2.0, 4.0]);
}

#[test]
fn large_scale_jitter_follows_the_tf_recipe() {
    // 100x50 image to desired 64x64: r in [0.5, 2], S = round(r * 64), scale = min(S/50, S/100).
    let j = ScaleJitter::large(Size::square(64));
    let mut rng = Rng::new(5);
    let (mut lo, mut hi) = (f64::MAX, 0.0f64);
    for _ in 0..400 {
        let mut probe = rng.clone();
        let r = probe.uniform(0.5, 2.0);
        let s = (r * 64.0).round();
        let scale = (s / 50.0).min(s / 100.0);
        let (sw, sh) = (
            (100.0 * scale).round() as usize,
            (50.0 * scale).round() as usize,
        );
        let max_y = sh.saturating_sub(64) as f64;
        let max_x = sw.saturating_sub(64) as f64;
        let oy = (max_y * probe.f64()) as isize;
        let ox = (max_x * probe.f64()) as isize;
        let win = j.window(100, 50, &mut rng);
        assert_eq!(win.scaled, Size::new(sw, sh));
        assert_eq!(win.offset, (ox, oy));
        assert_eq!(win.out, Size::square(128));
        assert_eq!(win.content, Size::square(64));
        lo = lo.min(r);
        hi = hi.max(r);
    }
    assert!(lo < 0.55 && hi > 1.95, "{lo} {hi}");
    // No jitter: fit inside the desired size, no offset.
    let plain = ScaleJitter {
        scale: (1.0, 1.0),
        ..ScaleJitter::large(Size::new(64, 32))
    };
    let win = plain.window(100, 50, &mut Rng::new(0));
    assert_eq!(win.scaled, Size::new(64, 32));
    assert_eq!(win.offset, (0, 0));
}

#[test]
fn resize_is_bilinear_with_half_pixel_centres() {
    // 2x1 gray [0, 200] upscaled to 4x1: centres map to -0.25, 0.25, 0.75, 1.25 -> clamp.
    let mut s = Sample::new(pupil_data::Image::from_raw(2, 1, 1, vec![0, 200]));
    resize(&mut s, Size::new(4, 1));
    assert_eq!(s.image.data, vec![0, 50, 150, 200]);
    // Downscale 4 -> 2 averages neighbours.
    let mut s = Sample::new(pupil_data::Image::from_raw(4, 1, 1, vec![0, 100, 200, 40]));
    resize(&mut s, Size::new(2, 1));
    assert_eq!(s.image.data, vec![50, 120]);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fused_flip_jitter_equals_the_two_steps(w in 2usize..48, h in 2usize..48, d in 4usize..40, lo in 0.3f64..1.2, span in 0.0f64..1.5, flip_prob in prop_oneof![Just(0.0f64), Just(0.5), Just(1.0)], c in channels(), n in 0usize..5, seed: u64) {
        use pupil_augment::{FlipJitter, HFlip};
        let s0 = sample(w, h, c, n, MaskKind::Ragged, seed, false);
        let j = ScaleJitter { size: Size::square(d), scale: (lo, lo + span), pad_multiple: 8, fill: [1, 2, 3] };
        let mut a = s0.clone();
        FlipJitter { flip_prob, jitter: j }.apply(&mut a, &mut Rng::new(seed));
        let mut b = s0.clone();
        let mut r = Rng::new(seed);
        HFlip { prob: flip_prob }.apply(&mut b, &mut r);
        j.apply(&mut b, &mut r);
        prop_assert_eq!(a, b);
    }
}
