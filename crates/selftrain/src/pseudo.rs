//! Pseudo-labeling: a teacher labels an unlabeled source in shards that run as independent
//! processes (any batch scheduler can fan them out), each written atomically so an
//! interrupted job resumes without redoing or duplicating work; shards merge into one set.
//! The teacher's [`crate::task::Task`] turns its views of each batch into labels: boxes
//! scoring at least the threshold (detection) or the per-pixel argmax where the confidence
//! reaches it, else 255 (segmentation).
use crate::config::{TaskKind, TrainConfig};
use crate::data::{eval_transform, unlabeled_source};
use crate::error::{bail, Error, Result};
use crate::model::Loaded;
pub use crate::task::PseudoOptions;
use crate::task::PseudoViews;
use candle_core::Device;
use pupil_augment::geometric::flip_image;
use pupil_data::batch::{collate, Batch, BatchConfig};
use pupil_data::coco::{CocoCategory, CocoDetection, CocoFile, CocoImage};
use pupil_data::dataset::{Loader, LoaderConfig, Subset};
use pupil_data::{io, Dataset, Sample};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The teacher and options that made it; a shard made otherwise is labeled again.
    #[serde(default)]
    pub labeled_with: LabeledWith,
    /// Source images that could not be read, left out with a warning.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

/// A source image left out of pseudo-labeling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Position in the unlabeled source.
    pub index: usize,
    pub error: String,
}

/// What decides a shard's labels: the teacher file (by size and CRC-32, so a moved file
/// still matches and a retrained one does not), the source and the labeling options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabeledWith {
    pub teacher_bytes: u64,
    pub teacher_crc32: u32,
    pub source: String,
    pub score_threshold: f64,
    pub keep_from: f64,
    pub flip: bool,
    pub scales: Vec<f64>,
}

impl LabeledWith {
    fn new(job: &Labeling, opts: &PseudoOptions) -> Self {
        LabeledWith {
            teacher_bytes: job.teacher_file.0,
            teacher_crc32: job.teacher_file.1,
            source: job.source_name.to_string(),
            score_threshold: opts.score_threshold,
            keep_from: opts.keep_from,
            flip: opts.flip,
            scales: opts.scales.clone(),
        }
    }
}

/// The manifest of a pseudo-label folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub teacher: String,
    pub source: String,
    pub task: String,
    pub score_threshold: f64,
    /// Detection: the shards keep teacher boxes down to this score (for the quality report
    /// and ignore regions); absent in folders written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_from: Option<f64>,
    pub categories: Vec<CocoCategory>,
    pub shards: usize,
    /// Shards labeled with `labeled_with`; others are not merged.
    pub done: Vec<usize>,
    pub images: usize,
    pub labels: usize,
    pub per_class: Vec<usize>,
    #[serde(default)]
    pub labeled_with: LabeledWith,
    /// Source images of the done shards that could not be read, and which.
    #[serde(default)]
    pub skipped: usize,
    #[serde(default)]
    pub skipped_images: Vec<Skipped>,
}

pub fn shard_path(out: &Path, i: usize, n: usize) -> PathBuf {
    out.join(format!("shard-{i:05}-of-{n:05}.json"))
}

/// The images of shard `i` of `n`: a contiguous range.
pub fn shard_range(len: usize, i: usize, n: usize) -> std::ops::Range<usize> {
    (i * len / n)..((i + 1) * len / n)
}

/// The teacher's views of one batch: every (scale, flip) the options ask for.
fn views_of(
    originals: &[Sample],
    cfg: &crate::config::TrainConfig,
    opts: &PseudoOptions,
    device: &Device,
) -> Result<Vec<(Batch, bool)>> {
    let bc = BatchConfig {
        size_divisor: cfg.data.size_divisor,
        ..Default::default()
    };
    let flips: &[bool] = if opts.flip { &[false, true] } else { &[false] };
    let mut views = Vec::new();
    let one = [1.0];
    let scales = if opts.scales.is_empty() {
        &one[..]
    } else {
        &opts.scales
    };
    for &s in scales {
        let mut c = cfg.clone();
        c.augment.size = ((cfg.augment.size as f64) * s).round().max(32.0) as usize;
        let t = eval_transform(&c);
        for &flip in flips {
            let mut v = Vec::with_capacity(originals.len());
            for s in originals {
                let mut s = s.clone();
                if flip {
                    flip_image(&mut s.image);
                }
                v.push(t(s, &mut pupil_data::Rng::new(0))?);
            }
            views.push((collate(&v, &bc, device)?, flip));
        }
    }
    Ok(views)
}

