//! Semantic segmentation: DeepLabv3+ (ASPP + decoder on stride-4 features) and the paper's
//! NAS-FPN head (NAS-FPN levels 3-7 fused at stride 4, three convs, logits), trained with
//! softmax cross-entropy (ignore label 255) on logits upsampled to the label size.
use crate::losses::softmax_cross_entropy;
use crate::neck::{Neck, NeckConfig, NeckKind, HEAD_INIT};
use candle_core::{DType, Module, Result, Tensor};
use pupil_data::batch::ImageInfo;
use pupil_data::Plane;
use pupil_nn::{
    dropout2d, global_avg_pool, Act, Backbone, BatchNorm2d, Conv2d, ConvCfg, Init, LevelInfo,
    PadMode, Vb,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegHeadKind {
    DeeplabV3Plus,
    NasFpn,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmenterConfig {
    pub num_classes: usize,
    pub head: SegHeadKind,
    /// DeepLabv3+: 16 (ASPP on level 4, rates 6/12/18) or 8 (level 3, rates doubled).
    pub output_stride: usize,
    pub aspp_channels: usize,
    pub decoder_low_channels: usize,
    /// NAS-FPN head: the neck and the number of 3x3 convs after fusion.
    pub neck: NeckConfig,
    pub head_convs: usize,
    pub head_channels: usize,
    pub ignore_index: u32,
    pub bn_eps: f64,
    pub bn_momentum: f64,
    /// Channel dropout on the features before the classifier, in training only (a
    /// self-training student's noise; 0 = off).
    pub dropout: f64,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            num_classes: 21,
            head: SegHeadKind::NasFpn,
            output_stride: 16,
            aspp_channels: 256,
            decoder_low_channels: 48,
            neck: NeckConfig {
                kind: NeckKind::NasFpn,
                repeats: 7,
                separable: true,
                act: Act::Relu,
                ..NeckConfig::default()
            },
            head_convs: 3,
            head_channels: 256,
            ignore_index: 255,
            bn_eps: 1e-3,
            bn_momentum: 0.003,
            dropout: 0.0,
        }
    }
}

struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBnRelu {
    fn new(
        vb: &Vb,
        cfg: &SegmenterConfig,
        cin: usize,
        cout: usize,
        k: usize,
        dilation: usize,
        bias: bool,
    ) -> Result<Self> {
        let c = ConvCfg {
            dilation,
            bias,
            pad: PadMode::Torch,
            init: if bias { HEAD_INIT } else { Init::KaimingFanOut },
            ..Default::default()
        };
        Ok(ConvBnRelu {
            conv: Conv2d::new(&vb.pp("conv"), cin, cout, k, c)?,
            bn: BatchNorm2d::new(&vb.pp("bn"), cout, cfg.bn_eps, cfg.bn_momentum)?,
        })
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn
            .forward_act(&self.conv.forward(x)?, train, Act::Relu)
    }
}

struct DeepLab {
    level: usize,
    branches: Vec<ConvBnRelu>,
    pool: ConvBnRelu,
    project: ConvBnRelu,
    low: ConvBnRelu,
    decoder: Vec<ConvBnRelu>,
}

impl DeepLab {
    /// ASPP (1x1, three dilated 3x3, image pooling) on level 4 (output stride 16) or 3 (8),
    /// projected, then the decoder with the stride-4 features.
    fn new(vb: &Vb, cfg: &SegmenterConfig, levels: &[LevelInfo]) -> Result<Self> {
        let (level, rates) = match cfg.output_stride {
            16 => (4, [6, 12, 18]),
            8 => (3, [12, 24, 36]),
            o => candle_core::bail!("output_stride must be 8 or 16, got {o}"),
        };
        let cin = channels_at(levels, level)?;
        let a = cfg.aspp_channels;
        let unit = |name: Vb, cin: usize, cout: usize, k: usize, rate: usize| {
            ConvBnRelu::new(&name, cfg, cin, cout, k, rate, false)
        };
        let mut branches = vec![unit(vb.pp("aspp").pp(0), cin, a, 1, 1)?];
        for (i, r) in rates.iter().enumerate() {
            branches.push(unit(vb.pp("aspp").pp(i + 1), cin, a, 3, *r)?);
        }
        let low_c = cfg.decoder_low_channels;
        Ok(DeepLab {
            level,
            branches,
            pool: unit(vb.pp("aspp_pool"), cin, a, 1, 1)?,
            project: unit(vb.pp("aspp_project"), 5 * a, a, 1, 1)?,
            low: unit(vb.pp("low"), channels_at(levels, 2)?, low_c, 1, 1)?,
            decoder: vec![
                unit(vb.pp("decoder").pp(0), a + low_c, a, 3, 1)?,
                unit(vb.pp("decoder").pp(1), a, a, 3, 1)?,
            ],
        })
    }
}

