//! AutoAugment tables, the level-to-argument table, box-local ops and RandAugment.
mod common;

use common::{sample, MaskKind};
use pupil_augment::autoaugment::{
    self, apply_op, level_to_arg, policy, Arg, Hparams, OpKind, ALL_OPS,
};
use pupil_augment::box_local::{bbox_cutout, only_bboxes, BoxOp};
use pupil_augment::randaugment::DETECTION_OPS;
use pupil_augment::{Augment, AutoAugment, RandAugment};
use pupil_data::{Image, Rng, Sample};

fn names(sub: &[autoaugment::PolicyOp]) -> Vec<(&'static str, f32, f32)> {
    sub.iter().map(|o| (o.op.name(), o.prob, o.level)).collect()
}

#[test]
fn v0_is_the_papers_policy() {
    let v0 = policy("v0").unwrap();
    let want: Vec<Vec<(&str, f32, f32)>> = vec![
        vec![("TranslateX_BBox", 0.6, 4.0), ("Equalize", 0.8, 10.0)],
        vec![("TranslateY_Only_BBoxes", 0.2, 2.0), ("Cutout", 0.8, 8.0)],
        vec![("Sharpness", 0.0, 8.0), ("ShearX_BBox", 0.4, 0.0)],
        vec![
            ("ShearY_BBox", 1.0, 2.0),
            ("TranslateY_Only_BBoxes", 0.6, 6.0),
        ],
        vec![("Rotate_BBox", 0.6, 10.0), ("Color", 1.0, 6.0)],
    ];
    let got: Vec<_> = v0.iter().map(|s| names(s)).collect();
    assert_eq!(got, want);
}

#[test]
fn policy_sizes_and_spot_checks() {
    let v1 = policy("v1").unwrap();
    assert_eq!(v1.len(), 20);
    assert_eq!(v1[..5], policy("v0").unwrap()[..]);
    assert_eq!(
        names(&v1[19]),
        vec![("SolarizeAdd", 0.6, 8.0), ("Brightness", 0.8, 10.0)]
    );
    assert_eq!(
        names(&v1[9]),
        vec![("Rotate_BBox", 0.8, 10.0), ("Contrast", 0.0, 10.0)]
    );
    let v2 = policy("v2").unwrap();
    assert_eq!(v2.len(), 15);
    assert_eq!(
        names(&v2[10]),
        vec![
            ("Rotate_BBox", 0.6, 10.0),
            ("BBox_Cutout", 1.0, 4.0),
            ("Cutout", 0.2, 8.0)
        ]
    );
    assert_eq!(
        names(&v2[2]),
        vec![("TranslateY_BBox", 1.0, 8.0), ("AutoContrast", 0.8, 2.0)]
    );
    let v3 = policy("v3").unwrap();
    assert_eq!(v3.len(), 15);
    assert_eq!(
        names(&v3[0]),
        vec![("Posterize", 0.8, 2.0), ("TranslateX_BBox", 1.0, 8.0)]
    );
    assert_eq!(
        names(&v3[14]),
        vec![("SolarizeAdd", 0.8, 6.0), ("Equalize", 0.8, 8.0)]
    );
    assert!(policy("v4").is_none());
    assert_eq!(DETECTION_OPS.len(), 16);
    for op in ALL_OPS {
        assert_eq!(OpKind::from_name(op.name()), Some(op));
        assert_eq!(OpKind::from_name(&op.name().to_lowercase()), Some(op));
    }
}

fn arg(op: OpKind, level: f64) -> Arg {
    level_to_arg(op, level, &Hparams::AUTOAUGMENT, &mut Rng::new(0))
}

fn abs_arg(op: OpKind, level: f64, hp: &Hparams) -> f64 {
    let mut seen = std::collections::BTreeSet::new();
    let mut v = 0.0;
    for seed in 0..64 {
        v = match level_to_arg(op, level, hp, &mut Rng::new(seed)) {
            Arg::Degrees(d) => d,
            Arg::Shear(k) => k,
            Arg::Pixels(p) => p as f64,
            other => panic!("{other:?}"),
        };
        seen.insert(v > 0.0);
    }
    assert_eq!(seen.len(), 2, "{op:?} must take both signs");
    v.abs()
}