fn image_entry(s: &Sample, source_name: &str) -> CocoImage {
    let file_name = match &s.source {
        Some(p) => p.to_string_lossy().into_owned(),
        None => format!("{source_name}/{:08}.png", s.image_id),
    };
    CocoImage {
        id: s.image_id,
        file_name,
        width: s.width(),
        height: s.height(),
    }
}

/// Who labels what: the teacher (and its file) and the unlabeled source, with the name
/// the manifest records.
pub struct Labeling<'a> {
    pub teacher: &'a Loaded,
    pub teacher_path: &'a Path,
    pub source: Arc<dyn Dataset>,
    pub source_name: &'a str,
    /// The teacher file's size and CRC-32, read once for every shard of the job.
    teacher_file: (u64, u32),
}

impl<'a> Labeling<'a> {
    pub fn new(
        teacher: &'a Loaded,
        teacher_path: &'a Path,
        source: Arc<dyn Dataset>,
        source_name: &'a str,
    ) -> Result<Self> {
        let bytes = std::fs::read(teacher_path)
            .map_err(|e| Error::msg(format!("{}: {e}", teacher_path.display())))?;
        Ok(Labeling {
            teacher,
            teacher_path,
            source,
            source_name,
            teacher_file: (bytes.len() as u64, crc32fast::hash(&bytes)),
        })
    }
}

/// Labels shard `opts.shard` of the source with the teacher; returns the shard (also written
/// to `out`), or the existing one when it was labeled the same way. Unreadable images are
/// skipped with a warning and listed in the shard.
pub fn label_shard(
    job: &Labeling,
    out: &Path,
    opts: &PseudoOptions,
    device: &Device,
) -> Result<Shard> {
    let (i, n) = opts.shard;
    if n == 0 || i >= n {
        bail!("shard {i}/{n}: need 0 <= I < N")
    }
    std::fs::create_dir_all(out).map_err(|e| Error::msg(format!("{}: {e}", out.display())))?;
    let path = shard_path(out, i, n);
    let with = LabeledWith::new(job, opts);
    io::remove_stale_temporaries(out)?;
    io::remove_stale_temporaries(&out.join("labels"))?;
    if let Some(s) = existing_shard(&path, &with) {
        update_manifest(out, job, &with, n)?;
        return Ok(s);
    }
    let shard = label_range(job, (out, device), opts, with.clone())?;
    let bytes = serde_json::to_vec(&shard).map_err(Error::msg)?;
    io::write_atomic(&path, &bytes)?;
    update_manifest(out, job, &with, n)?;
    Ok(shard)
}

/// The shard already at `path` if it was labeled `with` this teacher and these options.
fn existing_shard(path: &Path, with: &LabeledWith) -> Option<Shard> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<Shard>(&bytes) {
        Ok(s) if s.labeled_with == *with => Some(s),
        Ok(_) => {
            eprintln!(
                "{}: labeled by another teacher or with other options; labeling it again",
                path.display()
            );
            None
        }
        Err(e) => {
            eprintln!("{}: unreadable ({e}); labeling it again", path.display());
            None
        }
    }
}

/// Runs the teacher over the shard's slice of the source, one batch at a time.
fn label_range(
    job: &Labeling,
    (out, device): (&Path, &Device),
    opts: &PseudoOptions,
    with: LabeledWith,
) -> Result<Shard> {
    let (i, n) = opts.shard;
    let range = shard_range(job.source.len(), i, n);
    let mut shard = Shard {
        shard: i,
        of: n,
        images: vec![],
        detections: vec![],
        label_maps: HashMap::new(),
        labeled_with: with,
        skipped: vec![],
    };
    let part: Arc<dyn Dataset> = Arc::new(Subset {
        inner: job.source.clone(),
        indices: range.clone().collect(),
    });
    let bs = opts.batch_size.max(1);
    // One image a loader batch, so a bad file costs only itself.
    let loader = Loader::new(
        part,
        LoaderConfig {
            batch_size: 1,
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 2 * bs,
        },
    );
    let mut batch = Vec::with_capacity(bs);
    for (k, b) in loader.epoch(0).enumerate() {
        match b {
            Ok(mut one) => batch.append(&mut one),
            Err(e) => {
                eprintln!("WARNING: skipping an unreadable image: {e}");
                shard.skipped.push(Skipped {
                    index: range.start + k,
                    error: e.to_string(),
                });
            }
        }
        if batch.len() == bs || (k + 1 == range.len() && !batch.is_empty()) {
            label_batch(
                job,
                (out, device),
                opts,
                std::mem::take(&mut batch),
                &mut shard,
            )?;
        }
    }
    if shard.images.is_empty() && !shard.skipped.is_empty() {
        bail!(
            "shard {i}/{n}: none of its {} images could be read (first: {})",
            shard.skipped.len(),
            shard.skipped[0].error
        )
    }
    Ok(shard)
}

