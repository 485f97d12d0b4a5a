//! pupil-backbones: feature extractors for detection and segmentation.
//!
//! Planned public surface (built in the backbones issue):
//! - `trait Backbone { fn forward_t(&self, x: &Tensor, train: bool) -> Result<FeatureMaps>;
//!   fn levels(&self) -> Vec<LevelInfo>; }` where `FeatureMaps` maps a pyramid level
//!   (2..=7, stride 2^level) to an NCHW tensor and `LevelInfo` gives its stride and channels.
//! - EfficientNet B0-B7/L2 (timm names, PyTorch or TF 'same' padding), SpineNet-49S..190,
//!   ResNet-50/101 (torchvision names), constructed by name (`efficientnet-b7`,
//!   `tf-efficientnet-b0`, `spinenet-49`, `resnet-50`).
//! - Checkpoint loading from safetensors files and the Hugging Face Hub with strict name and
//!   shape checks.
