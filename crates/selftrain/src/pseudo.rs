//! Pseudo-labeling: a teacher labels an unlabeled source in shards that run as independent
//! processes (any batch scheduler can fan them out), each written atomically so an
//! interrupted job resumes without redoing or duplicating work; shards merge into one set.
//! Detection keeps boxes scoring at least the threshold as hard labels; segmentation keeps the
//! per-pixel argmax where the confidence reaches the threshold, else 255.
use crate::data::eval_transform;
use crate::model::{Loaded, Model};
use candle_core::{Device, Result};
use pupil_data::batch::{collate, BatchConfig};
use pupil_data::coco::{CocoCategory, CocoDetection, CocoFile, CocoImage};
use pupil_data::dataset::{Loader, LoaderConfig};
use pupil_data::{io, Dataset, Plane, Sample, IGNORE};
use pupil_heads::boxes::batched_nms;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn err(m: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(m.to_string())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PseudoOptions {
    pub score_threshold: f64,
    /// Detections down to this score are kept in the shards (for the quality report); the
    /// student uses only those at or above `score_threshold`.
    pub keep_from: f64,
    /// Shard `index` of `count` (0-based).
    pub shard: (usize, usize),
    /// Also run the teacher on the mirrored image and merge.
    pub flip: bool,
    /// Extra inference scales (multiples of the training size), merged with scale 1.
    pub scales: Vec<f64>,
    pub batch_size: usize,
}

impl Default for PseudoOptions {
    fn default() -> Self {
        PseudoOptions {
            score_threshold: 0.5,
            keep_from: 0.1,
            shard: (0, 1),
            flip: false,
            scales: vec![],
            batch_size: 16,
        }
    }
}

/// One shard's output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shard {
    pub shard: usize,
    pub of: usize,
    pub images: Vec<CocoImage>,
    pub detections: Vec<CocoDetection>,
    /// Segmentation: label map file (relative to the output folder) per image id.
    #[serde(default)]
    pub label_maps: HashMap<u64, String>,
}

/// The manifest of a pseudo-label folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub teacher: String,
    pub source: String,
    pub task: String,
    pub score_threshold: f64,
    pub categories: Vec<CocoCategory>,
    pub shards: usize,
    pub done: Vec<usize>,
    pub images: usize,
    pub labels: usize,
    pub per_class: Vec<usize>,
}

pub fn shard_path(out: &Path, i: usize, n: usize) -> PathBuf {
    out.join(format!("shard-{i:05}-of-{n:05}.json"))
}

/// The images of shard `i` of `n`: a contiguous range.
pub fn shard_range(len: usize, i: usize, n: usize) -> std::ops::Range<usize> {
    (i * len / n)..((i + 1) * len / n)
}

fn flip_sample(s: &Sample) -> Sample {
    let mut f = s.clone();
    let (w, c) = (s.image.width, s.image.channels);
    for y in 0..s.image.height {
        for x in 0..w {
            let src = &s.image.data[(y * w + (w - 1 - x)) * c..(y * w + (w - 1 - x)) * c + c];
            let at = (y * w + x) * c;
            f.image.data[at..at + c].copy_from_slice(src);
        }
    }
    f
}

