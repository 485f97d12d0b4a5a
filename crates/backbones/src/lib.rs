//! pupil-backbones: feature extractors for detection and segmentation on candle.
//!
//! Every backbone implements [`Backbone`]: a forward pass in train or eval mode returning
//! feature maps by pyramid level (stride `2^level`), and the list of levels with their
//! strides and channels. Heads depend on this trait only. Parameters live in a
//! [`params::ParamStore`] under the names of the reference implementations (timm,
//! torchvision), so their checkpoints load unchanged.
pub mod efficientnet;
pub mod fused;
pub mod hub;
pub mod nn;
pub mod params;
pub mod resnet;
pub mod spinenet;
pub mod zoo;

use candle_core::{Result, Tensor};

/// Asks mimalloc (when it is the global allocator) to keep freed memory mapped instead of
/// returning it to the kernel after 10 ms: each training step would otherwise fault its
/// large activation buffers in again and pay for the kernel zeroing them.
pub fn keep_freed_memory() {
    // mi_option_purge_delay in mimalloc.h; -1 disables purging.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}
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

pub trait Backbone: Send + Sync {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<FeatureMaps>;
    fn levels(&self) -> Vec<LevelInfo>;
}

/// A backbone with a classification head (for pre-training and ImageNet checkpoints).
pub trait Classifier: Send + Sync {
    fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    fn num_classes(&self) -> usize;
}
