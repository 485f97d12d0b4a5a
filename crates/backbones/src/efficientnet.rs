//! EfficientNet B0-B8 and L2 with timm's parameter names, in PyTorch-style padding
//! (`efficientnet_*`) or TensorFlow 'SAME' padding with BN eps 1e-3 (`tf_efficientnet_*`,
//! the family of the paper's checkpoints).
use candle_core::{Module, Result, Tensor};
use pupil_nn::layers::{
    drop_path, dropout, global_avg_pool, sigmoid, BatchNorm2d, Conv2d, ConvCfg, Linear, PadMode,
};
use pupil_nn::params::Vb;
use pupil_nn::Act;
use pupil_nn::{Backbone, Classifier, FeatureMaps, LevelInfo};
use pupil_ops::fused::{scale_planes, silu};

/// One stage of the B0 base network: (repeats, kernel, stride, expansion, output channels).
const B0_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];
const SE_RATIO: f64 = 0.25;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EfficientNetConfig {
    pub width: f64,
    pub depth: f64,
    /// Native input resolution (informative).
    pub resolution: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Stochastic depth rate of the last block (linear in the block index).
    pub drop_path: f64,
    /// TensorFlow 'SAME' padding (the `tf_` checkpoints).
    pub tf_padding: bool,
    pub bn_eps: f64,
    /// PyTorch convention (`1 - TF momentum`).
    pub bn_momentum: f64,
    /// Classifier outputs; 0 builds no head (backbone only).
    pub num_classes: usize,
    pub in_channels: usize,
}

impl EfficientNetConfig {
    fn scaled(width: f64, depth: f64, resolution: usize, dropout: f64) -> Self {
        EfficientNetConfig {
            width,
            depth,
            resolution,
            dropout,
            drop_path: 0.2,
            tf_padding: false,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            num_classes: 1000,
            in_channels: 3,
        }
    }

    /// `b0`..`b8` or `l2`.
    pub fn variant(v: &str) -> Option<Self> {
        let (w, d, r, p) = match v {
            "b0" => (1.0, 1.0, 224, 0.2),
            "b1" => (1.0, 1.1, 240, 0.2),
            "b2" => (1.1, 1.2, 260, 0.3),
            "b3" => (1.2, 1.4, 300, 0.3),
            "b4" => (1.4, 1.8, 380, 0.4),
            "b5" => (1.6, 2.2, 456, 0.4),
            "b6" => (1.8, 2.6, 528, 0.5),
            "b7" => (2.0, 3.1, 600, 0.5),
            "b8" => (2.2, 3.6, 672, 0.5),
            "l2" => (4.3, 5.3, 800, 0.5),
            _ => return None,
        };
        Some(Self::scaled(w, d, r, p))
    }

    /// A custom-size network (small models for CPU experiments).
    pub fn custom(width: f64, depth: f64) -> Self {
        Self::scaled(width, depth, 224, 0.2)
    }

    /// Switches to the TensorFlow conventions of the `tf_` checkpoints and the paper:
    /// 'SAME' padding, BN eps 1e-3, BN momentum 0.01 (TF's 0.99).
    pub fn tf(mut self) -> Self {
        self.tf_padding = true;
        self.bn_eps = 1e-3;
        self.bn_momentum = 0.01;
        self
    }

    pub fn round_filters(&self, f: usize) -> usize {
        round_filters(f, self.width)
    }

    pub fn round_repeats(&self, r: usize) -> usize {
        (self.depth * r as f64).ceil() as usize
    }
}

/// EfficientNet's channel rounding: to a multiple of 8, never below 90 % of the scaled value.
pub fn round_filters(f: usize, width: f64) -> usize {
    let v = f as f64 * width;
    let mut n = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (n as f64) < 0.9 * v {
        n += 8;
    }
    n
}

struct SqueezeExcite {
    reduce: Conv2d,
    expand: Conv2d,
}

