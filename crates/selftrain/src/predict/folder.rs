//! A saved model over a folder of images (or one image) in batches: COCO results naming each
//! image's file, one drawing per image, label maps of a segmenter, classes of a classifier.
use super::{above, Predictor};
use crate::config::TaskKind;
use crate::error::{bail, Result};
use crate::task::Prediction;
use pupil_data::coco::CocoDetection;
use pupil_data::dataset::{Loader, LoaderConfig};
use pupil_data::folder::ImageFolder;
use pupil_data::{io, Sample};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A COCO result with the file it was found in (a folder's images have no COCO image id of
/// their own: `image_id` is the image's place in name order, from 1).
#[derive(Clone, Debug, Serialize)]
pub struct NamedDetection {
    #[serde(flatten)]
    pub det: CocoDetection,
    pub file_name: String,
}

/// A classifier's answer for one file.
#[derive(Clone, Debug, Serialize)]
pub struct NamedClass {
    pub file_name: String,
    pub class: u32,
    pub name: String,
    pub score: f32,
}

#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// Detections below this score are neither written nor drawn.
    pub score_threshold: f32,
    pub batch_size: usize,
    /// No progress bar.
    pub quiet: bool,
}

/// What a folder run wrote.
#[derive(Clone, Debug, Default)]
pub struct FolderOutcome {
    pub images: usize,
    pub detections: usize,
    /// `detections.json` (detection) or `classes.json` (classification).
    pub results: Option<PathBuf>,
}

/// The images of a folder (recursive, jpg/jpeg/png, in name order) or the one image `input`.
fn source(input: &Path) -> Result<ImageFolder> {
    let f = if input.is_dir() {
        ImageFolder::open(input)?
    } else if input.is_file() {
        ImageFolder {
            root: input.parent().map(Path::to_path_buf).unwrap_or_default(),
            paths: vec![input.to_path_buf()],
        }
    } else {
        bail!("{}: no such image or folder", input.display())
    };
    if f.paths.is_empty() {
        bail!("{}: holds no jpg or png image", input.display())
    }
    Ok(f)
}

/// `rel` with a `.png` extension, or with `.png` appended when another input (`a.jpg` next
/// to `a.png`) already took that name.
fn png_name(rel: &str, used: &mut HashSet<String>) -> String {
    let plain = Path::new(rel).with_extension("png");
    let plain = plain.to_string_lossy().replace('\\', "/");
    let name = if used.contains(&plain) {
        format!("{rel}.png")
    } else {
        plain
    };
    used.insert(name.clone());
    name
}

/// What one image's prediction adds to the run's files.
struct Sink<'a> {
    p: &'a Predictor,
    out: &'a Path,
    dets: Vec<NamedDetection>,
    classes: Vec<NamedClass>,
    used: HashSet<String>,
}

impl Sink<'_> {
    fn add(&mut self, s: &Sample, rel: &str, pred: &Prediction) -> Result<()> {
        let name = png_name(rel, &mut self.used);
        match pred {
            Prediction::Boxes(_) => {
                let file_name = rel.to_string();
                let dets = self.p.coco_results(s.image_id, pred).into_iter();
                self.dets.extend(dets.map(|det| NamedDetection {
                    det,
                    file_name: file_name.clone(),
                }));
            }
            Prediction::LabelMap { classes, .. } => {
                io::write_label_png(self.out.join("labels").join(&name), classes)?;
            }
            Prediction::Class { class, score } => self.classes.push(NamedClass {
                file_name: rel.to_string(),
                class: *class,
                name: (self.p.class_names().get(*class as usize))
                    .cloned()
                    .unwrap_or_default(),
                score: *score,
            }),
        }
        io::write_png(self.out.join("vis").join(&name), &self.p.draw(s, pred))?;
        Ok(())
    }

    /// Writes the results file of the task, if it has one.
    fn finish(self, images: usize) -> Result<FolderOutcome> {
        let mut o = FolderOutcome {
            images,
            detections: self.dets.len(),
            results: None,
        };
        let (name, bytes) = match self.p.model.config.task {
            TaskKind::Detection => ("detections.json", serde_json::to_vec(&self.dets)),
            TaskKind::Classification => ("classes.json", serde_json::to_vec_pretty(&self.classes)),
            TaskKind::Segmentation => return Ok(o),
        };
        let path = self.out.join(name);
        io::write_atomic(&path, &bytes.map_err(crate::Error::msg)?)?;
        o.results = Some(path);
        Ok(o)
    }
}

/// Runs the model over `input` (a folder or one image) `batch_size` images at a time and
/// writes into `out`: `detections.json` (COCO results with `file_name`), `classes.json`
/// (classifiers), `labels/` (segmenters' label maps) and a drawing per image under `vis/`,
/// each named as the input's path under the folder with a `.png` extension.
pub fn predict_folder(
    p: &Predictor,
    input: &Path,
    out: &Path,
    opts: &FolderOptions,
) -> Result<FolderOutcome> {
    if opts.batch_size == 0 {
        bail!("the batch size must be at least 1")
    }
    let folder = Arc::new(source(input)?);
    let cfg = LoaderConfig {
        batch_size: opts.batch_size,
        shuffle: false,
        drop_last: false,
        seed: 0,
        workers: 2,
        prefetch: 2,
    };
    let loader = Loader::new(folder.clone(), cfg);
    let bar = if opts.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(folder.paths.len() as u64)
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} images eta {eta}")
    {
        bar.set_style(style);
    }
    let mut sink = Sink {
        p,
        out,
        dets: Vec::new(),
        classes: Vec::new(),
        used: HashSet::new(),
    };
    for batch in loader.epoch(0) {
        let samples = batch?;
        for (s, pred) in samples.iter().zip(p.predict(&samples)?) {
            let rel = folder.relative(s.image_id as usize - 1);
            sink.add(s, &rel, &above(pred, opts.score_threshold))?;
        }
        bar.inc(samples.len() as u64);
    }
    bar.finish_and_clear();
    sink.finish(folder.paths.len())
}