#[test]
fn levels_map_to_the_tf_arguments() {
    let aa = Hparams::AUTOAUGMENT;
    assert_eq!(abs_arg(OpKind::RotateBBox, 10.0, &aa), 30.0);
    assert!((abs_arg(OpKind::ShearXBBox, 2.0, &aa) - 0.06).abs() < 1e-12);
    assert_eq!(abs_arg(OpKind::TranslateXBBox, 4.0, &aa), 100.0);
    assert_eq!(abs_arg(OpKind::TranslateYOnlyBBoxes, 6.0, &aa), 72.0);
    assert_eq!(
        abs_arg(OpKind::TranslateYBBox, 8.0, &Hparams::RANDAUGMENT),
        80.0
    );
    assert_eq!(arg(OpKind::Cutout, 8.0), Arg::Pad(80));
    assert_eq!(
        level_to_arg(
            OpKind::Cutout,
            10.0,
            &Hparams::RANDAUGMENT,
            &mut Rng::new(0)
        ),
        Arg::Pad(40)
    );
    assert_eq!(arg(OpKind::CutoutOnlyBBoxes, 6.0), Arg::Pad(30));
    assert_eq!(arg(OpKind::BBoxCutout, 4.0), Arg::Fraction(0.4 * 0.75));
    assert_eq!(
        arg(OpKind::Color, 6.0),
        Arg::Factor((0.6f64 * 1.8 + 0.1) as f32)
    );
    assert_eq!(arg(OpKind::Sharpness, 0.0), Arg::Factor(0.1));
    assert_eq!(arg(OpKind::Solarize, 10.0), Arg::Threshold(256));
    assert_eq!(arg(OpKind::Solarize, 8.0), Arg::Threshold(204));
    assert_eq!(arg(OpKind::SolarizeAdd, 4.0), Arg::Add(44));
    assert_eq!(arg(OpKind::Posterize, 2.0), Arg::Bits(0));
    assert_eq!(arg(OpKind::Posterize, 10.0), Arg::Bits(4));
    assert_eq!(arg(OpKind::Equalize, 10.0), Arg::None);
}

fn pixels_outside_boxes_equal(a: &Sample, b: &Sample) -> bool {
    let (w, h) = (a.image.width, a.image.height);
    (0..h).all(|y| {
        (0..w).all(|x| {
            let inside = a.boxes.iter().any(|bb| {
                (x as f32) + 1.0 > bb[0]
                    && (x as f32) < bb[2]
                    && (y as f32) + 1.0 > bb[1]
                    && (y as f32) < bb[3]
            });
            inside || a.image.pixel(x, y) == b.image.pixel(x, y)
        })
    })
}

#[test]
fn box_only_ops_touch_only_box_pixels_and_keep_annotations() {
    let ops = [
        BoxOp::Rotate(20.0),
        BoxOp::ShearX(0.2),
        BoxOp::ShearY(-0.2),
        BoxOp::TranslateX(5),
        BoxOp::TranslateY(-4),
        BoxOp::Flip,
        BoxOp::Solarize(100),
        BoxOp::Equalize,
        BoxOp::Cutout(3),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        for seed in 0..8 {
            let mut s0 = sample(30, 24, 3, 3, MaskKind::Ragged, seed * 31 + i as u64, false);
            // Boxes large enough for every op to move some pixel.
            s0.boxes = vec![
                [2.0, 2.0, 14.0, 12.0],
                [10.0, 9.0, 28.0, 23.0],
                [18.5, 0.2, 29.5, 8.7],
            ];
            let mut s = s0.clone();
            only_bboxes(&mut s, op, 1.0, 128, &mut Rng::new(seed));
            assert!(
                pixels_outside_boxes_equal(&s0, &s),
                "{op:?} changed a pixel outside the boxes"
            );
            assert_eq!(
                (&s.boxes, &s.masks, &s.label_map, &s.classes),
                (&s0.boxes, &s0.masks, &s0.label_map, &s0.classes)
            );
            if !matches!(op, BoxOp::Equalize) {
                assert!(
                    s.image != s0.image,
                    "{op:?} with probability 1 changed nothing"
                );
            }
        }
    }
}

