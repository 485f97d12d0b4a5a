//! Semantic segmentation metrics: a confusion matrix accumulated over a whole set, and the
//! per-class IoU / mIoU / pixel accuracy read from it (the `bincount(n*gt + pred)` recipe).
//!
//! Pixels whose GT is the ignore index are skipped whatever the prediction is there, so a
//! class predicted only on ignored pixels is absent (IoU `None`) and left out of the mean.
use crate::error::{Error, Result};
use crate::io;
use crate::sample::{Plane, IGNORE};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Rows are GT classes, columns predicted classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    num_classes: usize,
    ignore_index: Option<u8>,
    hist: Vec<u64>,
}

/// Where an update found a value it cannot count.
enum BadPixel {
    Gt(usize, u8),
    Pred(usize, u8),
}

impl ConfusionMatrix {
    /// `num_classes` classes, GT 255 ignored.
    pub fn new(num_classes: usize) -> Self {
        Self::with_ignore_index(num_classes, Some(IGNORE))
    }

    /// Panics if `num_classes` exceeds 256: labels are bytes.
    pub fn with_ignore_index(num_classes: usize, ignore_index: Option<u8>) -> Self {
        assert!(
            num_classes <= 256,
            "num_classes {num_classes} > 256 for 8-bit label maps"
        );
        ConfusionMatrix {
            num_classes,
            ignore_index,
            hist: vec![0; num_classes * num_classes],
        }
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn ignore_index(&self) -> Option<u8> {
        self.ignore_index
    }

    /// Pixels with GT `gt` predicted as `pred`.
    pub fn get(&self, gt: usize, pred: usize) -> u64 {
        self.hist[gt * self.num_classes + pred]
    }

    /// The matrix, row-major (`[gt * num_classes + pred]`).
    pub fn as_slice(&self) -> &[u64] {
        &self.hist
    }

    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.hist
            .chunks(self.num_classes.max(1))
            .map(|r| r.to_vec())
            .collect()
    }

    /// Counted (non-ignored) pixels.
    pub fn total(&self) -> u64 {
        self.hist.iter().sum()
    }

    fn find_bad(&self, gt: &[u8], pred: &[u8]) -> Option<BadPixel> {
        let n = self.num_classes;
        for (i, (&g, &p)) in gt.iter().zip(pred).enumerate() {
            if Some(g) == self.ignore_index {
                continue;
            }
            if g as usize >= n {
                return Some(BadPixel::Gt(i, g));
            }
            if p as usize >= n {
                return Some(BadPixel::Pred(i, p));
            }
        }
        None
    }

    fn count(&mut self, gt: &[u8], pred: &[u8]) {
        let n = self.num_classes;
        for (&g, &p) in gt.iter().zip(pred) {
            if Some(g) != self.ignore_index {
                self.hist[g as usize * n + p as usize] += 1;
            }
        }
    }

    /// Adds one label map given as flat slices of equal length. Leaves the matrix unchanged on
    /// error (length mismatch, a GT or predicted class >= `num_classes` on a counted pixel).
    pub fn update(&mut self, gt: &[u8], pred: &[u8]) -> Result<()> {
        if gt.len() != pred.len() {
            return Err(Error::Other(format!(
                "label maps differ in size: {} GT pixels, {} predicted",
                gt.len(),
                pred.len()
            )));
        }
        match self.find_bad(gt, pred) {
            Some(BadPixel::Gt(i, v)) => Err(Error::Other(format!(
                "pixel {i}: GT class {v} is not below num_classes {} nor the ignore index",
                self.num_classes
            ))),
            Some(BadPixel::Pred(i, v)) => Err(Error::Other(format!(
                "pixel {i}: predicted class {v} is not below num_classes {}",
                self.num_classes
            ))),
            None => {
                self.count(gt, pred);
                Ok(())
            }
        }
    }

    /// [`update`](Self::update) for two planes, which must have the same size.
    pub fn update_planes(&mut self, gt: &Plane, pred: &Plane) -> Result<()> {
        if (gt.width, gt.height) != (pred.width, pred.height) {
            return Err(Error::Other(format!(
                "label maps differ in size: GT {}x{}, prediction {}x{}",
                gt.width, gt.height, pred.width, pred.height
            )));
        }
        self.update(&gt.data, &pred.data)
    }

    /// Reads two label-map PNGs (see [`io::read_label_png`]) and adds them; errors name the
    /// file and, for a bad value, the pixel.
    pub fn update_files(&mut self, gt_path: &Path, pred_path: &Path) -> Result<()> {
        let gt = io::read_label_png(gt_path)?;
        let pred = io::read_label_png(pred_path)?;
        if (gt.width, gt.height) != (pred.width, pred.height) {
            return Err(Error::invalid(
                pred_path,
                "size",
                format!(
                    "is {}x{} but the ground truth {} is {}x{}",
                    pred.width,
                    pred.height,
                    gt_path.display(),
                    gt.width,
                    gt.height
                ),
            ));
        }
        let at = |i: usize| {
            format!(
                "pixel (x={}, y={})",
                i % gt.width.max(1),
                i / gt.width.max(1)
            )
        };
        match self.find_bad(&gt.data, &pred.data) {
            Some(BadPixel::Gt(i, v)) => Err(Error::invalid(
                gt_path,
                at(i),
                format!(
                    "class {v} is not below num_classes {} nor the ignore index",
                    self.num_classes
                ),
            )),
            Some(BadPixel::Pred(i, v)) => Err(Error::invalid(
                pred_path,
                at(i),
                format!("class {v} is not below num_classes {}", self.num_classes),
            )),
            None => {
                self.count(&gt.data, &pred.data);
                Ok(())
            }
        }
    }