struct NasHead {
    neck: Neck,
    convs: Vec<ConvBnRelu>,
}

impl NasHead {
    /// The NAS-FPN neck, then `head_convs` 3x3 convs after fusion at stride 4.
    fn new(vb: &Vb, cfg: &SegmenterConfig, levels: &[LevelInfo]) -> Result<Self> {
        let neck = Neck::new(&vb.pp("neck"), &cfg.neck, levels)?;
        let mut convs = Vec::new();
        let mut c = cfg.neck.channels;
        for i in 0..cfg.head_convs {
            let v = vb.pp("convs").pp(i);
            convs.push(ConvBnRelu::new(&v, cfg, c, cfg.head_channels, 3, 1, true)?);
            c = cfg.head_channels;
        }
        Ok(NasHead { neck, convs })
    }
}

fn channels_at(levels: &[LevelInfo], l: usize) -> Result<usize> {
    levels
        .iter()
        .find(|i| i.level == l)
        .map(|i| i.channels)
        .ok_or_else(|| candle_core::Error::Msg(format!("the backbone has no level {l}")))
}

enum Head {
    DeepLab(DeepLab),
    NasFpn(NasHead),
}

pub struct Segmenter {
    pub config: SegmenterConfig,
    pub backbone: Box<dyn Backbone>,
    head: Head,
    classifier: Conv2d,
    /// The store whose generator draws the dropout masks.
    noise: Vb,
}

impl Segmenter {
    /// A segmenter on a built backbone (tensors under `backbone.` of the same store); the
    /// head is created under `vb`.
    pub fn new(vb: &Vb, backbone: Box<dyn Backbone>, cfg: &SegmenterConfig) -> Result<Self> {
        let levels = backbone.levels();
        let hvb = vb.pp("head");
        let (head, last) = match cfg.head {
            SegHeadKind::DeeplabV3Plus => {
                let d = DeepLab::new(&hvb, cfg, &levels)?;
                (Head::DeepLab(d), cfg.aspp_channels)
            }
            SegHeadKind::NasFpn => {
                let n = NasHead::new(&hvb, cfg, &levels)?;
                let last = if n.convs.is_empty() {
                    cfg.neck.channels
                } else {
                    cfg.head_channels
                };
                (Head::NasFpn(n), last)
            }
        };
        let classifier = Conv2d::new(
            &hvb.pp("classifier"),
            last,
            cfg.num_classes,
            1,
            ConvCfg {
                bias: true,
                init: HEAD_INIT,
                ..Default::default()
            },
        )?;
        Ok(Segmenter {
            config: cfg.clone(),
            backbone,
            head,
            classifier,
            noise: vb.clone(),
        })
    }

