//! The one place that knows every dataset pupil reads: a [`DatasetSpec`] names a split of
//! one of them and opens it. Run configs and the CLI's dataset flags both build a spec.
use crate::class_folder::{class_dirs, ClassFolder};
use crate::coco::CocoDataset;
use crate::dataset::{Dataset, Subset};
use crate::digits::{ClassificationSet, DigitScenes, DigitsConfig, Split};
use crate::folder::ImageFolder;
use crate::voc::{VocDataset, VocTask};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The dataset names a spec can be parsed from.
pub const DATASETS: &str = "digits, coco, voc, folder, fashion, digit-pool";

/// Which part of a classification set: the first 90 % or the last 10 %.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
}

/// One split of one dataset.
#[derive(Clone, Debug, PartialEq)]
pub enum DatasetSpec {
    /// The embedded digit scenes.
    Digits { config: DigitsConfig, split: Split },
    /// A COCO instances file and its image folder; `masks` decodes segmentations.
    Coco {
        annotations: PathBuf,
        images: PathBuf,
        masks: bool,
    },
    /// A PASCAL VOC-layout folder.
    Voc {
        root: PathBuf,
        set: String,
        task: VocTask,
    },
    /// Every image under a folder, unlabeled.
    Folder { root: PathBuf },
    /// An embedded classification set: `fashion` (Fashion-MNIST) or `digit-pool` (MNIST).
    Classes { set: String, part: Part },
    /// A classification folder (`ROOT/<class>/*.jpg`, or ImageNet's `ROOT/train/<class>`
    /// and `ROOT/val/<class>`); without `val/`, the last tenth of each class is validation.
    ClassFolder { root: PathBuf, part: Part },
}

impl DatasetSpec {
    pub fn open(&self) -> Result<Arc<dyn Dataset>> {
        Ok(match self {
            DatasetSpec::Digits { config, split } => Arc::new(DigitScenes::new(config, *split)?),
            DatasetSpec::Coco {
                annotations,
                images,
                masks,
            } => Arc::new(CocoDataset::open(annotations, images)?.with_masks(*masks)),
            DatasetSpec::Voc { root, set, task } => {
                Arc::new(VocDataset::open(root, set, *task, voc_classes(root)?)?)
            }
            DatasetSpec::Folder { root } => Arc::new(ImageFolder::open(root)?),
            DatasetSpec::Classes { set, part } => classification_part(set, *part)?,
            DatasetSpec::ClassFolder { root, part } => class_folder_part(root, *part)?,
        })
    }
}

fn class_folder_part(root: &Path, part: Part) -> Result<Arc<dyn Dataset>> {
    let (train, val) = (root.join("train"), root.join("val"));
    if train.is_dir() {
        return Ok(match part {
            Part::Train => Arc::new(ClassFolder::open(&train)?),
            Part::Val if val.is_dir() => {
                Arc::new(ClassFolder::with_classes(&val, &class_dirs(&train)?)?)
            }
            Part::Val => return Err(Error::invalid(root, "val/", "has train/ but no val/")),
        });
    }
    let all = ClassFolder::open(root)?;
    let (keep, held) = all.split();
    Ok(Arc::new(Subset {
        inner: Arc::new(all),
        indices: if part == Part::Train { keep } else { held },
    }))
}

/// A VOC folder's own class list: `labels.txt` (as `pupil data export` writes it) or
/// `class_names.txt` (labelme), one name a line, a first background line dropped; `None`
/// (the 20 PASCAL classes) without either.
pub fn voc_classes(root: &Path) -> Result<Option<Vec<String>>> {
    let Some(p) = ["labels.txt", "class_names.txt"]
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let mut names: Vec<String> = (text.lines().map(str::trim))
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let bg = ["background", "_background_", "__background__"];
    if names
        .first()
        .is_some_and(|n| bg.contains(&n.to_ascii_lowercase().as_str()))
    {
        names.remove(0);
    }
    if names.is_empty() {
        return Err(Error::invalid(&p, "class list", "names no class"));
    }
    Ok(Some(names))
}

fn classification_part(set: &str, part: Part) -> Result<Arc<dyn Dataset>> {
    let all = match set {
        "fashion" => ClassificationSet::fashion()?,
        "digit-pool" => ClassificationSet::digits()?,
        other => {
            return Err(Error::Other(format!(
                "unknown classification set {other:?} (fashion, digit-pool)"
            )))
        }
    };
    let n = all.indices.len();
    let cut = n - n / 10;
    let indices = match part {
        Part::Train => (0..cut).collect(),
        Part::Val => (cut..n).collect(),
    };
    Ok(Arc::new(Subset {
        inner: Arc::new(all),
        indices,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_parts_split_nine_to_one() {
        let tr = DatasetSpec::Classes {
            set: "digit-pool".into(),
            part: Part::Train,
        }
        .open()
        .unwrap();
        let va = DatasetSpec::Classes {
            set: "digit-pool".into(),
            part: Part::Val,
        }
        .open()
        .unwrap();
        assert_eq!(va.len(), (tr.len() + va.len()) / 10);
        let e = DatasetSpec::Classes {
            set: "imagenet".into(),
            part: Part::Val,
        }
        .open()
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("imagenet"), "{e}");
    }

    #[test]
    fn class_folders_with_and_without_a_val_folder() {
        use crate::sample::Image;
        let d = tempfile::tempdir().unwrap();
        let put =
            |p: &str| crate::io::write_png(d.path().join(p), &Image::new(6, 6, 3, 1)).unwrap();
        for i in 0..10 {
            put(&format!("flat/a/{i}.png"));
            put(&format!("flat/b/{i}.jpg.png"));
        }
        let open = |root: &str, part| {
            DatasetSpec::ClassFolder {
                root: d.path().join(root),
                part,
            }
            .open()
        };
        let (tr, va) = (
            open("flat", Part::Train).unwrap(),
            open("flat", Part::Val).unwrap(),
        );
        assert_eq!((tr.len(), va.len()), (18, 2));
        assert_eq!(va.class_names(), ["a", "b"]);
        assert_eq!(va.get(1).unwrap().classes, [1]);
        // ImageNet's layout: train/ and val/ with the same classes
        put("inet/train/n01/x.png");
        put("inet/train/n02/y.png");
        put("inet/val/n01/z.png");
        assert_eq!(open("inet", Part::Train).unwrap().len(), 2);
        let e = open("inet", Part::Val).err().unwrap().to_string();
        assert!(e.contains("inet/val") && e.contains("n02"), "{e}");
        put("inet/val/n02/w.png");
        assert_eq!(open("inet", Part::Val).unwrap().len(), 2);
    }
}
