//! pupil-heads: detection and segmentation heads over any backbone.
//!
//! Planned public surface (built in the heads issue):
//! - necks: FPN (levels 3-7, BN on every output) and NAS-FPN (the paper's cell).
//! - RetinaNet: anchors, arg-max matcher, box coder, focal and Huber losses, NMS / soft-NMS
//!   post-processing to COCO results.
//! - Segmentation: DeepLabv3+ (ASPP + decoder) and the NAS-FPN segmentation head, softmax
//!   cross-entropy with ignore index 255.
//! - `Detector` / `Segmenter` composed from a `Backbone`, with a task-model trait the
//!   trainer drives: loss on a batch in train mode, predictions in eval mode.
