//! Backbones by name: `efficientnet-b0`..`b8`, `efficientnet-l2`, `tf-efficientnet-*` (TF
//! padding and BN eps, the paper's checkpoints), `efficientnet` with explicit width/depth,
//! `resnet-50`/`101`/`152`, `spinenet-49s`/`49`/`96`/`143`/`190`.
use crate::efficientnet::{EfficientNet, EfficientNetConfig};
use crate::resnet::{ResNet, ResNetConfig};
use crate::spinenet::{SpineNet, SpineNetConfig};
use candle_core::{Error, Result, Tensor};
use pupil_nn::params::Vb;
use pupil_nn::{Backbone, Classifier, FeatureMaps, LevelInfo};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    pub name: String,
    /// Width multiplier (EfficientNet only; overrides the variant's).
    #[serde(default)]
    pub width: Option<f64>,
    /// Depth multiplier (EfficientNet only; overrides the variant's).
    #[serde(default)]
    pub depth: Option<f64>,
    /// Classifier outputs (0 = no classification head).
    #[serde(default)]
    pub num_classes: usize,
    /// Stochastic depth / drop-connect rate of the last block.
    #[serde(default)]
    pub drop_path: Option<f64>,
    /// Dropout before the classifier.
    #[serde(default)]
    pub dropout: Option<f64>,
    #[serde(default = "three")]
    pub in_channels: usize,
}

fn three() -> usize {
    3
}

impl Default for BackboneConfig {
    fn default() -> Self {
        BackboneConfig::named("efficientnet-b7")
    }
}

impl BackboneConfig {
    pub fn named(name: &str) -> Self {
        BackboneConfig {
            name: name.to_string(),
            width: None,
            depth: None,
            num_classes: 0,
            drop_path: None,
            dropout: None,
            in_channels: 3,
        }
    }
}

pub enum AnyBackbone {
    EfficientNet(EfficientNet),
    ResNet(ResNet),
    SpineNet(SpineNet),
}

pub fn build(vb: &Vb, cfg: &BackboneConfig) -> Result<AnyBackbone> {
    let name = cfg.name.to_ascii_lowercase();
    let unknown = || {
        Error::Msg(format!("unknown backbone {:?}: efficientnet-b0..b8|l2, tf-efficientnet-*, efficientnet (with width/depth), resnet-50|101|152, spinenet-49s|49|96|143|190", cfg.name))
    };
    if let Some(v) = name
        .strip_prefix("tf-efficientnet-")
        .or_else(|| name.strip_prefix("efficientnet-"))
        .or(if name == "efficientnet" || name == "tf-efficientnet" {
            Some("b0")
        } else {
            None
        })
    {
        let mut c = EfficientNetConfig::variant(v).ok_or_else(unknown)?;
        if name.starts_with("tf-") {
            c = c.tf();
        }
        if let Some(w) = cfg.width {
            c.width = w;
        }
        if let Some(d) = cfg.depth {
            c.depth = d;
        }
        if let Some(p) = cfg.drop_path {
            c.drop_path = p;
        }
        if let Some(p) = cfg.dropout {
            c.dropout = p;
        }
        c.num_classes = cfg.num_classes;
        c.in_channels = cfg.in_channels;
        return Ok(AnyBackbone::EfficientNet(EfficientNet::new(vb, &c)?));
    }
    if let Some(d) = name.strip_prefix("resnet-") {
        let mut c = d
            .parse()
            .ok()
            .and_then(ResNetConfig::depth)
            .ok_or_else(unknown)?;
        if let Some(p) = cfg.drop_path {
            c.drop_path = p;
        }
        c.num_classes = cfg.num_classes;
        c.in_channels = cfg.in_channels;
        return Ok(AnyBackbone::ResNet(ResNet::new(vb, &c)?));
    }
    if let Some(v) = name.strip_prefix("spinenet-") {
        let mut c = SpineNetConfig::variant(v).ok_or_else(unknown)?;
        if cfg.num_classes > 0 {
            return Err(Error::Msg("spinenet has no classification head".into()));
        }
        if let Some(p) = cfg.drop_path {
            c.init_drop_connect_rate = p;
        }
        c.in_channels = cfg.in_channels;
        return Ok(AnyBackbone::SpineNet(SpineNet::new(vb, &c)?));
    }
    Err(unknown())
}

impl AnyBackbone {
    pub fn classifier(&self) -> Option<&dyn Classifier> {
        match self {
            AnyBackbone::EfficientNet(m) if m.config.num_classes > 0 => Some(m),
            AnyBackbone::ResNet(m) if m.config.num_classes > 0 => Some(m),
            _ => None,
        }
    }
}

