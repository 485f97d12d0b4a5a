//! pupil-selftrain: training and the paper's comparison of pre-training and self-training.
//!
//! - [`config`]: TOML configs whose keys default to the paper's values, `--set` overrides.
//! - [`optim`]: SGD with momentum, kernel-only weight decay, clipping, warm-up + cosine/step,
//!   weight EMA.
//! - [`model`]: detector / segmenter / classifier behind one interface; init from
//!   `pretrained:PATH|hf:...`; models saved with their config.
//! - [`trainer`]: the loop, human + pseudo mixing with the loss normalization, checkpoints and
//!   exact resume.
//! - [`pseudo`]: teacher pseudo-labels in resumable COCO shards, their quality report.
//! - [`dist`]: data-parallel training (process group from the environment, gradient
//!   averaging, synchronized batch norm, the `--nproc-per-node` launcher).
//! - [`experiment`]: the grid of init x self-training x augmentation x labeled fraction, and
//!   the quickstart.
pub mod config;
pub mod data;
pub mod dist;
pub mod experiment;
pub mod model;
pub mod optim;
pub mod pseudo;
pub mod report;
pub mod trainer;
