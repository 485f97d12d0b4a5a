//! COCO bbox evaluation that reproduces pycocotools' `COCOeval(iouType='bbox')` (evaluate,
//! accumulate, summarize) number for number, in f64.
//!
//! Semantics kept on purpose (see the fixtures README, section 6):
//! * images are the GT images (ascending id), categories the GT categories (ascending id);
//!   detections of any other category are ignored. A detection on an image that is not in the
//!   GT is an error (pycocotools' `loadRes` asserts).
//! * GT `ignore` := `iscrowd`; area ranges are inclusive and use the GT `area` field, while a
//!   detection's area is its box `w*h` (as `loadRes` sets it).
//! * per (image, category) the detections are stably sorted by descending score (ties keep
//!   input order) and cut to the largest `maxDets`; matching, accumulation, the precision
//!   envelope, the recall-threshold sampling and the summary means follow pycocotools exactly,
//!   including its summation order (numpy's pairwise sum), so the stats agree to the last bit
//!   in practice.
//! * an empty detection list is evaluated (every category with GT gets AP 0), where
//!   pycocotools' `loadRes` would fail.
//! * a GT annotation with `id == 0` counts as "unmatched" once matched, as in pycocotools
//!   (it stores the matched GT id and tests it against 0).
//!
//! Work is split by category with rayon; each thread reuses its scratch buffers.
use super::{CategoryMap, CocoDetection, CocoFile};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// Names of [`EvalResult::stats`], in pycocotools' order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// Labels of [`EvalParams::area_rngs`].
pub const AREA_NAMES: [&str; 4] = ["all", "small", "medium", "large"];

/// pycocotools' `Params(iouType='bbox')`.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalParams {
    /// IoU thresholds (1 to 32 of them).
    pub iou_thrs: Vec<f64>,
    /// Recall thresholds at which precision is sampled.
    pub rec_thrs: Vec<f64>,
    /// Per-image detection limits (sorted before use; the largest also cuts the IoU matrix).
    pub max_dets: [usize; 3],
    /// Inclusive `[lo, hi]` area ranges for all, small, medium, large.
    pub area_rngs: [[f64; 2]; 4],
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            iou_thrs: linspace(0.5, 0.95, 10),
            rec_thrs: linspace(0.0, 1.0, 101),
            max_dets: [1, 10, 100],
            area_rngs: [[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]],
        }
    }
}

/// numpy's `linspace` arithmetic (`i * step + start`, last = stop), so thresholds are bit-equal.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// The outcome of an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    /// `COCOeval.stats`, named by [`STAT_NAMES`]; -1 where undefined.
    pub stats: [f64; 12],
    /// (COCO category id, name, AP@[.5:.95] for area all and the largest maxDets), by
    /// ascending id; -1 for a category without (non-crowd) GT.
    pub per_category: Vec<(u64, String, f64)>,
    /// `eval['precision']`, C order with shape [`EvalResult::shape`] = [T, R, K, A, M].
    pub precision: Vec<f64>,
    /// `eval['recall']`, C order with shape [T, K, A, M].
    pub recall: Vec<f64>,
    pub shape: [usize; 5],
    /// Detections whose category is not in the GT: left out, as pycocotools does.
    pub unknown_category: usize,
}

impl EvalResult {
    /// One JSON object: the 12 stats by name plus `per_category`, a list of
    /// `{"id", "name", "AP"}` (AP -1 when the category has no GT), full f64 precision.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, v) in STAT_NAMES.iter().zip(self.stats) {
            m.insert(name.to_string(), serde_json::json!(v));
        }
        let cats: Vec<serde_json::Value> = self
            .per_category
            .iter()
            .map(|(id, name, ap)| serde_json::json!({"id": id, "name": name, "AP": ap}))
            .collect();
        m.insert("per_category".into(), serde_json::Value::Array(cats));
        serde_json::Value::Object(m)
    }

    /// The 12 lines of pycocotools' `summarize()`, for the given parameters.
    pub fn summary_lines(&self, params: &EvalParams) -> Vec<String> {
        let mut md = params.max_dets;
        md.sort_unstable();
        let lo = params.iou_thrs.first().copied().unwrap_or(f64::NAN);
        let hi = params.iou_thrs.last().copied().unwrap_or(f64::NAN);
        let rows: [(bool, Option<f64>, usize, usize); 12] = [
            (true, None, 0, md[2]),
            (true, Some(0.5), 0, md[2]),
            (true, Some(0.75), 0, md[2]),
            (true, None, 1, md[2]),
            (true, None, 2, md[2]),
            (true, None, 3, md[2]),
            (false, None, 0, md[0]),
            (false, None, 0, md[1]),
            (false, None, 0, md[2]),
            (false, None, 1, md[2]),
            (false, None, 2, md[2]),
            (false, None, 3, md[2]),
        ];
        rows.iter()
            .zip(self.stats)
            .map(|(&(ap, thr, a, m), v)| {
                let title = if ap {
                    "Average Precision"
                } else {
                    "Average Recall"
                };
                let kind = if ap { "(AP)" } else { "(AR)" };
                let iou = match thr {
                    Some(t) => format!("{t:.2}"),
                    None => format!("{lo:.2}:{hi:.2}"),
                };
                format!(
                    " {title:<18} {kind} @[ IoU={iou:<9} | area={:>6} | maxDets={m:>3} ] = {v:.3}",
                    AREA_NAMES[a]
                )
            })
            .collect()
    }
}