impl Backbone for AnyBackbone {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<FeatureMaps> {
        match self {
            AnyBackbone::EfficientNet(m) => m.forward_t(x, train),
            AnyBackbone::ResNet(m) => m.forward_t(x, train),
            AnyBackbone::SpineNet(m) => m.forward_t(x, train),
        }
    }
    fn levels(&self) -> Vec<LevelInfo> {
        match self {
            AnyBackbone::EfficientNet(m) => m.levels(),
            AnyBackbone::ResNet(m) => m.levels(),
            AnyBackbone::SpineNet(m) => m.levels(),
        }
    }
}

/// Saves a backbone's tensors with its config in the header (`{"backbone": cfg}`).
pub fn save_checkpoint(
    path: impl AsRef<std::path::Path>,
    cfg: &BackboneConfig,
    store: &pupil_nn::params::ParamStore,
) -> Result<()> {
    let header = serde_json::json!({ "format": "pupil-backbone", "backbone": cfg });
    store.save_safetensors(path, &header)
}

/// Rebuilds a backbone saved by [`save_checkpoint`] from its header, then loads its tensors
/// strictly.
pub fn load_checkpoint(
    path: impl AsRef<std::path::Path>,
    device: &candle_core::Device,
) -> Result<(BackboneConfig, pupil_nn::params::ParamStore, AnyBackbone)> {
    let path = path.as_ref();
    let header = pupil_nn::params::read_header(path)?.ok_or_else(|| {
        Error::Msg(format!(
            "{}: not a pupil checkpoint (no pupil header)",
            path.display()
        ))
    })?;
    let cfg: BackboneConfig = serde_json::from_value(
        header.get("backbone").cloned().unwrap_or_default(),
    )
    .map_err(|e| {
        Error::Msg(format!(
            "{}: backbone config in the header: {e}",
            path.display()
        ))
    })?;
    let store = pupil_nn::params::ParamStore::new(device, candle_core::DType::F32, 0);
    let model = build(&store.root(), &cfg)?;
    store.load_safetensors(path, &pupil_nn::params::LoadOptions::strict())?;
    Ok((cfg, store, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use pupil_nn::params::ParamStore;

    #[test]
    fn builds_by_name() {
        for (n, l5) in [
            ("efficientnet-b0", 320),
            ("tf-efficientnet-b1", 320),
            ("resnet-50", 2048),
        ] {
            let s = ParamStore::new(&Device::Cpu, DType::F32, 0);
            let b = build(&s.root(), &BackboneConfig::named(n)).unwrap();
            assert_eq!(b.levels().last().unwrap().channels, l5, "{n}");
            assert!(b.classifier().is_none());
        }
        let s = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let small = BackboneConfig {
            width: Some(0.25),
            depth: Some(0.34),
            num_classes: 10,
            ..BackboneConfig::named("efficientnet")
        };
        let b = build(&s.root(), &small).unwrap();
        assert!(b.classifier().is_some());
        assert!(s.count(true) < 300_000, "{}", s.count(true));
        let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            b.classifier().unwrap().logits_t(&x, false).unwrap().dims(),
            &[1, 10]
        );
        let e = build(&s.root(), &BackboneConfig::named("vgg-16"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown backbone"), "{e}");
    }

    #[test]
    fn drop_path_reaches_resnet() {
        let s = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let cfg = BackboneConfig {
            drop_path: Some(0.3),
            ..BackboneConfig::named("resnet-50")
        };
        match build(&s.root(), &cfg).unwrap() {
            AnyBackbone::ResNet(m) => assert_eq!(m.config.drop_path, 0.3),
            _ => panic!("resnet-50 built something else"),
        }
    }

    #[test]
    fn own_checkpoints_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let cfg = BackboneConfig {
            width: Some(0.25),
            depth: Some(0.25),
            num_classes: 3,
            ..BackboneConfig::named("efficientnet")
        };
        let s = ParamStore::new(&Device::Cpu, DType::F32, 5);
        let m = build(&s.root(), &cfg).unwrap();
        let p = d.path().join("ck.safetensors");
        save_checkpoint(&p, &cfg, &s).unwrap();
        let (cfg2, _s2, m2) = load_checkpoint(&p, &Device::Cpu).unwrap();
        assert_eq!(cfg2, cfg);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
        let a = m.classifier().unwrap().logits_t(&x, false).unwrap();
        let b = m2.classifier().unwrap().logits_t(&x, false).unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        let plain = d.path().join("plain.safetensors");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("a".to_string(), x)]),
            &plain,
        )
        .unwrap();
        let e = load_checkpoint(&plain, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("plain.safetensors") && e.contains("not a pupil checkpoint"),
            "{e}"
        );
    }
}
