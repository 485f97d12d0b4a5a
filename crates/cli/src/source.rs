//! The dataset flags shared by the commands that read samples, turned into pupil-data's
//! dataset spec.
use anyhow::{bail, Context, Result};
use pupil_data::digits::DigitsConfig;
use pupil_data::source::DatasetSpec;
use pupil_data::voc::VocTask;
use pupil_data::Dataset;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Clone, Debug)]
pub struct SourceArgs {
    /// Dataset: digits (embedded scenes), coco (with --gt and --images), voc (with --root),
    /// folder (with --images), pseudo (with --pseudo; preview only).
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
    /// Image folder (COCO images, an unlabeled folder, or a pseudo-label folder's source:
    /// a folder or digits:unlabeled).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// VOC root (JPEGImages/ with Annotations/ and/or SegmentationClass/; ImageSets/ lists
    /// are optional: without them every annotation or label map is read).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// VOC: detection (boxes; ImageSets/Main) or segmentation (label maps and boxes;
    /// ImageSets/Segmentation); auto is segmentation when the root has SegmentationClass/.
    #[arg(long, default_value = "auto")]
    pub voc_task: String,
    /// A pseudo-label folder (`--dataset pseudo`): its labels on its source, or on --images.
    #[arg(long)]
    pub pseudo: Option<PathBuf>,
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

    /// The dataset split the flags name.
    pub fn spec(&self) -> Result<DatasetSpec> {
        Ok(match self.dataset.as_str() {
            "digits" => DatasetSpec::Digits {
                config: self.digits_config(),
                split: self.split.parse().map_err(anyhow::Error::msg)?,
            },
            "coco" => {
                let gt = self.gt.as_ref().context("--dataset coco needs --gt FILE")?;
                let images = match &self.images {
                    Some(p) => p.clone(),
                    None => gt.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
                };
                DatasetSpec::Coco {
                    annotations: gt.clone(),
                    images,
                    masks: true,
                }
            }
            "voc" => {
                let root = self
                    .root
                    .clone()
                    .context("--dataset voc needs --root DIR")?;
                let task = match self.voc_task.as_str() {
                    "detection" => VocTask::Detection,
                    "segmentation" => VocTask::Segmentation,
                    "auto" if root.join("SegmentationClass").is_dir() => VocTask::Segmentation,
                    "auto" => VocTask::Detection,
                    other => bail!("--voc-task {other:?}: detection, segmentation or auto"),
                };
                DatasetSpec::Voc {
                    root,
                    set: self.split.clone(),
                    task,
                }
            }
            "folder" => DatasetSpec::Folder {
                root: self
                    .images
                    .clone()
                    .context("--dataset folder needs --images DIR")?,
            },
            "pseudo" => bail!("--dataset pseudo is for `pupil data preview --pseudo DIR`"),
            other => bail!("unknown dataset {other:?} (digits, coco, voc, folder, pseudo)"),
        })
    }

    pub fn open(&self) -> Result<Arc<dyn Dataset>> {
        Ok(self.spec()?.open()?)
    }
}