/// Evaluates in-memory detections against `gt` (assumed validated, e.g. by [`CocoFile::read`];
/// GT annotations of unknown images or categories are skipped). Errors name the detection by
/// its index in `dets`.
pub fn evaluate(gt: &CocoFile, dets: &[CocoDetection], params: &EvalParams) -> Result<EvalResult> {
    let rows: Vec<DetRow> = dets
        .iter()
        .map(|d| DetRow {
            image_id: d.image_id,
            category_id: d.category_id,
            bbox: d.bbox,
            score: d.score,
        })
        .collect();
    evaluate_rows(gt, &rows, params, Path::new("<detections>"))
}

/// Reads, validates and evaluates a GT instances file and a results file (parsed at the same
/// time; only the fields bbox evaluation needs are kept from the results).
pub fn evaluate_files(
    gt: impl AsRef<Path>,
    dt: impl AsRef<Path>,
    params: &EvalParams,
) -> Result<EvalResult> {
    let (gt, dt) = (gt.as_ref(), dt.as_ref());
    let (gt_file, rows) = rayon::join(|| CocoFile::read(gt), || read_det_rows(dt));
    evaluate_rows(&gt_file?, &rows?, params, dt)
}

/// A results-file entry reduced to what bbox evaluation reads; other keys are skipped.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
struct DetRow {
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    score: f64,
}

fn read_det_rows(path: &Path) -> Result<Vec<DetRow>> {
    crate::io::read_json(path)
}

/// Collects predictions (e.g. batch by batch during validation), then evaluates them.
pub struct CocoEval<'a> {
    gt: &'a CocoFile,
    categories: CategoryMap,
    pub params: EvalParams,
    dets: Vec<CocoDetection>,
}

impl<'a> CocoEval<'a> {
    pub fn new(gt: &'a CocoFile) -> Self {
        CocoEval {
            gt,
            categories: CategoryMap::new(&gt.categories),
            params: EvalParams::default(),
            dets: Vec::new(),
        }
    }

    pub fn add(&mut self, det: CocoDetection) {
        self.dets.push(det);
    }

    pub fn extend(&mut self, dets: impl IntoIterator<Item = CocoDetection>) {
        self.dets.extend(dets);
    }

    /// Adds one image's predictions given as xyxy boxes and contiguous train ids (the
    /// [`CategoryMap`] order of the GT categories), as pupil's samples and heads use them.
    pub fn add_xyxy(
        &mut self,
        image_id: u64,
        boxes: &[[f32; 4]],
        classes: &[u32],
        scores: &[f32],
    ) -> Result<()> {
        if boxes.len() != classes.len() || boxes.len() != scores.len() {
            return Err(Error::Other(format!(
                "image id {image_id}: {} boxes, {} classes and {} scores differ in number",
                boxes.len(),
                classes.len(),
                scores.len()
            )));
        }
        for ((b, &c), &s) in boxes.iter().zip(classes).zip(scores) {
            let category_id = self.categories.to_coco(c).ok_or_else(|| {
                Error::Other(format!(
                    "image id {image_id}: class {c} is outside the {} GT categories",
                    self.categories.len()
                ))
            })?;
            self.dets
                .push(CocoDetection::from_xyxy(image_id, category_id, *b, s));
        }
        Ok(())
    }

    pub fn detections(&self) -> &[CocoDetection] {
        &self.dets
    }

    pub fn evaluate(&self) -> Result<EvalResult> {
        evaluate(self.gt, &self.dets, &self.params)
    }
}

/// Items grouped by category: (image index, input index) in input order per category.
struct Buckets {
    starts: Vec<usize>,
    items: Vec<(u32, u32)>,
}

