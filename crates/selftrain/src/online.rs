//! The online teacher (`selftrain.mode = "online"`): an exponential moving average of the
//! student labels every unlabeled batch as training goes, as the semi-supervised detectors
//! after the paper do (Unbiased Teacher, Soft Teacher, ...). The teacher sees a weak view of
//! each image (the whole image, flipped and rescaled: [`weak_view`]); its boxes come back in
//! original coordinates (the view's [`pupil_data::Meta`]) and are put on the original
//! ([`attach_labels`], with the offline thresholds and ignore band), so the student's own
//! augmentation moves them exactly onto its strong view. [`Tally`] counts what the teacher
//! emitted and, where the source has ground truth, how much of it was right.
use crate::config::TrainConfig;
use pupil_augment::geometric::{flip_and_resample, Size, Window};
use pupil_augment::jitter::MEAN_FILL;
use pupil_data::{Dataset, Rng, Sample};
use pupil_heads::retinanet::Detection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The unlabeled images of an online student and, where known, their ground truth (for the
/// diagnostics only; the student never sees it).
#[derive(Clone)]
pub struct OnlineData {
    pub source: Arc<dyn Dataset>,
    /// Looked up by image id - 1, as the embedded scenes number their images.
    pub truth: Option<Arc<dyn Dataset>>,
}

/// Keys of the generators of the views (with the seed, the step and the image's position in
/// the global batch), so a resumed run draws the same views.
pub const WEAK_KEY: u64 = 0x5745_414b;
pub const STRONG_KEY: u64 = 0x5354_524f;

/// The teacher's view of an image: all of it, resized to fit `augment.size` times a factor
/// drawn from `selftrain.weak_scale`, mirrored with probability 1/2 when
/// `selftrain.weak_flip`. Nothing is cropped: the teacher sees every object the student's
/// view may show, so no object is taught as background for being out of the teacher's sight.
pub fn weak_view(s: &Sample, cfg: &TrainConfig, rng: &mut Rng) -> Sample {
    let st = &cfg.selftrain;
    let flip = st.weak_flip && rng.bernoulli(0.5);
    let [lo, hi] = st.weak_scale;
    let r = if hi > lo { rng.uniform(lo, hi) } else { lo };
    let (w, h) = (s.image.width.max(1) as f64, s.image.height.max(1) as f64);
    let size = cfg.augment.size as f64;
    let k = (size / w).min(size / h) * r;
    let scaled = Size::new(
        ((w * k).round() as usize).max(1),
        ((h * k).round() as usize).max(1),
    );
    let win = Window {
        scaled,
        offset: (0, 0),
        content: scaled,
        out: scaled,
    };
    let mut v = s.clone();
    flip_and_resample(&mut v, flip, &win, MEAN_FILL, true);
    v
}

/// Puts a teacher's detections (original coordinates) on an unlabeled image as its labels,
/// as the offline teacher's are made: boxes scoring at least `threshold` are labels, those in
/// `[ignore_from, threshold)` ignore regions (crowd boxes); clipped to the image, empty ones
/// dropped. Whatever labels the image had are replaced.
pub fn attach_labels(s: &mut Sample, dets: &[Detection], threshold: f64, ignore_from: Option<f64>) {
    let (w, h) = (s.image.width as f32, s.image.height as f32);
    s.boxes.clear();
    s.classes.clear();
    s.crowd.clear();
    s.masks = None;
    for d in dets {
        let Some(crowd) = crate::pseudo::label_kind(d.score as f64, threshold, ignore_from) else {
            continue;
        };
        let b = d.bbox;
        let b = [
            b[0].clamp(0.0, w),
            b[1].clamp(0.0, h),
            b[2].clamp(0.0, w),
            b[3].clamp(0.0, h),
        ];
        if b[2] > b[0] && b[3] > b[1] {
            s.boxes.push(b);
            s.classes.push(d.class);
            s.crowd.push(crowd);
        }
    }
}

/// What an online teacher emitted over some images: labels (boxes at or above the threshold)
/// and ignore regions, labels per class, and on the images with ground truth the true boxes
/// and the labels that match one (IoU >= 0.5, same class).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub images: usize,
    pub labels: usize,
    pub ignored: usize,
    pub per_class: Vec<usize>,
    pub truth_images: usize,
    pub truth_boxes: usize,
    /// Labels on the images with ground truth, and those that match a true box.
    pub truth_labels: usize,
    pub matched: usize,
}

impl Tally {
    pub fn new(classes: usize) -> Self {
        Tally {
            per_class: vec![0; classes],
            ..Default::default()
        }
    }

