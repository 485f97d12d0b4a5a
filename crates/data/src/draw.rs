//! Drawing for previews and predictions: masks and label maps tinted, boxes outlined with
//! their class name (and score) in DejaVu Sans through `ab_glyph`.
use crate::sample::{Image, Plane, Sample, IGNORE};
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};

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

fn put(img: &mut Image, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < img.width && (y as usize) < img.height {
        img.pixel_mut(x as usize, y as usize).copy_from_slice(&c);
    }
}

/// DejaVu Sans (Bitstream Vera license, `assets/fonts/LICENSE-DejaVu`): the text of
/// drawings and plots.
pub static FONT_TTF: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT_TTF).expect("the embedded font parses")
}

/// Width and height (ascent to descent) in pixels of `text` set `px` pixels tall.
pub fn text_size(text: &str, px: f32) -> (usize, usize) {
    let f = font();
    let sf = f.as_scaled(PxScale::from(px));
    let (w, _) = layout(&sf, text);
    (
        w.ceil() as usize,
        (sf.ascent() - sf.descent()).ceil() as usize,
    )
}

/// The pen position of every character and the total advance, kerning included.
fn layout<F: Font, S: ScaleFont<F>>(sf: &S, text: &str) -> (f32, Vec<f32>) {
    let mut pen = 0.0;
    let mut prev = None;
    let mut at = Vec::new();
    for ch in text.chars() {
        let id = sf.glyph_id(ch);
        if let Some(p) = prev {
            pen += sf.kern(p, id);
        }
        at.push(pen);
        pen += sf.h_advance(id);
        prev = Some(id);
    }
    (pen, at)
}

/// `text` rasterised `px` pixels tall: width, height and the coverage (0..1) of every pixel,
/// row by row, with the baseline at the font's ascent so every glyph sits on it.
pub fn rasterize_text(text: &str, px: f32) -> (usize, usize, Vec<f32>) {
    let f = font();
    let sf = f.as_scaled(PxScale::from(px));
    let (w, h) = text_size(text, px);
    let mut cov = vec![0f32; w * h];
    let (_, at) = layout(&sf, text);
    for (ch, x) in text.chars().zip(at) {
        let g = sf
            .glyph_id(ch)
            .with_scale_and_position(px, point(x, sf.ascent()));
        let Some(o) = f.outline_glyph(g) else {
            continue;
        };
        let b = o.px_bounds();
        o.draw(|gx, gy, c| {
            let (x, y) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
            if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
                let p = &mut cov[y as usize * w + x as usize];
                *p = (*p + c).min(1.0);
            }
        });
    }
    (w, h, cov)
}

/// Writes `text` `px` pixels tall with its top-left corner at (x, y), anti-aliased over
/// what is there; pixels off the image are skipped.
pub fn draw_text(img: &mut Image, x: i64, y: i64, text: &str, px: f32, c: [u8; 3]) {
    let (w, h, cov) = rasterize_text(text, px);
    for (k, &a) in cov.iter().enumerate() {
        let (px_, py) = (x + (k % w.max(1)) as i64, y + (k / w.max(1)) as i64);
        if a > 0.0
            && px_ >= 0
            && py >= 0
            && (px_ as usize) < img.width
            && (py as usize) < img.height
        {
            blend(img.pixel_mut(px_ as usize, py as usize), c, a);
        }
    }
    debug_assert_eq!(cov.len(), w * h);
}

/// A text label on a filled box whose top-left corner is (x, y); black or white text,
/// whichever reads better on `bg`.
pub fn draw_label(img: &mut Image, x: i64, y: i64, text: &str, px: f32, bg: [u8; 3]) {
    let (w, h) = text_size(text, px);
    let pad = 2;
    fill_rect(img, x, y, w as i64 + 2 * pad, h as i64, bg);
    let luma = 0.299 * bg[0] as f32 + 0.587 * bg[1] as f32 + 0.114 * bg[2] as f32;
    let fg = if luma > 140.0 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    };
    draw_text(img, x + pad, y, text, px, fg);
}

fn fill_rect(img: &mut Image, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(img, xx, yy, c);
        }
    }
}

/// Outlines a pixel box `[x1, y1, x2, y2]` (x2, y2 exclusive), `thickness` pixels inwards.
pub fn draw_box(img: &mut Image, b: [f32; 4], c: [u8; 3], thickness: usize) {
    let (x1, y1) = (b[0].floor() as i64, b[1].floor() as i64);
    let (x2, y2) = (b[2].ceil() as i64 - 1, b[3].ceil() as i64 - 1);
    for t in 0..thickness.max(1) as i64 {
        for x in x1..=x2 {
            put(img, x, y1 + t, c);
            put(img, x, y2 - t, c);
        }
        for y in y1..=y2 {
            put(img, x1 + t, y, c);
            put(img, x2 - t, y, c);
        }
    }
}

/// Text height and line thickness that read at an image's size.
fn label_style(img: &Image) -> (f32, usize) {
    let side = img.width.min(img.height) as f32;
    (
        (side / 24.0).clamp(10.0, 22.0),
        (side / 250.0).round().max(1.0) as usize,
    )
}

/// The sample as an RGB picture: label map and instance masks tinted with their class colour
/// (ignore pixels grey), boxes outlined and labelled with their class name. Crowd (and
/// ignored) boxes are drawn grey.
pub fn draw_sample(sample: &Sample, class_names: &[String]) -> Image {
    draw_scored(sample, class_names, &[])
}