fn label_batch(
    job: &Labeling,
    (out, device): (&Path, &Device),
    opts: &PseudoOptions,
    originals: Vec<Sample>,
    shard: &mut Shard,
) -> Result<()> {
    shard
        .images
        .extend(originals.iter().map(|s| image_entry(s, job.source_name)));
    let views = views_of(&originals, &job.teacher.config, opts, device)?;
    let v = PseudoViews { originals, views };
    let labels = job.teacher.task.pseudo_label(&v, opts, out)?;
    shard.detections.extend(labels.detections);
    shard.label_maps.extend(labels.label_maps);
    Ok(())
}

fn update_manifest(out: &Path, job: &Labeling, with: &LabeledWith, n: usize) -> Result<Manifest> {
    let teacher = job.teacher;
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
        teacher: job.teacher_path.display().to_string(),
        source: job.source_name.to_string(),
        task: teacher.config.task.name().to_string(),
        score_threshold: with.score_threshold,
        keep_from: Some(with.keep_from.min(with.score_threshold)),
        categories,
        shards: n,
        done: vec![],
        images: 0,
        labels: 0,
        per_class: vec![0; teacher.class_names.len()],
        labeled_with: with.clone(),
        skipped: 0,
        skipped_images: vec![],
    };
    for i in 0..n {
        let Ok(bytes) = std::fs::read(shard_path(out, i, n)) else {
            continue;
        };
        match serde_json::from_slice::<Shard>(&bytes) {
            Ok(s) if s.labeled_with == *with => count_shard(&mut m, s),
            _ => continue,
        }
    }
    io::write_json_atomic(out.join("manifest.json"), &m)?;
    Ok(m)
}

fn count_shard(m: &mut Manifest, s: Shard) {
    m.done.push(s.shard);
    m.images += s.images.len();
    for d in s.detections.iter().filter(|d| d.score >= m.score_threshold) {
        m.labels += 1;
        let c = (d.category_id as usize).checked_sub(1);
        if let Some(c) = c.and_then(|c| m.per_class.get_mut(c)) {
            *c += 1;
        }
    }
    m.labels += s.label_maps.len();
    m.skipped += s.skipped.len();
    m.skipped_images.extend(s.skipped);
}

/// All shards of a folder merged; fails if one is missing or was labeled otherwise than
/// the manifest says.
pub fn merge(out: &Path) -> Result<(Manifest, Shard)> {
    let m: Manifest = io::read_json(out.join("manifest.json"))?;
    let mut all = merged(out, &m, false)?;
    all.images.sort_by_key(|i| i.id);
    Ok((m, all))
}

/// The shards of `m` that have no file in `out`.
pub fn missing_shards(out: &Path, m: &Manifest) -> Vec<usize> {
    (0..m.shards)
        .filter(|&i| !shard_path(out, i, m.shards).is_file())
        .collect()
}

/// The shards of a folder merged (`partial`: those done, else all of them or an error).
fn merged(out: &Path, m: &Manifest, partial: bool) -> Result<Shard> {
    let mut all = Shard {
        shard: 0,
        of: 1,
        images: vec![],
        detections: vec![],
        label_maps: HashMap::new(),
        labeled_with: m.labeled_with.clone(),
        skipped: vec![],
    };
    for i in 0..m.shards {
        let p = shard_path(out, i, m.shards);
        if partial && !p.is_file() {
            continue;
        }
        let s: Shard = io::read_json(&p)
            .map_err(|e| Error::msg(format!("shard {i} of {} is not done: {e}", m.shards)))?;
        if s.labeled_with != m.labeled_with {
            bail!(
                "{}: labeled by another teacher or with other options than {}",
                p.display(),
                out.join("manifest.json").display()
            )
        }
        check_categories(&s, m.categories.len(), &p)?;
        all.images.extend(s.images);
        all.detections.extend(s.detections);
        all.label_maps.extend(s.label_maps);
        all.skipped.extend(s.skipped);
    }
    all.images.sort_by_key(|i| i.id);
    Ok(all)
}

