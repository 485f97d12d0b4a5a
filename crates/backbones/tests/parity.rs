//! Parity with timm and torchvision: the fixtures' weights loaded strictly, logits and
//! multi-scale features within the fixture README's tolerance (1e-4 x max(1, max|ref|)).
use candle_core::{DType, Device, Tensor};
use pupil_backbones::efficientnet::{EfficientNet, EfficientNetConfig};
use pupil_backbones::resnet::{ResNet, ResNetConfig};
use pupil_backbones::{Backbone, Classifier};
use pupil_nn::params::{LoadOptions, ParamStore};
use std::collections::HashMap;

fn io(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(pupil_testkit::fixtures().join(name), &Device::Cpu).unwrap()
}

fn check(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let diff = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    let tol = 1e-4 * scale;
    assert!(diff <= tol, "{name}: max abs diff {diff} > tolerance {tol}");
    eprintln!("{name}: max abs diff {diff:.3e} (tolerance {tol:.1e})");
}

fn efficientnet(cfg: EfficientNetConfig, weights: &str, io_file: &str) {
    let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    let model = EfficientNet::new(&store.root(), &cfg).unwrap();
    let rep = store
        .load_safetensors(
            pupil_testkit::fixtures().join(weights),
            &LoadOptions::strict(),
        )
        .unwrap();
    assert_eq!(rep.loaded.len(), 311);
    let io = io(io_file);
    let x = &io["input"];
    let feats = model.forward_t(x, false).unwrap();
    check("feat_s8", feats.get(3).unwrap(), &io["feat_s8"]);
    check("feat_s16", feats.get(4).unwrap(), &io["feat_s16"]);
    check("feat_s32", feats.get(5).unwrap(), &io["feat_s32"]);
    check("pooled", &model.pooled_t(x, false).unwrap(), &io["pooled"]);
    check("logits", &model.logits_t(x, false).unwrap(), &io["logits"]);
}

#[test]
fn efficientnet_b0_matches_timm() {
    efficientnet(
        EfficientNetConfig::variant("b0").unwrap(),
        "efficientnet_b0.safetensors",
        "efficientnet_b0_io.safetensors",
    );
}

#[test]
fn tf_efficientnet_b0_matches_timm() {
    efficientnet(
        EfficientNetConfig::variant("b0").unwrap().tf(),
        "tf_efficientnet_b0.safetensors",
        "tf_efficientnet_b0_io.safetensors",
    );
}

#[test]
fn resnet50_matches_torchvision() {
    let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    let model = ResNet::new(&store.root(), &ResNetConfig::depth(50).unwrap()).unwrap();
    store
        .load_safetensors(
            pupil_testkit::fixtures().join("resnet50.safetensors"),
            &LoadOptions::strict(),
        )
        .unwrap();
    let io = io("resnet50_io.safetensors");
    let x = &io["input"];
    let feats = model.forward_t(x, false).unwrap();
    check("c3", feats.get(3).unwrap(), &io["c3"]);
    check("c4", feats.get(4).unwrap(), &io["c4"]);
    check("c5", feats.get(5).unwrap(), &io["c5"]);
    check("pooled", &model.pooled_t(x, false).unwrap(), &io["pooled"]);
    check("logits", &model.logits_t(x, false).unwrap(), &io["logits"]);
}

#[test]
fn wrong_checkpoint_is_refused_with_a_listing() {
    // tf_efficientnet_b0 weights into a ResNet: every name is wrong.
    let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    ResNet::new(&store.root(), &ResNetConfig::depth(50).unwrap()).unwrap();
    let e = store
        .load_safetensors(
            pupil_testkit::fixtures().join("tf_efficientnet_b0.safetensors"),
            &LoadOptions::strict(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tf_efficientnet_b0.safetensors")
            && e.contains("missing")
            && e.contains("unexpected"),
        "{e}"
    );
    // A backbone-only model takes the classifier checkpoint when told to skip the head.
    let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    let cfg = EfficientNetConfig {
        num_classes: 0,
        ..EfficientNetConfig::variant("b0").unwrap()
    };
    EfficientNet::new(&store.root(), &cfg).unwrap();
    let strict = store.load_safetensors(
        pupil_testkit::fixtures().join("efficientnet_b0.safetensors"),
        &LoadOptions::strict(),
    );
    assert!(strict
        .unwrap_err()
        .to_string()
        .contains("classifier.weight"));
    let rep = store
        .load_safetensors(
            pupil_testkit::fixtures().join("efficientnet_b0.safetensors"),
            &LoadOptions::backbone_only(),
        )
        .unwrap();
    // classifier.{weight,bias}, conv_head.weight, bn2.{weight,bias,running_mean,running_var}
    assert_eq!(rep.unexpected.len(), 7, "{:?}", rep.unexpected);
}
