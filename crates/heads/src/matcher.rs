//! Anchor labelling: the arg-max matcher of the paper's RetinaNet (IoU >= 0.5 positive,
//! < 0.5 negative, the best anchor of every ground truth forced positive), with crowd boxes
//! taking no part except that anchors overlapping them are ignored instead of negative.
use crate::boxes::iou;
use crate::coder::BoxCoder;

/// Class target of an anchor that is background.
pub const NEGATIVE: i64 = -1;
/// Class target of an anchor left out of the loss.
pub const IGNORE: i64 = -2;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matcher {
    pub match_threshold: f32,
    pub unmatched_threshold: f32,
    pub force_match: bool,
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher {
            match_threshold: 0.5,
            unmatched_threshold: 0.5,
            force_match: true,
        }
    }
}

/// Targets of one image: class per anchor (>= 0 positive, NEGATIVE, IGNORE) and encoded box
/// targets (zeros for non-positive anchors).
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    pub classes: Vec<i64>,
    pub boxes: Vec<[f32; 4]>,
    pub num_positives: usize,
}

impl Matcher {
    /// Index of the matched ground truth per anchor (None: negative or ignored, told apart by
    /// the returned flag).
    pub fn assign(
        &self,
        anchors: &[[f32; 4]],
        gt: &[[f32; 4]],
        crowd: &[bool],
    ) -> Vec<Result<usize, bool>> {
        let real: Vec<usize> = (0..gt.len())
            .filter(|&g| !crowd.get(g).copied().unwrap_or(false))
            .collect();
        let crowds: Vec<usize> = (0..gt.len())
            .filter(|&g| crowd.get(g).copied().unwrap_or(false))
            .collect();
        let mut out: Vec<Result<usize, bool>> = Vec::with_capacity(anchors.len());
        // best anchor per real ground truth, for forced matches
        let mut best: Vec<(f32, usize)> = vec![(-1.0, 0); real.len()];
        for (a, anchor) in anchors.iter().enumerate() {
            let mut m = (-1.0f32, usize::MAX);
            for (k, &g) in real.iter().enumerate() {
                let o = iou(anchor, &gt[g]);
                if o > m.0 {
                    m = (o, g);
                }
                if o > best[k].0 {
                    best[k] = (o, a);
                }
            }
            let r = if m.1 != usize::MAX && m.0 >= self.match_threshold {
                Ok(m.1)
            } else if m.1 != usize::MAX && m.0 >= self.unmatched_threshold {
                Err(true)
            } else if crowds
                .iter()
                .any(|&c| iou(anchor, &gt[c]) >= self.unmatched_threshold)
            {
                Err(true)
            } else {
                Err(false)
            };
            out.push(r);
        }
        if self.force_match {
            for (k, &g) in real.iter().enumerate() {
                if best[k].0 > 0.0 {
                    out[best[k].1] = Ok(g);
                }
            }
        }
        out
    }

    /// Class and box targets of one image.
    pub fn targets(
        &self,
        anchors: &[[f32; 4]],
        gt: &[[f32; 4]],
        classes: &[u32],
        crowd: &[bool],
        coder: &BoxCoder,
    ) -> Targets {
        let assign = self.assign(anchors, gt, crowd);
        let mut t = Targets {
            classes: Vec::with_capacity(anchors.len()),
            boxes: vec![[0.0; 4]; anchors.len()],
            num_positives: 0,
        };
        for (a, r) in assign.into_iter().enumerate() {
            match r {
                Ok(g) => {
                    t.classes.push(classes[g] as i64);
                    t.boxes[a] = coder.encode(&gt[g], &anchors[a]);
                    t.num_positives += 1;
                }
                Err(true) => t.classes.push(IGNORE),
                Err(false) => t.classes.push(NEGATIVE),
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_force_match_and_crowd() {
        let anchors = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 30.0],
            [50.0, 50.0, 60.0, 60.0],
            [100.0, 100.0, 110.0, 110.0],
        ];
        // gt 0 equals anchor 0; gt 1 overlaps anchor 2 only weakly; gt 2 is crowd over anchor 3
        let gt = [
            [0.0, 0.0, 10.0, 10.0],
            [55.0, 55.0, 70.0, 70.0],
            [100.0, 100.0, 110.0, 110.0],
        ];
        let t = Matcher::default().targets(
            &anchors,
            &gt,
            &[3, 7, 9],
            &[false, false, true],
            &BoxCoder::default(),
        );
        assert_eq!(t.classes, vec![3, NEGATIVE, 7, IGNORE]);
        assert_eq!(t.num_positives, 2, "anchor 2 is forced onto gt 1");
        assert_eq!(t.boxes[0], [0.0, 0.0, 0.0, 0.0]);
        assert_ne!(t.boxes[2], [0.0; 4]);
        let no_force = Matcher {
            force_match: false,
            ..Default::default()
        };
        let t = no_force.targets(
            &anchors,
            &gt,
            &[3, 7, 9],
            &[false, false, true],
            &BoxCoder::default(),
        );
        assert_eq!(t.classes[2], NEGATIVE);
    }
}