    /// Logits at stride 4: [B, K, ceil(H/4), ceil(W/4)].
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h, w) = images.dims4()?;
        let size4 = (h.div_ceil(4), w.div_ceil(4));
        let feats = self.backbone.forward_t(images, train)?;
        let x = match &self.head {
            Head::DeepLab(d) => {
                let f = feats.get(d.level)?;
                let (_, _, fh, fw) = f.dims4()?;
                let mut outs: Vec<Tensor> = d
                    .branches
                    .iter()
                    .map(|b| b.forward_t(f, train))
                    .collect::<Result<_>>()?;
                let pooled = global_avg_pool(f)?.unsqueeze(2)?.unsqueeze(3)?;
                outs.push(
                    d.pool
                        .forward_t(&pooled, train)?
                        .broadcast_as((f.dim(0)?, self.config.aspp_channels, fh, fw))?
                        .contiguous()?,
                );
                let aspp = d.project.forward_t(&Tensor::cat(&outs, 1)?, train)?;
                let low = d.low.forward_t(feats.get(2)?, train)?;
                let (_, _, lh, lw) = low.dims4()?;
                let up = pupil_ops::resize_bilinear(&aspp, lh, lw, false)?;
                let mut y = Tensor::cat(&[up, low], 1)?;
                for c in &d.decoder {
                    y = c.forward_t(&y, train)?;
                }
                if (lh, lw) != size4 {
                    y = pupil_ops::resize_bilinear(&y, size4.0, size4.1, false)?;
                }
                y
            }
            Head::NasFpn(n) => {
                let levels = n.neck.forward_t(&feats, train)?;
                let mut fused: Option<Tensor> = None;
                for l in &levels {
                    let u = pupil_ops::resize_bilinear(l, size4.0, size4.1, false)?;
                    fused = Some(match fused {
                        Some(f) => (f + u)?,
                        None => u,
                    });
                }
                let mut y = fused.expect("five levels");
                for c in &n.convs {
                    y = c.forward_t(&y, train)?;
                }
                y
            }
        };
        let x = dropout2d(&x, self.config.dropout, train, &self.noise)?;
        self.classifier.forward(&x)
    }

    /// Cross-entropy of logits upsampled (bilinear) to the label size; 255 is ignored.
    pub fn loss(&self, images: &Tensor, labels: &Tensor, train: bool) -> Result<Tensor> {
        let logits = self.forward_t(images, train)?;
        let (_, lh, lw) = labels.dims3()?;
        let dt = match logits.dtype() {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let up = pupil_ops::resize_bilinear(&logits.to_dtype(dt)?, lh, lw, false)?;
        softmax_cross_entropy(&up, labels, self.config.ignore_index)
    }

    /// Per-class softmax probabilities `[K][H * W]` of each image in its original
    /// coordinates (crop of the padding, then the inverse of the recorded resize / flip,
    /// nearest neighbour); pixels outside the current image get probability 0.
    pub fn predict_probs(&self, images: &Tensor, info: &[ImageInfo]) -> Result<Vec<Vec<Vec<f32>>>> {
        let (_, _, h, w) = images.dims4()?;
        let logits = self.forward_t(images, false)?;
        let up = pupil_ops::resize_bilinear(&logits.to_dtype(DType::F32)?, h, w, false)?;
        let probs = pupil_ops::softmax_last_dim(&up.permute((0, 2, 3, 1))?.contiguous()?)?;
        let k = self.config.num_classes;
        let mut out = Vec::new();
        for (i, inf) in info.iter().enumerate() {
            let (ch, cw) = inf.size;
            let p: Vec<f32> = probs.get(i)?.flatten_all()?.to_vec1()?;
            let (oh, ow) = inf.meta.original_size;
            let (sy, sx) = inf.meta.scale;
            let (oy, ox) = inf.meta.offset;
            let mut per = vec![vec![0f32; oh * ow]; k];
            for y in 0..oh {
                let yc = ((y as f32 + 0.5) * sy - oy - 0.5).round();
                for x in 0..ow {
                    let xo = if inf.meta.flipped {
                        ow as f32 - 1.0 - x as f32
                    } else {
                        x as f32
                    };
                    let xc = ((xo + 0.5) * sx - ox - 0.5).round();
                    if yc >= 0.0 && xc >= 0.0 && (yc as usize) < ch && (xc as usize) < cw {
                        let at = ((yc as usize) * w + xc as usize) * k;
                        for (c, plane) in per.iter_mut().enumerate() {
                            plane[y * ow + x] = p[at + c];
                        }
                    }
                }
            }
            out.push(per);
        }
        Ok(out)
    }

    /// Per-pixel class and confidence (max softmax probability) for each image in its
    /// original coordinates; pixels outside the current image are 255 with confidence 0.
    pub fn predict(&self, images: &Tensor, info: &[ImageInfo]) -> Result<Vec<(Plane, Vec<f32>)>> {
        let probs = self.predict_probs(images, info)?;
        Ok(probs
            .into_iter()
            .zip(info)
            .map(|(per, inf)| {
                let (oh, ow) = inf.meta.original_size;
                let mut plane = Plane::new(ow, oh, 255);
                let mut conf = vec![0f32; oh * ow];
                for q in 0..oh * ow {
                    let (mut best, mut arg) = (0f32, 255u8);
                    for (c, ch) in per.iter().enumerate() {
                        if ch[q] > best {
                            best = ch[q];
                            arg = c as u8;
                        }
                    }
                    plane.data[q] = arg;
                    conf[q] = best;
                }
                (plane, conf)
            })
            .collect())
    }
}
