//! The embedded default dataset: real MNIST digits composited onto crops of real CC0 textures,
//! with exact boxes (tight around each digit's mask) and exact per-pixel class maps, plus the
//! classification sets used for pre-training (Fashion-MNIST and an in-domain digit pool).
//!
//! MNIST's digits are split per class into disjoint pools (labeled train, unlabeled,
//! validation, pre-training), so no digit plays two roles. Texture crops for validation come
//! from a region of each texture that train and unlabeled scenes never use.
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::sample::{Image, Plane, Sample};
use std::io::Read;
use std::sync::{Arc, OnceLock};

const MNIST_IMAGES: &[u8] = include_bytes!("../assets/mnist-10k-images-idx3-ubyte.gz");
const MNIST_LABELS: &[u8] = include_bytes!("../assets/mnist-10k-labels-idx1-ubyte.gz");
const FASHION_IMAGES: &[u8] = include_bytes!("../assets/fashion-mnist-t10k-images-idx3-ubyte.gz");
const FASHION_LABELS: &[u8] = include_bytes!("../assets/fashion-mnist-t10k-labels-idx1-ubyte.gz");
const TEXTURES: [(&str, &[u8]); 3] = [
    ("brick", include_bytes!("../assets/textures/brick.png")),
    ("grass", include_bytes!("../assets/textures/grass.png")),
    ("gravel", include_bytes!("../assets/textures/gravel.png")),
];

pub const DIGIT_NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
pub const FASHION_NAMES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// 28x28 gray images with labels, as stored in an IDX pair.
#[derive(Clone, Debug)]
pub struct Idx {
    pub rows: usize,
    pub cols: usize,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Idx {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.images[i * n..(i + 1) * n]
    }
}

fn gunzip(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| Error::Other(format!("{name}: {e}")))?;
    Ok(out)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an IDX image file (magic 2051) and label file (magic 2049), gzip-compressed.
pub fn parse_idx(images_gz: &[u8], labels_gz: &[u8], name: &str) -> Result<Idx> {
    let im = gunzip(images_gz, name)?;
    let lb = gunzip(labels_gz, name)?;
    let bad = |m: &str| Error::invalid(name, "IDX header", m.to_string());
    if im.len() < 16 || be_u32(&im, 0) != 2051 {
        return Err(bad("image file magic is not 2051"));
    }
    if lb.len() < 8 || be_u32(&lb, 0) != 2049 {
        return Err(bad("label file magic is not 2049"));
    }
    let (n, rows, cols) = (
        be_u32(&im, 4) as usize,
        be_u32(&im, 8) as usize,
        be_u32(&im, 12) as usize,
    );
    if be_u32(&lb, 4) as usize != n || im.len() != 16 + n * rows * cols || lb.len() != 8 + n {
        return Err(bad("counts and sizes disagree"));
    }
    Ok(Idx {
        rows,
        cols,
        images: im[16..].to_vec(),
        labels: lb[8..].to_vec(),
    })
}

/// The 10,000 embedded MNIST digits.
pub fn mnist() -> Result<&'static Idx> {
    static M: OnceLock<std::result::Result<Idx, String>> = OnceLock::new();
    M.get_or_init(|| {
        parse_idx(MNIST_IMAGES, MNIST_LABELS, "embedded MNIST").map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Other(e.clone()))
}

/// The embedded Fashion-MNIST test split (10,000 images).
pub fn fashion_mnist() -> Result<&'static Idx> {
    static F: OnceLock<std::result::Result<Idx, String>> = OnceLock::new();
    F.get_or_init(|| {
        parse_idx(FASHION_IMAGES, FASHION_LABELS, "embedded Fashion-MNIST")
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Other(e.clone()))
}

fn textures() -> Result<&'static Vec<Image>> {
    static T: OnceLock<std::result::Result<Vec<Image>, String>> = OnceLock::new();
    T.get_or_init(|| {
        TEXTURES
            .iter()
            .map(|(name, bytes)| {
                crate::io::decode_image(bytes, std::path::Path::new(name))
                    .map(|i| i.to_gray())
                    .map_err(|e| e.to_string())
            })
            .collect()
    })
    .as_ref()
    .map_err(|e| Error::Other(e.clone()))
}