    /// Counts one labeled image (labels as [`attach_labels`] left them), against its truth.
    pub fn add_image(&mut self, labeled: &Sample, truth: Option<&Sample>) {
        self.images += 1;
        let mut kept = Vec::new();
        for ((b, &c), &crowd) in labeled
            .boxes
            .iter()
            .zip(&labeled.classes)
            .zip(&labeled.crowd)
        {
            if crowd {
                self.ignored += 1;
                continue;
            }
            self.labels += 1;
            if let Some(n) = self.per_class.get_mut(c as usize) {
                *n += 1;
            }
            kept.push((*b, c as usize));
        }
        if let Some(gt) = truth {
            self.truth_images += 1;
            self.truth_boxes += gt.boxes.len();
            self.truth_labels += kept.len();
            let mut used = vec![false; gt.boxes.len()];
            let hits = crate::pseudo::match_truth(&kept, gt, &mut used);
            self.matched += hits.into_iter().filter(|&h| h).count();
        }
    }

    pub fn add(&mut self, o: &Tally) {
        self.images += o.images;
        self.labels += o.labels;
        self.ignored += o.ignored;
        if self.per_class.len() < o.per_class.len() {
            self.per_class.resize(o.per_class.len(), 0);
        }
        for (a, b) in self.per_class.iter_mut().zip(&o.per_class) {
            *a += b;
        }
        self.truth_images += o.truth_images;
        self.truth_boxes += o.truth_boxes;
        self.truth_labels += o.truth_labels;
        self.matched += o.matched;
    }

    /// Share of the labels on images with truth that match a true box.
    pub fn precision(&self) -> Option<f64> {
        (self.truth_images > 0 && self.truth_labels > 0)
            .then(|| self.matched as f64 / self.truth_labels as f64)
    }

    /// Share of the true boxes that a label matches.
    pub fn recall(&self) -> Option<f64> {
        (self.truth_images > 0 && self.truth_boxes > 0)
            .then(|| self.matched as f64 / self.truth_boxes as f64)
    }

    pub fn labels_per_image(&self) -> f64 {
        self.labels as f64 / self.images.max(1) as f64
    }

    /// The counts as numbers (to sum them over the ranks of a job).
    pub fn to_counts(&self) -> Vec<f64> {
        let mut v = vec![
            self.images,
            self.labels,
            self.ignored,
            self.truth_images,
            self.truth_boxes,
            self.truth_labels,
            self.matched,
        ];
        v.extend(&self.per_class);
        v.into_iter().map(|x| x as f64).collect()
    }

    /// The inverse of [`Tally::to_counts`].
    pub fn from_counts(v: &[f64]) -> Self {
        let at = |i: usize| v.get(i).map_or(0, |x| x.round() as usize);
        Tally {
            images: at(0),
            labels: at(1),
            ignored: at(2),
            truth_images: at(3),
            truth_boxes: at(4),
            truth_labels: at(5),
            matched: at(6),
            per_class: (7..v.len()).map(at).collect(),
        }
    }
}

/// The online teacher's state between steps, kept in checkpoints: steps in a row it emitted
/// no label, what it emitted since the last log line and over the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineState {
    pub silent_steps: usize,
    pub window: Tally,
    pub total: Tally,
}