/// Labels shard `opts.shard` of `source` with the teacher; returns the shard (also written to
/// `out`), or the existing one when it is already there.
pub fn label_shard(
    teacher: &Loaded,
    teacher_name: &str,
    source: Arc<dyn Dataset>,
    source_name: &str,
    out: &Path,
    opts: &PseudoOptions,
    device: &Device,
) -> Result<Shard> {
    let (i, n) = opts.shard;
    if n == 0 || i >= n {
        return Err(err(format!("shard {i}/{n}: need 0 <= I < N")));
    }
    std::fs::create_dir_all(out).map_err(|e| err(format!("{}: {e}", out.display())))?;
    let path = shard_path(out, i, n);
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(s) = serde_json::from_slice::<Shard>(&bytes) {
            update_manifest(out, teacher, teacher_name, source_name, opts, n)?;
            return Ok(s);
        }
    }
    let range = shard_range(source.len(), i, n);
    let part: Arc<dyn Dataset> = Arc::new(crate::data::Subset {
        inner: source.clone(),
        indices: range.collect(),
    });
    let cfg = &teacher.config;
    let bc = BatchConfig {
        size_divisor: cfg.data.size_divisor,
        ..Default::default()
    };
    let mut shard = Shard {
        shard: i,
        of: n,
        images: vec![],
        detections: vec![],
        label_maps: HashMap::new(),
    };
    let sizes: Vec<usize> = std::iter::once(1.0)
        .chain(opts.scales.iter().copied())
        .map(|s| ((cfg.augment.size as f64) * s).round().max(32.0) as usize)
        .collect();
    let loader = Loader::new(
        part,
        LoaderConfig {
            batch_size: opts.batch_size.max(1),
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 2,
        },
    );
    for b in loader.epoch(0) {
        let originals = b.map_err(err)?;
        for s in &originals {
            let file_name = match &s.source {
                Some(p) => p.to_string_lossy().into_owned(),
                None => format!("{source_name}/{:08}.png", s.image_id),
            };
            shard.images.push(CocoImage {
                id: s.image_id,
                file_name,
                width: s.width(),
                height: s.height(),
            });
        }
        // every (scale, flip) view of the batch
        let mut views: Vec<(Vec<Sample>, bool)> = Vec::new();
        for &size in &sizes {
            let mut c = cfg.clone();
            c.augment.size = size;
            let t = eval_transform(&c);
            for flip in [false, true] {
                if flip && !opts.flip {
                    continue;
                }
                let mut v = Vec::new();
                for s in &originals {
                    let s = if flip { flip_sample(s) } else { s.clone() };
                    let mut rng = pupil_data::Rng::new(0);
                    v.push(t(s, &mut rng).map_err(err)?);
                }
                views.push((v, flip));
            }
        }
        match &teacher.model {
            Model::Detector(m) => {
                let mut all: Vec<Vec<(usize, [f32; 4], f32)>> = vec![Vec::new(); originals.len()];
                for (v, flip) in &views {
                    let batch = collate(v, &bc, device).map_err(err)?;
                    let dets = m.predict(&batch.images, &batch.info)?;
                    for (k, d) in dets.into_iter().enumerate() {
                        let w = originals[k].width() as f32;
                        for x in d {
                            let b = if *flip {
                                [w - x.bbox[2], x.bbox[1], w - x.bbox[0], x.bbox[3]]
                            } else {
                                x.bbox
                            };
                            all[k].push((x.class as usize, b, x.score));
                        }
                    }
                }
                for (k, dets) in all.into_iter().enumerate() {
                    let boxes: Vec<[f32; 4]> = dets.iter().map(|d| d.1).collect();
                    let scores: Vec<f32> = dets.iter().map(|d| d.2).collect();
                    let classes: Vec<usize> = dets.iter().map(|d| d.0).collect();
                    let keep = if views.len() > 1 {
                        batched_nms(&boxes, &scores, &classes, m.config.post.nms_iou)
                    } else {
                        (0..dets.len()).collect()
                    };
                    for j in keep {
                        if (scores[j] as f64) < opts.keep_from.min(opts.score_threshold) {
                            continue;
                        }
                        let b = boxes[j];
                        shard.detections.push(CocoDetection {
                            image_id: originals[k].image_id,
                            category_id: classes[j] as u64 + 1,
                            bbox: [
                                b[0] as f64,
                                b[1] as f64,
                                (b[2] - b[0]) as f64,
                                (b[3] - b[1]) as f64,
                            ],
                            score: scores[j] as f64,
                            segmentation: None,
                        });
                    }
                }
            }
            Model::Segmenter(m) => {
                // average the views' probabilities per pixel in original coordinates
                let mut acc: Vec<Option<(Vec<Vec<f32>>, usize)>> = vec![None; originals.len()];
                for (v, flip) in &views {
                    let batch = collate(v, &bc, device).map_err(err)?;
                    let probs = m.predict_probs(&batch.images, &batch.info)?;
                    for (k, p) in probs.into_iter().enumerate() {
                        let (w, h) = (originals[k].width(), originals[k].height());
                        let p: Vec<Vec<f32>> = if *flip {
                            p.into_iter()
                                .map(|ch| {
                                    (0..h * w)
                                        .map(|q| ch[(q / w) * w + (w - 1 - q % w)])
                                        .collect()
                                })
                                .collect()
                        } else {
                            p
                        };
                        match &mut acc[k] {
                            Some((a, c)) => {
                                for (x, y) in a.iter_mut().zip(&p) {
                                    for (u, v) in x.iter_mut().zip(y) {
                                        *u += v;
                                    }
                                }
                                *c += 1;
                            }
                            None => acc[k] = Some((p, 1)),
                        }
                    }
                }
                let labels_dir = out.join("labels");
                for (k, a) in acc.into_iter().enumerate() {
                    let (probs, count) = a.expect("at least one view");
                    let (w, h) = (originals[k].width(), originals[k].height());
                    let mut plane = Plane::new(w, h, IGNORE);
                    for q in 0..w * h {
                        let (mut best, mut arg) = (f32::MIN, 0usize);
                        for (c, ch) in probs.iter().enumerate() {
                            if ch[q] > best {
                                best = ch[q];
                                arg = c;
                            }
                        }
                        if (best / count as f32) as f64 >= opts.score_threshold {
                            plane.data[q] = arg as u8;
                        }
                    }
                    let rel = format!("labels/{:08}.png", originals[k].image_id);
                    io::write_label_png(
                        labels_dir.join(format!("{:08}.png", originals[k].image_id)),
                        &plane,
                    )
                    .map_err(err)?;
                    shard.label_maps.insert(originals[k].image_id, rel);
                }
            }
            Model::Classifier(_) => {
                return Err(err("pseudo-labeling needs a detector or a segmenter"))
            }
        }
    }
    let bytes = serde_json::to_vec(&shard).map_err(err)?;
    io::write_atomic(&path, &bytes).map_err(err)?;
    update_manifest(out, teacher, teacher_name, source_name, opts, n)?;
    Ok(shard)
}

