//! COCO instances and results JSON: reading (with validation that names the file and the
//! item), writing, the contiguous <-> COCO category id mapping, and a [`Dataset`] view.
pub mod eval;
pub mod mask;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::io;
use crate::sample::{Plane, Sample};
use mask::Rle;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub width: usize,
    pub height: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CocoCategory {
    pub id: u64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RleCounts {
    Uncompressed(Vec<u32>),
    Compressed(String),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Segmentation {
    Polygons(Vec<Vec<f64>>),
    Rle { counts: RleCounts, size: [usize; 2] },
}

/// `iscrowd` appears as 0/1 and, in some exporters, as a boolean.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(untagged)]
pub enum Flag {
    Int(i64),
    Bool(bool),
    #[default]
    #[serde(skip)]
    Unset,
}

impl Flag {
    pub fn is_set(&self) -> bool {
        match *self {
            Flag::Int(v) => v != 0,
            Flag::Bool(b) => b,
            Flag::Unset => false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CocoAnnotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    /// Taken as given: COCO's `area` is the mask area and need not equal w*h.
    #[serde(default)]
    pub area: f64,
    #[serde(default, skip_serializing_if = "is_unset")]
    pub iscrowd: Flag,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<Segmentation>,
}

fn is_unset(f: &Flag) -> bool {
    matches!(f, Flag::Unset)
}

/// A COCO instances file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct CocoFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licenses: Option<serde_json::Value>,
    pub images: Vec<CocoImage>,
    #[serde(default)]
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

impl CocoFile {
    /// Reads and validates: unique image and category ids, annotations pointing at known
    /// images and categories, finite boxes of non-negative size.
    pub fn read(path: impl AsRef<Path>) -> Result<CocoFile> {
        let path = path.as_ref();
        let f: CocoFile = io::read_json(path)?;
        f.validate(path)?;
        Ok(f)
    }

    /// Parses and validates instances JSON bytes; `path` names them in errors.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<CocoFile> {
        let f: CocoFile = io::parse_json(bytes, path)?;
        f.validate(path)?;
        Ok(f)
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        let mut images = HashMap::new();
        for im in &self.images {
            let item = || format!("image id {}", im.id);
            if images.insert(im.id, im).is_some() {
                return Err(Error::invalid(path, item(), "duplicate image id"));
            }
            let pixels = (im.width as u64).checked_mul(im.height as u64);
            if pixels.is_none_or(|p| p > io::MAX_IMAGE_PIXELS) {
                return Err(Error::invalid(
                    path,
                    item(),
                    format!(
                        "declares {}x{}, more than the {} pixels allowed",
                        im.width,
                        im.height,
                        io::MAX_IMAGE_PIXELS
                    ),
                ));
            }
        }
        let mut cats = HashMap::new();
        for c in &self.categories {
            if cats.insert(c.id, c).is_some() {
                return Err(Error::invalid(
                    path,
                    format!("category id {}", c.id),
                    "duplicate category id",
                ));
            }
        }
        for a in &self.annotations {
            let item = || format!("annotation id {}", a.id);
            if !images.contains_key(&a.image_id) {
                return Err(Error::invalid(
                    path,
                    item(),
                    format!("unknown image id {}", a.image_id),
                ));
            }
            if !cats.contains_key(&a.category_id) {
                return Err(Error::invalid(
                    path,
                    item(),
                    format!("unknown category id {}", a.category_id),
                ));
            }
            let [_, _, w, h] = a.bbox;
            if a.bbox.iter().any(|v| !v.is_finite()) {
                return Err(Error::invalid(
                    path,
                    item(),
                    format!("bbox {:?} is not finite", a.bbox),
                ));
            }
            if w < 0.0 || h < 0.0 {
                return Err(Error::invalid(
                    path,
                    item(),
                    format!("bbox {:?} has negative size", a.bbox),
                ));
            }
            if !a.area.is_finite() || a.area < 0.0 {
                return Err(Error::invalid(
                    path,
                    item(),
                    format!("area {} is not a finite non-negative number", a.area),
                ));
            }
        }
        Ok(())
    }

    /// Writes the file atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        io::write_json_atomic(path, self)
    }

    /// Ground truth for a set of samples: category `i + 1` for train id `i`, RLE masks when
    /// the samples carry them (area = mask area), else box areas.
    pub fn from_samples(samples: &[Sample], class_names: &[String]) -> CocoFile {
        let mut f = CocoFile {
            categories: class_names
                .iter()
                .enumerate()
                .map(|(i, n)| CocoCategory {
                    id: i as u64 + 1,
                    name: n.clone(),
                    supercategory: None,
                })
                .collect(),
            ..Default::default()
        };
        for s in samples {
            let file_name = match &s.source {
                Some(p) => p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                None => format!("{:06}.png", s.image_id),
            };
            f.images.push(CocoImage {
                id: s.image_id,
                file_name,
                width: s.width(),
                height: s.height(),
            });
            for (j, b) in s.boxes.iter().enumerate() {
                let rle = s.masks.as_ref().map(|m| Rle::from_plane(&m[j]));
                let bbox = xyxy_to_xywh(*b);
                let area = match &rle {
                    Some(r) => r.area() as f64,
                    None => bbox[2] * bbox[3],
                };
                f.annotations.push(CocoAnnotation {
                    id: f.annotations.len() as u64 + 1,
                    image_id: s.image_id,
                    category_id: s.classes[j] as u64 + 1,
                    bbox,
                    area,
                    iscrowd: Flag::Int(s.crowd[j] as i64),
                    segmentation: rle.map(|r| Segmentation::Rle {
                        size: [r.height, r.width],
                        counts: RleCounts::Compressed(r.to_compressed()),
                    }),
                });
            }
        }
        f
    }

    /// COCO category ids in ascending order; the position is the contiguous train id.
    pub fn category_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.categories.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }
}

/// Contiguous train ids (0..K) <-> COCO category ids, ordered by COCO id as detectron2 does.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoryMap {
    pub coco_ids: Vec<u64>,
    pub names: Vec<String>,
    index: HashMap<u64, u32>,
}