impl Buckets {
    fn new(k_n: usize, keys: impl Iterator<Item = Option<(u32, u32)>> + Clone) -> Self {
        let mut starts = vec![0usize; k_n + 1];
        for (k, _) in keys.clone().flatten() {
            starts[k as usize + 1] += 1;
        }
        for k in 0..k_n {
            starts[k + 1] += starts[k];
        }
        let mut next = starts.clone();
        let mut items = vec![(0u32, 0u32); starts[k_n]];
        for (n, key) in keys.enumerate() {
            if let Some((k, i)) = key {
                items[next[k as usize]] = (i, n as u32);
                next[k as usize] += 1;
            }
        }
        Buckets { starts, items }
    }

    fn get(&self, k: usize) -> &[(u32, u32)] {
        &self.items[self.starts[k]..self.starts[k + 1]]
    }
}

/// A GT box as the matcher needs it.
#[derive(Clone, Copy)]
struct Gt {
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
    /// pycocotools records the matched GT id and treats 0 as "no match".
    id_zero: bool,
}

/// A detection as the matcher needs it.
#[derive(Clone, Copy)]
struct Dt {
    bbox: [f64; 4],
    score: f64,
}

/// One kept detection of a category after per-image matching.
#[derive(Clone, Copy)]
struct Rec {
    score: f64,
    /// Position in its image's score order (for the maxDets cut).
    rank: u32,
    /// Per area range: bit t set = matched (to a GT with nonzero id) at IoU threshold t.
    tp: [u32; 4],
    /// Per area range: bit t set = ignored at threshold t.
    ig: [u32; 4],
}

fn check_params(p: &EvalParams) -> Result<()> {
    let bad = |m: &str| Err(Error::Other(format!("evaluation parameters: {m}")));
    if p.iou_thrs.is_empty() || p.iou_thrs.len() > 32 {
        return bad("between 1 and 32 IoU thresholds are supported");
    }
    if p.rec_thrs.is_empty() {
        return bad("no recall thresholds");
    }
    if p.iou_thrs.iter().chain(&p.rec_thrs).any(|v| !v.is_finite()) {
        return bad("thresholds must be finite");
    }
    if p.area_rngs.iter().flatten().any(|v| v.is_nan()) {
        return bad("area ranges must not be NaN");
    }
    Ok(())
}

/// Image and category ids of the ground truth, sorted and unique, with their indices.
struct Ids<'a> {
    cats: Vec<(u64, &'a str)>,
    img_index: HashMap<u64, u32>,
    cat_index: HashMap<u64, u32>,
}

impl<'a> Ids<'a> {
    fn new(gt: &'a CocoFile) -> Self {
        let mut img_ids: Vec<u64> = gt.images.iter().map(|im| im.id).collect();
        img_ids.sort_unstable();
        img_ids.dedup();
        let mut cats: Vec<(u64, &str)> = gt
            .categories
            .iter()
            .map(|c| (c.id, c.name.as_str()))
            .collect();
        cats.sort_by_key(|c| c.0);
        cats.dedup_by_key(|c| c.0);
        let img_index = (img_ids.iter().enumerate())
            .map(|(i, &id)| (id, i as u32))
            .collect();
        let cat_index = (cats.iter().enumerate())
            .map(|(k, c)| (c.0, k as u32))
            .collect();
        Ids {
            cats,
            img_index,
            cat_index,
        }
    }
}

/// (category, image) of every detection, checked: a known image, a finite box of
/// non-negative size and a finite score. Unknown categories are `None` (not evaluated).
fn detection_keys(dets: &[DetRow], ids: &Ids, dt_name: &Path) -> Result<Vec<Option<(u32, u32)>>> {
    let mut keys = Vec::with_capacity(dets.len());
    for (n, d) in dets.iter().enumerate() {
        let item = || format!("detection {n}");
        let Some(&i) = ids.img_index.get(&d.image_id) else {
            return Err(Error::invalid(
                dt_name,
                item(),
                format!("image id {} is not in the ground truth", d.image_id),
            ));
        };
        if d.bbox.iter().any(|v| !v.is_finite()) || !d.score.is_finite() {
            return Err(Error::invalid(dt_name, item(), "non-finite bbox or score"));
        }
        if d.bbox[2] < 0.0 || d.bbox[3] < 0.0 {
            return Err(Error::invalid(
                dt_name,
                item(),
                format!("bbox {:?} has negative size", d.bbox),
            ));
        }
        keys.push(ids.cat_index.get(&d.category_id).map(|&k| (k, i)));
    }
    Ok(keys)
}

type CategoryInputs = (Vec<(u32, Gt)>, Vec<(u32, Dt)>);