    /// Adds another matrix of the same shape.
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<()> {
        if other.num_classes != self.num_classes {
            return Err(Error::Other(format!(
                "cannot merge confusion matrices of {} and {} classes",
                self.num_classes, other.num_classes
            )));
        }
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
        Ok(())
    }

    /// `hist[c,c] / (row_c + col_c - hist[c,c])`; `None` when class c is absent from both GT
    /// and prediction on the counted pixels.
    pub fn per_class_iou(&self) -> Vec<Option<f64>> {
        let n = self.num_classes;
        (0..n)
            .map(|c| {
                let diag = self.get(c, c);
                let row: u64 = self.hist[c * n..(c + 1) * n].iter().sum();
                let col: u64 = (0..n).map(|r| self.get(r, c)).sum();
                let den = row + col - diag;
                (den > 0).then(|| diag as f64 / den as f64)
            })
            .collect()
    }

    /// Mean over the classes that have an IoU; `None` when none has.
    pub fn mean_iou(&self) -> Option<f64> {
        let present: Vec<f64> = self.per_class_iou().into_iter().flatten().collect();
        if present.is_empty() {
            return None;
        }
        Some(present.iter().sum::<f64>() / present.len() as f64)
    }

    /// `trace / total`; `None` when no pixel was counted.
    pub fn pixel_accuracy(&self) -> Option<f64> {
        let total = self.total();
        let trace: u64 = (0..self.num_classes).map(|c| self.get(c, c)).sum();
        (total > 0).then(|| trace as f64 / total as f64)
    }

    /// `{"mIoU", "per_class_iou", "pixel_accuracy"}`, `null` for absent classes.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mIoU": self.mean_iou(),
            "per_class_iou": self.per_class_iou(),
            "pixel_accuracy": self.pixel_accuracy(),
        })
    }
}

/// The `*.png` file names of a folder, sorted.
fn png_names(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.to_ascii_lowercase().ends_with(".png") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Accumulates a confusion matrix over two folders of label-map PNGs matched by file name
/// (the PASCAL VOC layout). A file present on one side only is an error naming it.
pub fn evaluate_label_dirs(
    gt_dir: &Path,
    pred_dir: &Path,
    num_classes: usize,
    ignore_index: Option<u8>,
) -> Result<ConfusionMatrix> {
    if num_classes == 0 || num_classes > 256 {
        return Err(Error::Other(format!(
            "num_classes must be between 1 and 256 for 8-bit label maps, not {num_classes}"
        )));
    }
    let gt_names = png_names(gt_dir)?;
    let pred_names = png_names(pred_dir)?;
    for name in &gt_names {
        if pred_names.binary_search(name).is_err() {
            let gt_path = gt_dir.join(name);
            return Err(Error::invalid(
                pred_dir.join(name),
                format!("prediction for {}", gt_path.display()),
                "file not found",
            ));
        }
    }
    for name in &pred_names {
        if gt_names.binary_search(name).is_err() {
            return Err(Error::invalid(
                gt_dir.join(name),
                format!("ground truth for {}", pred_dir.join(name).display()),
                "file not found",
            ));
        }
    }
    if gt_names.is_empty() {
        return Err(Error::invalid(gt_dir, "label maps", "no .png files"));
    }
    let pairs: Vec<(PathBuf, PathBuf)> = gt_names
        .iter()
        .map(|n| (gt_dir.join(n), pred_dir.join(n)))
        .collect();
    // One matrix per file in parallel; the first error in name order is reported.
    let parts: Vec<Result<ConfusionMatrix>> = pairs
        .par_iter()
        .map(|(g, p)| {
            let mut cm = ConfusionMatrix::with_ignore_index(num_classes, ignore_index);
            cm.update_files(g, p).map(|_| cm)
        })
        .collect();
    let mut total = ConfusionMatrix::with_ignore_index(num_classes, ignore_index);
    for part in parts {
        total.merge(&part?)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_gt_pixels_do_not_count_whatever_the_prediction() {
        let mut cm = ConfusionMatrix::new(3);
        cm.update(&[0, 1, 255, 255, 2], &[0, 2, 1, 200, 2]).unwrap();
        assert_eq!(cm.total(), 3);
        assert_eq!(cm.get(1, 2), 1);
        let iou = cm.per_class_iou();
        assert_eq!(iou, vec![Some(1.0), Some(0.0), Some(0.5)]);
        assert_eq!(cm.mean_iou(), Some(0.5));
        assert_eq!(cm.pixel_accuracy(), Some(2.0 / 3.0));
    }

    #[test]
    fn out_of_range_values_are_errors_and_leave_the_matrix_alone() {
        let mut cm = ConfusionMatrix::new(3);
        let e = cm.update(&[0, 1], &[0, 3]).unwrap_err().to_string();
        assert!(
            e.contains("pixel 1") && e.contains("predicted class 3"),
            "{e}"
        );
        let e = cm.update(&[7, 1], &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("GT class 7"), "{e}");
        assert!(cm.update(&[0], &[0, 1]).is_err());
        assert_eq!(cm.total(), 0);
        assert_eq!(cm.mean_iou(), None);
        assert_eq!(cm.per_class_iou(), vec![None, None, None]);
    }
}