/// The role a digit or a scene plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Human-labeled scenes.
    Train,
    /// Scenes whose labels are hidden from training (the pseudo-labeling input); their ground
    /// truth is kept to measure pseudo-label quality.
    Unlabeled,
    /// Validation scenes (own digits and own texture region).
    Val,
    /// Single digits for in-domain classification pre-training.
    Pretrain,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Unlabeled => "unlabeled",
            Split::Val => "val",
            Split::Pretrain => "pretrain",
        }
    }
    fn tag(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Unlabeled => 2,
            Split::Val => 3,
            Split::Pretrain => 4,
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "unlabeled" => Ok(Split::Unlabeled),
            "val" => Ok(Split::Val),
            "pretrain" => Ok(Split::Pretrain),
            _ => Err(format!(
                "unknown split {s:?} (train, unlabeled, val, pretrain)"
            )),
        }
    }
}

/// Fractions of each MNIST class given to each pool, in this order.
const POOL_FRACTIONS: [(Split, f64); 4] = [
    (Split::Train, 0.30),
    (Split::Unlabeled, 0.40),
    (Split::Val, 0.15),
    (Split::Pretrain, 0.15),
];

/// Indices into [`mnist()`] of the digits of one pool, split per class by position.
pub fn digit_pool(split: Split) -> Result<Vec<usize>> {
    let m = mnist()?;
    let mut out = Vec::new();
    for c in 0..10u8 {
        let idx: Vec<usize> = (0..m.len()).filter(|&i| m.labels[i] == c).collect();
        let n = idx.len();
        let mut start = 0usize;
        for (k, (s, f)) in POOL_FRACTIONS.iter().enumerate() {
            let end = if k + 1 == POOL_FRACTIONS.len() {
                n
            } else {
                start + (f * n as f64).round() as usize
            };
            if *s == split {
                out.extend_from_slice(&idx[start..end]);
            }
            start = end;
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigitsConfig {
    pub seed: u64,
    /// Scenes are square, this many pixels a side.
    pub image_size: usize,
    pub min_digits: usize,
    pub max_digits: usize,
    /// Height range of a digit's ink, in pixels.
    pub min_digit_size: usize,
    pub max_digit_size: usize,
    /// Number of scenes per split.
    pub train: usize,
    pub unlabeled: usize,
    pub val: usize,
    /// Build instance masks (label maps are always built).
    pub masks: bool,
}

impl Default for DigitsConfig {
    fn default() -> Self {
        DigitsConfig {
            seed: 0,
            image_size: 96,
            min_digits: 1,
            max_digits: 6,
            min_digit_size: 14,
            max_digit_size: 36,
            train: 256,
            unlabeled: 1024,
            val: 128,
            masks: true,
        }
    }
}

impl DigitsConfig {
    pub fn count(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train,
            Split::Unlabeled => self.unlabeled,
            Split::Val => self.val,
            Split::Pretrain => 0,
        }
    }
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Error::invalid("digits config", "value", m);
        if self.min_digits == 0 || self.min_digits > self.max_digits {
            return Err(bad(format!(
                "need 1 <= min_digits <= max_digits, got {}..{}",
                self.min_digits, self.max_digits
            )));
        }
        if self.min_digit_size < 4 || self.min_digit_size > self.max_digit_size {
            return Err(bad(format!(
                "need 4 <= min_digit_size <= max_digit_size, got {}..{}",
                self.min_digit_size, self.max_digit_size
            )));
        }
        if self.max_digit_size + 2 > self.image_size {
            return Err(bad(format!(
                "max_digit_size {} does not fit in image_size {}",
                self.max_digit_size, self.image_size
            )));
        }
        Ok(())
    }
}

/// Scenes of one split, generated on demand: scene `i` depends only on (seed, split, i).
pub struct DigitScenes {
    pub config: DigitsConfig,
    pub split: Split,
    pool: Arc<Vec<usize>>,
}

impl DigitScenes {
    pub fn new(config: &DigitsConfig, split: Split) -> Result<Self> {
        config.validate()?;
        if split == Split::Pretrain {
            return Err(Error::Other(
                "the pretrain pool holds single digits: use ClassificationSet::digits()".into(),
            ));
        }
        Ok(DigitScenes {
            config: config.clone(),
            split,
            pool: Arc::new(digit_pool(split)?),
        })
    }

    /// The texture region of this split: validation uses the right quarter of every texture,
    /// the other splits the left three quarters.
    fn region(&self, tex: &Image) -> (usize, usize, usize, usize) {
        let cut = tex.width * 3 / 4;
        if self.split == Split::Val {
            (cut, 0, tex.width - cut, tex.height)
        } else {
            (0, 0, cut, tex.height)
        }
    }

    fn background(&self, rng: &mut Rng) -> Result<Image> {
        let texs = textures()?;
        let tex = &texs[rng.below(texs.len() as u64) as usize];
        let (rx, ry, rw, rh) = self.region(tex);
        let s = self.config.image_size;
        // Crop a square of random size (zoom) from the region and resample it to s x s.
        let max_c = rw.min(rh);
        let min_c = (s / 2).min(max_c).max(1);
        let c = rng.range_inclusive(min_c as i64, max_c.max(min_c) as i64) as usize;
        let x0 = rx + rng.below((rw - c + 1) as u64) as usize;
        let y0 = ry + rng.below((rh - c + 1) as u64) as usize;
        // Tint and contrast so scenes differ in colour; keep the texture's detail.
        let tint = [
            rng.uniform(0.45, 1.0),
            rng.uniform(0.45, 1.0),
            rng.uniform(0.45, 1.0),
        ];
        let gain = rng.uniform(0.5, 0.9);
        let mut out = Image::new(s, s, 3, 0);
        let scale = c as f64 / s as f64;
        for y in 0..s {
            for x in 0..s {
                let v = bilinear(
                    tex,
                    x0 as f64 + (x as f64 + 0.5) * scale - 0.5,
                    y0 as f64 + (y as f64 + 0.5) * scale - 0.5,
                );
                let p = out.pixel_mut(x, y);
                for k in 0..3 {
                    p[k] = (v * gain * tint[k]).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Ok(out)
    }

    /// Generates scene `index`.
    pub fn scene(&self, index: usize) -> Result<Sample> {
        let cfg = &self.config;
        let mnist = mnist()?;
        let mut rng = Rng::derive(&[cfg.seed, 0x4449_4749, self.split.tag(), index as u64]);
        let mut image = self.background(&mut rng)?;
        let s = cfg.image_size;
        let mut label = Plane::new(s, s, 0);
        let want = rng.range_inclusive(cfg.min_digits as i64, cfg.max_digits as i64) as usize;
        let mut sample_boxes = Vec::new();
        let mut classes = Vec::new();
        let mut masks = Vec::new();
        let mut taken: Vec<[usize; 4]> = Vec::new();
        let mut attempts = 0;
        while classes.len() < want && attempts < 60 {
            attempts += 1;
            let d = self.pool[rng.below(self.pool.len() as u64) as usize];
            let digit = Plane::from_raw(mnist.cols, mnist.rows, mnist.image(d).to_vec());
            let h =
                rng.range_inclusive(cfg.min_digit_size as i64, cfg.max_digit_size as i64) as usize;
            let alpha = scaled_ink(&digit, h);
            let (pw, ph) = (alpha.width, alpha.height);
            if pw + 2 > s || ph + 2 > s {
                continue;
            }
            let px = 1 + rng.below((s - pw - 1) as u64) as usize;
            let py = 1 + rng.below((s - ph - 1) as u64) as usize;
            // Patches never touch: a 1-pixel gap keeps every mask and box exact.
            let rect = [px, py, px + pw, py + ph];
            if taken
                .iter()
                .any(|t| rect[0] <= t[2] && t[0] <= rect[2] && rect[1] <= t[3] && t[1] <= rect[3])
            {
                continue;
            }
            let mut mask = Plane::new(s, s, 0);
            let ink = ink_colour(&image, rect, &mut rng);
            for y in 0..ph {
                for x in 0..pw {
                    let a = alpha.get(x, y);
                    if a == 0 {
                        continue;
                    }
                    let p = image.pixel_mut(px + x, py + y);
                    let af = a as f32 / 255.0;
                    for k in 0..3 {
                        p[k] = (p[k] as f32 * (1.0 - af) + ink[k] as f32 * af).round() as u8;
                    }
                    if a >= INK_THRESHOLD {
                        mask.set(px + x, py + y, 1);
                        label.set(px + x, py + y, mnist.labels[d] + 1);
                    }
                }
            }
            let Some(b) = mask.bbox() else { continue };
            taken.push(rect);
            sample_boxes.push(b);
            classes.push(mnist.labels[d] as u32);
            masks.push(mask);
        }
        let mut sample = Sample::new(image);
        let n = classes.len();
        sample.boxes = sample_boxes;
        sample.classes = classes;
        sample.crowd = vec![false; n];
        sample.label_map = Some(label);
        sample.masks = cfg.masks.then_some(masks);
        sample.image_id = index as u64 + 1;
        Ok(sample)
    }
}

/// Alpha at or above this (of 255) is ink: it sets the mask, the label map and the box.
pub const INK_THRESHOLD: u8 = 96;

/// Crops a digit to its ink and scales it to `height` pixels tall (aspect kept).
fn scaled_ink(digit: &Plane, height: usize) -> Plane {
    let [x1, y1, x2, y2] =
        digit
            .bbox()
            .unwrap_or([0.0, 0.0, digit.width as f32, digit.height as f32]);
    let (x1, y1, x2, y2) = (x1 as usize, y1 as usize, x2 as usize, y2 as usize);
    let (cw, ch) = (x2 - x1, y2 - y1);
    let scale = height as f64 / ch as f64;
    let w = ((cw as f64 * scale).round() as usize).max(1);
    let crop = Image::from_raw(
        cw,
        ch,
        1,
        (y1..y2)
            .flat_map(|y| (x1..x2).map(move |x| (y, x)))
            .map(|(y, x)| digit.get(x, y))
            .collect(),
    );
    let mut out = Plane::new(w, height, 0);
    let (sx, sy) = (cw as f64 / w as f64, ch as f64 / height as f64);
    for y in 0..height {
        for x in 0..w {
            let v = bilinear(
                &crop,
                (x as f64 + 0.5) * sx - 0.5,
                (y as f64 + 0.5) * sy - 0.5,
            );
            out.set(x, y, v.round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

/// A colour that stands out from the background under the patch.
fn ink_colour(img: &Image, r: [usize; 4], rng: &mut Rng) -> [u8; 3] {
    let mut sum = 0f64;
    let mut n = 0f64;
    for y in r[1]..r[3] {
        for x in r[0]..r[2] {
            let p = img.pixel(x, y);
            sum += (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0;
            n += 1.0;
        }
    }
    let mean = sum / n.max(1.0);
    let (lo, hi) = if mean < 110.0 {
        (190.0, 255.0)
    } else {
        (0.0, 60.0)
    };
    let mut c = [0u8; 3];
    for v in &mut c {
        *v = rng.uniform(lo, hi) as u8;
    }
    c
}

/// Bilinear sample of channel 0 with edge clamping.
fn bilinear(img: &Image, x: f64, y: f64) -> f64 {
    let x = x.clamp(0.0, (img.width - 1) as f64);
    let y = y.clamp(0.0, (img.height - 1) as f64);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(img.width - 1), (y0 + 1).min(img.height - 1));
    let (fx, fy) = (x - x0 as f64, y - y0 as f64);
    let g = |xx: usize, yy: usize| img.data[(yy * img.width + xx) * img.channels] as f64;
    let top = g(x0, y0) * (1.0 - fx) + g(x1, y0) * fx;
    let bot = g(x0, y1) * (1.0 - fx) + g(x1, y1) * fx;
    top * (1.0 - fy) + bot * fy
}

impl Dataset for DigitScenes {
    fn len(&self) -> usize {
        self.config.count(self.split)
    }
    fn get(&self, index: usize) -> Result<Sample> {
        self.scene(index)
    }
    fn class_names(&self) -> Vec<String> {
        DIGIT_NAMES.iter().map(|s| s.to_string()).collect()
    }
}

/// A single-label classification set of 28x28 gray images. Each sample has one box covering
/// the image, whose class is the label.
pub struct ClassificationSet {
    pub name: String,
    pub idx: &'static Idx,
    pub indices: Vec<usize>,
    pub names: Vec<String>,
}

impl ClassificationSet {
    /// Fashion-MNIST: the out-of-domain pre-training source (ImageNet's role in the paper).
    pub fn fashion() -> Result<Self> {
        let idx = fashion_mnist()?;
        Ok(ClassificationSet {
            name: "fashion-mnist".into(),
            idx,
            indices: (0..idx.len()).collect(),
            names: FASHION_NAMES.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The in-domain pre-training pool: MNIST digits used by no scene.
    pub fn digits() -> Result<Self> {
        Ok(ClassificationSet {
            name: "digits".into(),
            idx: mnist()?,
            indices: digit_pool(Split::Pretrain)?,
            names: DIGIT_NAMES.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn label(&self, i: usize) -> u32 {
        self.idx.labels[self.indices[i]] as u32
    }
}

impl Dataset for ClassificationSet {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let k = self.indices[i];
        let img = Image::from_raw(self.idx.cols, self.idx.rows, 1, self.idx.image(k).to_vec());
        let mut s = Sample::new(img);
        s.boxes = vec![[0.0, 0.0, self.idx.cols as f32, self.idx.rows as f32]];
        s.classes = vec![self.idx.labels[k] as u32];
        s.crowd = vec![false];
        s.image_id = k as u64;
        Ok(s)
    }
    fn class_names(&self) -> Vec<String> {
        self.names.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn embedded_sets_parse() {
        let m = mnist().unwrap();
        assert_eq!((m.len(), m.rows, m.cols), (10_000, 28, 28));
        let counts: Vec<usize> = (0..10u8)
            .map(|c| m.labels.iter().filter(|&&l| l == c).count())
            .collect();
        assert_eq!(
            counts,
            vec![1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
        );
        let f = fashion_mnist().unwrap();
        assert_eq!(f.len(), 10_000);
        assert_eq!(textures().unwrap().len(), 3);
    }

    #[test]
    fn pools_are_disjoint_and_cover_mnist() {
        let pools: Vec<HashSet<usize>> =
            [Split::Train, Split::Unlabeled, Split::Val, Split::Pretrain]
                .iter()
                .map(|&s| digit_pool(s).unwrap().into_iter().collect())
                .collect();
        let total: usize = pools.iter().map(|p| p.len()).sum();
        assert_eq!(total, 10_000);
        for i in 0..4 {
            for j in i + 1..4 {
                assert!(pools[i].is_disjoint(&pools[j]));
            }
        }
        // every class in every pool
        let m = mnist().unwrap();
        for p in &pools {
            let classes: HashSet<u8> = p.iter().map(|&i| m.labels[i]).collect();
            assert_eq!(classes.len(), 10);
        }
    }

    #[test]
    fn scenes_are_deterministic_with_exact_boxes_and_maps() {
        let cfg = DigitsConfig::default();
        let ds = DigitScenes::new(&cfg, Split::Train).unwrap();
        let mut total = 0;
        for i in 0..40 {
            let a = ds.get(i).unwrap();
            assert_eq!(a, ds.get(i).unwrap());
            a.check().unwrap();
            let n = a.boxes.len();
            assert!((1..=6).contains(&n), "scene {i} has {n} digits");
            total += n;
            let lm = a.label_map.as_ref().unwrap();
            let masks = a.masks.as_ref().unwrap();
            let mut union = vec![0u8; lm.data.len()];
            for k in 0..n {
                // box is exactly the mask's bbox, and the label map carries the class there
                assert_eq!(masks[k].bbox().unwrap(), a.boxes[k]);
                for (p, (&m, &l)) in masks[k].data.iter().zip(&lm.data).enumerate() {
                    if m != 0 {
                        assert_eq!(l as u32, a.classes[k] + 1);
                        assert_eq!(union[p], 0, "masks overlap");
                        union[p] = 1;
                    }
                }
                let h = a.boxes[k][3] - a.boxes[k][1];
                assert!(h >= 10.0 && h <= 37.0, "digit height {h}");
            }
            // every labelled pixel belongs to a mask
            for (p, &l) in lm.data.iter().enumerate() {
                assert_eq!(l != 0, union[p] != 0);
            }
        }
        assert!(total > 40 * 2, "too few digits per scene: {total}");
        let other = DigitScenes::new(&DigitsConfig { seed: 1, ..cfg }, Split::Train).unwrap();
        assert_ne!(other.get(0).unwrap().image, ds.get(0).unwrap().image);
    }

    #[test]
    fn validation_uses_its_own_digits() {
        let cfg = DigitsConfig::default();
        let v = DigitScenes::new(&cfg, Split::Val).unwrap();
        let t = DigitScenes::new(&cfg, Split::Train).unwrap();
        let vp: HashSet<usize> = v.pool.iter().copied().collect();
        assert!(t.pool.iter().all(|d| !vp.contains(d)));
        assert_eq!(v.len(), cfg.val);
    }

    #[test]
    fn classification_sets() {
        let f = ClassificationSet::fashion().unwrap();
        assert_eq!(f.len(), 10_000);
        let s = f.get(5).unwrap();
        assert_eq!((s.width(), s.height()), (28, 28));
        let d = ClassificationSet::digits().unwrap();
        assert!(d.len() > 1000);
        assert_eq!(d.get(0).unwrap().classes[0], d.label(0));
    }
}
