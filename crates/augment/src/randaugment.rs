//! RandAugment for detection (tf-models `RandAugment.build_for_detection`): `n` layers, each
//! picking uniformly among the 16 ops and an identity branch, at one magnitude `m`.
use crate::autoaugment::{apply_op, Hparams, OpKind};
use crate::Augment;
use pupil_data::{Rng, Sample};

/// The 16 detection ops, in the tf-models order.
pub const DETECTION_OPS: [OpKind; 16] = [
    OpKind::AutoContrast,
    OpKind::Equalize,
    OpKind::Invert,
    OpKind::RotateBBox,
    OpKind::Posterize,
    OpKind::Solarize,
    OpKind::Color,
    OpKind::Contrast,
    OpKind::Brightness,
    OpKind::Sharpness,
    OpKind::ShearXBBox,
    OpKind::ShearYBBox,
    OpKind::TranslateXBBox,
    OpKind::TranslateYBBox,
    OpKind::Cutout,
    OpKind::SolarizeAdd,
];

#[derive(Clone, Debug)]
pub struct RandAugment {
    pub num_layers: usize,
    /// Level of every op; may exceed 10 (arguments grow linearly).
    pub magnitude: f64,
    /// Probability that a layer runs at all (tf-models `prob_to_apply`; `None` = always).
    pub prob_to_apply: Option<f64>,
    pub ops: Vec<OpKind>,
    /// `translate_const` and `cutout_const` live here.
    pub hparams: Hparams,
}

impl Default for RandAugment {
    fn default() -> Self {
        RandAugment {
            num_layers: 2,
            magnitude: 10.0,
            prob_to_apply: None,
            ops: DETECTION_OPS.to_vec(),
            hparams: Hparams::RANDAUGMENT,
        }
    }
}

impl RandAugment {
    pub fn new(num_layers: usize, magnitude: f64) -> Self {
        RandAugment {
            num_layers,
            magnitude,
            ..Default::default()
        }
    }
}

impl Augment for RandAugment {
    fn apply(&self, s: &mut Sample, rng: &mut Rng) {
        for _ in 0..self.num_layers {
            // One branch more than there are ops: the identity.
            let k = rng.below(self.ops.len() as u64 + 1) as usize;
            if let Some(p) = self.prob_to_apply {
                if !rng.bernoulli(p) {
                    continue;
                }
            }
            if let Some(&op) = self.ops.get(k) {
                apply_op(op, self.magnitude, 1.0, &self.hparams, s, rng);
            }
        }
    }
}
