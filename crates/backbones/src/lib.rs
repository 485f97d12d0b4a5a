//! pupil-backbones: EfficientNet (B0-B8, L2; timm and TF variants), ResNet and SpineNet
//! feature extractors on candle, their configs, a factory by name ([`zoo`]), and checkpoint
//! sources (local files and the Hugging Face Hub, [`hub`]).
//!
//! Every backbone implements [`pupil_nn::Backbone`]: a forward pass in train or eval mode
//! returning feature maps by pyramid level (stride `2^level`), and its levels with their
//! strides and channels. Parameters live in a [`pupil_nn::ParamStore`] under the names of
//! the reference implementations (timm, torchvision), so their checkpoints load unchanged.
pub mod efficientnet;
pub mod hub;
pub mod resnet;
pub mod spinenet;
pub mod zoo;

pub use pupil_nn::{Backbone, Classifier, FeatureMaps, LevelInfo};
pub use zoo::{build, AnyBackbone, BackboneConfig};