/// The manifest of a pseudo-label folder whose every shard is done; a folder with missing
/// shards is refused, naming them and the command that makes them.
pub fn complete(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    if !path.is_file() {
        bail!("{}: not a pseudo-label folder (no manifest.json; `pupil pseudo-label --out` writes one)", dir.display())
    }
    let m: Manifest = io::read_json(&path)?;
    let missing = missing_shards(dir, &m);
    if !missing.is_empty() {
        let names: Vec<String> = (missing.iter())
            .map(|&i| format!("{i} ({})", file_name(&shard_path(dir, i, m.shards))))
            .collect();
        bail!(
            "{}: {} of {} shards are missing: {}; run `pupil pseudo-label --shard I/{}` for each",
            dir.display(),
            missing.len(),
            m.shards,
            names.join(", "),
            m.shards
        )
    }
    Ok(m)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The shards done so far (previews of a folder still being labeled).
pub fn merge_done(dir: &Path) -> Result<(Manifest, Shard)> {
    let m: Manifest = io::read_json(dir.join("manifest.json"))?;
    let all = merged(dir, &m, true)?;
    Ok((m, all))
}

/// An existing pseudo-label folder (every shard done) as a student's pseudo-labeled set: its
/// source re-opened with `cfg`, hard labels at `cfg.selftrain.score_threshold` and ignore
/// regions from `ignore_from`, as a fresh labeling would give them.
pub fn labeled_folder(dir: &Path, cfg: &TrainConfig) -> Result<(Manifest, PseudoLabeled)> {
    let m = complete(dir)?;
    if m.task != cfg.task.name() {
        bail!(
            "{}: labels for {}, not for a {} student",
            dir.display(),
            m.task,
            cfg.task.name()
        )
    }
    let st = &cfg.selftrain;
    let lo = st
        .ignore_from
        .unwrap_or(st.score_threshold)
        .min(st.score_threshold);
    let keep = m.keep_from.unwrap_or(m.score_threshold.min(0.1));
    if cfg.task == TaskKind::Segmentation && st.score_threshold != m.score_threshold {
        bail!("{}: the label maps were cut at confidence {}; selftrain.score_threshold = {} cannot apply to them", dir.display(), m.score_threshold, st.score_threshold)
    }
    if cfg.task == TaskKind::Detection && lo < keep - 1e-12 {
        bail!("{}: the shards keep teacher boxes from score {keep}; selftrain.score_threshold or ignore_from = {lo} would need lower ones", dir.display())
    }
    let source = unlabeled_source(cfg, &m.source)?;
    let all = merged(dir, &m, false)?;
    if all.images.len() != source.len() {
        bail!(
            "{}: the shards label {} images but its source {} has {}",
            dir.display(),
            all.images.len(),
            m.source,
            source.len()
        )
    }
    let ds = PseudoLabeled::new(source, dir, &m, &all, st.score_threshold, st.ignore_from);
    Ok((m, ds))
}

/// Every detection's category id is one of the manifest's `1..=k`.
fn check_categories(s: &Shard, k: usize, path: &Path) -> Result<()> {
    match s
        .detections
        .iter()
        .position(|d| d.category_id == 0 || d.category_id as usize > k)
    {
        Some(j) => bail!(
            "{}: detection {j}: category id {} is not one of the {k} categories",
            path.display(),
            s.detections[j].category_id
        ),
        None => Ok(()),
    }
}

/// Merges the shards of a folder into `pseudo.json` once every shard is done; `None`
/// while some are missing (a `pseudo.json` of earlier labels is then removed: it is stale).
pub fn write_merged(out: &Path) -> Result<Option<(Manifest, Shard)>> {
    let Ok((m, all)) = merge(out) else {
        let stale = out.join("pseudo.json");
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                bail!("{}: {e}", stale.display())
            }
            _ => return Ok(None),
        }
    };
    io::write_json_atomic(out.join("pseudo.json"), &to_coco(&m, &all))?;
    Ok(Some((m, all)))
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

/// The teachers' rule for one box, offline and online alike: `Some(false)` a label (score at
/// least `threshold`), `Some(true)` an ignore region (score in `[ignore_from, threshold)`),
/// `None` dropped.
pub fn label_kind(score: f64, threshold: f64, ignore_from: Option<f64>) -> Option<bool> {
    let lo = ignore_from.unwrap_or(threshold).min(threshold);
    (score >= lo).then_some(score < threshold)
}