/// As [`draw_sample`], with "name score" on each box that has a score in `scores` (the
/// boxes' order; predictions and pseudo labels).
pub fn draw_scored(sample: &Sample, class_names: &[String], scores: &[f32]) -> Image {
    let mut img = sample.image.to_rgb();
    tint(&mut img, sample);
    let (px, thick) = label_style(&img);
    for (k, b) in sample.boxes.iter().enumerate() {
        let crowd = sample.crowd.get(k).copied().unwrap_or(false);
        let class = sample.classes[k];
        let c = if crowd {
            [160, 160, 160]
        } else {
            class_colour(class)
        };
        draw_box(&mut img, *b, c, thick);
        let name = class_names
            .get(class as usize)
            .cloned()
            .unwrap_or_else(|| class.to_string());
        let text = match scores.get(k) {
            Some(s) => format!("{name} {s:.2}"),
            None => name,
        };
        let (_, h) = text_size(&text, px);
        // above the box where it fits, else just inside its top edge
        let (x, top) = (b[0].floor() as i64, b[1].floor() as i64);
        let y = if top >= h as i64 { top - h as i64 } else { top };
        draw_label(&mut img, x, y, &text, px, c);
    }
    img
}

/// Tints label-map classes (without instance masks) and instance masks onto `img`.
fn tint(img: &mut Image, sample: &Sample) {
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
}

/// The sample enlarged `k` times (nearest neighbour: image, label map, masks; boxes scaled),
/// so labels drawn on a small image leave its content readable.
pub fn enlarged(sample: &Sample, k: usize) -> Sample {
    let k = k.max(1);
    if k == 1 {
        return sample.clone();
    }
    let grow = |w: usize, h: usize, c: usize, data: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h * c * k * k);
        for y in 0..h * k {
            for x in 0..w * k {
                let at = ((y / k) * w + x / k) * c;
                out.extend_from_slice(&data[at..at + c]);
            }
        }
        out
    };
    let im = &sample.image;
    let mut s = sample.clone();
    let data = grow(im.width, im.height, im.channels, &im.data);
    s.image = Image::from_raw(im.width * k, im.height * k, im.channels, data);
    let plane = |p: &Plane| {
        Plane::from_raw(
            p.width * k,
            p.height * k,
            grow(p.width, p.height, 1, &p.data),
        )
    };
    s.label_map = sample.label_map.as_ref().map(plane);
    s.masks = sample.masks.as_ref().map(|m| m.iter().map(plane).collect());
    s.boxes = sample
        .boxes
        .iter()
        .map(|b| b.map(|v| v * k as f32))
        .collect();
    s
}

/// The sample enlarged a whole number of times (at most 8) so its shorter side reaches
/// `min_side` pixels; larger samples unchanged.
pub fn readable(sample: &Sample, min_side: usize) -> Sample {
    let side = sample.width().min(sample.height()).max(1);
    enlarged(sample, min_side.div_ceil(side).min(8))
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

    fn one_box() -> Sample {
        let mut s = Sample::new(Image::new(60, 60, 1, 0));
        s.boxes = vec![[2.0, 30.0, 20.0, 50.0]];
        s.classes = vec![3];
        s.crowd = vec![false];
        let mut m = Plane::new(60, 60, 0);
        m.set(5, 40, 1);
        s.masks = Some(vec![m]);
        s
    }

    #[test]
    fn boxes_and_masks_are_drawn() {
        let img = draw_sample(&one_box(), &[]);
        assert_eq!(img.channels, 3);
        assert_eq!(img.pixel(2, 30), &class_colour(3));
        assert_eq!(img.pixel(19, 49), &class_colour(3));
        assert_ne!(img.pixel(5, 40), &[0, 0, 0]);
        assert_eq!(img.pixel(8, 42), &[0, 0, 0]);
        let g = grid(&[img.clone(), img], 2);
        assert_eq!((g.width, g.height), (2 * 62 + 2, 64));
    }

    #[test]
    fn labels_carry_the_class_name_and_score_above_the_box() {
        let names: Vec<String> = ["a", "b", "c", "dog"].map(String::from).to_vec();
        let s = one_box();
        let named = draw_sample(&s, &names);
        let scored = draw_scored(&s, &names, &[0.87]);
        let (w, h) = text_size("dog", 10.0);
        assert!(w > 10 && (10..=14).contains(&h), "{w}x{h}");
        assert!(text_size("dog 0.87", 10.0).0 > w + 10);
        // the label sits on a class-coloured box above the box, with text pixels in it
        let label: Vec<&[u8]> = (30 - h..30)
            .flat_map(|y| (2..2 + w + 4).map(move |x| (x, y)))
            .map(|(x, y)| named.pixel(x, y))
            .collect();
        assert!(label.iter().any(|p| *p == class_colour(3)));
        assert!(label.iter().any(|p| *p != class_colour(3)), "no text drawn");
        // the score widens the label; the class id alone is a different text
        assert_ne!(named, scored);
        assert_ne!(named, draw_sample(&s, &[]));
        assert_eq!(
            named.pixel(2, 30),
            &class_colour(3),
            "the box stays visible"
        );
    }

    #[test]
    fn enlarged_samples_keep_their_geometry() {
        let s = one_box();
        let e = enlarged(&s, 3);
        assert_eq!((e.width(), e.height()), (180, 180));
        assert_eq!(e.boxes, vec![[6.0, 90.0, 60.0, 150.0]]);
        let m = &e.masks.as_ref().unwrap()[0];
        assert_eq!((m.get(15, 120), m.get(17, 122), m.get(18, 120)), (1, 1, 0));
        assert_eq!(enlarged(&s, 1), s);
    }
}
