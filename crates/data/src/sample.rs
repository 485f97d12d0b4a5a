//! The data model shared by every crate: an image with its boxes, classes, masks and label map.
use std::path::PathBuf;

/// An 8-bit image, rows of interleaved channels (HWC). `channels` is 1 (gray) or 3 (RGB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Image {
    pub fn new(width: usize, height: usize, channels: usize, fill: u8) -> Self {
        assert!(channels == 1 || channels == 3, "channels must be 1 or 3");
        Image {
            width,
            height,
            channels,
            data: vec![fill; width * height * channels],
        }
    }

    pub fn from_raw(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Self {
        assert!(channels == 1 || channels == 3, "channels must be 1 or 3");
        assert_eq!(data.len(), width * height * channels, "image buffer size");
        Image {
            width,
            height,
            channels,
            data,
        }
    }

    #[inline]
    pub fn idx(&self, x: usize, y: usize) -> usize {
        (y * self.width + x) * self.channels
    }

    #[inline]
    pub fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let i = self.idx(x, y);
        &self.data[i..i + self.channels]
    }

    #[inline]
    pub fn pixel_mut(&mut self, x: usize, y: usize) -> &mut [u8] {
        let i = self.idx(x, y);
        let c = self.channels;
        &mut self.data[i..i + c]
    }

    /// The same image with three channels (gray is replicated).
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        let mut data = Vec::with_capacity(self.data.len() * 3);
        for &v in &self.data {
            data.extend_from_slice(&[v, v, v]);
        }
        Image::from_raw(self.width, self.height, 3, data)
    }

    /// ITU-R 601-2 luma, as PIL's `convert("L")`.
    pub fn to_gray(&self) -> Image {
        if self.channels == 1 {
            return self.clone();
        }
        let data = self
            .data
            .chunks_exact(3)
            .map(|p| {
                ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16)
                    as u8
            })
            .collect();
        Image::from_raw(self.width, self.height, 1, data)
    }

    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }
}

/// A single-channel u8 plane: a semantic label map (class per pixel, 255 = ignore) or an
/// instance mask (0/1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Plane {
    pub fn new(width: usize, height: usize, fill: u8) -> Self {
        Plane {
            width,
            height,
            data: vec![fill; width * height],
        }
    }
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height, "plane buffer size");
        Plane {
            width,
            height,
            data,
        }
    }
    #[inline]
    pub fn get(&self, x: usize, y: usize) -> u8 {
        self.data[y * self.width + x]
    }
    #[inline]
    pub fn set(&mut self, x: usize, y: usize, v: u8) {
        self.data[y * self.width + x] = v;
    }
    /// Tight box `[x1, y1, x2, y2]` (x2, y2 exclusive) around the non-zero pixels, if any.
    pub fn bbox(&self) -> Option<[f32; 4]> {
        let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0, 0);
        for y in 0..self.height {
            let row = &self.data[y * self.width..(y + 1) * self.width];
            if let (Some(a), Some(b)) = (
                row.iter().position(|&v| v != 0),
                row.iter().rposition(|&v| v != 0),
            ) {
                x1 = x1.min(a);
                x2 = x2.max(b + 1);
                y1 = y1.min(y);
                y2 = y + 1;
            }
        }
        (x1 != usize::MAX).then(|| [x1 as f32, y1 as f32, x2 as f32, y2 as f32])
    }
    /// Number of non-zero pixels.
    pub fn count_nonzero(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }
}

/// How the current image relates to the original one. Per axis,
/// `current = f(original) * scale - offset`, where `f` mirrors x (`x -> W_orig - x`) when
/// `flipped` is set and is the identity otherwise. Any chain of flips, resizes, crops and pads
/// has this form (a flip after scaling is a flip of the original with a shifted offset).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Meta {
    /// (height, width) of the image as read from disk.
    pub original_size: (usize, usize),
    /// (sy, sx)
    pub scale: (f32, f32),
    /// (oy, ox)
    pub offset: (f32, f32),
    /// True when the image was mirrored left-right after scaling.
    pub flipped: bool,
}