impl SqueezeExcite {
    fn new(vb: &Vb, channels: usize, reduced: usize) -> Result<Self> {
        let cfg = ConvCfg {
            bias: true,
            ..Default::default()
        };
        Ok(SqueezeExcite {
            reduce: Conv2d::new(&vb.pp("conv_reduce"), channels, reduced, 1, cfg)?,
            expand: Conv2d::new(&vb.pp("conv_expand"), reduced, channels, 1, cfg)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let s = x.reshape((n, c, ()))?.mean_keepdim(2)?.unsqueeze(3)?;
        let s = silu(&self.reduce.forward(&s)?)?;
        let g = sigmoid(&self.expand.forward(&s)?)?;
        scale_planes(x, &g)
    }
}

enum BlockKind {
    /// Stage 0 when the expansion is 1: depthwise, SE, pointwise.
    DepthwiseSeparable {
        conv_dw: Conv2d,
        bn1: BatchNorm2d,
        se: SqueezeExcite,
        conv_pw: Conv2d,
        bn2: BatchNorm2d,
    },
    /// MBConv: expand, depthwise, SE, project.
    InvertedResidual {
        conv_pw: Conv2d,
        bn1: BatchNorm2d,
        conv_dw: Conv2d,
        bn2: BatchNorm2d,
        se: SqueezeExcite,
        conv_pwl: Conv2d,
        bn3: BatchNorm2d,
    },
}

struct Block {
    kind: BlockKind,
    skip: bool,
    drop_path: f64,
    vb: Vb,
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = match &self.kind {
            BlockKind::DepthwiseSeparable {
                conv_dw,
                bn1,
                se,
                conv_pw,
                bn2,
            } => {
                let y = bn1.forward_act(&conv_dw.forward(x)?, train, Act::Silu)?;
                let y = se.forward(&y)?;
                bn2.forward_t(&conv_pw.forward(&y)?, train)?
            }
            BlockKind::InvertedResidual {
                conv_pw,
                bn1,
                conv_dw,
                bn2,
                se,
                conv_pwl,
                bn3,
            } => {
                let y = bn1.forward_act(&conv_pw.forward(x)?, train, Act::Silu)?;
                let y = bn2.forward_act(&conv_dw.forward(&y)?, train, Act::Silu)?;
                let y = se.forward(&y)?;
                bn3.forward_t(&conv_pwl.forward(&y)?, train)?
            }
        };
        if self.skip {
            drop_path(&y, self.drop_path, train, &self.vb)? + x
        } else {
            Ok(y)
        }
    }
}

pub struct EfficientNet {
    pub config: EfficientNetConfig,
    conv_stem: Conv2d,
    bn1: BatchNorm2d,
    /// blocks[stage][index]
    blocks: Vec<Vec<Block>>,
    head: Option<(Conv2d, BatchNorm2d, Linear)>,
    stage_channels: Vec<usize>,
    vb: Vb,
}

impl EfficientNet {
    pub fn new(vb: &Vb, cfg: &EfficientNetConfig) -> Result<Self> {
        let pad = if cfg.tf_padding {
            PadMode::Same
        } else {
            PadMode::Torch
        };
        let conv = |stride: usize, groups: usize| ConvCfg {
            stride,
            groups,
            pad,
            ..Default::default()
        };
        let bn = |vb: &Vb, c: usize| BatchNorm2d::new(vb, c, cfg.bn_eps, cfg.bn_momentum);
        let stem = cfg.round_filters(32);
        let conv_stem = Conv2d::new(&vb.pp("conv_stem"), cfg.in_channels, stem, 3, conv(2, 1))?;
        let bn1 = bn(&vb.pp("bn1"), stem)?;
        let total: usize = B0_STAGES.iter().map(|s| cfg.round_repeats(s.0)).sum();
        let mut idx = 0usize;
        let mut cin = stem;
        let mut blocks = Vec::new();
        let mut stage_channels = Vec::new();
        for (s, &(repeats, k, stride, expand, out)) in B0_STAGES.iter().enumerate() {
            let cout = cfg.round_filters(out);
            let mut stage = Vec::new();
            for i in 0..cfg.round_repeats(repeats) {
                let bvb = vb.pp("blocks").pp(s).pp(i);
                let st = if i == 0 { stride } else { 1 };
                let rate = cfg.drop_path * idx as f64 / total as f64;
                let kind = if expand == 1 {
                    let rd = ((cin as f64 * SE_RATIO).round() as usize).max(1);
                    BlockKind::DepthwiseSeparable {
                        conv_dw: Conv2d::new(&bvb.pp("conv_dw"), cin, cin, k, conv(st, cin))?,
                        bn1: bn(&bvb.pp("bn1"), cin)?,
                        se: SqueezeExcite::new(&bvb.pp("se"), cin, rd)?,
                        conv_pw: Conv2d::new(&bvb.pp("conv_pw"), cin, cout, 1, conv(1, 1))?,
                        bn2: bn(&bvb.pp("bn2"), cout)?,
                    }
                } else {
                    let mid = cin * expand;
                    let rd = ((mid as f64 * SE_RATIO / expand as f64).round() as usize).max(1);
                    BlockKind::InvertedResidual {
                        conv_pw: Conv2d::new(&bvb.pp("conv_pw"), cin, mid, 1, conv(1, 1))?,
                        bn1: bn(&bvb.pp("bn1"), mid)?,
                        conv_dw: Conv2d::new(&bvb.pp("conv_dw"), mid, mid, k, conv(st, mid))?,
                        bn2: bn(&bvb.pp("bn2"), mid)?,
                        se: SqueezeExcite::new(&bvb.pp("se"), mid, rd)?,
                        conv_pwl: Conv2d::new(&bvb.pp("conv_pwl"), mid, cout, 1, conv(1, 1))?,
                        bn3: bn(&bvb.pp("bn3"), cout)?,
                    }
                };
                stage.push(Block {
                    kind,
                    skip: st == 1 && cin == cout,
                    drop_path: rate,
                    vb: bvb,
                });
                cin = cout;
                idx += 1;
            }
            blocks.push(stage);
            stage_channels.push(cout);
        }
        if cfg.drop_path > 0.0 && !blocks.iter().flatten().any(|b: &Block| b.skip) {
            // stochastic depth drops residual branches; at low depth every block changes
            // shape, so there is none and the setting would do nothing
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                eprintln!(
                    "WARNING: drop_path = {} has no effect: this EfficientNet (depth {}) has no residual block to drop",
                    cfg.drop_path, cfg.depth
                )
            });
        }
        let head = if cfg.num_classes > 0 {
            let ch = cfg.round_filters(1280);
            Some((
                Conv2d::new(&vb.pp("conv_head"), cin, ch, 1, conv(1, 1))?,
                bn(&vb.pp("bn2"), ch)?,
                Linear::new(&vb.pp("classifier"), ch, cfg.num_classes, true)?,
            ))
        } else {
            None
        };
        Ok(EfficientNet {
            config: cfg.clone(),
            conv_stem,
            bn1,
            blocks,
            head,
            stage_channels,
            vb: vb.clone(),
        })
    }

    /// Output of every stage (index = stage 0..6).
    pub fn stages_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let mut x = self
            .bn1
            .forward_act(&self.conv_stem.forward(x)?, train, Act::Silu)?;
        let mut outs = Vec::with_capacity(self.blocks.len());
        for stage in &self.blocks {
            for b in stage {
                x = b.forward_t(&x, train)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// The classifier's input: global average pool of the head features.
    pub fn pooled_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (conv_head, bn2, _) = self
            .head
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("this EfficientNet has no head".into()))?;
        let last = self.stages_t(x, train)?.pop().expect("7 stages");
        global_avg_pool(&bn2.forward_act(&conv_head.forward(&last)?, train, Act::Silu)?)
    }

    pub fn stage_channels(&self) -> &[usize] {
        &self.stage_channels
    }

    /// Stage whose output is tapped for each pyramid level 1..=5.
    const TAPS: [(usize, usize); 5] = [(1, 0), (2, 1), (3, 2), (4, 4), (5, 6)];
}

