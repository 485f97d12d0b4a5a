//! AutoAugment for detection (Zoph et al. 2019, TF `autoaugment_utils.py`): the op set, the
//! level-to-argument table, and policies v0-v3 as data. One sub-policy is chosen uniformly
//! per image; its ops run in order, each with its own probability.
use crate::box_local::{self, BoxOp};
use crate::geometric::{self, FILL};
use crate::photometric as ph;
use crate::Augment;
use pupil_data::{Rng, Sample};

/// Levels run 0..=MAX_LEVEL; arguments scale linearly with `level / MAX_LEVEL`.
pub const MAX_LEVEL: f64 = 10.0;

/// Every AutoAugment / RandAugment detection op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    AutoContrast,
    Equalize,
    Invert,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    Cutout,
    BBoxCutout,
    RotateBBox,
    ShearXBBox,
    ShearYBBox,
    TranslateXBBox,
    TranslateYBBox,
    RotateOnlyBBoxes,
    ShearXOnlyBBoxes,
    ShearYOnlyBBoxes,
    TranslateXOnlyBBoxes,
    TranslateYOnlyBBoxes,
    FlipOnlyBBoxes,
    SolarizeOnlyBBoxes,
    EqualizeOnlyBBoxes,
    CutoutOnlyBBoxes,
}

use OpKind::*;

pub const ALL_OPS: [OpKind; 26] = [
    AutoContrast,
    Equalize,
    Invert,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    Cutout,
    BBoxCutout,
    RotateBBox,
    ShearXBBox,
    ShearYBBox,
    TranslateXBBox,
    TranslateYBBox,
    RotateOnlyBBoxes,
    ShearXOnlyBBoxes,
    ShearYOnlyBBoxes,
    TranslateXOnlyBBoxes,
    TranslateYOnlyBBoxes,
    FlipOnlyBBoxes,
    SolarizeOnlyBBoxes,
    EqualizeOnlyBBoxes,
    CutoutOnlyBBoxes,
];

impl OpKind {
    /// The TF name (`Rotate_BBox`, `TranslateY_Only_BBoxes`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AutoContrast => "AutoContrast",
            Equalize => "Equalize",
            Invert => "Invert",
            Posterize => "Posterize",
            Solarize => "Solarize",
            SolarizeAdd => "SolarizeAdd",
            Color => "Color",
            Contrast => "Contrast",
            Brightness => "Brightness",
            Sharpness => "Sharpness",
            Cutout => "Cutout",
            BBoxCutout => "BBox_Cutout",
            RotateBBox => "Rotate_BBox",
            ShearXBBox => "ShearX_BBox",
            ShearYBBox => "ShearY_BBox",
            TranslateXBBox => "TranslateX_BBox",
            TranslateYBBox => "TranslateY_BBox",
            RotateOnlyBBoxes => "Rotate_Only_BBoxes",
            ShearXOnlyBBoxes => "ShearX_Only_BBoxes",
            ShearYOnlyBBoxes => "ShearY_Only_BBoxes",
            TranslateXOnlyBBoxes => "TranslateX_Only_BBoxes",
            TranslateYOnlyBBoxes => "TranslateY_Only_BBoxes",
            FlipOnlyBBoxes => "Flip_Only_BBoxes",
            SolarizeOnlyBBoxes => "Solarize_Only_BBoxes",
            EqualizeOnlyBBoxes => "Equalize_Only_BBoxes",
            CutoutOnlyBBoxes => "Cutout_Only_BBoxes",
        }
    }

    /// Looks an op up by its TF name, ignoring case.
    pub fn from_name(name: &str) -> Option<OpKind> {
        ALL_OPS
            .into_iter()
            .find(|op| op.name().eq_ignore_ascii_case(name))
    }

    /// The `*_Only_BBoxes` ops take the policy probability per box (divided by 3) instead of
    /// per image.
    pub fn is_box_only(self) -> bool {
        matches!(
            self,
            RotateOnlyBBoxes
                | ShearXOnlyBBoxes
                | ShearYOnlyBBoxes
                | TranslateXOnlyBBoxes
                | TranslateYOnlyBBoxes
                | FlipOnlyBBoxes
                | SolarizeOnlyBBoxes
                | EqualizeOnlyBBoxes
                | CutoutOnlyBBoxes
        )
    }
}