impl CategoryMap {
    pub fn new(categories: &[CocoCategory]) -> Self {
        let mut cats: Vec<&CocoCategory> = categories.iter().collect();
        cats.sort_by_key(|c| c.id);
        let coco_ids: Vec<u64> = cats.iter().map(|c| c.id).collect();
        let names = cats.iter().map(|c| c.name.clone()).collect();
        let index = coco_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        CategoryMap {
            coco_ids,
            names,
            index,
        }
    }
    pub fn to_train(&self, coco_id: u64) -> Option<u32> {
        self.index.get(&coco_id).copied()
    }
    pub fn to_coco(&self, train_id: u32) -> Option<u64> {
        self.coco_ids.get(train_id as usize).copied()
    }
    pub fn len(&self) -> usize {
        self.coco_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.coco_ids.is_empty()
    }
}

/// Decodes an annotation's segmentation to a 0/1 mask of the image size.
pub fn decode_segmentation(
    seg: &Segmentation,
    height: usize,
    width: usize,
) -> std::result::Result<Plane, String> {
    match seg {
        Segmentation::Polygons(polys) => {
            for p in polys {
                if p.len() < 6 || p.len() % 2 != 0 {
                    return Err(format!(
                        "a polygon needs an even number (>= 6) of coordinates, found {}",
                        p.len()
                    ));
                }
                if p.iter().any(|v| !v.is_finite()) {
                    return Err("a polygon has a non-finite coordinate".into());
                }
            }
            let planes: std::result::Result<Vec<Plane>, String> = polys
                .iter()
                .map(|p| Rle::from_polygon(p, height, width)?.to_plane())
                .collect();
            Ok(mask::union(planes?).unwrap_or_else(|| Plane::new(width, height, 0)))
        }
        Segmentation::Rle { counts, size } => {
            let [h, w] = *size;
            if (h, w) != (height, width) {
                return Err(format!(
                    "RLE size {h}x{w} differs from the image size {height}x{width}"
                ));
            }
            let rle = match counts {
                RleCounts::Uncompressed(c) => Rle {
                    height: h,
                    width: w,
                    counts: c.clone(),
                },
                RleCounts::Compressed(s) => Rle::from_compressed(s, h, w)?,
            };
            rle.to_plane()
        }
    }
}

