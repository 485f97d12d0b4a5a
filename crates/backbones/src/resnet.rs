//! ResNet-50/101 (v1.5, stride on the 3x3 conv) with torchvision's parameter names.
use candle_core::{Module, Result, Tensor};
use pupil_nn::layers::{
    drop_path, global_avg_pool, Act, BatchNorm2d, Conv2d, ConvCfg, Linear, PadMode,
};
use pupil_nn::params::Vb;
use pupil_nn::{Backbone, Classifier, FeatureMaps, LevelInfo};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    /// Bottleneck blocks per stage.
    pub layers: [usize; 4],
    /// Width of the first stage's bottleneck (64 in the standard nets).
    pub base_width: usize,
    pub num_classes: usize,
    pub in_channels: usize,
    pub bn_eps: f64,
    pub bn_momentum: f64,
    /// Stochastic depth of the last block (timm's `drop_path_rate`); block `i` of `n` drops
    /// its residual branch with rate `drop_path * i / (n - 1)`.
    #[serde(default)]
    pub drop_path: f64,
}

impl ResNetConfig {
    pub fn depth(d: usize) -> Option<Self> {
        let layers = match d {
            50 => [3, 4, 6, 3],
            101 => [3, 4, 23, 3],
            152 => [3, 8, 36, 3],
            _ => return None,
        };
        Some(ResNetConfig {
            layers,
            base_width: 64,
            num_classes: 1000,
            in_channels: 3,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            drop_path: 0.0,
        })
    }
}

struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
    drop_path: f64,
    vb: Vb,
}

impl Bottleneck {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // Batch norm and ReLU as one op, and the last batch norm, shortcut and ReLU as one:
        // a training step keeps half as many activations as with separate ops.
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, train, Act::Relu)?;
        let y = self
            .bn2
            .forward_act(&self.conv2.forward(&y)?, train, Act::Relu)?;
        let id = match &self.downsample {
            Some((c, b)) => b.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        if train && self.drop_path > 0.0 {
            let y = self.bn3.forward_t(&self.conv3.forward(&y)?, train)?;
            return (drop_path(&y, self.drop_path, train, &self.vb)? + id)?.relu();
        }
        self.bn3
            .forward_add_relu(&self.conv3.forward(&y)?, &id, train)
    }
}

pub struct ResNet {
    pub config: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<Vec<Bottleneck>>,
    fc: Option<Linear>,
    channels: [usize; 4],
}

impl ResNet {
    pub fn new(vb: &Vb, cfg: &ResNetConfig) -> Result<Self> {
        let bn = |vb: &Vb, c: usize| BatchNorm2d::new(vb, c, cfg.bn_eps, cfg.bn_momentum);
        let c = |stride: usize, pad: usize| ConvCfg {
            stride,
            pad: PadMode::Sym(pad),
            ..Default::default()
        };
        let w0 = cfg.base_width;
        let conv1 = Conv2d::new(&vb.pp("conv1"), cfg.in_channels, w0, 7, c(2, 3))?;
        let bn1 = bn(&vb.pp("bn1"), w0)?;
        let mut cin = w0;
        let mut layers = Vec::new();
        let mut channels = [0; 4];
        let total: usize = cfg.layers.iter().sum();
        let mut idx = 0usize;
        for (s, &n) in cfg.layers.iter().enumerate() {
            let width = w0 << s;
            let cout = width * 4;
            let mut blocks = Vec::new();
            for i in 0..n {
                let b = vb.pp(format!("layer{}", s + 1)).pp(i);
                let stride = if i == 0 && s > 0 { 2 } else { 1 };
                let downsample = if i == 0 && (stride != 1 || cin != cout) {
                    Some((
                        Conv2d::new(&b.pp("downsample").pp(0), cin, cout, 1, c(stride, 0))?,
                        bn(&b.pp("downsample").pp(1), cout)?,
                    ))
                } else {
                    None
                };
                blocks.push(Bottleneck {
                    conv1: Conv2d::new(&b.pp("conv1"), cin, width, 1, c(1, 0))?,
                    bn1: bn(&b.pp("bn1"), width)?,
                    conv2: Conv2d::new(&b.pp("conv2"), width, width, 3, c(stride, 1))?,
                    bn2: bn(&b.pp("bn2"), width)?,
                    conv3: Conv2d::new(&b.pp("conv3"), width, cout, 1, c(1, 0))?,
                    bn3: bn(&b.pp("bn3"), cout)?,
                    downsample,
                    drop_path: cfg.drop_path * idx as f64 / total.saturating_sub(1).max(1) as f64,
                    vb: b.clone(),
                });
                cin = cout;
                idx += 1;
            }
            layers.push(blocks);
            channels[s] = cout;
        }
        let fc = if cfg.num_classes > 0 {
            Some(Linear::new(&vb.pp("fc"), cin, cfg.num_classes, true)?)
        } else {
            None
        };
        Ok(ResNet {
            config: cfg.clone(),
            conv1,
            bn1,
            layers,
            fc,
            channels,
        })
    }