/// The constants that turn a level into an argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hparams {
    pub cutout_const: f64,
    pub translate_const: f64,
    pub cutout_bbox_const: f64,
    pub translate_bbox_const: f64,
    pub cutout_max_pad_fraction: f64,
    /// Grey for uncovered and cut-out pixels.
    pub fill: u8,
}

impl Hparams {
    /// The pixel constants (cutout and translate sizes) multiplied by `k`.
    pub fn scaled(self, k: f64) -> Hparams {
        Hparams {
            cutout_const: self.cutout_const * k,
            translate_const: self.translate_const * k,
            cutout_bbox_const: self.cutout_bbox_const * k,
            translate_bbox_const: self.translate_bbox_const * k,
            ..self
        }
    }

    /// TF `autoaugment_utils` defaults.
    pub const AUTOAUGMENT: Hparams = Hparams {
        cutout_const: 100.0,
        translate_const: 250.0,
        cutout_bbox_const: 50.0,
        translate_bbox_const: 120.0,
        cutout_max_pad_fraction: 0.75,
        fill: FILL,
    };
    /// tf-models `RandAugment.build_for_detection` defaults.
    pub const RANDAUGMENT: Hparams = Hparams {
        cutout_const: 40.0,
        translate_const: 100.0,
        ..Hparams::AUTOAUGMENT
    };
}

impl Default for Hparams {
    fn default() -> Self {
        Hparams::AUTOAUGMENT
    }
}

/// The argument an op receives at a level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    None,
    /// Enhance factor `L/10 · 1.8 + 0.1`.
    Factor(f32),
    Degrees(f64),
    Shear(f64),
    Pixels(i64),
    /// Cutout half-size.
    Pad(usize),
    Threshold(u32),
    Add(i32),
    Bits(u32),
    /// BBox_Cutout pad fraction.
    Fraction(f64),
}

fn signed(v: f64, rng: &mut Rng) -> f64 {
    if rng.bernoulli(0.5) {
        -v
    } else {
        v
    }
}

/// The TF level-to-argument table; rotations, shears and translations get a random sign.
pub fn level_to_arg(op: OpKind, level: f64, hp: &Hparams, rng: &mut Rng) -> Arg {
    let l = level / MAX_LEVEL;
    match op {
        AutoContrast | Equalize | Invert | FlipOnlyBBoxes | EqualizeOnlyBBoxes => Arg::None,
        Posterize => Arg::Bits((l * 4.0) as u32),
        Solarize | SolarizeOnlyBBoxes => Arg::Threshold((l * 256.0) as u32),
        SolarizeAdd => Arg::Add((l * 110.0) as i32),
        Color | Contrast | Brightness | Sharpness => Arg::Factor((l * 1.8 + 0.1) as f32),
        Cutout => Arg::Pad((l * hp.cutout_const) as usize),
        CutoutOnlyBBoxes => Arg::Pad((l * hp.cutout_bbox_const) as usize),
        BBoxCutout => Arg::Fraction(l * hp.cutout_max_pad_fraction),
        RotateBBox | RotateOnlyBBoxes => Arg::Degrees(signed(l * 30.0, rng)),
        ShearXBBox | ShearYBBox | ShearXOnlyBBoxes | ShearYOnlyBBoxes => {
            Arg::Shear(signed(l * 0.3, rng))
        }
        TranslateXBBox | TranslateYBBox => Arg::Pixels(signed(l * hp.translate_const, rng) as i64),
        TranslateXOnlyBBoxes | TranslateYOnlyBBoxes => {
            Arg::Pixels(signed(l * hp.translate_bbox_const, rng) as i64)
        }
    }
}