/// A COCO instances file with its image folder, as a [`Dataset`].
pub struct CocoDataset {
    pub path: PathBuf,
    pub image_root: PathBuf,
    pub file: CocoFile,
    pub categories: CategoryMap,
    /// Annotation indices per image, in file order.
    per_image: Vec<Vec<usize>>,
    /// Decode instance masks too (slower).
    pub load_masks: bool,
}

impl CocoDataset {
    pub fn open(path: impl AsRef<Path>, image_root: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = CocoFile::read(&path)?;
        Ok(Self::new(path, image_root.as_ref(), file))
    }

    /// A validated instances file (read from `path`) with its image folder.
    pub fn new(path: PathBuf, image_root: &Path, file: CocoFile) -> Self {
        let categories = CategoryMap::new(&file.categories);
        let pos: HashMap<u64, usize> = file
            .images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.id, i))
            .collect();
        let mut per_image = vec![Vec::new(); file.images.len()];
        for (k, a) in file.annotations.iter().enumerate() {
            per_image[pos[&a.image_id]].push(k);
        }
        CocoDataset {
            path,
            image_root: image_root.to_path_buf(),
            file,
            categories,
            per_image,
            load_masks: false,
        }
    }

    pub fn with_masks(mut self, on: bool) -> Self {
        self.load_masks = on;
        self
    }

    /// Boxes, classes, crowd flags and (optionally) masks of one image, without reading it.
    pub fn targets(&self, index: usize, sample: &mut Sample) -> Result<()> {
        let im = &self.file.images[index];
        let mask_bytes = (self.per_image[index].len() as u64)
            .saturating_mul(im.width as u64)
            .saturating_mul(im.height as u64);
        if self.load_masks && mask_bytes > MAX_MASK_BYTES {
            return Err(Error::invalid(
                &self.path,
                format!("image id {}", im.id),
                format!(
                    "{} masks of {}x{} need {mask_bytes} bytes, more than the {MAX_MASK_BYTES} allowed",
                    self.per_image[index].len(),
                    im.width,
                    im.height
                ),
            ));
        }
        let mut masks = Vec::new();
        for &k in &self.per_image[index] {
            let a = &self.file.annotations[k];
            let [x, y, w, h] = a.bbox;
            sample.boxes.push(xywh_to_xyxy(a.bbox));
            sample
                .classes
                .push(self.categories.to_train(a.category_id).expect("validated"));
            sample.crowd.push(a.iscrowd.is_set());
            if self.load_masks {
                let m = match &a.segmentation {
                    Some(seg) => decode_segmentation(seg, im.height, im.width).map_err(|e| {
                        Error::invalid(&self.path, format!("annotation id {}", a.id), e)
                    })?,
                    None => box_mask([x, y, w, h], im.width, im.height),
                };
                masks.push(m);
            }
        }
        if self.load_masks {
            sample.masks = Some(masks);
        }
        Ok(())
    }
}

/// Masks of one image may take this many bytes together (one byte a pixel each).
pub const MAX_MASK_BYTES: u64 = 4 << 30;

/// The mask of an annotation without a segmentation: its box, clipped to the image.
fn box_mask([x, y, w, h]: [f64; 4], width: usize, height: usize) -> Plane {
    let mut p = Plane::new(width, height, 0);
    let (x0, y0) = ((x.max(0.0) as usize).min(width), y.max(0.0) as usize);
    let (x1, y1) = (
        ((x + w).ceil() as usize).clamp(x0, width),
        ((y + h).ceil() as usize).min(height),
    );
    for yy in y0..y1 {
        p.data[yy * width + x0..yy * width + x1].fill(1);
    }
    p
}