impl Meta {
    /// Maps a box of the current image back to the original image.
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let (sy, sx) = self.scale;
        let (oy, ox) = self.offset;
        let mut x1 = (b[0] + ox) / sx;
        let mut x2 = (b[2] + ox) / sx;
        if self.flipped {
            let w = self.original_size.1 as f32;
            (x1, x2) = (w - x2, w - x1);
        }
        [x1, (b[1] + oy) / sy, x2, (b[3] + oy) / sy]
    }

    /// Maps a box of the original image into the current one.
    pub fn to_current(&self, b: [f32; 4]) -> [f32; 4] {
        let (sy, sx) = self.scale;
        let (oy, ox) = self.offset;
        let (mut x1, mut x2) = (b[0], b[2]);
        if self.flipped {
            let w = self.original_size.1 as f32;
            (x1, x2) = (w - x2, w - x1);
        }
        [x1 * sx - ox, b[1] * sy - oy, x2 * sx - ox, b[3] * sy - oy]
    }

    /// Records a resize by (sy, sx) of the current image.
    pub fn scaled(mut self, sy: f32, sx: f32) -> Self {
        self.scale = (self.scale.0 * sy, self.scale.1 * sx);
        self.offset = (self.offset.0 * sy, self.offset.1 * sx);
        self
    }

    /// Records a crop whose top-left corner is (oy, ox) in the current image (negative = pad).
    pub fn shifted(mut self, oy: f32, ox: f32) -> Self {
        self.offset = (self.offset.0 + oy, self.offset.1 + ox);
        self
    }

    /// Records a left-right mirror of the current image, `current_width` pixels wide.
    pub fn mirrored(mut self, current_width: f32) -> Self {
        // x' = W - (f(x)*sx - ox) = g(x)*sx - (W_orig*sx - W - ox), g = the other mirror state.
        let w0 = self.original_size.1 as f32;
        self.offset.1 = w0 * self.scale.1 - current_width - self.offset.1;
        self.flipped = !self.flipped;
        self
    }

    pub fn identity(height: usize, width: usize) -> Self {
        Meta {
            original_size: (height, width),
            scale: (1.0, 1.0),
            offset: (0.0, 0.0),
            flipped: false,
        }
    }
}

/// One training or evaluation example.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub image: Image,
    /// Pixel boxes `[x1, y1, x2, y2]`.
    pub boxes: Vec<[f32; 4]>,
    /// Contiguous train class ids (0-based), one per box.
    pub classes: Vec<u32>,
    /// COCO `iscrowd`, one per box.
    pub crowd: Vec<bool>,
    /// Semantic label map (class per pixel, 255 = ignore).
    pub label_map: Option<Plane>,
    /// One 0/1 mask per box, when instance masks are known.
    pub masks: Option<Vec<Plane>>,
    pub image_id: u64,
    pub source: Option<PathBuf>,
    pub meta: Meta,
}

/// Ignore value in label maps.
pub const IGNORE: u8 = 255;

impl Sample {
    pub fn new(image: Image) -> Self {
        let meta = Meta::identity(image.height, image.width);
        Sample {
            image,
            boxes: Vec::new(),
            classes: Vec::new(),
            crowd: Vec::new(),
            label_map: None,
            masks: None,
            image_id: 0,
            source: None,
            meta,
        }
    }

    pub fn width(&self) -> usize {
        self.image.width
    }
    pub fn height(&self) -> usize {
        self.image.height
    }

    /// Keeps the boxes (with their classes, crowd flags and masks) for which `keep` is true.
    pub fn retain_boxes(&mut self, mut keep: impl FnMut(usize, &[f32; 4]) -> bool) {
        let flags: Vec<bool> = self
            .boxes
            .iter()
            .enumerate()
            .map(|(i, b)| keep(i, b))
            .collect();
        let mut it = flags.iter();
        self.boxes.retain(|_| *it.next().unwrap());
        let mut it = flags.iter();
        self.classes.retain(|_| *it.next().unwrap());
        let mut it = flags.iter();
        self.crowd.retain(|_| *it.next().unwrap());
        if let Some(m) = &mut self.masks {
            let mut it = flags.iter();
            m.retain(|_| *it.next().unwrap());
        }
    }