/// The GTs and detections of category `k`, each stably sorted by image.
fn category_inputs(
    k: usize,
    gt: &CocoFile,
    dets: &[DetRow],
    (gt_b, dt_b): (&Buckets, &Buckets),
) -> CategoryInputs {
    let mut g = gt_b.get(k).to_vec();
    g.sort_by_key(|e| e.0);
    let g = g
        .iter()
        .map(|&(i, n)| {
            let a = &gt.annotations[n as usize];
            let b = Gt {
                bbox: a.bbox,
                area: a.area,
                crowd: a.iscrowd.is_set(),
                id_zero: a.id == 0,
            };
            (i, b)
        })
        .collect();
    let mut d = dt_b.get(k).to_vec();
    d.sort_by_key(|e| e.0);
    let d = d
        .iter()
        .map(|&(i, n)| {
            let r = &dets[n as usize];
            let b = Dt {
                bbox: r.bbox,
                score: r.score,
            };
            (i, b)
        })
        .collect();
    (g, d)
}

fn evaluate_rows(
    gt: &CocoFile,
    dets: &[DetRow],
    params: &EvalParams,
    dt_name: &Path,
) -> Result<EvalResult> {
    check_params(params)?;
    let mut max_dets = params.max_dets;
    max_dets.sort_unstable();
    let ids = Ids::new(gt);
    if gt.annotations.len() >= u32::MAX as usize || dets.len() >= u32::MAX as usize {
        return Err(Error::Other(
            "2^32 or more annotations or detections".into(),
        ));
    }
    let k_n = ids.cats.len();
    // Bucket (image index, input index) by category with a counting sort, keeping input order.
    let gt_b = Buckets::new(
        k_n,
        gt.annotations.iter().map(|a| {
            match (
                ids.cat_index.get(&a.category_id),
                ids.img_index.get(&a.image_id),
            ) {
                (Some(&k), Some(&i)) => Some((k, i)),
                _ => None,
            }
        }),
    );
    let dt_keys = detection_keys(dets, &ids, dt_name)?;
    let unknown_category = dt_keys.iter().filter(|k| k.is_none()).count();
    let dt_b = Buckets::new(k_n, dt_keys.into_iter());
    let per_cat: Vec<CatOut> = (0..k_n)
        .into_par_iter()
        .map_init(Scratch::default, |s, k| {
            let (g, d) = category_inputs(k, gt, dets, (&gt_b, &dt_b));
            eval_category(&g, &d, params, &max_dets, max_dets[2], s)
        })
        .collect();
    let shape = [params.iou_thrs.len(), params.rec_thrs.len(), k_n, 4, 3];
    let (precision, recall) = scatter(&per_cat, shape);
    let table = Table {
        precision: &precision,
        recall: &recall,
        shape,
    };
    let stats = summarize(&table, params, &max_dets);
    let per_category = (ids.cats.iter().enumerate())
        .map(|(k, &(id, name))| (id, name.to_string(), table.category_ap(k)))
        .collect();
    Ok(EvalResult {
        stats,
        per_category,
        precision,
        recall,
        shape,
        unknown_category,
    })
}

/// Per-category outputs scattered into pycocotools' [T, R, K, A, M] precision and
/// [T, K, A, M] recall layouts.
fn scatter(per_cat: &[CatOut], [t_n, r_n, k_n, a_n, m_n]: [usize; 5]) -> (Vec<f64>, Vec<f64>) {
    let mut precision = vec![-1.0; t_n * r_n * k_n * a_n * m_n];
    let mut recall = vec![-1.0; t_n * k_n * a_n * m_n];
    for (k, c) in per_cat.iter().enumerate() {
        for t in 0..t_n {
            for am in 0..a_n * m_n {
                recall[(t * k_n + k) * a_n * m_n + am] = c.recall[t * a_n * m_n + am];
                for r in 0..r_n {
                    precision[((t * r_n + r) * k_n + k) * a_n * m_n + am] =
                        c.precision[(t * r_n + r) * a_n * m_n + am];
                }
            }
        }
    }
    (precision, recall)
}

/// The accumulated precision and recall tables.
struct Table<'a> {
    precision: &'a [f64],
    recall: &'a [f64],
    shape: [usize; 5],
}

impl Table<'_> {
    /// pycocotools' `_summarize` for one (AP or AR, IoU threshold, area, max dets).
    fn summ(&self, params: &EvalParams, ap: bool, thr: Option<f64>, a: usize, m: usize) -> f64 {
        let [t_n, r_n, k_n, a_n, m_n] = self.shape;
        let ts = (0..t_n).filter(|&t| thr.is_none_or(|v| params.iou_thrs[t] == v));
        let mut vals = Vec::new();
        for t in ts {
            if ap {
                for r in 0..r_n {
                    for k in 0..k_n {
                        let at = ((t * r_n + r) * k_n + k) * a_n * m_n + a * m_n + m;
                        vals.push(self.precision[at]);
                    }
                }
            } else {
                for k in 0..k_n {
                    vals.push(self.recall[(t * k_n + k) * a_n * m_n + a * m_n + m]);
                }
            }
        }
        mean_above_minus_one(&vals)
    }

    /// AP of category `k` (all areas, the largest max dets).
    fn category_ap(&self, k: usize) -> f64 {
        let [t_n, r_n, k_n, a_n, m_n] = self.shape;
        let mut vals = Vec::with_capacity(t_n * r_n);
        for t in 0..t_n {
            for r in 0..r_n {
                vals.push(self.precision[((t * r_n + r) * k_n + k) * a_n * m_n + (m_n - 1)]);
            }
        }
        mean_above_minus_one(&vals)
    }
}

