//! pupil-selftrain: training and the paper's comparison of pre-training and self-training.
//!
//! - [`checks`]: the value ranges of a run config.
//! - [`config`]: TOML configs whose keys default to the paper's values, `--set` overrides,
//!   the presets of `configs/`.
//! - [`task`]: the [`task::Task`] interface (loss, evaluation, prediction, pseudo labels)
//!   with one implementation per task, and the factory that builds one from a config.
//! - [`optim`]: SGD with momentum, kernel-only weight decay, clipping, warm-up + cosine/step,
//!   weight EMA, loss scaling.
//! - [`model`]: devices, init from `pretrained:PATH|hf:...`, models saved with their config.
//! - [`data`]: a run's datasets and transforms.
//! - [`trainer`]: the loop, human + pseudo mixing with the loss normalization, checkpoints and
//!   exact resume.
//! - [`lock`]: one writer per run folder.
//! - [`online`]: the online (EMA) teacher's views, labels and diagnostics.
//! - [`pseudo`]: teacher pseudo-labels in resumable COCO shards, their quality report.
//! - [`predict`]: a saved model over images, to drawings and COCO results.
//! - [`evaluate`]: a saved model scored on a split, with its detections as COCO results.
//! - [`dist`]: data-parallel training (the [`dist::Runtime`] of a run, gradient averaging,
//!   the `--nproc-per-node` launcher).
//! - [`experiment`]: training, self-training rounds, the student's control, pre-training.
//! - [`grid`]: the paper's grid of init x self-training x augmentation x labeled fraction x
//!   seed, with controls, resumable, arms side by side; [`report`] writes its tables,
//!   findings and plots.
//! - [`plots`]: line plots with error bars, bar charts, panels and a run's training curves.
//! - [`checkpoint`]: atomic checkpoints and their recovery.
pub mod checkpoint;
pub mod checks;
pub mod config;
pub mod data;
pub mod dist;
pub mod error;
pub mod evaluate;
pub mod experiment;
pub mod grid;
pub mod lock;
pub mod model;
pub mod online;
pub mod optim;
pub mod plots;
pub mod predict;
pub mod pseudo;
pub mod report;
pub mod task;
pub mod trainer;

pub use error::{Error, Result};
