//! Finite-difference gradient checks of a tiny detector and a tiny segmenter end to end
//! (f64 parameters and inputs; backbone, neck, head, losses).
use candle_core::{DType, Device, Tensor};
use pupil_backbones::zoo::BackboneConfig;
use pupil_nn::params::ParamStore;

/// The backbone under `backbone.`, as the detector and segmenter expect it.
fn built(store: &ParamStore, cfg: &BackboneConfig) -> Box<dyn pupil_nn::Backbone> {
    Box::new(pupil_backbones::build(&store.root().pp("backbone"), cfg).unwrap())
}
use pupil_data::batch::{collate, BatchConfig};
use pupil_data::digits::{DigitScenes, DigitsConfig, Split};
use pupil_data::Dataset;
use pupil_heads::neck::{NeckConfig, NeckKind};
use pupil_heads::retinanet::{RetinaNet, RetinaNetConfig};
use pupil_heads::seg::{SegHeadKind, Segmenter, SegmenterConfig};

fn backbone() -> BackboneConfig {
    BackboneConfig {
        width: Some(0.1),
        depth: Some(0.1),
        drop_path: Some(0.0),
        ..BackboneConfig::named("efficientnet")
    }
}

/// Compares d loss / d p for a few entries of several parameters with central differences.
fn check(store: &ParamStore, loss: &dyn Fn() -> Tensor, names: &[&str]) {
    let l = loss();
    let grads = l.backward().unwrap();
    // A parameter's gradient that keeps a graph keeps that graph's activation gradients
    // alive until the step (hundreds of MB on a full-size detector).
    for (name, var, _) in store.trainable() {
        if let Some(g) = grads.get(var.as_tensor()) {
            assert!(!g.track_op(), "the gradient of {name} holds a graph");
        }
    }
    let eps = 1e-6;
    for name in names {
        let var = store
            .var(name)
            .unwrap_or_else(|| panic!("no parameter {name}"));
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let shape = var.as_tensor().shape().clone();
        for i in [0, base.len() / 2, base.len() - 1] {
            let mut p = base.clone();
            p[i] += eps;
            var.set(&Tensor::from_vec(p.clone(), &shape, &Device::Cpu).unwrap())
                .unwrap();
            let fp = loss().to_scalar::<f64>().unwrap();
            p[i] -= 2.0 * eps;
            var.set(&Tensor::from_vec(p, &shape, &Device::Cpu).unwrap())
                .unwrap();
            let fm = loss().to_scalar::<f64>().unwrap();
            var.set(&Tensor::from_vec(base.clone(), &shape, &Device::Cpu).unwrap())
                .unwrap();
            let num = (fp - fm) / (2.0 * eps);
            assert!(
                (num - g[i]).abs() <= 1e-5 * (1.0 + num.abs()),
                "{name}[{i}]: analytic {} numeric {num}",
                g[i]
            );
        }
    }
}

fn batch() -> pupil_data::batch::Batch {
    let cfg = DigitsConfig {
        image_size: 48,
        max_digit_size: 30,
        min_digit_size: 16,
        max_digits: 2,
        ..Default::default()
    };
    let ds = DigitScenes::new(&cfg, Split::Train).unwrap();
    let samples: Vec<_> = (0..2).map(|i| ds.get(i).unwrap()).collect();
    let b = collate(
        &samples,
        &BatchConfig {
            size_divisor: 32,
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    pupil_data::batch::Batch {
        images: b.images.to_dtype(DType::F64).unwrap(),
        ..b
    }
}

#[test]
fn detector_gradients_match_finite_differences() {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 4);
    let neck = NeckConfig {
        kind: NeckKind::Fpn,
        channels: 8,
        min_level: 3,
        max_level: 5,
        ..Default::default()
    };
    let mut cfg = RetinaNetConfig {
        num_classes: 10,
        neck,
        head_convs: 1,
        head_channels: 8,
        ..Default::default()
    };
    cfg.anchors.min_level = 3;
    cfg.anchors.max_level = 5;
    cfg.anchors.anchor_size = 2.0;
    let model = RetinaNet::new(&store.root(), built(&store, &backbone()), &cfg).unwrap();
    let b = batch();
    // eval-mode batch norm keeps the loss a fixed function of the parameters
    let loss = || model.loss(&b, false).unwrap().total;
    check(
        &store,
        &loss,
        &[
            "backbone.conv_stem.weight",
            "backbone.blocks.3.0.conv_dw.weight",
            "neck.lateral.4.weight",
            "neck.post.3.bias",
            "class_net.conv0.weight",
            "class_net.predict.bias",
            "box_net.predict.weight",
        ],
    );
}

#[test]
fn segmenter_gradients_match_finite_differences() {
    for head in [SegHeadKind::NasFpn, SegHeadKind::DeeplabV3Plus] {
        let store = ParamStore::new(&Device::Cpu, DType::F64, 5);
        let neck = NeckConfig {
            kind: NeckKind::NasFpn,
            channels: 8,
            repeats: 1,
            separable: true,
            ..Default::default()
        };
        let cfg = SegmenterConfig {
            num_classes: 11,
            head,
            neck,
            head_convs: 1,
            head_channels: 8,
            aspp_channels: 8,
            decoder_low_channels: 4,
            ..Default::default()
        };
        let model = Segmenter::new(&store.root(), built(&store, &backbone()), &cfg).unwrap();
        let b = batch();
        let labels = b.label_maps.clone().unwrap();
        let loss = || model.loss(&b.images, &labels, false).unwrap();
        let names: Vec<&str> = match head {
            SegHeadKind::NasFpn => vec![
                "backbone.conv_stem.weight",
                "head.neck.cell.0.2.conv.depthwise.weight",
                "head.convs.0.conv.weight",
                "head.classifier.bias",
            ],
            SegHeadKind::DeeplabV3Plus => vec![
                "backbone.blocks.1.0.conv_pw.weight",
                "head.aspp.2.conv.weight",
                "head.aspp_pool.conv.weight",
                "head.low.conv.weight",
                "head.classifier.weight",
            ],
        };
        check(&store, &loss, &names);
    }
}