/// The 12 COCO stats, in [`STAT_NAMES`] order.
fn summarize(t: &Table, params: &EvalParams, md: &[usize; 3]) -> [f64; 12] {
    // index of a max-dets value among the sorted three
    let m = |v: usize| md.iter().position(|&x| x == v);
    let s = |ap: bool, thr: Option<f64>, a: usize, v: usize| match m(v) {
        Some(i) => t.summ(params, ap, thr, a, i),
        None => -1.0,
    };
    [
        s(true, None, 0, md[2]),
        s(true, Some(0.5), 0, md[2]),
        s(true, Some(0.75), 0, md[2]),
        s(true, None, 1, md[2]),
        s(true, None, 2, md[2]),
        s(true, None, 3, md[2]),
        s(false, None, 0, md[0]),
        s(false, None, 0, md[1]),
        s(false, None, 0, md[2]),
        s(false, None, 1, md[2]),
        s(false, None, 2, md[2]),
        s(false, None, 3, md[2]),
    ]
}

/// `np.mean(s[s > -1])`, or -1 when nothing is left.
fn mean_above_minus_one(vals: &[f64]) -> f64 {
    let kept: Vec<f64> = vals.iter().copied().filter(|&v| v > -1.0).collect();
    if kept.is_empty() {
        -1.0
    } else {
        pairwise_sum(&kept) / kept.len() as f64
    }
}

/// numpy's pairwise summation for contiguous f64 (blocks of 128, 8 accumulators), so the
/// means come out bit-identical to `np.mean`.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut s = 0.0;
        for &v in a {
            s += v;
        }
        s
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            s += a[i];
            i += 1;
        }
        s
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// Buffers reused across the images of a category (and across categories of one thread).
#[derive(Default)]
struct Scratch {
    order: Vec<u32>,
    ious: Vec<f64>,
    /// Best IoU of each detection over all GTs of the image.
    row_max: Vec<f64>,
    gt_ord: Vec<u32>,
    gt_ig: Vec<bool>,
    gtm: Vec<bool>,
    events: Vec<Vec<f64>>,
}

struct CatOut {
    /// [T, R, A, M]
    precision: Vec<f64>,
    /// [T, A, M]
    recall: Vec<f64>,
}

/// The first i in 0..n with recall (i + 1) / npig >= thr, or n.
fn first_reaching(n: usize, npig: f64, thr: f64) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ((mid + 1) as f64 / npig) < thr {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Descending score order; -0.0 and 0.0 tie as in numpy (scores are finite).
#[inline]
fn desc(x: f64, y: f64) -> std::cmp::Ordering {
    y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal)
}

/// maskApi's `bbIou` for one pair; for a crowd GT the union is the detection's area.
#[inline]
fn bb_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = d[2] * d[3];
    let u = if crowd { da } else { da + g[2] * g[3] - i };
    i / u
}

/// evaluateImg for every image of one category, then accumulate.
/// `gts` / `dts` hold (image index, box), sorted by image then input order.
fn eval_category(
    gts: &[(u32, Gt)],
    dts: &[(u32, Dt)],
    p: &EvalParams,
    max_dets: &[usize; 3],
    max_det: usize,
    s: &mut Scratch,
) -> CatOut {
    let (t_n, r_n) = (p.iou_thrs.len(), p.rec_thrs.len());
    let (a_n, m_n) = (4usize, 3usize);
    let mut out = CatOut {
        precision: vec![-1.0; t_n * r_n * a_n * m_n],
        recall: vec![-1.0; t_n * a_n * m_n],
    };
    if gts.is_empty() && dts.is_empty() {
        // No evalImgs entry at all: pycocotools leaves -1.
        return out;
    }
    let thr: Vec<f64> = p.iou_thrs.iter().map(|&t| t.min(1.0 - 1e-10)).collect();
    let mut m = Matching {
        recs: Vec::with_capacity(dts.len().min(max_det * 64)),
        npig: [0usize; 4],
    };
    for (g_img, d_img) in image_runs(gts, dts) {
        match_image(g_img, d_img, p, &thr, max_det, s, &mut m);
    }
    // accumulate: concatenation is already in ascending image order; a stable sort by
    // descending score gives pycocotools' mergesort order. Cutting to maxDets keeps it.
    m.recs.sort_by(|x, y| desc(x.score, y.score));
    accumulate(&m.recs, &m.npig, p, max_dets, &mut out, s);
    out
}

