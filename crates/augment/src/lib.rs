//! pupil-augment: the augmentation ladder of "Rethinking Pre-training and Self-training"
//! (Augment-S1..S4) on [`pupil_data::Sample`]s, moving boxes, instance masks and label maps
//! with the image.
//!
//! * [`geometric`]: flip, resize, crop/pad, affine warps (rotate, shear, translate).
//! * [`photometric`]: PIL-compatible colour ops and cutout.
//! * [`box_local`]: the `*_Only_BBoxes` ops and `BBox_Cutout`.
//! * [`autoaugment`]: detection policies v0-v3 and the op/level table they share with
//!   [`randaugment`].
//! * [`jitter`]: scale jitter and large scale jitter (`resize_and_crop_image`).
//! * [`ladder`]: the named ladders `s1`..`s4` and pipelines parsed from a string or TOML.
//!
//! Every random decision draws from the [`Rng`] handed to [`Augment::apply`], so a sample's
//! output depends only on the generator's seed.
pub mod autoaugment;
pub mod box_local;
pub mod geometric;
pub mod jitter;
pub mod ladder;
pub mod photometric;
pub mod randaugment;

use pupil_data::dataset::Transform;
use pupil_data::{Rng, Sample};
use std::sync::Arc;

pub use autoaugment::{AutoAugment, OpKind, PolicyOp};
pub use geometric::{Affine, HFlip, Resize, Size};
pub use jitter::{FlipJitter, ScaleJitter};
pub use ladder::{ladder, ladder_with, parse_pipeline, parse_toml, ConfigError, LadderOptions};
pub use randaugment::RandAugment;

/// One augmentation step. Implementations keep the sample consistent: per-box vectors stay
/// aligned and every plane keeps the image's size.
pub trait Augment: Send + Sync {
    fn apply(&self, sample: &mut Sample, rng: &mut Rng);
}

/// Steps applied in order.
#[derive(Default)]
pub struct Pipeline {
    ops: Vec<Box<dyn Augment>>,
    names: Vec<String>,
}

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a step; `name` is only used to describe the pipeline.
    pub fn push(&mut self, name: impl Into<String>, op: impl Augment + 'static) {
        self.ops.push(Box::new(op));
        self.names.push(name.into());
    }

    /// Appends an already boxed step.
    pub fn push_boxed(&mut self, name: impl Into<String>, op: Box<dyn Augment>) {
        self.ops.push(op);
        self.names.push(name.into());
    }

    pub fn then(mut self, name: impl Into<String>, op: impl Augment + 'static) -> Self {
        self.push(name, op);
        self
    }

    /// Appends every step of another pipeline.
    pub fn extend(&mut self, other: Pipeline) {
        self.ops.extend(other.ops);
        self.names.extend(other.names);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The step names joined with ` | `, in the syntax [`parse_pipeline`] reads.
    pub fn describe(&self) -> String {
        self.names.join(" | ")
    }

    /// The loader's transform type.
    pub fn into_transform(self) -> Arc<Transform> {
        to_transform(Arc::new(self))
    }
}

impl Augment for Pipeline {
    fn apply(&self, sample: &mut Sample, rng: &mut Rng) {
        for op in &self.ops {
            op.apply(sample, rng);
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pipeline({})", self.describe())
    }
}

/// Wraps any augmentation as a [`pupil_data::Loader`] transform.
pub fn to_transform(aug: Arc<dyn Augment>) -> Arc<Transform> {
    Arc::new(move |mut s: Sample, rng: &mut Rng| {
        aug.apply(&mut s, rng);
        Ok(s)
    })
}