impl Backbone for EfficientNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<FeatureMaps> {
        let outs = self.stages_t(x, train)?;
        let mut f = FeatureMaps::default();
        for (level, stage) in Self::TAPS.into_iter().skip(1) {
            f.maps.insert(level, outs[stage].clone());
        }
        Ok(f)
    }

    fn levels(&self) -> Vec<LevelInfo> {
        Self::TAPS
            .into_iter()
            .skip(1)
            .map(|(level, stage)| LevelInfo {
                level,
                stride: 1 << level,
                channels: self.stage_channels[stage],
            })
            .collect()
    }
}

impl Classifier for EfficientNet {
    fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let pooled = self.pooled_t(x, train)?;
        let (_, _, fc) = self.head.as_ref().expect("checked by pooled_t");
        fc.forward(&dropout(&pooled, self.config.dropout, train, &self.vb)?)
    }
    fn num_classes(&self) -> usize {
        self.config.num_classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_rules_match_the_paper_tables() {
        let b7 = EfficientNetConfig::variant("b7").unwrap();
        let outs: Vec<usize> = B0_STAGES.iter().map(|s| b7.round_filters(s.4)).collect();
        assert_eq!(outs, vec![32, 48, 80, 160, 224, 384, 640]);
        assert_eq!(b7.round_filters(32), 64);
        assert_eq!(b7.round_filters(1280), 2560);
        let reps: Vec<usize> = B0_STAGES.iter().map(|s| b7.round_repeats(s.0)).collect();
        assert_eq!(reps, vec![4, 7, 7, 10, 10, 13, 4]);
        let l2 = EfficientNetConfig::variant("l2").unwrap();
        let outs: Vec<usize> = B0_STAGES.iter().map(|s| l2.round_filters(s.4)).collect();
        assert_eq!(outs, vec![72, 104, 176, 344, 480, 824, 1376]);
        assert_eq!((l2.round_filters(32), l2.round_filters(1280)), (136, 5504));
        let reps: usize = B0_STAGES.iter().map(|s| l2.round_repeats(s.0)).sum();
        assert_eq!(reps, 88);
    }
}
