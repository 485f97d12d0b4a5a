//! Box geometry on plain slices: IoU, NMS, batched NMS and Gaussian soft-NMS, with
//! torchvision's conventions (xyxy, no +1, suppress when IoU > threshold).

/// Area of an xyxy box (0 for inverted boxes).
#[inline]
pub fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

#[inline]
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// IoU matrix, row-major [a.len() x b.len()].
pub fn box_iou(a: &[[f32; 4]], b: &[[f32; 4]]) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            out.push(iou(x, y));
        }
    }
    out
}

/// Order of boxes by descending score; ties keep index order (a stable sort).
fn by_score(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| {
        scores[j]
            .partial_cmp(&scores[i])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order
}

/// Greedy NMS: indices kept, in decreasing score order.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    let order = by_score(scores);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if !suppressed[j] && iou(&boxes[i], &boxes[j]) > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// NMS within each class independently; the result sorted by decreasing score.
pub fn batched_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[usize],
    iou_threshold: f32,
) -> Vec<usize> {
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &c) in classes.iter().enumerate() {
        groups.entry(c).or_default().push(i);
    }
    let mut keep = Vec::new();
    for idx in groups.values() {
        let b: Vec<[f32; 4]> = idx.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        keep.extend(nms(&b, &s, iou_threshold).into_iter().map(|k| idx[k]));
    }
    keep.sort_by(|&i, &j| {
        scores[j]
            .partial_cmp(&scores[i])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(i.cmp(&j))
    });
    keep
}

/// Gaussian soft-NMS (Bodla et al.): instead of dropping overlapping boxes, their scores decay
/// by `exp(-iou^2 / sigma)`; boxes whose score falls below `score_threshold` are dropped.
/// Returns (index, new score) in decreasing new-score order.
pub fn soft_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    sigma: f32,
    score_threshold: f32,
) -> Vec<(usize, f32)> {
    let mut live: Vec<(usize, f32)> = scores
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, s)| *s >= score_threshold)
        .collect();
    let mut out = Vec::new();
    while !live.is_empty() {
        let (m, _) = live
            .iter()
            .enumerate()
            .max_by(|a, b| {
                a.1 .1
                    .partial_cmp(&b.1 .1)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(b.1 .0.cmp(&a.1 .0))
            })
            .unwrap();
        let best = live.swap_remove(m);
        out.push(best);
        for e in live.iter_mut() {
            let o = iou(&boxes[best.0], &boxes[e.0]);
            e.1 *= (-(o * o) / sigma).exp();
        }
        live.retain(|e| e.1 >= score_threshold);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_basics() {
        let a = [0.0, 0.0, 2.0, 2.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[2.0, 0.0, 4.0, 2.0]), 0.0, "touching boxes");
        assert!((iou(&a, &[1.0, 0.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn soft_nms_decays_overlaps_instead_of_dropping() {
        let b = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 0.0, 11.0, 10.0],
            [50.0, 50.0, 60.0, 60.0],
        ];
        let s = [0.9, 0.8, 0.7];
        let hard = nms(&b, &s, 0.5);
        assert_eq!(hard, vec![0, 2]);
        let soft = soft_nms(&b, &s, 0.3, 0.001);
        assert_eq!(soft.len(), 3);
        assert_eq!(soft[0], (0, 0.9));
        assert_eq!(soft[1].0, 2);
        let o = iou(&b[0], &b[1]);
        assert!((soft[2].1 - 0.8 * (-(o * o) / 0.3).exp()).abs() < 1e-6);
    }
}