impl Dataset for CocoDataset {
    fn len(&self) -> usize {
        self.file.images.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let im = &self.file.images[index];
        let img_path = self.image_root.join(&im.file_name);
        let image = io::read_image(&img_path)?;
        if (image.width, image.height) != (im.width, im.height) {
            return Err(Error::invalid(
                &img_path,
                format!("image id {}", im.id),
                format!(
                    "is {}x{} but {} declares {}x{}",
                    image.width,
                    image.height,
                    self.path.display(),
                    im.width,
                    im.height
                ),
            ));
        }
        let mut s = Sample::new(image);
        s.image_id = im.id;
        s.source = Some(img_path);
        self.targets(index, &mut s)?;
        Ok(s)
    }

    fn class_names(&self) -> Vec<String> {
        self.categories.names.clone()
    }
}

/// One detection of a COCO results file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CocoDetection {
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<Segmentation>,
}

impl CocoDetection {
    /// A detection from a pixel `[x1, y1, x2, y2]` box.
    pub fn from_xyxy(image_id: u64, category_id: u64, b: [f32; 4], score: f32) -> Self {
        CocoDetection {
            image_id,
            category_id,
            bbox: xyxy_to_xywh(b),
            score: score as f64,
            segmentation: None,
        }
    }

    /// The box as pixel `[x1, y1, x2, y2]`.
    pub fn xyxy(&self) -> [f32; 4] {
        xywh_to_xyxy(self.bbox)
    }
}

/// Pixel `[x1, y1, x2, y2]` -> COCO `[x, y, w, h]`; in f64, so the round trip through
/// [`xywh_to_xyxy`] gives the same f32 corners back.
pub fn xyxy_to_xywh(b: [f32; 4]) -> [f64; 4] {
    let [x1, y1, x2, y2] = b.map(|v| v as f64);
    [x1, y1, x2 - x1, y2 - y1]
}

/// COCO `[x, y, w, h]` -> pixel `[x1, y1, x2, y2]`.
pub fn xywh_to_xyxy(b: [f64; 4]) -> [f32; 4] {
    let [x, y, w, h] = b;
    [x as f32, y as f32, (x + w) as f32, (y + h) as f32]
}

/// Reads a COCO results file (a JSON array of detections).
pub fn read_results(path: impl AsRef<Path>) -> Result<Vec<CocoDetection>> {
    let path = path.as_ref();
    parse_results(&io::read_json_bytes(path)?, path)
}

/// Parses and checks results JSON bytes; `path` names them in errors.
pub fn parse_results(bytes: &[u8], path: &Path) -> Result<Vec<CocoDetection>> {
    let dets: Vec<CocoDetection> = io::parse_json(bytes, path)?;
    for (i, d) in dets.iter().enumerate() {
        if d.bbox.iter().any(|v| !v.is_finite()) || !d.score.is_finite() {
            return Err(Error::invalid(
                path,
                format!("detection {i}"),
                "non-finite bbox or score",
            ));
        }
        if d.bbox[2] < 0.0 || d.bbox[3] < 0.0 {
            return Err(Error::invalid(
                path,
                format!("detection {i}"),
                format!("bbox {:?} has negative size", d.bbox),
            ));
        }
    }
    Ok(dets)
}

/// Writes a COCO results file atomically.
pub fn write_results(path: impl AsRef<Path>, dets: &[CocoDetection]) -> Result<()> {
    // Compact: results files are large.
    let bytes = serde_json::to_vec(dets)
        .map_err(|e| Error::Other(format!("cannot serialise results: {e}")))?;
    io::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_map_is_sorted_by_coco_id() {
        let cats = vec![
            CocoCategory {
                id: 76,
                name: "b".into(),
                supercategory: None,
            },
            CocoCategory {
                id: 3,
                name: "a".into(),
                supercategory: None,
            },
            CocoCategory {
                id: 90,
                name: "c".into(),
                supercategory: None,
            },
        ];
        let m = CategoryMap::new(&cats);
        assert_eq!(m.to_train(3), Some(0));
        assert_eq!(m.to_train(76), Some(1));
        assert_eq!(m.to_coco(2), Some(90));
        assert_eq!(m.to_train(4), None);
        assert_eq!(m.names, vec!["a", "b", "c"]);
    }
}
