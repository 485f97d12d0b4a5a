//! Anchors for pyramid levels. Two layouts: the paper's (TF detection: centres at
//! `stride/2 + k*stride`, size `anchor_size * stride * 2^(s/3)`, aspect = w/h, order level ->
//! y -> x -> scale -> aspect) and torchvision's (centres at `k*stride`, integer half-extents
//! rounded half to even, aspect = h/w, order level -> y -> x -> aspect -> scale).
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnchorLayout {
    Paper,
    Torchvision,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnchorConfig {
    pub min_level: usize,
    pub max_level: usize,
    pub num_scales: usize,
    pub aspect_ratios: Vec<f64>,
    pub anchor_size: f64,
    pub layout: AnchorLayout,
}

impl Default for AnchorConfig {
    fn default() -> Self {
        AnchorConfig {
            min_level: 3,
            max_level: 7,
            num_scales: 3,
            aspect_ratios: vec![1.0, 2.0, 0.5],
            anchor_size: 4.0,
            layout: AnchorLayout::Paper,
        }
    }
}

impl AnchorConfig {
    pub fn per_location(&self) -> usize {
        self.num_scales * self.aspect_ratios.len()
    }

    /// torchvision's `_default_anchorgen()`: sizes 32..512 with `int(x * 2^(k/3))`.
    pub fn torchvision() -> Self {
        AnchorConfig {
            min_level: 3,
            max_level: 7,
            num_scales: 3,
            aspect_ratios: vec![0.5, 1.0, 2.0],
            anchor_size: 4.0,
            layout: AnchorLayout::Torchvision,
        }
    }

    /// Grid size of a level for an (h, w) input: ceil(h / stride).
    pub fn grid(&self, level: usize, h: usize, w: usize) -> (usize, usize) {
        let s = 1usize << level;
        (h.div_ceil(s), w.div_ceil(s))
    }

    /// All anchors (xyxy) for an input of (h, w), level-major, and the count of each level.
    pub fn generate(&self, h: usize, w: usize) -> (Vec<[f32; 4]>, Vec<usize>) {
        let mut out = Vec::new();
        let mut counts = Vec::new();
        for level in self.min_level..=self.max_level {
            let grid = self.grid(level, h, w);
            let before = out.len();
            match self.layout {
                AnchorLayout::Paper => self.paper_level(level, grid, &mut out),
                AnchorLayout::Torchvision => self.torchvision_level(level, grid, &mut out),
            }
            counts.push(out.len() - before);
        }
        (out, counts)
    }

    fn paper_level(&self, level: usize, (gh, gw): (usize, usize), out: &mut Vec<[f32; 4]>) {
        let stride = (1usize << level) as f64;
        let mut cell = Vec::new();
        for s in 0..self.num_scales {
            let base = self.anchor_size * stride * 2f64.powf(s as f64 / self.num_scales as f64);
            for &ar in &self.aspect_ratios {
                let (aw, ah) = (base * ar.sqrt(), base / ar.sqrt());
                cell.push((aw / 2.0, ah / 2.0));
            }
        }
        for y in 0..gh {
            let cy = stride / 2.0 + y as f64 * stride;
            for x in 0..gw {
                let cx = stride / 2.0 + x as f64 * stride;
                for &(hw, hh) in &cell {
                    out.push([
                        (cx - hw) as f32,
                        (cy - hh) as f32,
                        (cx + hw) as f32,
                        (cy + hh) as f32,
                    ]);
                }
            }
        }
    }

    fn torchvision_level(&self, level: usize, (gh, gw): (usize, usize), out: &mut Vec<[f32; 4]>) {
        let stride = 1usize << level;
        let base = self.anchor_size * stride as f64;
        let sizes: Vec<f32> = (0..self.num_scales)
            .map(|k| (base * 2f64.powf(k as f64 / self.num_scales as f64)) as i64 as f32)
            .collect();
        let mut cell = Vec::new();
        for &r in &self.aspect_ratios {
            let h_ratio = (r as f32).sqrt();
            let w_ratio = 1.0 / h_ratio;
            for &size in &sizes {
                let (ws, hs) = (w_ratio * size, h_ratio * size);
                cell.push([
                    (-ws / 2.0).round_ties_even(),
                    (-hs / 2.0).round_ties_even(),
                    (ws / 2.0).round_ties_even(),
                    (hs / 2.0).round_ties_even(),
                ]);
            }
        }
        for y in 0..gh {
            let sy = (y * stride) as f32;
            for x in 0..gw {
                let sx = (x * stride) as f32;
                for c in &cell {
                    out.push([c[0] + sx, c[1] + sy, c[2] + sx, c[3] + sy]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_layout_count_and_first_anchor() {
        let (a, counts) = AnchorConfig::default().generate(640, 640);
        assert_eq!(a.len(), 76_725);
        assert_eq!(
            counts,
            vec![
                80 * 80 * 9,
                40 * 40 * 9,
                20 * 20 * 9,
                10 * 10 * 9,
                5 * 5 * 9
            ]
        );
        // level 3, scale 0, aspect 1: 32x32 around (4, 4)
        assert_eq!(a[0], [-12.0, -12.0, 20.0, 20.0]);
        // aspect 2 (w/h): wider than tall
        assert!(a[1][2] - a[1][0] > a[1][3] - a[1][1]);
    }
}