/// Runs one policy op: a per-image op with probability `prob`, or a box-only op on each box
/// with probability `prob / 3`.
pub fn apply_op(op: OpKind, level: f64, prob: f64, hp: &Hparams, s: &mut Sample, rng: &mut Rng) {
    if op.is_box_only() {
        let arg = level_to_arg(op, level, hp, rng);
        let bop = match (op, arg) {
            (RotateOnlyBBoxes, Arg::Degrees(d)) => BoxOp::Rotate(d),
            (ShearXOnlyBBoxes, Arg::Shear(k)) => BoxOp::ShearX(k),
            (ShearYOnlyBBoxes, Arg::Shear(k)) => BoxOp::ShearY(k),
            (TranslateXOnlyBBoxes, Arg::Pixels(p)) => BoxOp::TranslateX(p),
            (TranslateYOnlyBBoxes, Arg::Pixels(p)) => BoxOp::TranslateY(p),
            (FlipOnlyBBoxes, _) => BoxOp::Flip,
            (SolarizeOnlyBBoxes, Arg::Threshold(t)) => BoxOp::Solarize(t),
            (EqualizeOnlyBBoxes, _) => BoxOp::Equalize,
            (CutoutOnlyBBoxes, Arg::Pad(p)) => BoxOp::Cutout(p),
            _ => unreachable!("level_to_arg gives {op:?} a {arg:?}"),
        };
        box_local::only_bboxes(s, bop, prob / 3.0, hp.fill, rng);
        return;
    }
    if !rng.bernoulli(prob) {
        return;
    }
    let arg = level_to_arg(op, level, hp, rng);
    let fill = hp.fill;
    let img = &mut s.image;
    match (op, arg) {
        (AutoContrast, _) => ph::autocontrast(img),
        (Equalize, _) => ph::equalize(img),
        (Invert, _) => ph::invert(img),
        (Posterize, Arg::Bits(b)) => ph::posterize(img, b),
        (Solarize, Arg::Threshold(t)) => ph::solarize(img, t),
        (SolarizeAdd, Arg::Add(a)) => ph::solarize_add(img, a, 128),
        (Color, Arg::Factor(f)) => ph::color(img, f),
        (Contrast, Arg::Factor(f)) => ph::contrast(img, f),
        (Brightness, Arg::Factor(f)) => ph::brightness(img, f),
        (Sharpness, Arg::Factor(f)) => ph::sharpness(img, f),
        (Cutout, Arg::Pad(p)) => ph::cutout(img, p, fill, rng),
        (BBoxCutout, Arg::Fraction(f)) => box_local::bbox_cutout(s, f, fill, rng),
        (RotateBBox, Arg::Degrees(d)) => geometric::rotate(s, d, fill),
        (ShearXBBox, Arg::Shear(k)) => geometric::shear_x(s, k, fill),
        (ShearYBBox, Arg::Shear(k)) => geometric::shear_y(s, k, fill),
        (TranslateXBBox, Arg::Pixels(p)) => geometric::translate_x(s, p, fill),
        (TranslateYBBox, Arg::Pixels(p)) => geometric::translate_y(s, p, fill),
        _ => unreachable!("level_to_arg gives {op:?} a {arg:?}"),
    }
}

/// One entry of a sub-policy: (op, probability, level).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyOp {
    pub op: OpKind,
    pub prob: f32,
    pub level: f32,
}

const fn p(op: OpKind, prob: f32, level: f32) -> PolicyOp {
    PolicyOp { op, prob, level }
}

/// A single op used as a pipeline step, with the AutoAugment constants.
impl Augment for PolicyOp {
    fn apply(&self, s: &mut Sample, rng: &mut Rng) {
        apply_op(
            self.op,
            self.level as f64,
            self.prob as f64,
            &Hparams::AUTOAUGMENT,
            s,
            rng,
        );
    }
}

