//! Dataset selection shared by the commands that read samples.
use anyhow::{bail, Context, Result};
use pupil_data::coco::CocoDataset;
use pupil_data::digits::{DigitScenes, DigitsConfig, Split};
use pupil_data::folder::ImageFolder;
use pupil_data::voc::{VocDataset, VocTask};
use pupil_data::Dataset;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct SourceArgs {
    /// Dataset: digits (embedded scenes), coco (with --gt and --images), voc (with --root),
    /// folder (with --images).
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Split of the digit scenes (train, unlabeled, val) or VOC image set.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Seed of the digit scenes.
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,
    /// Number of digit scenes in the split (default: the split's default size).
    #[arg(long)]
    pub count: Option<usize>,
    /// Side of the square digit scenes, in pixels.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// COCO instances JSON.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Image folder (COCO images, or an unlabeled folder).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// VOC root (with Annotations/, JPEGImages/, SegmentationClass/, ImageSets/).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

impl SourceArgs {
    pub fn digits_config(&self) -> DigitsConfig {
        let mut cfg = DigitsConfig {
            seed: self.data_seed,
            ..Default::default()
        };
        if let Some(s) = self.image_size {
            cfg.image_size = s;
            cfg.max_digit_size = cfg.max_digit_size.min(s.saturating_sub(2)).max(4);
            cfg.min_digit_size = cfg.min_digit_size.min(cfg.max_digit_size);
        }
        if let Some(n) = self.count {
            cfg.train = n;
            cfg.unlabeled = n;
            cfg.val = n;
        }
        cfg
    }

    pub fn open(&self) -> Result<Box<dyn Dataset>> {
        Ok(match self.dataset.as_str() {
            "digits" => {
                let split: Split = self.split.parse().map_err(anyhow::Error::msg)?;
                Box::new(DigitScenes::new(&self.digits_config(), split)?)
            }
            "coco" => {
                let gt = self.gt.as_ref().context("--dataset coco needs --gt FILE")?;
                let images = match &self.images {
                    Some(p) => p.clone(),
                    None => gt.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
                };
                Box::new(CocoDataset::open(gt, images)?.with_masks(true))
            }
            "voc" => {
                let root = self
                    .root
                    .as_ref()
                    .context("--dataset voc needs --root DIR")?;
                Box::new(VocDataset::open(
                    root,
                    &self.split,
                    VocTask::Segmentation,
                    None,
                )?)
            }
            "folder" => {
                let root = self
                    .images
                    .as_ref()
                    .context("--dataset folder needs --images DIR")?;
                Box::new(ImageFolder::open(root)?)
            }
            other => bail!("unknown dataset {other:?} (digits, coco, voc, folder)"),
        })
    }
}
