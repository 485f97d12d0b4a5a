//! Parity with torchvision's detection ops: every expected value is read from
//! `$PUPIL_FIXTURES` (detection_ops.safetensors, anchors.safetensors).
use candle_core::{Device, Tensor};
use pupil_heads::anchors::AnchorConfig;
use pupil_heads::boxes::{batched_nms, box_iou, nms};
use pupil_heads::coder::BoxCoder;
use pupil_heads::losses::{focal_elements, huber_loss, sigmoid_focal_loss};
use std::collections::HashMap;

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(pupil_testkit::fixtures().join(name), &Device::Cpu).unwrap()
}

fn boxes(t: &Tensor) -> Vec<[f32; 4]> {
    t.to_vec2::<f32>()
        .unwrap()
        .into_iter()
        .map(|r| [r[0], r[1], r[2], r[3]])
        .collect()
}

fn scalar(t: &Tensor) -> f32 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

#[test]
fn iou_nms_and_batched_nms() {
    let f = load("detection_ops.safetensors");
    let (a, b) = (boxes(&f["boxes1"]), boxes(&f["boxes2"]));
    let want: Vec<f32> = f["iou"].flatten_all().unwrap().to_vec1().unwrap();
    let got = box_iou(&a, &b);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-6, "iou[{i}] {g} vs {w}");
    }
    let nb = boxes(&f["nms_boxes"]);
    let ns: Vec<f32> = f["nms_scores"].to_vec1().unwrap();
    let keep: Vec<i64> = f["nms_keep"].to_vec1().unwrap();
    assert_eq!(
        nms(&nb, &ns, 0.5)
            .iter()
            .map(|&i| i as i64)
            .collect::<Vec<_>>(),
        keep
    );
    let idxs: Vec<usize> = f["nms_idxs"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let bkeep: Vec<i64> = f["batched_keep"].to_vec1().unwrap();
    assert_eq!(
        batched_nms(&nb, &ns, &idxs, 0.5)
            .iter()
            .map(|&i| i as i64)
            .collect::<Vec<_>>(),
        bkeep
    );
}

#[test]
fn focal_and_huber_losses() {
    let f = load("detection_ops.safetensors");
    let (x, t) = (&f["fl_logits"], &f["fl_targets"]);
    let close = |got: f32, want: f32, rtol: f32| {
        assert!((got - want).abs() <= rtol * want.abs(), "{got} vs {want}")
    };
    close(
        scalar(&sigmoid_focal_loss(x, t, 0.25, 1.5).unwrap()),
        scalar(&f["fl_loss_sum"]),
        1e-5,
    );
    close(
        scalar(&sigmoid_focal_loss(x, t, 0.25, 2.0).unwrap()),
        scalar(&f["fl_loss_sum_g2"]),
        1e-5,
    );
    let per: Vec<f32> = focal_elements(x, t, 0.25, 1.5).unwrap().to_vec1().unwrap();
    let want: Vec<f32> = f["fl_loss"].to_vec1().unwrap();
    for (g, w) in per.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "{g} vs {w}");
    }
    close(
        scalar(&huber_loss(&f["huber_pred"], &f["huber_target"], 0.1).unwrap()),
        scalar(&f["huber_sum"]),
        1e-5,
    );
}

#[test]
fn box_coder_encode_decode() {
    let f = load("detection_ops.safetensors");
    let (anchors, gt) = (boxes(&f["anchors"]), boxes(&f["gt"]));
    let deltas = boxes(&f["deltas"]);
    let decoded = boxes(&f["decoded"]);
    let coder = BoxCoder::default();
    for i in 0..anchors.len() {
        let e = coder.encode(&gt[i], &anchors[i]);
        for k in 0..4 {
            assert!(
                (e[k] - deltas[i][k]).abs() <= 1e-4,
                "deltas[{i}][{k}] {} vs {}",
                e[k],
                deltas[i][k]
            );
        }
        let d = coder.decode(&deltas[i], &anchors[i]);
        for k in 0..4 {
            assert!(
                (d[k] - decoded[i][k]).abs() <= 1e-3 + 1e-5 * decoded[i][k].abs(),
                "decoded[{i}][{k}] {} vs {}",
                d[k],
                decoded[i][k]
            );
        }
    }
    let clamp: Vec<u8> = f["clamp_mask"].to_vec1().unwrap();
    assert_eq!(clamp.iter().filter(|&&c| c == 1).count(), 8);
}

#[test]
fn torchvision_anchor_layout_is_exact() {
    let f = load("anchors.safetensors");
    let (got, counts) = AnchorConfig::torchvision().generate(512, 512);
    assert_eq!(counts, vec![36864, 9216, 2304, 576, 144]);
    let want = boxes(&f["anchors"]);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "anchor {i}");
    }
}