/// Policy v0, "the policy used for all of the results in the paper".
pub const V0: [&[PolicyOp]; 5] = [
    &[p(TranslateXBBox, 0.6, 4.), p(Equalize, 0.8, 10.)],
    &[p(TranslateYOnlyBBoxes, 0.2, 2.), p(Cutout, 0.8, 8.)],
    &[p(Sharpness, 0.0, 8.), p(ShearXBBox, 0.4, 0.)],
    &[p(ShearYBBox, 1.0, 2.), p(TranslateYOnlyBBoxes, 0.6, 6.)],
    &[p(RotateBBox, 0.6, 10.), p(Color, 1.0, 6.)],
];

/// Policy v1 is v0 followed by these 15 sub-policies.
pub const V1_EXTRA: [&[PolicyOp]; 15] = [
    &[p(Color, 0.0, 0.), p(ShearXOnlyBBoxes, 0.8, 4.)],
    &[p(ShearYOnlyBBoxes, 0.8, 2.), p(FlipOnlyBBoxes, 0.0, 10.)],
    &[p(Equalize, 0.6, 10.), p(TranslateXBBox, 0.2, 2.)],
    &[p(Color, 1.0, 10.), p(TranslateYOnlyBBoxes, 0.4, 6.)],
    &[p(RotateBBox, 0.8, 10.), p(Contrast, 0.0, 10.)],
    &[p(Cutout, 0.2, 2.), p(Brightness, 0.8, 10.)],
    &[p(Color, 1.0, 6.), p(Equalize, 1.0, 2.)],
    &[
        p(CutoutOnlyBBoxes, 0.4, 6.),
        p(TranslateYOnlyBBoxes, 0.8, 2.),
    ],
    &[p(Color, 0.2, 8.), p(RotateBBox, 0.8, 10.)],
    &[p(Sharpness, 0.4, 4.), p(TranslateYOnlyBBoxes, 0.0, 4.)],
    &[p(Sharpness, 1.0, 4.), p(SolarizeAdd, 0.4, 4.)],
    &[p(RotateBBox, 1.0, 8.), p(Sharpness, 0.2, 8.)],
    &[p(ShearYBBox, 0.6, 10.), p(EqualizeOnlyBBoxes, 0.6, 8.)],
    &[p(ShearXBBox, 0.2, 6.), p(TranslateYOnlyBBoxes, 0.2, 10.)],
    &[p(SolarizeAdd, 0.6, 8.), p(Brightness, 0.8, 10.)],
];

pub const V2: [&[PolicyOp]; 15] = [
    &[p(Color, 0.0, 6.), p(Cutout, 0.6, 8.), p(Sharpness, 0.4, 8.)],
    &[
        p(RotateBBox, 0.4, 8.),
        p(Sharpness, 0.4, 2.),
        p(RotateBBox, 0.8, 10.),
    ],
    &[p(TranslateYBBox, 1.0, 8.), p(AutoContrast, 0.8, 2.)],
    &[
        p(AutoContrast, 0.4, 6.),
        p(ShearXBBox, 0.8, 8.),
        p(Brightness, 0.0, 10.),
    ],
    &[
        p(SolarizeAdd, 0.2, 6.),
        p(Contrast, 0.0, 10.),
        p(AutoContrast, 0.6, 0.),
    ],
    &[p(Cutout, 0.2, 0.), p(Solarize, 0.8, 8.), p(Color, 1.0, 4.)],
    &[
        p(TranslateYBBox, 0.0, 4.),
        p(Equalize, 0.6, 8.),
        p(Solarize, 0.0, 10.),
    ],
    &[
        p(TranslateYBBox, 0.2, 2.),
        p(ShearYBBox, 0.8, 8.),
        p(RotateBBox, 0.8, 8.),
    ],
    &[
        p(Cutout, 0.8, 8.),
        p(Brightness, 0.8, 8.),
        p(Cutout, 0.2, 2.),
    ],
    &[
        p(Color, 0.8, 4.),
        p(TranslateYBBox, 1.0, 6.),
        p(RotateBBox, 0.6, 6.),
    ],
    &[
        p(RotateBBox, 0.6, 10.),
        p(BBoxCutout, 1.0, 4.),
        p(Cutout, 0.2, 8.),
    ],
    &[
        p(RotateBBox, 0.0, 0.),
        p(Equalize, 0.6, 6.),
        p(ShearYBBox, 0.6, 8.),
    ],
    &[
        p(Brightness, 0.8, 8.),
        p(AutoContrast, 0.4, 2.),
        p(Brightness, 0.2, 2.),
    ],
    &[
        p(TranslateYBBox, 0.4, 8.),
        p(Solarize, 0.4, 6.),
        p(SolarizeAdd, 0.2, 10.),
    ],
    &[
        p(Contrast, 1.0, 10.),
        p(SolarizeAdd, 0.2, 8.),
        p(Equalize, 0.2, 4.),
    ],
];

