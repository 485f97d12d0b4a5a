//! pupil-heads: detection and segmentation over any [`pupil_nn::Backbone`]: the detector and
//! the segmenter are handed a built backbone (pupil-backbones' zoo builds one from a config).
//!
//! - [`neck`]: FPN (levels 3-7, BN on every output), NAS-FPN (the paper's cell) and identity.
//! - RetinaNet pieces, each usable alone: [`anchors`] (the paper's layout and torchvision's),
//!   [`matcher`] (arg-max, forced best match, crowd ignored), [`coder`], [`losses`] (focal,
//!   Huber, softmax cross-entropy with ignore), [`boxes`] (IoU, NMS, batched NMS, soft-NMS).
//! - [`retinanet::RetinaNet`] and [`seg::Segmenter`] (DeepLabv3+ or the NAS-FPN head).
//!
//! Parameter groups for weight decay come from the model's
//! [`pupil_nn::ParamStore`]: `ParamKind::Kernel` tensors are the ones the paper
//! decays.
pub mod anchors;
pub mod boxes;
pub mod coder;
pub mod losses;
pub mod matcher;
pub mod neck;
pub mod retinanet;
pub mod seg;