fn update_manifest(
    out: &Path,
    teacher: &Loaded,
    teacher_name: &str,
    source: &str,
    opts: &PseudoOptions,
    n: usize,
) -> Result<Manifest> {
    let categories: Vec<CocoCategory> = teacher
        .class_names
        .iter()
        .enumerate()
        .map(|(i, c)| CocoCategory {
            id: i as u64 + 1,
            name: c.clone(),
            supercategory: None,
        })
        .collect();
    let mut m = Manifest {
        teacher: teacher_name.to_string(),
        source: source.to_string(),
        task: format!("{:?}", teacher.config.task).to_lowercase(),
        score_threshold: opts.score_threshold,
        categories,
        shards: n,
        done: vec![],
        images: 0,
        labels: 0,
        per_class: vec![0; teacher.class_names.len()],
    };
    for i in 0..n {
        let Ok(bytes) = std::fs::read(shard_path(out, i, n)) else {
            continue;
        };
        let Ok(s) = serde_json::from_slice::<Shard>(&bytes) else {
            continue;
        };
        m.done.push(i);
        m.images += s.images.len();
        for d in s
            .detections
            .iter()
            .filter(|d| d.score >= opts.score_threshold)
        {
            m.labels += 1;
            if let Some(c) = m.per_class.get_mut(d.category_id as usize - 1) {
                *c += 1;
            }
        }
        m.labels += s.label_maps.len();
    }
    io::write_json_atomic(out.join("manifest.json"), &m).map_err(err)?;
    Ok(m)
}

/// All shards of a folder merged; fails if one is missing.
pub fn merge(out: &Path) -> Result<(Manifest, Shard)> {
    let m: Manifest = io::read_json(out.join("manifest.json")).map_err(err)?;
    let mut all = Shard {
        shard: 0,
        of: 1,
        images: vec![],
        detections: vec![],
        label_maps: HashMap::new(),
    };
    for i in 0..m.shards {
        let p = shard_path(out, i, m.shards);
        let s: Shard = io::read_json(&p)
            .map_err(|e| err(format!("shard {i} of {} is not done: {e}", m.shards)))?;
        all.images.extend(s.images);
        all.detections.extend(s.detections);
        all.label_maps.extend(s.label_maps);
    }
    all.images.sort_by_key(|i| i.id);
    Ok((m, all))
}

/// The merged pseudo labels as a COCO instances file (boxes at or above the threshold).
pub fn to_coco(m: &Manifest, s: &Shard) -> CocoFile {
    let mut f = CocoFile {
        images: s.images.clone(),
        categories: m.categories.clone(),
        ..Default::default()
    };
    for d in s.detections.iter().filter(|d| d.score >= m.score_threshold) {
        f.annotations.push(pupil_data::coco::CocoAnnotation {
            id: f.annotations.len() as u64 + 1,
            image_id: d.image_id,
            category_id: d.category_id,
            bbox: d.bbox,
            area: d.bbox[2] * d.bbox[3],
            iscrowd: pupil_data::coco::Flag::Int(0),
            segmentation: None,
        });
    }
    f
}

/// The unlabeled source with the teacher's hard labels attached.
pub struct PseudoLabeled {
    pub source: Arc<dyn Dataset>,
    /// Source index -> (boxes, classes) or label map.
    boxes: HashMap<u64, (Vec<[f32; 4]>, Vec<u32>, Vec<bool>)>,
    maps: HashMap<u64, PathBuf>,
    names: Vec<String>,
    pub threshold: f64,
}