pub const V3: [&[PolicyOp]; 15] = [
    &[p(Posterize, 0.8, 2.), p(TranslateXBBox, 1.0, 8.)],
    &[p(BBoxCutout, 0.2, 10.), p(Sharpness, 1.0, 8.)],
    &[p(RotateBBox, 0.6, 8.), p(RotateBBox, 0.8, 10.)],
    &[p(Equalize, 0.8, 10.), p(AutoContrast, 0.2, 10.)],
    &[p(SolarizeAdd, 0.2, 2.), p(TranslateYBBox, 0.2, 8.)],
    &[p(Sharpness, 0.0, 2.), p(Color, 0.4, 8.)],
    &[p(Equalize, 1.0, 8.), p(TranslateYBBox, 1.0, 8.)],
    &[p(Posterize, 0.6, 2.), p(RotateBBox, 0.0, 10.)],
    &[p(AutoContrast, 0.6, 0.), p(RotateBBox, 1.0, 6.)],
    &[p(Equalize, 0.0, 4.), p(Cutout, 0.8, 10.)],
    &[p(Brightness, 1.0, 2.), p(TranslateYBBox, 1.0, 6.)],
    &[p(Contrast, 0.0, 2.), p(ShearYBBox, 0.8, 0.)],
    &[p(AutoContrast, 0.8, 10.), p(Contrast, 0.2, 10.)],
    &[p(RotateBBox, 1.0, 10.), p(Cutout, 1.0, 10.)],
    &[p(SolarizeAdd, 0.8, 6.), p(Equalize, 0.8, 8.)],
];

/// The sub-policies of a named policy (`v0`..`v3`).
pub fn policy(version: &str) -> Option<Vec<Vec<PolicyOp>>> {
    let own = |t: &[&[PolicyOp]]| t.iter().map(|s| s.to_vec()).collect::<Vec<_>>();
    match version.to_ascii_lowercase().as_str() {
        "v0" => Some(own(&V0)),
        "v1" => Some(own(&V0).into_iter().chain(own(&V1_EXTRA)).collect()),
        "v2" => Some(own(&V2)),
        "v3" => Some(own(&V3)),
        _ => None,
    }
}

/// AutoAugment with one of the detection policies.
#[derive(Clone, Debug)]
pub struct AutoAugment {
    pub sub_policies: Vec<Vec<PolicyOp>>,
    pub hparams: Hparams,
}

impl AutoAugment {
    /// `v0`, `v1`, `v2` or `v3`.
    pub fn new(version: &str) -> Option<Self> {
        Some(AutoAugment {
            sub_policies: policy(version)?,
            hparams: Hparams::AUTOAUGMENT,
        })
    }

    pub fn v0() -> Self {
        Self::new("v0").expect("v0 exists")
    }
}

impl Augment for AutoAugment {
    fn apply(&self, s: &mut Sample, rng: &mut Rng) {
        if self.sub_policies.is_empty() {
            return;
        }
        let k = rng.below(self.sub_policies.len() as u64) as usize;
        for op in &self.sub_policies[k] {
            apply_op(
                op.op,
                op.level as f64,
                op.prob as f64,
                &self.hparams,
                s,
                rng,
            );
        }
    }
}
