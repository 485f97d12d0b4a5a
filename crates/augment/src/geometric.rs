//! Geometric ops on a whole [`Sample`]: flip, resize/crop/pad and affine warps.
//!
//! Coordinates are continuous pixels: pixel `(i, j)` covers `[i, i+1) x [j, j+1)`, boxes are
//! `[x1, y1, x2, y2]` in that frame (as [`Plane::bbox`] returns them). Planes are sampled at
//! the source pixel that contains the pre-image of each output pixel's centre, so a moved mask
//! stays within half a pixel of its moved box.
use crate::Augment;
use pupil_data::{Image, Plane, Rng, Sample, IGNORE};

/// Grey used by AutoAugment for pixels a warp uncovers.
pub const FILL: u8 = 128;

/// An image size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub width: usize,
    pub height: usize,
}

impl Size {
    pub const fn new(width: usize, height: usize) -> Self {
        Size { width, height }
    }
    pub const fn square(n: usize) -> Self {
        Size {
            width: n,
            height: n,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

// ---------------------------------------------------------------------------------------------
// Flip

/// Mirrors image, planes and boxes left-right.
pub fn hflip(s: &mut Sample) {
    let w = s.image.width;
    flip_image(&mut s.image);
    if let Some(l) = &mut s.label_map {
        flip_plane(l);
    }
    if let Some(ms) = &mut s.masks {
        ms.iter_mut().for_each(flip_plane);
    }
    let wf = w as f32;
    for b in &mut s.boxes {
        *b = [wf - b[2], b[1], wf - b[0], b[3]];
    }
    s.meta = s.meta.mirrored(wf);
}

/// Mirrors an image left-right in place.
pub fn flip_image(img: &mut Image) {
    let (w, c) = (img.width, img.channels);
    if w == 0 {
        return;
    }
    if c == 1 {
        img.data.chunks_exact_mut(w).for_each(|row| row.reverse());
        return;
    }
    // Whole pixels reversed through a scratch row (byte swaps would be 3x the work).
    let mut tmp = vec![0u8; w * c];
    for row in img.data.chunks_exact_mut(w * c) {
        for (d, s) in tmp.chunks_exact_mut(3).zip(row.chunks_exact(3).rev()) {
            d[0] = s[0];
            d[1] = s[1];
            d[2] = s[2];
        }
        row.copy_from_slice(&tmp);
    }
}

fn flip_plane(p: &mut Plane) {
    if p.width == 0 {
        return;
    }
    for row in p.data.chunks_exact_mut(p.width) {
        row.reverse();
    }
}

/// Horizontal flip with probability `prob`.
#[derive(Clone, Copy, Debug)]
pub struct HFlip {
    pub prob: f64,
}

impl Default for HFlip {
    fn default() -> Self {
        HFlip { prob: 0.5 }
    }
}

impl Augment for HFlip {
    fn apply(&self, s: &mut Sample, rng: &mut Rng) {
        if rng.bernoulli(self.prob) {
            hflip(s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resize, crop and pad: one windowed resampler

/// Resize to `scaled`, then cut a window of `out` pixels whose top-left corner is `offset`
/// in the resized image. Only the first `content` pixels of the window may hold image content
/// (the rest is padding), and boxes are clipped to `content`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub scaled: Size,
    /// (x, y); negative values pad on the left/top.
    pub offset: (isize, isize),
    pub content: Size,
    pub out: Size,
}

/// Where the output pixels of one axis come from. Outputs `first..last` have a source; the
/// vectors are indexed by `o - first`. With `mirror`, source indices are read mirrored
/// (`n - 1 - i`), which resamples the flipped image without flipping it.
struct AxisMap {
    first: usize,
    last: usize,
    /// Nearest source index in the (possibly flipped) frame; non-decreasing.
    nearest: Vec<u32>,
    /// Bilinear taps in the source frame, mirror already applied.
    lin0: Vec<u32>,
    lin1: Vec<u32>,
    /// Weight of `lin1`, out of `WONE`.
    wt: Vec<u16>,
    src: usize,
    mirror: bool,
}

/// 8-bit weights keep a blended channel below 255 * 256, so it fits a 16-bit lane.
const WBITS: u32 = 8;
const WONE: u16 = 1 << WBITS;

impl AxisMap {
    fn new(
        src: usize,
        scaled: usize,
        offset: isize,
        content: usize,
        out: usize,
        mirror: bool,
    ) -> Self {
        let lo = (-offset).max(0) as usize;
        let hi = (scaled as isize - offset).clamp(0, content.min(out) as isize) as usize;
        let (first, last) = if src == 0 || lo >= hi {
            (0, 0)
        } else {
            (lo, hi)
        };
        let ratio = src as f64 / scaled as f64;
        let n = last - first;
        let mut m = AxisMap {
            first,
            last,
            nearest: Vec::with_capacity(n),
            lin0: Vec::with_capacity(n),
            lin1: Vec::with_capacity(n),
            wt: Vec::with_capacity(n),
            src,
            mirror,
        };
        let maxi = src.saturating_sub(1) as f64;
        let flip = |i: usize| if mirror { src - 1 - i } else { i };
        for o in first..last {
            let centre = (o as isize + offset) as f64 + 0.5;
            let near = ((centre * ratio).floor() as usize).min(src - 1);
            // Half-pixel centres, edge clamped (as OpenCV / TF2 bilinear without antialias).
            let u = (centre * ratio - 0.5).clamp(0.0, maxi);
            let i0 = u.floor();
            let frac = u - i0;
            let i0 = i0 as usize;
            let i1 = (i0 + 1).min(src - 1);
            m.nearest.push(near as u32);
            m.lin0.push(flip(i0) as u32);
            m.lin1.push(flip(i1) as u32);
            m.wt.push((frac * WONE as f64).round() as u16);
        }
        m
    }

    /// Source index of output `o` (nearest sampling).
    #[inline]
    fn src_of(&self, o: usize) -> usize {
        let v = self.nearest[o - self.first] as usize;
        if self.mirror {
            self.src - 1 - v
        } else {
            v
        }
    }

    /// Outputs whose nearest source lies in `[a, b)` (source frame), as a range of outputs.
    fn outputs_for(&self, a: usize, b: usize) -> (usize, usize) {
        let (a, b) = if self.mirror {
            (self.src - b, self.src - a)
        } else {
            (a, b)
        };
        let lo = self.nearest.partition_point(|&v| (v as usize) < a);
        let hi = self.nearest.partition_point(|&v| (v as usize) < b);
        (self.first + lo, self.first + hi)
    }
}

/// Fill colour for `channels` channels.
fn fill_pixel(fill: [u8; 3], channels: usize) -> Vec<u8> {
    if channels == 3 {
        fill.to_vec()
    } else {
        vec![Image::from_raw(1, 1, 3, fill.to_vec()).to_gray().data[0]]
    }
}

/// `(a * (WONE - w) + b * w + WONE / 2) >> WBITS` for `w <= WONE`, with one multiply: the true
/// value is below 2^16, so wrapping u16 arithmetic gives it exactly (and vectorises).
#[inline(always)]
fn lerp8(a: u8, b: u8, w: u16) -> u8 {
    let (a, b) = (a as u16, b as u16);
    (((a << WBITS) | (WONE / 2)).wrapping_add(b.wrapping_sub(a).wrapping_mul(w)) >> WBITS) as u8
}

/// Bilinear resample of the window into a new buffer; pixels without a source get `fill`.
/// Per output row: a vertical pass over the source columns in use, rounded to 8 bits, then a
/// horizontal one: each output pixel's left and right source pixels are gathered into two
/// rows, which are blended lane by lane. Weights are 8-bit (1/256 px).
fn bilinear(src: &Image, xm: &AxisMap, ym: &AxisMap, out: Size, fill: &[u8]) -> Vec<u8> {
    let c = src.channels;
    let row_len = out.width * c;
    let pad_row: Vec<u8> = fill.iter().copied().cycle().take(row_len).collect();
    let mut data = Vec::with_capacity(row_len * out.height);
    let nx = xm.last - xm.first;
    let (c0, c1) = (xm.first * c, xm.last * c);
    let stride = src.width * c;
    // Only the source columns the taps touch need the vertical pass.
    let (s0, s1) = match (
        xm.lin0.iter().chain(&xm.lin1).min(),
        xm.lin0.iter().chain(&xm.lin1).max(),
    ) {
        (Some(&a), Some(&b)) => (a as usize, b as usize + 1),
        _ => (0, 0),
    };
    // Each output blends pixels p and p + 1 of the vertical row (p relative to s0), weight w
    // on p + 1: mirrored taps (p + 1, p) are swapped, so the right pixel is always next in
    // memory. `at` holds byte offsets, `wts` the weight of every output byte.
    let mut at: Vec<u32> = Vec::with_capacity(nx);
    let mut wts: Vec<u16> = Vec::with_capacity(nx * c);
    for k in 0..nx {
        let (a, b, w) = (xm.lin0[k] as usize, xm.lin1[k] as usize, xm.wt[k]);
        let (p, w) = if b + 1 == a { (b, WONE - w) } else { (a, w) };
        at.push(((p - s0) * c) as u32);
        wts.extend(std::iter::repeat_n(w, c));
    }
    // One spare pixel (an edge tap p + 1 = s1 has weight 0) and room for 8-byte loads.
    let vlen = (s1 - s0) * c;
    let mut vrow = vec![0u8; vlen + c + 8];
    let mut left = vec![0u8; nx * c + 1];
    let mut right = vec![0u8; nx * c + 1];
    assert!(at.iter().all(|&o| o as usize + 8 <= vrow.len()));
    for oy in 0..out.height {
        if oy < ym.first || oy >= ym.last || nx == 0 {
            data.extend_from_slice(&pad_row);
            continue;
        }
        let k = oy - ym.first;
        let (r0, r1, wy) = (ym.lin0[k] as usize, ym.lin1[k] as usize, ym.wt[k]);
        let line0 = &src.data[r0 * stride + s0 * c..r0 * stride + s1 * c];
        let line1 = &src.data[r1 * stride + s0 * c..r1 * stride + s1 * c];
        for ((v, &p), &q) in vrow[..vlen].iter_mut().zip(line0).zip(line1) {
            *v = lerp8(p, q, wy);
        }
        if c == 3 {
            let (v, l, r) = (vrow.as_ptr(), left.as_mut_ptr(), right.as_mut_ptr());
            for (x, &o) in at.iter().enumerate() {
                // SAFETY: o + 8 <= vrow.len() (asserted before the loop), and 3x + 4 <= 3 nx + 1.
                unsafe {
                    let px = (v.add(o as usize) as *const u64).read_unaligned().to_le();
                    (l.add(3 * x) as *mut u32).write_unaligned((px as u32).to_le());
                    (r.add(3 * x) as *mut u32).write_unaligned(((px >> 24) as u32).to_le());
                }
            }
        } else {
            for ((l, r), &o) in left.iter_mut().zip(right.iter_mut()).zip(&at) {
                let o = o as usize;
                (*l, *r) = (vrow[o], vrow[o + 1]);
            }
        }
        data.extend_from_slice(&pad_row[..c0]);
        data.extend(
            left[..nx * c]
                .iter()
                .zip(&right[..nx * c])
                .zip(&wts)
                .map(|((&a, &b), &w)| lerp8(a, b, w)),
        );
        data.extend_from_slice(&pad_row[c1..]);
    }
    data
}

fn nearest_plane(
    src: &Plane,
    xm: &AxisMap,
    ym: &AxisMap,
    out: Size,
    fill: u8,
    sparse: bool,
) -> Plane {
    let mut p = Plane::new(out.width, out.height, fill);
    // A mask is zero outside the box of its set pixels, so only that part is resampled.
    let (sx0, sx1, sy0, sy1) = if sparse {
        match src.bbox() {
            Some(b) => (b[0] as usize, b[2] as usize, b[1] as usize, b[3] as usize),
            None => return p,
        }
    } else {
        (0, src.width, 0, src.height)
    };
    let (ox0, ox1) = xm.outputs_for(sx0, sx1);
    let (oy0, oy1) = ym.outputs_for(sy0, sy1);
    let cols: Vec<usize> = (ox0..ox1).map(|ox| xm.src_of(ox)).collect();
    for oy in oy0..oy1 {
        let sy = ym.src_of(oy);
        let line = &src.data[sy * src.width..(sy + 1) * src.width];
        let dst = &mut p.data[oy * out.width + ox0..oy * out.width + ox1];
        for (d, &sx) in dst.iter_mut().zip(&cols) {
            *d = line[sx];
        }
    }
    p
}

/// Resamples a whole sample through a [`Window`]: bilinear image (padding `fill`), nearest
/// label map (padding 255) and masks (padding 0). Boxes are scaled, shifted and clipped to
/// the content area; with `drop_empty`, boxes left with no width or height are dropped with
/// their classes, crowd flags and masks. `meta` records the scale and the shift.
pub fn resample_window(s: &mut Sample, win: &Window, fill: [u8; 3], drop_empty: bool) {
    flip_and_resample(s, false, win, fill, drop_empty);
}

/// [`hflip`] (when `flip`) followed by [`resample_window`], in one pass over the pixels; the
/// result is identical to running the two.
pub fn flip_and_resample(
    s: &mut Sample,
    flip: bool,
    win: &Window,
    fill: [u8; 3],
    drop_empty: bool,
) {
    let (w, h) = (s.image.width, s.image.height);
    if flip {
        let wf = w as f32;
        for b in &mut s.boxes {
            *b = [wf - b[2], b[1], wf - b[0], b[3]];
        }
        s.meta = s.meta.mirrored(wf);
    }
    let xm = AxisMap::new(
        w,
        win.scaled.width,
        win.offset.0,
        win.content.width,
        win.out.width,
        flip,
    );
    let ym = AxisMap::new(
        h,
        win.scaled.height,
        win.offset.1,
        win.content.height,
        win.out.height,
        false,
    );
    let c = s.image.channels;
    let px = fill_pixel(fill, c);
    let data = bilinear(&s.image, &xm, &ym, win.out, &px);
    s.image = Image::from_raw(win.out.width, win.out.height, c, data);
    if let Some(l) = &mut s.label_map {
        *l = nearest_plane(l, &xm, &ym, win.out, IGNORE, false);
    }
    if let Some(ms) = &mut s.masks {
        for m in ms.iter_mut() {
            *m = nearest_plane(m, &xm, &ym, win.out, 0, true);
        }
    }
    let sx = win.scaled.width as f32 / w.max(1) as f32;
    let sy = win.scaled.height as f32 / h.max(1) as f32;
    let (ox, oy) = (win.offset.0 as f32, win.offset.1 as f32);
    let (cw, ch) = (win.content.width as f32, win.content.height as f32);
    for b in &mut s.boxes {
        *b = [
            (b[0] * sx - ox).clamp(0.0, cw),
            (b[1] * sy - oy).clamp(0.0, ch),
            (b[2] * sx - ox).clamp(0.0, cw),
            (b[3] * sy - oy).clamp(0.0, ch),
        ];
    }
    if drop_empty {
        s.retain_boxes(|_, b| b[2] > b[0] && b[3] > b[1]);
    }
    s.meta = s.meta.scaled(sy, sx).shifted(oy, ox);
}

/// Resizes to exactly `size` (bilinear image, nearest planes); boxes are scaled, none dropped.
pub fn resize(s: &mut Sample, size: Size) {
    let win = Window {
        scaled: size,
        offset: (0, 0),
        content: size,
        out: size,
    };
    resample_window(s, &win, [0; 3], false);
}

/// Cuts the `size` window whose top-left corner is `(x0, y0)`; parts outside the image are
/// padded (image `fill`, label map 255, masks 0). Boxes are clipped and empty ones dropped.
pub fn crop_pad(s: &mut Sample, x0: isize, y0: isize, size: Size, fill: [u8; 3]) {
    let win = Window {
        scaled: Size::new(s.image.width, s.image.height),
        offset: (x0, y0),
        content: size,
        out: size,
    };
    resample_window(s, &win, fill, true);
}

/// Resize to a fixed size.
#[derive(Clone, Copy, Debug)]
pub struct Resize {
    pub size: Size,
}

impl Augment for Resize {
    fn apply(&self, s: &mut Sample, _rng: &mut Rng) {
        resize(s, self.size);
    }
}

// ---------------------------------------------------------------------------------------------
// Affine warps

/// A forward affine map of continuous pixel coordinates:
/// `x' = a x + b y + c`, `y' = d x + e y + f`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub e: f64,
    pub f: f64,
}

impl Affine {
    pub const IDENTITY: Affine = Affine {
        a: 1.0,
        b: 0.0,
        c: 0.0,
        d: 0.0,
        e: 1.0,
        f: 0.0,
    };

    /// Rotation by `degrees` counter-clockwise as seen on screen, about the centre of a
    /// `width` x `height` image.
    pub fn rotation(degrees: f64, width: usize, height: usize) -> Self {
        let (sin, cos) = degrees.to_radians().sin_cos();
        let (cx, cy) = (width as f64 / 2.0, height as f64 / 2.0);
        Affine {
            a: cos,
            b: sin,
            c: cx - cos * cx - sin * cy,
            d: -sin,
            e: cos,
            f: cy + sin * cx - cos * cy,
        }
    }

    /// TF `shear_x`: output (x, y) reads input (x + k y, y), so content moves by -k y.
    pub fn shear_x(k: f64) -> Self {
        Affine {
            b: -k,
            ..Self::IDENTITY
        }
    }

    /// TF `shear_y`: output (x, y) reads input (x, y + k x).
    pub fn shear_y(k: f64) -> Self {
        Affine {
            d: -k,
            ..Self::IDENTITY
        }
    }

    /// Content moves by (dx, dy).
    pub fn translation(dx: f64, dy: f64) -> Self {
        Affine {
            c: dx,
            f: dy,
            ..Self::IDENTITY
        }
    }

    #[inline]
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        (
            self.a * x + self.b * y + self.c,
            self.d * x + self.e * y + self.f,
        )
    }

    pub fn inverse(&self) -> Affine {
        let det = self.a * self.e - self.b * self.d;
        let (a, b, d, e) = (self.e / det, -self.b / det, -self.d / det, self.a / det);
        Affine {
            a,
            b,
            c: -(a * self.c + b * self.f),
            d,
            e,
            f: -(d * self.c + e * self.f),
        }
    }

    /// Axis-aligned box around the four moved corners of `b`.
    pub fn map_box(&self, b: [f32; 4]) -> [f64; 4] {
        let mut r = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for (x, y) in [(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])] {
            let (u, v) = self.apply(x as f64, y as f64);
            r = [r[0].min(u), r[1].min(v), r[2].max(u), r[3].max(v)];
        }
        r
    }
}

/// Where the output pixels of a warp read from, one row at a time: for each output pixel, the
/// index of the source pixel whose square holds the pre-image of the pixel's centre, or
/// `u32::MAX` outside the image. Fixed point with 32 fractional bits stepped along the row:
/// exact for translations, within 1e-6 px of the f64 map otherwise; the image and every plane
/// read through the same rows, so they move together.
struct RowMap {
    inv: Affine,
    du: i64,
    dv: i64,
    w: usize,
    h: usize,
}

impl RowMap {
    const ONE: f64 = (1u64 << 32) as f64;

    fn new(fwd: &Affine, w: usize, h: usize) -> Self {
        let inv = fwd.inverse();
        RowMap {
            du: (inv.a * Self::ONE).round() as i64,
            dv: (inv.d * Self::ONE).round() as i64,
            inv,
            w,
            h,
        }
    }

    /// Fills `row[x - x0]` for outputs `x0..x0 + row.len()` of row `y`.
    fn row(&self, y: usize, x0: usize, row: &mut [u32]) {
        let (inv, cx, cy) = (&self.inv, x0 as f64 + 0.5, y as f64 + 0.5);
        let mut u = ((inv.a * cx + inv.b * cy + inv.c) * Self::ONE).floor() as i64;
        let mut v = ((inv.d * cx + inv.e * cy + inv.f) * Self::ONE).floor() as i64;
        let (w, h) = (self.w as u64, self.h as u64);
        for m in row.iter_mut() {
            let (ui, vi) = ((u >> 32) as u64, (v >> 32) as u64);
            // Negative values wrap to huge u64s, so one compare per axis checks both ends.
            *m = if ui < w && vi < h {
                (vi * w + ui) as u32
            } else {
                u32::MAX
            };
            u += self.du;
            v += self.dv;
        }
    }
}

fn copy_row<const C: usize>(dst: &mut [u8], src: &[u8], map: &[u32]) {
    for (o, &i) in dst.chunks_exact_mut(C).zip(map) {
        if i != u32::MAX {
            let i = i as usize * C;
            o.copy_from_slice(&src[i..i + C]);
        }
    }
}

fn copy_plane_row(dst: &mut [u8], src: &[u8], map: &[u32]) {
    for (o, &i) in dst.iter_mut().zip(map) {
        if i != u32::MAX {
            *o = src[i as usize];
        }
    }
}

/// The image moved by `fwd`, nearest sampling (as TF's `transform`), uncovered pixels `fill`.
pub fn warp_image(img: &Image, fwd: &Affine, fill: u8) -> Image {
    let (w, h, c) = (img.width, img.height, img.channels);
    let rm = RowMap::new(fwd, w, h);
    let mut data = vec![fill; w * h * c];
    let mut map = vec![0u32; w];
    for (y, dst) in data.chunks_exact_mut((w * c).max(1)).enumerate().take(h) {
        rm.row(y, 0, &mut map);
        if c == 3 {
            copy_row::<3>(dst, &img.data, &map);
        } else {
            copy_row::<1>(dst, &img.data, &map);
        }
    }
    Image::from_raw(w, h, c, data)
}

/// Degenerate-box rule of TF AutoAugment (`_check_bbox_area`, δ = 0.05 of the side): a side
/// of zero length gets `max = max(max, δ·L)` and `min = min(min, (1-δ)·L)`.
pub fn widen_degenerate(b: &mut [f32; 4], width: usize, height: usize) {
    const DELTA: f32 = 0.05;
    for (lo, hi, len) in [(0, 2, width as f32), (1, 3, height as f32)] {
        if b[hi] - b[lo] == 0.0 {
            b[hi] = b[hi].max(DELTA * len);
            b[lo] = b[lo].min((1.0 - DELTA) * len);
        }
    }
}

/// Moves a box the AutoAugment way: corners through `fwd`, min/max, clip to the image,
/// degenerate sides widened.
pub fn warp_box(b: [f32; 4], fwd: &Affine, width: usize, height: usize) -> [f32; 4] {
    let r = fwd.map_box(b);
    let (w, h) = (width as f64, height as f64);
    let mut out = [
        r[0].clamp(0.0, w) as f32,
        r[1].clamp(0.0, h) as f32,
        r[2].clamp(0.0, w) as f32,
        r[3].clamp(0.0, h) as f32,
    ];
    widen_degenerate(&mut out, width, height);
    out
}

/// Moves image (uncovered pixels `fill`), label map (255), masks (0) and boxes by `fwd`.
/// The image keeps its size; `meta` is left as is (the move is not a scale or a shift).
pub fn warp(s: &mut Sample, fwd: &Affine, fill: u8) {
    let (w, h) = (s.image.width, s.image.height);
    s.image = warp_image(&s.image, fwd, fill);
    let rm = RowMap::new(fwd, w, h);
    let mut map = vec![0u32; w];
    if let Some(l) = &mut s.label_map {
        let mut out = Plane::new(w, h, IGNORE);
        for y in 0..h {
            rm.row(y, 0, &mut map);
            copy_plane_row(&mut out.data[y * w..(y + 1) * w], &l.data, &map);
        }
        *l = out;
    }
    if let Some(ms) = &mut s.masks {
        for m in ms.iter_mut() {
            *m = warp_mask(m, fwd, &rm, &mut map);
        }
    }
    for b in &mut s.boxes {
        *b = warp_box(*b, fwd, w, h);
    }
}

/// Warps a 0/1 mask, visiting only the output pixels near the moved box of its set pixels.
fn warp_mask(m: &Plane, fwd: &Affine, rm: &RowMap, map: &mut [u32]) -> Plane {
    let (w, h) = (m.width, m.height);
    let mut out = Plane::new(w, h, 0);
    let Some(bb) = m.bbox() else {
        return out;
    };
    let r = fwd.map_box(bb);
    // Output centres x + 0.5 inside [r0, r2]; one pixel of slack for rounding.
    let lo = |v: f64, n: usize| ((v - 0.5).floor() - 1.0).clamp(0.0, n as f64) as usize;
    let hi = |v: f64, n: usize| ((v - 0.5).ceil() + 2.0).clamp(0.0, n as f64) as usize;
    let (x0, x1, y0, y1) = (lo(r[0], w), hi(r[2], w), lo(r[1], h), hi(r[3], h));
    if x0 >= x1 {
        return out;
    }
    let map = &mut map[..x1 - x0];
    for y in y0..y1 {
        rm.row(y, x0, map);
        copy_plane_row(&mut out.data[y * w + x0..y * w + x1], &m.data, map);
    }
    out
}

/// Rotates the sample by `degrees` (counter-clockwise) about the image centre.
pub fn rotate(s: &mut Sample, degrees: f64, fill: u8) {
    let fwd = Affine::rotation(degrees, s.image.width, s.image.height);
    warp(s, &fwd, fill);
}

/// TF `shear_x` with coefficient `k`.
pub fn shear_x(s: &mut Sample, k: f64, fill: u8) {
    warp(s, &Affine::shear_x(k), fill);
}

/// TF `shear_y` with coefficient `k`.
pub fn shear_y(s: &mut Sample, k: f64, fill: u8) {
    warp(s, &Affine::shear_y(k), fill);
}

/// TF `translate_x(pixels)`: content moves left by `pixels` (right when negative).
pub fn translate_x(s: &mut Sample, pixels: i64, fill: u8) {
    warp(s, &Affine::translation(-pixels as f64, 0.0), fill);
}

/// TF `translate_y(pixels)`: content moves up by `pixels`.
pub fn translate_y(s: &mut Sample, pixels: i64, fill: u8) {
    warp(s, &Affine::translation(0.0, -pixels as f64), fill);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resampler's arithmetic written out per output pixel: vertical blend of each tap
    /// column rounded to 8 bits, then the horizontal blend.
    fn reference(src: &Image, xm: &AxisMap, ym: &AxisMap, out: Size, fill: &[u8]) -> Vec<u8> {
        let c = src.channels;
        let lerp = |a: u8, b: u8, w: u16| {
            ((a as u32 * (WONE - w) as u32 + b as u32 * w as u32 + 128) >> WBITS) as u8
        };
        let mut data = Vec::new();
        for oy in 0..out.height {
            for ox in 0..out.width {
                for (ch, &f) in fill.iter().enumerate().take(c) {
                    let inside =
                        (ym.first..ym.last).contains(&oy) && (xm.first..xm.last).contains(&ox);
                    if !inside {
                        data.push(f);
                        continue;
                    }
                    let (kx, ky) = (ox - xm.first, oy - ym.first);
                    let at =
                        |y: u32, x: u32| src.data[(y as usize * src.width + x as usize) * c + ch];
                    let col = |x: u32| lerp(at(ym.lin0[ky], x), at(ym.lin1[ky], x), ym.wt[ky]);
                    data.push(lerp(col(xm.lin0[kx]), col(xm.lin1[kx]), xm.wt[kx]));
                }
            }
        }
        data
    }

    #[test]
    fn bilinear_matches_the_per_pixel_formula() {
        let mut rng = Rng::new(7);
        for case in 0..400 {
            let c = if case % 2 == 0 { 3 } else { 1 };
            let (w, h) = (1 + rng.below(40) as usize, 1 + rng.below(40) as usize);
            let data = (0..w * h * c).map(|_| rng.below(256) as u8).collect();
            let img = Image::from_raw(w, h, c, data);
            let scaled = Size::new(1 + rng.below(90) as usize, 1 + rng.below(90) as usize);
            let offset = (rng.below(60) as isize - 20, rng.below(60) as isize - 20);
            let out = Size::new(1 + rng.below(50) as usize, 1 + rng.below(50) as usize);
            let content = Size::new(
                1 + rng.below(out.width as u64) as usize,
                1 + rng.below(out.height as u64) as usize,
            );
            let mirror = rng.bernoulli(0.5);
            let xm = AxisMap::new(w, scaled.width, offset.0, content.width, out.width, mirror);
            let ym = AxisMap::new(
                h,
                scaled.height,
                offset.1,
                content.height,
                out.height,
                false,
            );
            let fill = &[9, 99, 199][..c];
            assert_eq!(
                bilinear(&img, &xm, &ym, out, fill),
                reference(&img, &xm, &ym, out, fill),
                "case {case}: {w}x{h}x{c} -> {scaled} at {offset:?}, mirror {mirror}"
            );
        }
    }
}