impl PseudoLabeled {
    /// Boxes at or above `threshold` become labels; with `ignore_from`, boxes scoring in
    /// [ignore_from, threshold) become ignore regions (crowd boxes).
    pub fn new(
        source: Arc<dyn Dataset>,
        out: &Path,
        manifest: &Manifest,
        shard: &Shard,
        threshold: f64,
        ignore_from: Option<f64>,
    ) -> Self {
        let mut boxes: HashMap<u64, (Vec<[f32; 4]>, Vec<u32>, Vec<bool>)> = HashMap::new();
        let lo = ignore_from.unwrap_or(threshold).min(threshold);
        for d in shard.detections.iter().filter(|d| d.score >= lo) {
            let e = boxes.entry(d.image_id).or_default();
            let b = d.bbox;
            e.0.push([
                b[0] as f32,
                b[1] as f32,
                (b[0] + b[2]) as f32,
                (b[1] + b[3]) as f32,
            ]);
            e.1.push(d.category_id as u32 - 1);
            e.2.push(d.score < threshold);
        }
        let maps = shard
            .label_maps
            .iter()
            .map(|(k, v)| (*k, out.join(v)))
            .collect();
        PseudoLabeled {
            source,
            boxes,
            maps,
            names: manifest.categories.iter().map(|c| c.name.clone()).collect(),
            threshold,
        }
    }
    pub fn num_boxes(&self) -> usize {
        self.boxes
            .values()
            .map(|b| b.2.iter().filter(|c| !**c).count())
            .sum()
    }
}

impl Dataset for PseudoLabeled {
    fn len(&self) -> usize {
        self.source.len()
    }
    fn get(&self, i: usize) -> pupil_data::Result<Sample> {
        let mut s = self.source.get(i)?;
        s.boxes.clear();
        s.classes.clear();
        s.crowd.clear();
        s.masks = None;
        if let Some((b, c, crowd)) = self.boxes.get(&s.image_id) {
            s.boxes = b.clone();
            s.classes = c.clone();
            s.crowd = crowd.clone();
        }
        if let Some(p) = self.maps.get(&s.image_id) {
            s.label_map = Some(io::read_label_png(p)?);
        }
        Ok(s)
    }
    fn class_names(&self) -> Vec<String> {
        self.names.clone()
    }
}

/// Precision and recall of pseudo boxes against the truth (IoU >= 0.5, same class), per
/// class and score threshold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QualityRow {
    pub threshold: f64,
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub boxes: usize,
}

pub fn quality(
    shard: &Shard,
    truth: &dyn Dataset,
    names: &[String],
    thresholds: &[f64],
) -> pupil_data::Result<Vec<QualityRow>> {
    let mut by_image: HashMap<u64, Vec<&CocoDetection>> = HashMap::new();
    for d in &shard.detections {
        by_image.entry(d.image_id).or_default().push(d);
    }
    let ids: Vec<u64> = shard.images.iter().map(|i| i.id).collect();
    let mut rows = Vec::new();
    let k = names.len();
    let truths: Vec<Sample> = ids
        .iter()
        .map(|&id| truth.get(id as usize - 1))
        .collect::<pupil_data::Result<_>>()?;
    for &t in thresholds {
        let (mut tp, mut np, mut ng) = (
            vec![0usize; k + 1],
            vec![0usize; k + 1],
            vec![0usize; k + 1],
        );
        for (id, gt) in ids.iter().zip(&truths) {
            let mut dets: Vec<&&CocoDetection> = by_image
                .get(id)
                .map(|v| v.iter().filter(|d| d.score >= t).collect())
                .unwrap_or_default();
            dets.sort_by(|a, b| {
                b.score
                    .partial_cmp(&a.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let mut used = vec![false; gt.boxes.len()];
            for c in &gt.classes {
                ng[*c as usize] += 1;
                ng[k] += 1;
            }
            for d in dets {
                let c = d.category_id as usize - 1;
                np[c] += 1;
                np[k] += 1;
                let b = [
                    d.bbox[0] as f32,
                    d.bbox[1] as f32,
                    (d.bbox[0] + d.bbox[2]) as f32,
                    (d.bbox[1] + d.bbox[3]) as f32,
                ];
                let best = (0..gt.boxes.len())
                    .filter(|&g| !used[g] && gt.classes[g] as usize == c)
                    .map(|g| (pupil_heads::boxes::iou(&b, &gt.boxes[g]), g))
                    .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
                if let Some((o, g)) = best {
                    if o >= 0.5 {
                        used[g] = true;
                        tp[c] += 1;
                        tp[k] += 1;
                    }
                }
            }
        }
        for c in 0..=k {
            rows.push(QualityRow {
                threshold: t,
                class: if c == k {
                    "all".into()
                } else {
                    names[c].clone()
                },
                precision: if np[c] == 0 {
                    0.0
                } else {
                    tp[c] as f64 / np[c] as f64
                },
                recall: if ng[c] == 0 {
                    0.0
                } else {
                    tp[c] as f64 / ng[c] as f64
                },
                boxes: np[c],
            });
        }
    }
    Ok(rows)
}
