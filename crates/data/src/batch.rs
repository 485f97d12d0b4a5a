//! Collation of samples into candle tensors: normalisation, padding to a stride multiple,
//! padded boxes and classes, padded label maps, and the per-image info needed to map
//! predictions back to the original images.
use crate::error::{Error, Result};
use crate::sample::{Meta, Sample, IGNORE};
use candle_core::{Device, Tensor};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Per-channel mean and std on the [0, 1] scale.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Padded height and width are multiples of this (128 as the paper's RetinaNet).
    pub size_divisor: usize,
    /// Pad to at least this (height, width), e.g. the training size for fixed-size batches.
    pub min_size: Option<(usize, usize)>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            size_divisor: 128,
            min_size: None,
        }
    }
}

/// Per-image information kept through batching.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInfo {
    pub image_id: u64,
    /// (height, width) of the unpadded image in the batch.
    pub size: (usize, usize),
    pub meta: Meta,
}

#[derive(Debug)]
pub struct Batch {
    /// [B, 3, H, W] f32, normalised; padding is 0 (the mean colour).
    pub images: Tensor,
    /// [B, M, 4] f32 pixel xyxy, zero padded.
    pub boxes: Tensor,
    /// [B, M] i64 train ids, -1 padded.
    pub classes: Tensor,
    /// [B, M] u8 crowd flags.
    pub crowd: Tensor,
    /// Valid boxes per image.
    pub num_boxes: Vec<usize>,
    /// [B, H, W] u8 label maps padded with 255, when every sample has one.
    pub label_maps: Option<Tensor>,
    pub info: Vec<ImageInfo>,
}

fn round_up(v: usize, d: usize) -> usize {
    if d <= 1 {
        v
    } else {
        v.div_ceil(d) * d
    }
}

/// Stacks samples into a [`Batch`].
pub fn collate(samples: &[Sample], cfg: &BatchConfig, device: &Device) -> Result<Batch> {
    if samples.is_empty() {
        return Err(Error::Other("cannot collate an empty batch".into()));
    }
    for s in samples {
        s.check()
            .map_err(|e| Error::Other(format!("image id {}: {e}", s.image_id)))?;
    }
    let mut h = samples.iter().map(|s| s.height()).max().unwrap();
    let mut w = samples.iter().map(|s| s.width()).max().unwrap();
    if let Some((mh, mw)) = cfg.min_size {
        h = h.max(mh);
        w = w.max(mw);
    }
    let (h, w) = (round_up(h, cfg.size_divisor), round_up(w, cfg.size_divisor));
    let b = samples.len();
    let plane = h * w;
    let mut img = vec![0f32; b * 3 * plane];
    let scale: Vec<f32> = cfg.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
    let shift: Vec<f32> = (0..3).map(|c| cfg.mean[c] / cfg.std[c]).collect();
    for (i, s) in samples.iter().enumerate() {
        let im = &s.image;
        for c in 0..3 {
            let base = (i * 3 + c) * plane;
            let src_c = if im.channels == 1 { 0 } else { c };
            for y in 0..im.height {
                let row = &mut img[base + y * w..base + y * w + im.width];
                let src = &im.data[y * im.width * im.channels..(y + 1) * im.width * im.channels];
                for (x, o) in row.iter_mut().enumerate() {
                    *o = src[x * im.channels + src_c] as f32 * scale[c] - shift[c];
                }
            }
        }
    }
    let images = Tensor::from_vec(img, (b, 3, h, w), device)?;

    let m = samples.iter().map(|s| s.boxes.len()).max().unwrap().max(1);
    let mut boxes = vec![0f32; b * m * 4];
    let mut classes = vec![-1i64; b * m];
    let mut crowd = vec![0u8; b * m];
    for (i, s) in samples.iter().enumerate() {
        for (j, bx) in s.boxes.iter().enumerate() {
            boxes[(i * m + j) * 4..(i * m + j) * 4 + 4].copy_from_slice(bx);
            classes[i * m + j] = s.classes[j] as i64;
            crowd[i * m + j] = s.crowd[j] as u8;
        }
    }
    let label_maps = if samples.iter().all(|s| s.label_map.is_some()) {
        let mut lm = vec![IGNORE; b * plane];
        for (i, s) in samples.iter().enumerate() {
            let l = s.label_map.as_ref().unwrap();
            for y in 0..l.height {
                lm[i * plane + y * w..i * plane + y * w + l.width]
                    .copy_from_slice(&l.data[y * l.width..(y + 1) * l.width]);
            }
        }
        Some(Tensor::from_vec(lm, (b, h, w), device)?)
    } else {
        None
    };
    Ok(Batch {
        images,
        boxes: Tensor::from_vec(boxes, (b, m, 4), device)?,
        classes: Tensor::from_vec(classes, (b, m), device)?,
        crowd: Tensor::from_vec(crowd, (b, m), device)?,
        num_boxes: samples.iter().map(|s| s.boxes.len()).collect(),
        label_maps,
        info: samples
            .iter()
            .map(|s| ImageInfo {
                image_id: s.image_id,
                size: (s.height(), s.width()),
                meta: s.meta,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Image, Plane};

    #[test]
    fn collate_pads_normalises_and_keeps_info() {
        let mut a = Sample::new(Image::from_raw(3, 2, 3, vec![255; 18]));
        a.boxes = vec![[0., 0., 1., 1.]];
        a.classes = vec![4];
        a.crowd = vec![true];
        a.label_map = Some(Plane::new(3, 2, 1));
        a.image_id = 11;
        let mut b = Sample::new(Image::new(5, 1, 1, 0));
        b.label_map = Some(Plane::new(5, 1, 2));
        let cfg = BatchConfig {
            size_divisor: 4,
            ..Default::default()
        };
        let batch = collate(&[a, b], &cfg, &Device::Cpu).unwrap();
        assert_eq!(batch.images.dims(), &[2, 3, 4, 8]);
        let v: Vec<f32> = batch.images.flatten_all().unwrap().to_vec1().unwrap();
        let white_r = (1.0 - 0.485) / 0.229;
        assert!((v[0] - white_r).abs() < 1e-5);
        assert_eq!(v[3], 0.0, "padding is zero");
        let black_g = -0.456 / 0.224;
        let second_g = (3 + 1) * 32;
        assert!((v[second_g] - black_g).abs() < 1e-5);
        assert_eq!(
            batch.classes.to_vec2::<i64>().unwrap(),
            vec![vec![4], vec![-1]]
        );
        assert_eq!(batch.crowd.to_vec2::<u8>().unwrap(), vec![vec![1], vec![0]]);
        assert_eq!(batch.num_boxes, vec![1, 0]);
        let lm = batch.label_maps.unwrap().to_vec3::<u8>().unwrap();
        assert_eq!(lm[0][0], vec![1, 1, 1, 255, 255, 255, 255, 255]);
        assert_eq!(lm[1][0][..6], [2, 2, 2, 2, 2, 255]);
        assert_eq!(lm[1][1], vec![255; 8]);
        assert_eq!(batch.info[0].image_id, 11);
        assert_eq!(batch.info[1].size, (1, 5));
    }
}
