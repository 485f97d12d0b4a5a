//! pupil-selftrain: training and the paper's self-training loop.
//!
//! Planned public surface (built in the self-training issue):
//! - SGD with momentum, weight decay on kernels, warm-up + cosine / step schedules, gradient
//!   clipping, weight EMA; atomic checkpoints with exact resume.
//! - `trait PseudoLabeler`: teacher -> hard labels (boxes above a score threshold, or pixels
//!   above a confidence threshold, else 255) written as COCO JSON shards.
//! - Student training on mixed human / pseudo batches with the loss normalization
//!   `L = 1/(1+a) * (L_h + a * (avg L_h / avg L_p) * L_p)`.
//! - Classification pre-training and the pre-training vs self-training experiment grid.