    /// Checks that every per-box vector and every plane agrees with the image.
    pub fn check(&self) -> std::result::Result<(), String> {
        let n = self.boxes.len();
        if self.classes.len() != n || self.crowd.len() != n {
            return Err(format!(
                "{} boxes but {} classes and {} crowd flags",
                n,
                self.classes.len(),
                self.crowd.len()
            ));
        }
        let (w, h) = (self.image.width, self.image.height);
        if let Some(l) = &self.label_map {
            if (l.width, l.height) != (w, h) {
                return Err(format!(
                    "label map is {}x{} but the image is {}x{}",
                    l.width, l.height, w, h
                ));
            }
        }
        if let Some(ms) = &self.masks {
            if ms.len() != n {
                return Err(format!("{} boxes but {} masks", n, ms.len()));
            }
            if let Some(m) = ms.iter().find(|m| (m.width, m.height) != (w, h)) {
                return Err(format!(
                    "a mask is {}x{} but the image is {}x{}",
                    m.width, m.height, w, h
                ));
            }
        }
        for (i, b) in self.boxes.iter().enumerate() {
            if !(b[2] >= b[0] && b[3] >= b[1]) || b.iter().any(|v| !v.is_finite()) {
                return Err(format!("box {i} {b:?} has negative size"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_keeps_vectors_aligned() {
        let mut s = Sample::new(Image::new(4, 4, 3, 0));
        s.boxes = vec![[0., 0., 1., 1.], [1., 1., 2., 2.], [2., 2., 3., 3.]];
        s.classes = vec![5, 6, 7];
        s.crowd = vec![false, true, false];
        s.masks = Some(vec![
            Plane::new(4, 4, 0),
            Plane::new(4, 4, 1),
            Plane::new(4, 4, 2),
        ]);
        s.retain_boxes(|i, _| i != 1);
        assert_eq!(s.classes, vec![5, 7]);
        assert_eq!(s.crowd, vec![false, false]);
        assert_eq!(s.masks.as_ref().unwrap()[1].data[0], 2);
        assert!(s.check().is_ok());
    }

    #[test]
    fn meta_round_trips_through_flip_scale_and_crop() {
        let b = [10.0f32, 20.0, 30.0, 50.0];
        let m = Meta::identity(100, 80)
            .scaled(2.0, 1.5)
            .shifted(7.0, -3.0)
            .mirrored(130.0)
            .scaled(0.5, 0.5);
        let c = m.to_current(b);
        // by hand: scale (x*1.5, y*2) -> shift (x+3, y-7) -> mirror in 130 px -> halve
        let by_hand = [
            (130.0 - (30.0 * 1.5 + 3.0)) * 0.5,
            (20.0 * 2.0 - 7.0) * 0.5,
            (130.0 - (10.0 * 1.5 + 3.0)) * 0.5,
            (50.0 * 2.0 - 7.0) * 0.5,
        ];
        for k in 0..4 {
            assert!((c[k] - by_hand[k]).abs() < 1e-4, "{c:?} {by_hand:?}");
        }
        let back = m.to_original(c);
        for k in 0..4 {
            assert!((back[k] - b[k]).abs() < 1e-4, "{back:?}");
        }
    }

    #[test]
    fn plane_bbox_is_tight() {
        let mut p = Plane::new(10, 8, 0);
        p.set(3, 2, 1);
        p.set(6, 5, 1);
        assert_eq!(p.bbox(), Some([3., 2., 7., 6.]));
        assert_eq!(Plane::new(3, 3, 0).bbox(), None);
    }

    #[test]
    fn gray_conversion_matches_pil_weights() {
        let img = Image::from_raw(1, 1, 3, vec![255, 0, 0]);
        assert_eq!(img.to_gray().data, vec![76]);
        let img = Image::from_raw(1, 1, 3, vec![10, 200, 30]);
        // PIL: (10*299 + 200*587 + 30*114)/1000 = 123.8 -> 124 with rounding
        assert_eq!(img.to_gray().data, vec![124]);
    }
}