#[test]
fn flip_only_bboxes_mirrors_the_box_content() {
    let data: Vec<u8> = (0..8 * 4).map(|i| i as u8).collect();
    let mut s = Sample::new(Image::from_raw(8, 4, 1, data));
    s.boxes = vec![[1.0, 1.0, 4.0, 3.0]];
    s.classes = vec![0];
    s.crowd = vec![false];
    only_bboxes(&mut s, BoxOp::Flip, 1.0, 128, &mut Rng::new(0));
    assert_eq!(&s.image.data[8..16], &[8, 11, 10, 9, 12, 13, 14, 15]);
    assert_eq!(&s.image.data[16..24], &[16, 19, 18, 17, 20, 21, 22, 23]);
    assert_eq!(&s.image.data[0..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn box_only_probability_is_a_third_per_box() {
    // Flip_Only_BBoxes at policy probability 0.6: each box flips with probability 0.2.
    let mut flips = 0;
    let trials = 3000;
    for seed in 0..trials {
        let mut s = Sample::new(Image::from_raw(4, 1, 1, vec![1, 2, 3, 4]));
        s.boxes = vec![[0.0, 0.0, 2.0, 1.0], [2.0, 0.0, 4.0, 1.0]];
        s.classes = vec![0, 1];
        s.crowd = vec![false, false];
        apply_op(
            OpKind::FlipOnlyBBoxes,
            10.0,
            0.6,
            &Hparams::AUTOAUGMENT,
            &mut s,
            &mut Rng::new(seed),
        );
        flips += (s.image.data[0] == 2) as usize + (s.image.data[2] == 4) as usize;
    }
    let rate = flips as f64 / (2 * trials) as f64;
    assert!((rate - 0.2).abs() < 0.02, "{rate}");
}

#[test]
fn bbox_cutout_stays_in_one_box() {
    for seed in 0..50 {
        let mut s = Sample::new(Image::new(40, 30, 3, 0));
        s.boxes = vec![[2.0, 3.0, 12.0, 13.0], [20.0, 10.0, 36.0, 28.0]];
        s.classes = vec![0, 1];
        s.crowd = vec![false, false];
        bbox_cutout(&mut s, 0.75, 128, &mut Rng::new(seed));
        let grey: Vec<(usize, usize)> = (0..30)
            .flat_map(|y| (0..40).map(move |x| (x, y)))
            .filter(|&(x, y)| s.image.pixel(x, y)[0] == 128)
            .collect();
        assert!(!grey.is_empty());
        // The cutout is centred in a box and at most frac * side wide, so it reaches at most
        // frac/2 of a side past that box.
        let within = |b: [f32; 4]| {
            let (mx, my) = (0.375 * (b[2] - b[0]), 0.375 * (b[3] - b[1]));
            grey.iter().all(|&(x, y)| {
                x as f32 >= b[0] - mx
                    && (x as f32) < b[2] + mx
                    && y as f32 >= b[1] - my
                    && (y as f32) < b[3] + my
            })
        };
        assert!(within(s.boxes[0]) || within(s.boxes[1]), "seed {seed}");
        let (w, h) = (
            grey.iter().map(|g| g.0).max().unwrap() - grey.iter().map(|g| g.0).min().unwrap() + 1,
            grey.iter().map(|g| g.1).max().unwrap() - grey.iter().map(|g| g.1).min().unwrap() + 1,
        );
        assert!(
            w <= 2 * (0.375f64 * 16.0) as usize && h <= 2 * (0.375f64 * 18.0) as usize,
            "{w}x{h}"
        );
    }
}

#[test]
fn autoaugment_picks_sub_policies_uniformly() {
    // Sub-policies that each set a recognisable value.
    use autoaugment::PolicyOp;
    let aa = AutoAugment {
        sub_policies: vec![
            vec![PolicyOp {
                op: OpKind::Invert,
                prob: 1.0,
                level: 0.0,
            }],
            vec![PolicyOp {
                op: OpKind::Posterize,
                prob: 1.0,
                level: 0.0,
            }],
            vec![PolicyOp {
                op: OpKind::Solarize,
                prob: 0.0,
                level: 0.0,
            }],
        ],
        hparams: Hparams::AUTOAUGMENT,
    };
    let mut counts = [0usize; 3];
    for seed in 0..3000 {
        let mut s = Sample::new(Image::new(1, 1, 1, 100));
        aa.apply(&mut s, &mut Rng::new(seed));
        let k = match s.image.data[0] {
            155 => 0,
            0 => 1,
            100 => 2,
            v => panic!("{v}"),
        };
        counts[k] += 1;
    }
    assert!(
        counts.iter().all(|&c| (900..1100).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn every_policy_keeps_samples_consistent() {
    for v in ["v0", "v1", "v2", "v3"] {
        let aa = AutoAugment::new(v).unwrap();
        for seed in 0..40 {
            let mut s = sample(
                48,
                40,
                if seed % 2 == 0 { 3 } else { 1 },
                4,
                MaskKind::Ragged,
                seed,
                false,
            );
            let (w, h) = (s.image.width, s.image.height);
            aa.apply(&mut s, &mut Rng::new(seed));
            s.check().unwrap();
            assert_eq!((s.image.width, s.image.height, s.boxes.len()), (w, h, 4));
            common::boxes_inside(&s).unwrap();
            common::masks_inside_boxes(&s, 1.0).unwrap();
        }
    }
}

#[test]
fn randaugment_layers_identity_and_magnitude() {
    // Only TranslateX_BBox at M=10 with translate_const 100: each layer moves the box by
    // +-100 px or (identity branch) not at all.
    let ra = RandAugment {
        ops: vec![OpKind::TranslateXBBox],
        ..RandAugment::new(2, 10.0)
    };
    let mut shifts = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let mut s = Sample::new(Image::new(1000, 10, 1, 0));
        s.boxes = vec![[450.0, 0.0, 550.0, 10.0]];
        s.classes = vec![0];
        s.crowd = vec![false];
        ra.apply(&mut s, &mut Rng::new(seed));
        shifts.insert((s.boxes[0][0] - 450.0) as i64);
    }
    assert_eq!(
        shifts.into_iter().collect::<Vec<_>>(),
        vec![-200, -100, 0, 100, 200]
    );
    // No layers: nothing happens.
    let mut s = sample(20, 20, 3, 2, MaskKind::Ragged, 1, false);
    let s0 = s.clone();
    RandAugment::new(0, 10.0).apply(&mut s, &mut Rng::new(3));
    assert_eq!(s, s0);
    // The identity branch is one of len + 1: with a single op, about half the layers do nothing.
    let ra = RandAugment {
        ops: vec![OpKind::Invert],
        ..RandAugment::new(1, 10.0)
    };
    let inverted = (0..2000)
        .filter(|&seed| {
            let mut s = Sample::new(Image::new(1, 1, 1, 0));
            ra.apply(&mut s, &mut Rng::new(seed));
            s.image.data[0] == 255
        })
        .count();
    assert!((900..1100).contains(&inverted), "{inverted}");
}

#[test]
fn randaugment_default_is_the_detection_setup() {
    let ra = RandAugment::default();
    assert_eq!((ra.num_layers, ra.magnitude), (2, 10.0));
    assert_eq!(
        (ra.hparams.translate_const, ra.hparams.cutout_const),
        (100.0, 40.0)
    );
    assert_eq!(ra.ops, DETECTION_OPS.to_vec());
    for seed in 0..40 {
        let mut s = sample(40, 30, 3, 3, MaskKind::Ragged, seed, false);
        ra.apply(&mut s, &mut Rng::new(seed));
        s.check().unwrap();
        common::masks_inside_boxes(&s, 1.0).unwrap();
    }
}
