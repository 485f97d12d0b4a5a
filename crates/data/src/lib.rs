//! pupil-data: the data model ([`Sample`]), readers and writers for COCO and PASCAL VOC, an
//! unlabeled image folder source, the embedded digit-scene dataset, a deterministic parallel
//! loader, batching into candle tensors (feature `tensor`), and COCO mAP / mIoU evaluation.
#[cfg(feature = "tensor")]
pub mod batch;
pub mod class_folder;
pub mod coco;
pub mod dataset;
pub mod digits;
pub mod draw;
pub mod error;
pub mod export;
pub mod folder;
pub mod io;
pub mod metrics;
pub mod rng;
pub mod sample;
pub mod source;
pub mod voc;

pub use dataset::{Dataset, InMemory, Loader, LoaderConfig, Subset, Unlabeled};
pub use error::{Error, Result};
pub use rng::Rng;
pub use sample::{Image, Meta, Plane, Sample, IGNORE};
pub use source::DatasetSpec;
