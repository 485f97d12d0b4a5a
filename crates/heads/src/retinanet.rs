//! RetinaNet: a backbone, a neck (FPN by default), class and box subnets whose convolutions
//! are shared across levels with batch norm per level, focal + Huber losses normalised by the
//! number of positives, and post-processing to detections in original image coordinates.
use crate::anchors::AnchorConfig;
use crate::boxes::{batched_nms, soft_nms};
use crate::coder::BoxCoder;
use crate::losses::{huber_elements, weighted_focal_loss};
use crate::matcher::{Matcher, IGNORE};
use crate::neck::{Neck, NeckConfig, HEAD_INIT};
use candle_core::{DType, Module, Result, Tensor};
use pupil_data::batch::{Batch, ImageInfo};
use pupil_nn::{dropout2d, Act, Backbone, BatchNorm2d, Conv2d, ConvCfg, Init, PadMode, Vb};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostConfig {
    pub pre_nms_top_k: usize,
    pub score_threshold: f32,
    pub nms_iou: f32,
    /// Gaussian soft-NMS with this sigma instead of hard NMS.
    pub soft_nms_sigma: Option<f32>,
    pub max_detections: usize,
}

impl Default for PostConfig {
    fn default() -> Self {
        PostConfig {
            pre_nms_top_k: 5000,
            score_threshold: 0.05,
            nms_iou: 0.5,
            soft_nms_sigma: None,
            max_detections: 100,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetinaNetConfig {
    pub num_classes: usize,
    pub neck: NeckConfig,
    pub head_convs: usize,
    pub head_channels: usize,
    pub anchors: AnchorConfig,
    pub match_threshold: f32,
    pub unmatched_threshold: f32,
    pub focal_alpha: f64,
    pub focal_gamma: f64,
    pub huber_delta: f64,
    pub box_weight: f64,
    /// Channel dropout on the head features before the class and box predictors, in
    /// training only (a self-training student's noise; 0 = off).
    pub dropout: f64,
    pub post: PostConfig,
}

impl Default for RetinaNetConfig {
    fn default() -> Self {
        RetinaNetConfig {
            num_classes: 90,
            neck: NeckConfig::default(),
            head_convs: 4,
            head_channels: 256,
            anchors: AnchorConfig::default(),
            match_threshold: 0.5,
            unmatched_threshold: 0.5,
            focal_alpha: 0.25,
            focal_gamma: 1.5,
            huber_delta: 0.1,
            box_weight: 50.0,
            dropout: 0.0,
            post: PostConfig::default(),
        }
    }
}

struct Subnet {
    convs: Vec<Conv2d>,
    /// [conv][level]
    bns: Vec<Vec<BatchNorm2d>>,
    predict: Conv2d,
    dropout: f64,
    /// The store whose generator draws the dropout masks.
    noise: Vb,
}

impl Subnet {
    fn new(vb: &Vb, cfg: &RetinaNetConfig, cin: usize, out: usize, bias: f64) -> Result<Self> {
        let ch = cfg.head_channels;
        let c = ConvCfg {
            bias: true,
            pad: PadMode::Same,
            init: HEAD_INIT,
            ..Default::default()
        };
        let mut convs = Vec::new();
        let mut bns = Vec::new();
        for i in 0..cfg.head_convs {
            convs.push(Conv2d::new(
                &vb.pp(format!("conv{i}")),
                if i == 0 { cin } else { ch },
                ch,
                3,
                c,
            )?);
            bns.push(
                (cfg.neck.min_level..=cfg.neck.max_level)
                    .map(|l| {
                        BatchNorm2d::new(
                            &vb.pp(format!("bn{i}")).pp(format!("level{l}")),
                            ch,
                            cfg.neck.bn_eps,
                            cfg.neck.bn_momentum,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let cin_pred = if cfg.head_convs == 0 { cin } else { ch };
        let pvb = vb.pp("predict");
        let predict = Conv2d::new(
            &pvb,
            cin_pred,
            out,
            3,
            ConvCfg {
                init: Init::Normal {
                    mean: 0.0,
                    std: 1e-5,
                },
                ..c
            },
        )?;
        // The class prior: bias = -ln((1 - pi) / pi); new tensors only (a loaded checkpoint wins).
        if bias != 0.0 {
            pvb.store().set(
                &pvb.name("bias"),
                &Tensor::full(bias as f32, out, pvb.device())?,
            )?;
        }
        Ok(Subnet {
            convs,
            bns,
            predict,
            dropout: cfg.dropout,
            noise: vb.clone(),
        })
    }

    fn forward_t(&self, x: &Tensor, level_idx: usize, act: Act, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for (c, bns) in self.convs.iter().zip(&self.bns) {
            y = bns[level_idx].forward_act(&c.forward(&y)?, train, act)?;
        }
        self.predict
            .forward(&dropout2d(&y, self.dropout, train, &self.noise)?)
    }
}

/// A detection in original image coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub score: f32,
    pub class: u32,
}

/// Loss parts of one batch.
pub struct DetLoss {
    pub total: Tensor,
    pub cls: f64,
    pub boxes: f64,
    pub num_positives: usize,
}

pub struct RetinaNet {
    pub config: RetinaNetConfig,
    pub backbone: Box<dyn Backbone>,
    neck: Neck,
    class_net: Subnet,
    box_net: Subnet,
    coder: BoxCoder,
}

impl RetinaNet {
    /// A detector on a built backbone (whose tensors sit under `backbone.` of the same
    /// store, so checkpoints hold the whole model); the neck and subnets are created under
    /// `vb`.
    pub fn new(vb: &Vb, backbone: Box<dyn Backbone>, cfg: &RetinaNetConfig) -> Result<Self> {
        let bb = backbone;
        let neck = Neck::new(&vb.pp("neck"), &cfg.neck, &bb.levels())?;
        let a = cfg.anchors.per_location();
        let prior = -((1.0f64 - 0.01) / 0.01).ln();
        let class_net = Subnet::new(
            &vb.pp("class_net"),
            cfg,
            cfg.neck.channels,
            a * cfg.num_classes,
            prior,
        )?;
        let box_net = Subnet::new(&vb.pp("box_net"), cfg, cfg.neck.channels, a * 4, 0.0)?;
        Ok(RetinaNet {
            config: cfg.clone(),
            backbone: bb,
            neck,
            class_net,
            box_net,
            coder: BoxCoder::default(),
        })
    }

    /// Class logits [B, A, K] and box deltas [B, A, 4], anchors in the paper's order.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let feats = self.backbone.forward_t(images, train)?;
        let levels = self.neck.forward_t(&feats, train)?;
        let k = self.config.num_classes;
        let (mut cls, mut bx) = (Vec::new(), Vec::new());
        for (i, f) in levels.iter().enumerate() {
            let b = f.dim(0)?;
            let c = self
                .class_net
                .forward_t(f, i, self.config.neck.act, train)?;
            let r = self.box_net.forward_t(f, i, self.config.neck.act, train)?;
            cls.push(c.permute((0, 2, 3, 1))?.reshape((b, (), k))?);
            bx.push(r.permute((0, 2, 3, 1))?.reshape((b, (), 4))?);
        }
        Ok((Tensor::cat(&cls, 1)?, Tensor::cat(&bx, 1)?))
    }

    pub fn anchors(&self, h: usize, w: usize) -> Vec<[f32; 4]> {
        self.config.anchors.generate(h, w).0
    }

    /// Focal + 50 x Huber loss of a batch, each normalised by the positives (+1).
    pub fn loss(&self, batch: &Batch, train: bool) -> Result<DetLoss> {
        let (cls, reg) = self.forward_t(&batch.images, train)?;
        self.loss_from(&cls, &reg, batch)
    }

    pub fn loss_from(&self, cls: &Tensor, reg: &Tensor, batch: &Batch) -> Result<DetLoss> {
        let cfg = &self.config;
        let (_, _, h, w) = batch.images.dims4()?;
        let anchors = self.anchors(h, w);
        let (b, a, k) = cls.dims3()?;
        if a != anchors.len() {
            candle_core::bail!("{a} predictions for {} anchors", anchors.len())
        }
        let boxes = batch.boxes.to_vec3::<f32>()?;
        let classes = batch.classes.to_vec2::<i64>()?;
        let crowd = batch.crowd.to_vec2::<u8>()?;
        let matcher = Matcher {
            match_threshold: cfg.match_threshold,
            unmatched_threshold: cfg.unmatched_threshold,
            force_match: true,
        };
        let mut onehot = vec![0f32; b * a * k];
        let mut weight = vec![1f32; b * a];
        let mut box_t = vec![0f32; b * a * 4];
        let mut pos = vec![0f32; b * a];
        let mut num_pos = 0usize;
        for i in 0..b {
            let n = batch.num_boxes[i];
            let gt: Vec<[f32; 4]> = boxes[i][..n]
                .iter()
                .map(|v| [v[0], v[1], v[2], v[3]])
                .collect();
            let gc: Vec<u32> = classes[i][..n].iter().map(|&c| c as u32).collect();
            let cr: Vec<bool> = crowd[i][..n].iter().map(|&c| c != 0).collect();
            let t = matcher.targets(&anchors, &gt, &gc, &cr, &self.coder);
            num_pos += t.num_positives;
            for (j, &c) in t.classes.iter().enumerate() {
                let row = i * a + j;
                if c >= 0 {
                    if c as usize >= k {
                        candle_core::bail!("class {c} out of range for {k} classes")
                    }
                    onehot[row * k + c as usize] = 1.0;
                    pos[row] = 1.0;
                    box_t[row * 4..row * 4 + 4].copy_from_slice(&t.boxes[j]);
                } else if c == IGNORE {
                    weight[row] = 0.0;
                }
            }
        }
        let dev = cls.device();
        // losses in f32 at least (half precision is upcast); f64 stays for gradient checks
        let dt = match cls.dtype() {
            DType::F16 | DType::BF16 => DType::F32,
            d => d,
        };
        let norm = num_pos as f64 + 1.0;
        let onehot = Tensor::from_vec(onehot, (b, a, k), dev)?.to_dtype(dt)?;
        let weight = Tensor::from_vec(weight, (b, a, 1), dev)?.to_dtype(dt)?;
        let cls_loss = (weighted_focal_loss(
            &cls.to_dtype(dt)?,
            &onehot,
            &weight,
            cfg.focal_alpha,
            cfg.focal_gamma,
        )? / norm)?;
        let box_t = Tensor::from_vec(box_t, (b, a, 4), dev)?.to_dtype(dt)?;
        let pos = Tensor::from_vec(pos, (b, a, 1), dev)?.to_dtype(dt)?;
        let box_loss = (huber_elements(&reg.to_dtype(dt)?, &box_t, cfg.huber_delta)?
            .broadcast_mul(&pos)?
            .sum_all()?
            / (4.0 * norm))?;
        let total = (&cls_loss + (&box_loss * cfg.box_weight)?)?;
        let scalar = |t: &Tensor| -> Result<f64> { t.to_dtype(DType::F64)?.to_scalar::<f64>() };
        Ok(DetLoss {
            cls: scalar(&cls_loss)?,
            boxes: scalar(&box_loss)?,
            total,
            num_positives: num_pos,
        })
    }

    /// Detections per image, mapped back to original image coordinates.
    pub fn predict(&self, images: &Tensor, info: &[ImageInfo]) -> Result<Vec<Vec<Detection>>> {
        let (cls, reg) = self.forward_t(images, false)?;
        self.postprocess(&cls, &reg, images.dims4()?.2, images.dims4()?.3, info)
    }

    pub fn postprocess(
        &self,
        cls: &Tensor,
        reg: &Tensor,
        h: usize,
        w: usize,
        info: &[ImageInfo],
    ) -> Result<Vec<Vec<Detection>>> {
        let anchors = self.anchors(h, w);
        let probs = pupil_nn::sigmoid(&cls.to_dtype(DType::F32)?)?;
        let (b, a, k) = probs.dims3()?;
        let probs: Vec<f32> = probs.flatten_all()?.to_vec1()?;
        let deltas: Vec<f32> = reg.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut out = Vec::with_capacity(b);
        for (i, inf) in info.iter().enumerate().take(b) {
            let probs = &probs[i * a * k..(i + 1) * a * k];
            let deltas = &deltas[i * a * 4..(i + 1) * a * 4];
            let c = self.candidates(probs, deltas, &anchors, k, inf.size);
            let p = &self.config.post;
            let kept: Vec<(usize, f32)> = match p.soft_nms_sigma {
                Some(sigma) => soft_nms_per_class(&c, k, sigma, p.score_threshold),
                None => batched_nms(&c.boxes, &c.scores, &c.classes, p.nms_iou)
                    .into_iter()
                    .map(|n| (n, c.scores[n]))
                    .collect(),
            };
            out.push(
                kept.into_iter()
                    .take(p.max_detections)
                    .map(|(n, s)| Detection {
                        bbox: inf.meta.to_original(c.boxes[n]),
                        score: s,
                        class: c.classes[n] as u32,
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    /// One image's per-class candidates above the threshold, top-k by score, decoded and
    /// clipped to the image (`size` is its (height, width) in the batch).
    fn candidates(
        &self,
        probs: &[f32],
        deltas: &[f32],
        anchors: &[[f32; 4]],
        k: usize,
        size: (usize, usize),
    ) -> Candidates {
        let p = &self.config.post;
        let (ih, iw) = (size.0 as f32, size.1 as f32);
        let mut per_class: Vec<Vec<(f32, usize)>> = vec![Vec::new(); k];
        for (j, row) in probs.chunks_exact(k).enumerate() {
            for (c, &s) in row.iter().enumerate() {
                if s >= p.score_threshold {
                    per_class[c].push((s, j));
                }
            }
        }
        let mut out = Candidates::default();
        for (c, mut v) in per_class.into_iter().enumerate() {
            v.sort_by(|x, y| {
                y.0.partial_cmp(&x.0)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(x.1.cmp(&y.1))
            });
            v.truncate(p.pre_nms_top_k);
            for (s, j) in v {
                let d = &deltas[j * 4..j * 4 + 4];
                let bx = self.coder.decode(&[d[0], d[1], d[2], d[3]], &anchors[j]);
                out.boxes.push([
                    bx[0].clamp(0.0, iw),
                    bx[1].clamp(0.0, ih),
                    bx[2].clamp(0.0, iw),
                    bx[3].clamp(0.0, ih),
                ]);
                out.scores.push(s);
                out.classes.push(c);
            }
        }
        out
    }
}

/// Decoded candidate boxes of one image.
#[derive(Default)]
struct Candidates {
    boxes: Vec<[f32; 4]>,
    scores: Vec<f32>,
    classes: Vec<usize>,
}

/// Gaussian soft-NMS within each class; (candidate, decayed score) by descending score.
fn soft_nms_per_class(c: &Candidates, k: usize, sigma: f32, threshold: f32) -> Vec<(usize, f32)> {
    let mut all = Vec::new();
    for class in 0..k {
        let idx: Vec<usize> = (0..c.boxes.len())
            .filter(|&n| c.classes[n] == class)
            .collect();
        let bb: Vec<[f32; 4]> = idx.iter().map(|&n| c.boxes[n]).collect();
        let ss: Vec<f32> = idx.iter().map(|&n| c.scores[n]).collect();
        all.extend(
            soft_nms(&bb, &ss, sigma, threshold)
                .into_iter()
                .map(|(m, s)| (idx[m], s)),
        );
    }
    all.sort_by(|x, y| {
        y.1.partial_cmp(&x.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(x.0.cmp(&y.0))
    });
    all
}
