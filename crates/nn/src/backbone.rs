//! The seam between backbones and heads: a backbone turns images into feature maps by
//! pyramid level; heads are built on any implementation.
use candle_core::{Result, Tensor};
use std::collections::BTreeMap;

/// A feature map's place in the pyramid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelInfo {
    pub level: usize,
    pub stride: usize,
    pub channels: usize,
}

/// Feature maps by pyramid level (NCHW).
#[derive(Clone, Debug, Default)]
pub struct FeatureMaps {
    pub maps: BTreeMap<usize, Tensor>,
}

impl FeatureMaps {
    pub fn get(&self, level: usize) -> Result<&Tensor> {
        self.maps
            .get(&level)
            .ok_or_else(|| candle_core::Error::Msg(format!("no feature map at level {level}")))
    }
}

/// Feature maps at strides `2^level` in train or eval mode, and the levels it emits.
pub trait Backbone: Send + Sync {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<FeatureMaps>;
    fn levels(&self) -> Vec<LevelInfo>;
}

/// A backbone with a classification head (for pre-training and ImageNet checkpoints).
pub trait Classifier: Send + Sync {
    fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    fn num_classes(&self) -> usize;
}

impl<B: Backbone + ?Sized> Backbone for Box<B> {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<FeatureMaps> {
        (**self).forward_t(x, train)
    }
    fn levels(&self) -> Vec<LevelInfo> {
        (**self).levels()
    }
}