    /// Outputs of layer1..layer4 (strides 4, 8, 16, 32).
    pub fn stages_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let x = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, train, Act::Relu)?;
        let mut x = pupil_ops::max_pool2d(
            &x,
            (3, 3),
            (2, 2),
            pupil_ops::Pad2d {
                top: 1,
                bottom: 1,
                left: 1,
                right: 1,
            },
        )?;
        let mut outs = Vec::new();
        for layer in &self.layers {
            for b in layer {
                x = b.forward_t(&x, train)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }

    pub fn pooled_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        global_avg_pool(self.stages_t(x, train)?.last().expect("4 stages"))
    }
}

impl Backbone for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<FeatureMaps> {
        let mut f = FeatureMaps::default();
        for (i, t) in self.stages_t(x, train)?.into_iter().enumerate() {
            f.maps.insert(i + 2, t);
        }
        Ok(f)
    }
    fn levels(&self) -> Vec<LevelInfo> {
        (0..4)
            .map(|i| LevelInfo {
                level: i + 2,
                stride: 4 << i,
                channels: self.channels[i],
            })
            .collect()
    }
}

impl Classifier for ResNet {
    fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let fc = self
            .fc
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("this ResNet has no head".into()))?;
        fc.forward(&self.pooled_t(x, train)?)
    }
    fn num_classes(&self) -> usize {
        self.config.num_classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use pupil_nn::params::ParamStore;

    fn tiny(drop_path: f64) -> (ParamStore, ResNet) {
        let cfg = ResNetConfig {
            layers: [1, 1, 1, 1],
            base_width: 4,
            num_classes: 5,
            drop_path,
            ..ResNetConfig::depth(50).unwrap()
        };
        let s = ParamStore::new(&Device::Cpu, DType::F32, 3);
        let m = ResNet::new(&s.root(), &cfg).unwrap();
        (s, m)
    }

    #[test]
    fn stochastic_depth_rises_to_the_last_block_and_acts_only_in_training() {
        let (_s, m) = tiny(0.6);
        let rates: Vec<f64> = m.layers.iter().flatten().map(|b| b.drop_path).collect();
        assert_eq!(rates.len(), 4);
        for (r, want) in rates.iter().zip([0.0, 0.2, 0.4, 0.6]) {
            assert!((r - want).abs() < 1e-12, "{rates:?}");
        }
        let x = Tensor::randn(0f32, 1.0, (8, 3, 32, 32), &Device::Cpu).unwrap();
        let run = |m: &ResNet, train| {
            m.logits_t(&x, train)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        // evaluation: deterministic, and the same as without stochastic depth
        let (_s0, m0) = tiny(0.0);
        assert_eq!(run(&m, false), run(&m, false));
        assert_eq!(run(&m, false), run(&m0, false));
        // training: the branches drop at random, so two passes differ
        assert_ne!(run(&m, true), run(&m, true));
        assert_eq!(run(&m0, true), run(&m0, true));
    }
}