/// `online.json` of an online run: what its teacher emitted over the run and how its last
/// weights (`teacher.safetensors`) score.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineSummary {
    pub ema_decay: f64,
    pub burn_in_steps: usize,
    pub steps: usize,
    pub score_threshold: f64,
    pub total: Tally,
    pub labels_per_image: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub teacher_metrics: Option<crate::task::Metrics>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::train_transform;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest, ProptestConfig};
    use pupil_data::Image;

    fn config(policy: &str, flip: bool, scale: [f64; 2]) -> TrainConfig {
        let mut c = TrainConfig::default();
        c.augment.policy = policy.into();
        c.augment.size = 64;
        c.data.size_divisor = 32;
        c.selftrain.weak_flip = flip;
        c.selftrain.weak_scale = scale;
        c
    }

    fn scene(w: usize, h: usize, boxes: &[[f32; 4]], seed: u64) -> Sample {
        let mut rng = Rng::new(seed);
        let data = (0..w * h * 3).map(|_| rng.below(256) as u8).collect();
        let mut s = Sample::new(Image::from_raw(w, h, 3, data));
        for (i, b) in boxes.iter().enumerate() {
            s.boxes.push(*b);
            s.classes.push(i as u32 % 3);
            s.crowd.push(i % 4 == 3);
        }
        s
    }

    fn close(a: &[[f32; 4]], b: &[[f32; 4]], tol: f32) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.iter().zip(y).all(|(u, v)| (u - v).abs() <= tol))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// A teacher that finds exactly the true boxes on its weak view: mapped back through
        /// the view's meta (as `predict` maps detections) and carried through the student's
        /// strong augmentation, they land where the strong augmentation puts the true boxes.
        #[test]
        fn weak_view_boxes_land_on_the_strong_view_as_the_truth_does(
            w in 24usize..120,
            h in 24usize..120,
            raw in prop::collection::vec((0.0f32..0.8, 0.0f32..0.8, 0.1f32..0.5, 0.1f32..0.5), 1..6),
            policy in prop::sample::select(vec!["s1", "s2", "s3", "s4"]),
            flip in any::<bool>(),
            lo in 0.5f64..1.0,
            span in 0.0f64..1.0,
            seed in any::<u64>(),
        ) {
            let boxes: Vec<[f32; 4]> = raw
                .iter()
                .map(|&(x, y, bw, bh)| {
                    let (wf, hf) = (w as f32, h as f32);
                    let (x1, y1) = (x * wf, y * hf);
                    [x1, y1, (x1 + (bw * wf).max(2.0)).min(wf), (y1 + (bh * hf).max(2.0)).min(hf)]
                })
                .collect();
            let original = scene(w, h, &boxes, seed);
            let cfg = config(policy, flip, [lo, lo + span]);
            let weak = weak_view(&original, &cfg, &mut Rng::derive(&[seed, WEAK_KEY]));
            // the whole image is in view: every box survives, scaled
            prop_assert_eq!(weak.boxes.len(), boxes.len());
            let dets: Vec<Detection> = weak
                .boxes
                .iter()
                .zip(&weak.classes)
                .zip(&weak.crowd)
                .map(|((b, &c), &crowd)| Detection {
                    bbox: weak.meta.to_original(*b),
                    score: if crowd { 0.4 } else { 0.9 },
                    class: c,
                })
                .collect();
            let mut labeled = original.clone();
            labeled.boxes.clear();
            attach_labels(&mut labeled, &dets, 0.5, Some(0.3));
            prop_assert!(close(&labeled.boxes, &original.boxes, 1e-3), "{:?} vs {:?}", labeled.boxes, original.boxes);
            prop_assert_eq!(&labeled.crowd, &original.crowd);
            let t = train_transform(&cfg).unwrap();
            let strong = |s: Sample| t(s, &mut Rng::derive(&[seed, STRONG_KEY])).unwrap();
            let (mapped, direct) = (strong(labeled), strong(original));
            prop_assert_eq!(&mapped.classes, &direct.classes);
            prop_assert_eq!(&mapped.crowd, &direct.crowd);
            prop_assert!(close(&mapped.boxes, &direct.boxes, 1e-2), "{:?} vs {:?}", mapped.boxes, direct.boxes);
        }
    }

    #[test]
    fn attach_labels_thresholds_ignores_and_clips() {
        let mut s = scene(40, 30, &[[1.0, 1.0, 5.0, 5.0]], 0);
        let det = |bbox, score, class| Detection { bbox, score, class };
        let dets = [
            det([-3.0, 2.0, 10.0, 50.0], 0.9, 1),
            det([5.0, 5.0, 9.0, 9.0], 0.4, 2),
            det([5.0, 5.0, 9.0, 9.0], 0.2, 0),
            det([45.0, 5.0, 50.0, 9.0], 0.95, 0),
        ];
        attach_labels(&mut s, &dets, 0.5, Some(0.3));
        assert_eq!(s.boxes, vec![[0.0, 2.0, 10.0, 30.0], [5.0, 5.0, 9.0, 9.0]]);
        assert_eq!(
            (s.classes.clone(), s.crowd.clone()),
            (vec![1, 2], vec![false, true])
        );
        let mut t = Tally::new(3);
        let mut gt = scene(
            40,
            30,
            &[[0.0, 2.0, 10.0, 29.0], [20.0, 20.0, 30.0, 30.0]],
            1,
        );
        gt.classes = vec![1, 1];
        t.add_image(&s, Some(&gt));
        assert_eq!(
            (t.labels, t.ignored, t.per_class.clone()),
            (1, 1, vec![0, 1, 0])
        );
        assert_eq!((t.precision(), t.recall()), (Some(1.0), Some(0.5)));
        let back = Tally::from_counts(&t.to_counts());
        assert_eq!(back, t);
        // without an ignore band, the low boxes are dropped
        attach_labels(&mut s, &dets, 0.5, None);
        assert_eq!(s.crowd, vec![false]);
    }
}
