//! Drawing for previews: masks and label maps tinted, boxes outlined with their class id.
use crate::sample::{Image, Sample, IGNORE};

/// A distinct colour per class id.
pub fn class_colour(c: u32) -> [u8; 3] {
    const P: [[u8; 3]; 12] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 190],
        [0, 128, 128],
        [170, 110, 40],
    ];
    P[c as usize % P.len()]
}

fn blend(p: &mut [u8], c: [u8; 3], a: f32) {
    for k in 0..3 {
        p[k] = (p[k] as f32 * (1.0 - a) + c[k] as f32 * a).round() as u8;
    }
}

/// 3x5 glyphs for 0-9.
const GLYPHS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Writes a number at (x, y) (top-left) on a filled background.
pub fn draw_number(img: &mut Image, x: i64, y: i64, n: u32, fg: [u8; 3], bg: [u8; 3]) {
    let digits: Vec<usize> = n.to_string().bytes().map(|b| (b - b'0') as usize).collect();
    let w = digits.len() as i64 * 4 + 1;
    for yy in 0..7i64 {
        for xx in 0..w {
            put(img, x + xx, y + yy, bg);
        }
    }
    for (k, &d) in digits.iter().enumerate() {
        for (r, bits) in GLYPHS[d].iter().enumerate() {
            for c in 0..3 {
                if bits & (0b100 >> c) != 0 {
                    put(img, x + 1 + k as i64 * 4 + c, y + 1 + r as i64, fg);
                }
            }
        }
    }
}

fn put(img: &mut Image, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < img.width && (y as usize) < img.height {
        img.pixel_mut(x as usize, y as usize).copy_from_slice(&c);
    }
}

/// Outlines a pixel box `[x1, y1, x2, y2]` (x2, y2 exclusive).
pub fn draw_box(img: &mut Image, b: [f32; 4], c: [u8; 3]) {
    let (x1, y1) = (b[0].floor() as i64, b[1].floor() as i64);
    let (x2, y2) = (b[2].ceil() as i64 - 1, b[3].ceil() as i64 - 1);
    for x in x1..=x2 {
        put(img, x, y1, c);
        put(img, x, y2, c);
    }
    for y in y1..=y2 {
        put(img, x1, y, c);
        put(img, x2, y, c);
    }
}

/// The sample as an RGB picture: label map and instance masks tinted with their class colour
/// (ignore pixels grey), boxes outlined, class ids written at the top-left corners.
/// Crowd boxes are drawn grey.
pub fn draw_sample(sample: &Sample, _class_names: &[String]) -> Image {
    let mut img = sample.image.to_rgb();
    if let Some(lm) = &sample.label_map {
        if (lm.width, lm.height) == (img.width, img.height) {
            for (i, &l) in lm.data.iter().enumerate() {
                let p = &mut img.data[i * 3..i * 3 + 3];
                if l == IGNORE {
                    blend(p, [128, 128, 128], 0.5);
                } else if l != 0 && sample.masks.is_none() {
                    blend(p, class_colour(l as u32 - 1), 0.5);
                }
            }
        }
    }
    if let Some(ms) = &sample.masks {
        for (m, &c) in ms.iter().zip(&sample.classes) {
            if (m.width, m.height) != (img.width, img.height) {
                continue;
            }
            for (i, &v) in m.data.iter().enumerate() {
                if v != 0 {
                    blend(&mut img.data[i * 3..i * 3 + 3], class_colour(c), 0.5);
                }
            }
        }
    }
    for (k, b) in sample.boxes.iter().enumerate() {
        let crowd = sample.crowd.get(k).copied().unwrap_or(false);
        let c = if crowd {
            [160, 160, 160]
        } else {
            class_colour(sample.classes[k])
        };
        draw_box(&mut img, *b, c);
        draw_number(
            &mut img,
            b[0].floor() as i64,
            b[1].floor() as i64 - 7,
            sample.classes[k],
            [0, 0, 0],
            c,
        );
    }
    img
}

/// Tiles images in a grid with `cols` columns and a 2-pixel dark border.
pub fn grid(images: &[Image], cols: usize) -> Image {
    let cols = cols.max(1).min(images.len().max(1));
    let rows = images.len().div_ceil(cols).max(1);
    let cw = images.iter().map(|i| i.width).max().unwrap_or(1);
    let ch = images.iter().map(|i| i.height).max().unwrap_or(1);
    let gap = 2;
    let (w, h) = (cols * (cw + gap) + gap, rows * (ch + gap) + gap);
    let mut out = Image::new(w, h, 3, 32);
    for (k, im) in images.iter().enumerate() {
        let rgb = im.to_rgb();
        let (ox, oy) = (gap + (k % cols) * (cw + gap), gap + (k / cols) * (ch + gap));
        for y in 0..rgb.height {
            let src = &rgb.data[y * rgb.width * 3..(y + 1) * rgb.width * 3];
            let at = ((oy + y) * w + ox) * 3;
            out.data[at..at + src.len()].copy_from_slice(src);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Plane;

    #[test]
    fn boxes_and_masks_are_drawn() {
        let mut s = Sample::new(Image::new(20, 20, 1, 0));
        s.boxes = vec![[2.0, 10.0, 8.0, 16.0]];
        s.classes = vec![3];
        s.crowd = vec![false];
        let mut m = Plane::new(20, 20, 0);
        m.set(5, 12, 1);
        s.masks = Some(vec![m]);
        let img = draw_sample(&s, &[]);
        assert_eq!(img.channels, 3);
        assert_eq!(img.pixel(2, 10), &class_colour(3));
        assert_eq!(img.pixel(7, 15), &class_colour(3));
        assert_ne!(img.pixel(5, 12), &[0, 0, 0]);
        assert_eq!(img.pixel(4, 13), &[0, 0, 0]);
        let g = grid(&[img.clone(), img], 2);
        assert_eq!((g.width, g.height), (2 * 22 + 2, 24));
    }
}