/// The unlabeled source with the teacher's hard labels attached; images the teacher could
/// not read are left out.
pub struct PseudoLabeled {
    pub source: Arc<dyn Dataset>,
    /// Source positions of the images it holds.
    indices: Vec<usize>,
    /// Image id -> (boxes, classes, ignored) or label map.
    boxes: HashMap<u64, (Vec<[f32; 4]>, Vec<u32>, Vec<bool>)>,
    /// Image id -> the teacher's score of each box.
    scores: HashMap<u64, Vec<f32>>,
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
        let mut scores: HashMap<u64, Vec<f32>> = HashMap::new();
        for d in &shard.detections {
            let Some(crowd) = label_kind(d.score, threshold, ignore_from) else {
                continue;
            };
            let e = boxes.entry(d.image_id).or_default();
            e.0.push(d.xyxy());
            e.1.push(d.category_id as u32 - 1);
            e.2.push(crowd);
            scores.entry(d.image_id).or_default().push(d.score as f32);
        }
        let maps = shard
            .label_maps
            .iter()
            .map(|(k, v)| (*k, out.join(v)))
            .collect();
        let skipped: std::collections::HashSet<usize> =
            shard.skipped.iter().map(|s| s.index).collect();
        let indices = (0..source.len()).filter(|i| !skipped.contains(i)).collect();
        PseudoLabeled {
            source,
            indices,
            boxes,
            scores,
            maps,
            names: manifest.categories.iter().map(|c| c.name.clone()).collect(),
            threshold,
        }
    }
    /// The teacher's scores of an image's boxes, in the order of its sample's boxes.
    pub fn scores(&self, image_id: u64) -> &[f32] {
        self.scores.get(&image_id).map_or(&[], Vec::as_slice)
    }

    pub fn num_label_maps(&self) -> usize {
        self.maps.len()
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
        self.indices.len()
    }
    fn get(&self, i: usize) -> pupil_data::Result<Sample> {
        let mut s = self.source.get(self.indices[i])?;
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

/// Which labels (box, class), taken in order (highest score first), match a true box of
/// their class at IoU >= 0.5 not matched before; `used` marks the true boxes taken.
pub fn match_truth(labels: &[([f32; 4], usize)], gt: &Sample, used: &mut [bool]) -> Vec<bool> {
    labels
        .iter()
        .map(|(b, c)| {
            let best = (0..gt.boxes.len())
                .filter(|&g| !used[g] && gt.classes[g] as usize == *c)
                .map(|g| (pupil_heads::boxes::iou(b, &gt.boxes[g]), g))
                .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
            match best {
                Some((o, g)) if o >= 0.5 => {
                    used[g] = true;
                    true
                }
                _ => false,
            }
        })
        .collect()
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
            let labels: Vec<([f32; 4], usize)> = dets
                .iter()
                .map(|d| (d.xyxy(), d.category_id as usize - 1))
                .collect();
            for ((_, c), hit) in labels.iter().zip(match_truth(&labels, gt, &mut used)) {
                np[*c] += 1;
                np[k] += 1;
                tp[*c] += hit as usize;
                tp[k] += hit as usize;
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

/// Quality of pseudo label maps against the truth, one row at the threshold they were made
/// with: `precision` is the share of labeled (non-255) pseudo pixels with the true class,
/// `recall` the share of all pixels that got their true class; `boxes` counts labeled pixels.
pub fn map_quality(
    out: &Path,
    shard: &Shard,
    truth: &dyn Dataset,
    threshold: f64,
) -> pupil_data::Result<Vec<QualityRow>> {
    let (mut kept, mut right, mut all) = (0usize, 0usize, 0usize);
    for im in &shard.images {
        let Some(rel) = shard.label_maps.get(&im.id) else {
            continue;
        };
        let pseudo = io::read_label_png(out.join(rel))?;
        let t = truth.get(im.id as usize - 1)?;
        let Some(gt) = t.label_map else { continue };
        for (&p, &g) in pseudo.data.iter().zip(&gt.data) {
            if g == pupil_data::IGNORE {
                continue;
            }
            all += 1;
            if p != pupil_data::IGNORE {
                kept += 1;
                right += (p == g) as usize;
            }
        }
    }
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(vec![QualityRow {
        threshold,
        class: "all".into(),
        precision: share(right, kept),
        recall: share(right, all),
        boxes: kept,
    }])
}
