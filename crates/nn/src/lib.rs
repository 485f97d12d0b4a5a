//! pupil-nn: the layer library of pupil's models, on candle.
//!
//! - [`params`]: a named store of parameters with a kind per tensor (kernel, bias, norm,
//!   buffer), deterministic initialisation from (seed, name), strict and partial checkpoint
//!   loading, and pupil's safetensors checkpoints with a JSON header.
//! - [`layers`]: convolution (PyTorch, TF 'SAME' and TF fixed padding), batch norm (fused
//!   kernels on CPU; statistics synchronized over a data-parallel group when the store has
//!   one), linear, stochastic depth, dropout.
//! - [`backbone`]: the [`Backbone`] and [`Classifier`] traits heads are built on.
//!
//! Kernels live in pupil-ops; models in pupil-backbones and pupil-heads.
pub mod backbone;
pub mod layers;
pub mod params;

pub use backbone::{Backbone, Classifier, FeatureMaps, LevelInfo};
pub use layers::{
    drop_path, dropout, dropout2d, global_avg_pool, sigmoid, BatchNorm2d, Conv2d, ConvCfg, Linear,
    PadMode,
};
pub use params::{Init, LoadOptions, ParamKind, ParamStore, Vb};
pub use pupil_ops::{Act, Pad2d};