/// What per-image matching leaves for accumulation: the kept detections of a category and
/// the number of non-ignored GTs per area range.
struct Matching {
    recs: Vec<Rec>,
    npig: [usize; 4],
}

type ImageRun<'a> = (&'a [(u32, Gt)], &'a [(u32, Dt)]);

/// The GTs and detections of each image present on either side, by ascending image.
fn image_runs<'a>(gts: &'a [(u32, Gt)], dts: &'a [(u32, Dt)]) -> Vec<ImageRun<'a>> {
    let (mut gi, mut di) = (0usize, 0usize);
    let mut runs = Vec::new();
    while gi < gts.len() || di < dts.len() {
        let img = match (gts.get(gi), dts.get(di)) {
            (Some(g), Some(d)) => g.0.min(d.0),
            (Some(g), None) => g.0,
            (None, Some(d)) => d.0,
            (None, None) => break,
        };
        let (g0, d0) = (gi, di);
        while gi < gts.len() && gts[gi].0 == img {
            gi += 1;
        }
        while di < dts.len() && dts[di].0 == img {
            di += 1;
        }
        runs.push((&gts[g0..gi], &dts[d0..di]));
    }
    runs
}

/// pycocotools' evaluateImg for one image of a category, every area range and threshold.
fn match_image(
    g_img: &[(u32, Gt)],
    d_img: &[(u32, Dt)],
    p: &EvalParams,
    thr: &[f64],
    max_det: usize,
    s: &mut Scratch,
    m: &mut Matching,
) {
    // Stable sort by descending score, then keep the top max_det.
    s.order.clear();
    s.order.extend(0..d_img.len() as u32);
    s.order
        .sort_by(|&x, &y| desc(d_img[x as usize].1.score, d_img[y as usize].1.score));
    s.order.truncate(max_det);
    // IoU matrix [D, G] with GTs in input order.
    s.ious.clear();
    s.row_max.clear();
    for &o in &s.order {
        let d = &d_img[o as usize].1;
        let mut best = f64::NEG_INFINITY;
        for (_, g) in g_img {
            let v = bb_iou(&d.bbox, &g.bbox, g.crowd);
            best = best.max(v);
            s.ious.push(v);
        }
        s.row_max.push(best);
    }
    let base = m.recs.len();
    for (rank, &o) in s.order.iter().enumerate() {
        m.recs.push(Rec {
            score: d_img[o as usize].1.score,
            rank: rank as u32,
            tp: [0; 4],
            ig: [0; 4],
        });
    }
    let recs = &mut m.recs[base..];
    for a in 0..4 {
        m.npig[a] += order_gts(g_img, p.area_rngs[a], s);
        if !s.order.is_empty() && !g_img.is_empty() {
            for (t, &t_iou) in thr.iter().enumerate() {
                greedy_match(g_img, t_iou, (a, t), s, recs);
            }
        }
        ignore_out_of_range(d_img, p.area_rngs[a], a, thr.len(), s, recs);
    }
}

/// GT ignore flags for an area range, and the GT order with non-ignored first (stable);
/// returns the number not ignored.
fn order_gts(g_img: &[(u32, Gt)], [lo, hi]: [f64; 2], s: &mut Scratch) -> usize {
    let gn = g_img.len() as u32;
    s.gt_ig.clear();
    s.gt_ig.extend(
        g_img
            .iter()
            .map(|(_, g)| g.crowd || g.area < lo || g.area > hi),
    );
    s.gt_ord.clear();
    s.gt_ord.extend((0..gn).filter(|&g| !s.gt_ig[g as usize]));
    let kept = s.gt_ord.len();
    s.gt_ord.extend((0..gn).filter(|&g| s.gt_ig[g as usize]));
    kept
}

/// Greedy matching of the score-ordered detections to the GTs at one IoU threshold; marks
/// the matches of area range `a`, threshold `t` in `recs`.
fn greedy_match(
    g_img: &[(u32, Gt)],
    t_iou: f64,
    (a, t): (usize, usize),
    s: &mut Scratch,
    recs: &mut [Rec],
) {
    let gn = g_img.len();
    s.gtm.clear();
    s.gtm.resize(gn, false);
    for di in 0..s.order.len() {
        // Below the threshold for every GT: no match and no side effect.
        if s.row_max[di] < t_iou {
            continue;
        }
        let row = &s.ious[di * gn..(di + 1) * gn];
        let mut iou = t_iou;
        let mut m: Option<usize> = None;
        for (pos, &g) in s.gt_ord.iter().enumerate() {
            let g = g as usize;
            if s.gtm[pos] && !g_img[g].1.crowd {
                continue;
            }
            if let Some(mp) = m {
                if !s.gt_ig[s.gt_ord[mp] as usize] && s.gt_ig[g] {
                    break;
                }
            }
            if row[g] < iou {
                continue;
            }
            // Ties go to the later GT, as in pycocotools.
            iou = row[g];
            m = Some(pos);
        }
        if let Some(mp) = m {
            let g = s.gt_ord[mp] as usize;
            s.gtm[mp] = true;
            if s.gt_ig[g] {
                recs[di].ig[a] |= 1 << t;
            }
            if !g_img[g].1.id_zero {
                recs[di].tp[a] |= 1 << t;
            }
        }
    }
}

