//! The AutoAugment ops that work inside ground-truth boxes: the `*_Only_BBoxes` family (each
//! box's pixels transformed on their own, boxes unchanged) and `BBox_Cutout`.
//!
//! As in TF, only the image changes: boxes, masks and label maps are left as they are.
use crate::geometric::{flip_image, warp_image, Affine};
use crate::photometric;
use pupil_data::{Image, Rng, Sample};

/// The pixel rectangle `[x0, x1) x [y0, y1)` of every pixel a box touches, clipped.
pub fn box_pixels(b: &[f32; 4], width: usize, height: usize) -> (usize, usize, usize, usize) {
    let cl = |v: f32, n: usize| (v.max(0.0) as usize).min(n);
    let x0 = cl(b[0].floor(), width);
    let y0 = cl(b[1].floor(), height);
    let x1 = cl(b[2].ceil(), width).max(x0);
    let y1 = cl(b[3].ceil(), height).max(y0);
    (x0, x1, y0, y1)
}

fn crop(img: &Image, x0: usize, x1: usize, y0: usize, y1: usize) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity((x1 - x0) * (y1 - y0) * c);
    for y in y0..y1 {
        data.extend_from_slice(&img.data[(y * img.width + x0) * c..(y * img.width + x1) * c]);
    }
    Image::from_raw(x1 - x0, y1 - y0, c, data)
}

fn paste(img: &mut Image, part: &Image, x0: usize, y0: usize) {
    let c = img.channels;
    let row = part.width * c;
    for y in 0..part.height {
        let at = ((y0 + y) * img.width + x0) * c;
        img.data[at..at + row].copy_from_slice(&part.data[y * row..(y + 1) * row]);
    }
}

/// What to do to the content of one box.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BoxOp {
    /// Degrees, counter-clockwise about the box centre.
    Rotate(f64),
    ShearX(f64),
    ShearY(f64),
    /// Content moves left by this many pixels.
    TranslateX(i64),
    /// Content moves up by this many pixels.
    TranslateY(i64),
    Flip,
    Solarize(u32),
    Equalize,
    /// Cutout with this half-size, centred uniformly inside the box.
    Cutout(usize),
}

impl BoxOp {
    /// Applies the op to an image holding one box's pixels.
    pub fn apply_to(&self, part: &mut Image, fill: u8, rng: &mut Rng) {
        let (w, h) = (part.width, part.height);
        match *self {
            BoxOp::Rotate(deg) => *part = warp_image(part, &Affine::rotation(deg, w, h), fill),
            BoxOp::ShearX(k) => *part = warp_image(part, &Affine::shear_x(k), fill),
            BoxOp::ShearY(k) => *part = warp_image(part, &Affine::shear_y(k), fill),
            BoxOp::TranslateX(p) => {
                *part = warp_image(part, &Affine::translation(-p as f64, 0.0), fill)
            }
            BoxOp::TranslateY(p) => {
                *part = warp_image(part, &Affine::translation(0.0, -p as f64), fill)
            }
            BoxOp::Flip => flip_image(part),
            BoxOp::Solarize(t) => photometric::solarize(part, t),
            BoxOp::Equalize => photometric::equalize(part),
            BoxOp::Cutout(pad) => photometric::cutout(part, pad, fill, rng),
        }
    }
}

/// Visits the boxes in random order and, with probability `prob_per_box` each, applies `op`
/// to that box's pixels. (AutoAugment passes a third of the policy probability here.)
pub fn only_bboxes(s: &mut Sample, op: BoxOp, prob_per_box: f64, fill: u8, rng: &mut Rng) {
    let order = rng.permutation(s.boxes.len());
    let (w, h) = (s.image.width, s.image.height);
    for i in order {
        if !rng.bernoulli(prob_per_box) {
            continue;
        }
        let (x0, x1, y0, y1) = box_pixels(&s.boxes[i], w, h);
        if x1 == x0 || y1 == y0 {
            continue;
        }
        let mut part = crop(&s.image, x0, x1, y0, y1);
        op.apply_to(&mut part, fill, rng);
        paste(&mut s.image, &part, x0, y0);
    }
}

/// TF `bbox_cutout`: one uniformly chosen box gets a cutout of half-sizes
/// `int(frac · box_h / 2)`, `int(frac · box_w / 2)`, centred on a uniform pixel of the box.
pub fn bbox_cutout(s: &mut Sample, pad_fraction: f64, fill: u8, rng: &mut Rng) {
    if s.boxes.is_empty() {
        return;
    }
    let i = rng.below(s.boxes.len() as u64) as usize;
    let (x0, x1, y0, y1) = box_pixels(&s.boxes[i], s.image.width, s.image.height);
    if x1 == x0 || y1 == y0 {
        return;
    }
    let pad_y = (pad_fraction * (y1 - y0) as f64 / 2.0) as usize;
    let pad_x = (pad_fraction * (x1 - x0) as f64 / 2.0) as usize;
    let cy = y0 + rng.below((y1 - y0) as u64) as usize;
    let cx = x0 + rng.below((x1 - x0) as u64) as usize;
    photometric::cutout_at(&mut s.image, cx, cy, pad_x, pad_y, fill);
}
