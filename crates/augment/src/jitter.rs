//! Scale jitter with random crop and pad: TF `input_utils.resize_and_crop_image`, which is
//! both the paper's "crops" ([0.8, 1.2]) and its large scale jitter ([0.5, 2.0]).
use crate::geometric::{flip_and_resample, resample_window, Size, Window};
use crate::Augment;
use pupil_data::{Rng, Sample};

/// ImageNet mean in 0..255: the colour that the batcher's normalisation maps to 0, so padding
/// here matches TF's zero padding of the normalised image.
pub const MEAN_FILL: [u8; 3] = [124, 116, 104];

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleJitter {
    /// Desired output size (before padding).
    pub size: Size,
    /// Range of the random factor applied to `size`; (1, 1) = plain resize-to-fit and pad.
    pub scale: (f64, f64),
    /// The output is padded right/bottom up to a multiple of this (0 or 1 = no padding).
    pub pad_multiple: usize,
    pub fill: [u8; 3],
}

impl ScaleJitter {
    /// Jitter in `[min, max]` to `size`, padded to a multiple of 128 with the mean colour.
    pub fn new(size: Size, min: f64, max: f64) -> Self {
        ScaleJitter {
            size,
            scale: (min, max),
            pad_multiple: 128,
            fill: MEAN_FILL,
        }
    }

    /// The paper's crop jitter (Augment-S1/S2): [0.8, 1.2].
    pub fn crop(size: Size) -> Self {
        Self::new(size, 0.8, 1.2)
    }

    /// The paper's large scale jitter (Augment-S3/S4): [0.5, 2.0].
    pub fn large(size: Size) -> Self {
        Self::new(size, 0.5, 2.0)
    }

    /// Output size: `size` rounded up to `pad_multiple`.
    pub fn padded_size(&self) -> Size {
        let up = |v: usize| match self.pad_multiple {
            0 | 1 => v,
            m => v.div_ceil(m) * m,
        };
        Size::new(up(self.size.width), up(self.size.height))
    }

    /// Draws the resize and crop for a `width` x `height` image (steps 1-3 of the TF code).
    pub fn window(&self, width: usize, height: usize, rng: &mut Rng) -> Window {
        let (hd, wd) = (self.size.height as f64, self.size.width as f64);
        let jitter = self.scale != (1.0, 1.0);
        let (sh, sw) = if jitter {
            let r = rng.uniform(self.scale.0, self.scale.1);
            ((r * hd).round(), (r * wd).round())
        } else {
            (hd, wd)
        };
        let (h, w) = (height.max(1) as f64, width.max(1) as f64);
        let scale = (sh / h).min(sw / w);
        let scaled_h = ((h * scale).round() as usize).max(1);
        let scaled_w = ((w * scale).round() as usize).max(1);
        let (oy, ox) = if jitter {
            let max_y = scaled_h.saturating_sub(self.size.height) as f64;
            let max_x = scaled_w.saturating_sub(self.size.width) as f64;
            // y first, as TF draws `random_uniform([2])` for (y, x).
            let oy = (max_y * rng.f64()) as isize;
            let ox = (max_x * rng.f64()) as isize;
            (oy, ox)
        } else {
            (0, 0)
        };
        Window {
            scaled: Size::new(scaled_w, scaled_h),
            offset: (ox, oy),
            content: self.size,
            out: self.padded_size(),
        }
    }
}

impl Augment for ScaleJitter {
    fn apply(&self, s: &mut Sample, rng: &mut Rng) {
        let win = self.window(s.image.width, s.image.height, rng);
        resample_window(s, &win, self.fill, true);
    }
}

/// A horizontal flip with probability `flip_prob` followed by `jitter`, resampled in one pass.
/// Same random draws and same output as the two steps run one after the other.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlipJitter {
    pub flip_prob: f64,
    pub jitter: ScaleJitter,
}

impl Augment for FlipJitter {
    fn apply(&self, s: &mut Sample, rng: &mut Rng) {
        let flip = rng.bernoulli(self.flip_prob);
        let win = self.jitter.window(s.image.width, s.image.height, rng);
        flip_and_resample(s, flip, &win, self.jitter.fill, true);
    }
}