/// Unmatched detections outside the area range are ignored.
fn ignore_out_of_range(
    d_img: &[(u32, Dt)],
    [lo, hi]: [f64; 2],
    a: usize,
    t_n: usize,
    s: &Scratch,
    recs: &mut [Rec],
) {
    let all_t: u32 = if t_n == 32 {
        u32::MAX
    } else {
        (1u32 << t_n) - 1
    };
    for (di, &o) in s.order.iter().enumerate() {
        let b = &d_img[o as usize].1.bbox;
        let area = b[2] * b[3];
        if area < lo || area > hi {
            recs[di].ig[a] |= !recs[di].tp[a] & all_t;
        }
    }
}

/// pycocotools' accumulate for one category, in one pass per area range.
///
/// Equivalent to building the full (rc, pr) arrays: an ignored detection repeats the previous
/// point and a false positive lowers precision at the same recall, so the precision envelope
/// at the first index with `rc >= thr` is the largest precision at a true positive whose
/// recall reaches `thr` (0 when there is none). The pr values use pycocotools' formula.
fn accumulate(
    recs: &[Rec],
    npig: &[usize; 4],
    p: &EvalParams,
    max_dets: &[usize; 3],
    out: &mut CatOut,
    s: &mut Scratch,
) {
    let (t_n, r_n) = (p.iou_thrs.len(), p.rec_thrs.len());
    let (a_n, m_n) = (4usize, 3usize);
    let all_t: u32 = if t_n == 32 {
        u32::MAX
    } else {
        (1u32 << t_n) - 1
    };
    for a in 0..a_n {
        if npig[a] == 0 {
            continue;
        }
        let npig_f = npig[a] as f64;
        let mut fp = [[0u32; 32]; 3];
        let mut tp = [[0u32; 32]; 3];
        // Precision at each true positive, per (m, t).
        s.events.resize_with(m_n * t_n, Vec::new);
        for e in s.events.iter_mut() {
            e.clear();
        }
        for r in recs {
            let valid = !r.ig[a] & all_t;
            let tpb = r.tp[a] & valid;
            let fpb = !r.tp[a] & valid;
            if valid == 0 {
                continue;
            }
            for m in 0..m_n {
                if r.rank as usize >= max_dets[m] {
                    continue;
                }
                for (t, f) in fp[m].iter_mut().enumerate().take(t_n) {
                    *f += (fpb >> t) & 1;
                }
                let mut bits = tpb;
                while bits != 0 {
                    let t = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    tp[m][t] += 1;
                    let (tpf, fpf) = (tp[m][t] as f64, fp[m][t] as f64);
                    s.events[m * t_n + t].push(tpf / (fpf + tpf + f64::EPSILON));
                }
            }
        }
        for m in 0..m_n {
            for t in 0..t_n {
                let ev = &mut s.events[m * t_n + t];
                out.recall[(t * a_n + a) * m_n + m] = tp[m][t] as f64 / npig_f;
                // Suffix maximum: the envelope seen from each true positive.
                for i in (1..ev.len()).rev() {
                    if ev[i] > ev[i - 1] {
                        ev[i - 1] = ev[i];
                    }
                }
                // searchsorted(rc, thr, 'left') lands on the first true positive whose
                // recall reaches thr; pycocotools leaves 0 from the first threshold past the end.
                for (ri, &rt) in p.rec_thrs.iter().enumerate() {
                    let i = first_reaching(ev.len(), npig_f, rt);
                    if i == ev.len() {
                        for rj in ri..r_n {
                            out.precision[((t * r_n + rj) * a_n + a) * m_n + m] = 0.0;
                        }
                        break;
                    }
                    out.precision[((t * r_n + ri) * a_n + a) * m_n + m] = ev[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_match_numpy_linspace() {
        let p = EvalParams::default();
        assert_eq!(p.iou_thrs.len(), 10);
        assert_eq!(p.iou_thrs[5], 0.75);
        assert_eq!(p.iou_thrs[9], 0.95);
        assert_eq!(p.rec_thrs.len(), 101);
        assert_eq!(p.rec_thrs[3], 3.0 * 0.01);
        assert_eq!(p.rec_thrs[100], 1.0);
    }

    #[test]
    fn pairwise_sum_is_a_sum() {
        for n in [0usize, 1, 7, 8, 9, 127, 128, 129, 300, 1000] {
            let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
            assert_eq!(pairwise_sum(&v), (n * n.saturating_sub(1) / 2) as f64);
        }
    }

    /// pycocotools' accumulate written literally: full (rc, pr) arrays, ignored entries kept.
    fn accumulate_literal(
        recs: &[Rec],
        npig: &[usize; 4],
        p: &EvalParams,
        md: &[usize; 3],
        out: &mut CatOut,
    ) {
        let (t_n, r_n) = (p.iou_thrs.len(), p.rec_thrs.len());
        for a in 0..4 {
            if npig[a] == 0 {
                continue;
            }
            for m in 0..3 {
                let kept: Vec<&Rec> = recs.iter().filter(|r| (r.rank as usize) < md[m]).collect();
                for t in 0..t_n {
                    let (mut tp, mut fp) = (0.0f64, 0.0f64);
                    let mut rc = Vec::new();
                    let mut pr = Vec::new();
                    for r in &kept {
                        let ig = (r.ig[a] >> t) & 1 == 1;
                        let hit = (r.tp[a] >> t) & 1 == 1;
                        tp += (hit && !ig) as u8 as f64;
                        fp += (!hit && !ig) as u8 as f64;
                        rc.push(tp / npig[a] as f64);
                        pr.push(tp / (fp + tp + f64::EPSILON));
                    }
                    out.recall[(t * 4 + a) * 3 + m] = rc.last().copied().unwrap_or(0.0);
                    for i in (1..pr.len()).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for ri in 0..r_n {
                        let pi = rc.partition_point(|&v| v < p.rec_thrs[ri]);
                        if pi >= pr.len() {
                            for rj in ri..r_n {
                                out.precision[((t * r_n + rj) * 4 + a) * 3 + m] = 0.0;
                            }
                            break;
                        }
                        out.precision[((t * r_n + ri) * 4 + a) * 3 + m] = pr[pi];
                    }
                }
            }
        }
    }

    #[test]
    fn one_pass_accumulate_equals_the_literal_one() {
        let p = EvalParams::default();
        let md = [1, 10, 100];
        let mut rng = crate::Rng::new(7);
        for case in 0..300 {
            let n = (rng.next_u32() % 400) as usize;
            let mut recs: Vec<Rec> = (0..n)
                .map(|i| {
                    let mut r = Rec {
                        score: (rng.next_u32() % 20) as f64 / 20.0,
                        rank: (i % 120) as u32,
                        tp: [0; 4],
                        ig: [0; 4],
                    };
                    for a in 0..4 {
                        // Matches get rarer at higher thresholds, as with real IoUs.
                        let lvl = rng.next_u32() % 12;
                        r.tp[a] = if lvl >= 10 {
                            0
                        } else {
                            (1u32 << (10 - lvl)) - 1
                        };
                        if rng.next_u32() % 5 == 0 {
                            r.ig[a] =
                                (rng.next_u32() & 0x3ff) | if case % 2 == 0 { 0 } else { 0x3ff };
                        }
                    }
                    r
                })
                .collect();
            recs.sort_by(|x, y| desc(x.score, y.score));
            let npig = [1 + n / 3, (rng.next_u32() % 5) as usize, 1 + n / 7, 1 + n];
            let size = (
                p.iou_thrs.len() * p.rec_thrs.len() * 12,
                p.iou_thrs.len() * 12,
            );
            let mut fast = CatOut {
                precision: vec![-1.0; size.0],
                recall: vec![-1.0; size.1],
            };
            let mut slow = CatOut {
                precision: vec![-1.0; size.0],
                recall: vec![-1.0; size.1],
            };
            accumulate(&recs, &npig, &p, &md, &mut fast, &mut Scratch::default());
            accumulate_literal(&recs, &npig, &p, &md, &mut slow);
            assert_eq!(fast.recall, slow.recall, "case {case}");
            assert_eq!(fast.precision, slow.precision, "case {case}");
        }
    }

    #[test]
    fn crowd_union_is_the_detection_area() {
        let d = [0.0, 0.0, 10.0, 10.0];
        let g = [0.0, 0.0, 20.0, 20.0];
        assert_eq!(bb_iou(&d, &g, true), 1.0);
        assert_eq!(bb_iou(&d, &g, false), 0.25);
        assert_eq!(bb_iou(&d, &[10.0, 0.0, 5.0, 5.0], false), 0.0);
    }
}
