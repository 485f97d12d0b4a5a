//! Necks turning backbone features into a pyramid of equal-width levels: FPN (the paper's
//! detector), NAS-FPN (the paper's segmenter; also selectable for detection) and identity
//! (for backbones such as SpineNet that already emit every level).
use candle_core::{Module, Result, Tensor};
use pupil_nn::{Act, BatchNorm2d, Conv2d, ConvCfg, FeatureMaps, Init, LevelInfo, PadMode, Vb};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeckKind {
    Fpn,
    NasFpn,
    Identity,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeckConfig {
    pub kind: NeckKind,
    pub channels: usize,
    pub min_level: usize,
    pub max_level: usize,
    /// NAS-FPN cells.
    pub repeats: usize,
    /// Depthwise-separable 3x3 convs (the paper's segmentation NAS-FPN).
    pub separable: bool,
    /// `relu` or `swish`.
    pub act: Act,
    pub bn_eps: f64,
    pub bn_momentum: f64,
}

impl Default for NeckConfig {
    fn default() -> Self {
        NeckConfig {
            kind: NeckKind::Fpn,
            channels: 256,
            min_level: 3,
            max_level: 7,
            repeats: 5,
            separable: false,
            act: Act::Relu,
            bn_eps: 1e-3,
            bn_momentum: 0.003,
        }
    }
}

/// Size of a level given the size of `min_level`.
fn level_size(base: (usize, usize), base_level: usize, level: usize) -> (usize, usize) {
    if level >= base_level {
        let f = 1usize << (level - base_level);
        (base.0.div_ceil(f), base.1.div_ceil(f))
    } else {
        let f = 1usize << (base_level - level);
        (base.0 * f, base.1 * f)
    }
}

/// Resamples a feature map to `size` (max-pool down, nearest up).
fn resize_to(x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == size {
        return Ok(x.clone());
    }
    if h > size.0 {
        let s = h.div_ceil(size.0).max(w.div_ceil(size.1)).max(2);
        let pad = pupil_ops::same_padding(h, w, s, s, 1);
        let y = pupil_ops::max_pool2d(x, (s, s), (s, s), pad)?;
        let (_, _, yh, yw) = y.dims4()?;
        if (yh, yw) == size {
            return Ok(y);
        }
        return pupil_ops::resize_nearest(&y, size.0, size.1);
    }
    pupil_ops::resize_nearest(x, size.0, size.1)
}

/// 3x3 conv, plain or depthwise-separable.
struct Conv3 {
    dw: Option<Conv2d>,
    conv: Conv2d,
}

impl Conv3 {
    fn new(vb: &Vb, cin: usize, cout: usize, separable: bool, bias: bool) -> Result<Self> {
        let c = ConvCfg {
            bias,
            pad: PadMode::Same,
            ..Default::default()
        };
        if separable {
            let dw = Conv2d::new(
                &vb.pp("depthwise"),
                cin,
                cin,
                3,
                ConvCfg {
                    groups: cin,
                    bias: false,
                    ..c
                },
            )?;
            Ok(Conv3 {
                dw: Some(dw),
                conv: Conv2d::new(&vb.pp("pointwise"), cin, cout, 1, c)?,
            })
        } else {
            Ok(Conv3 {
                dw: None,
                conv: Conv2d::new(vb, cin, cout, 3, c)?,
            })
        }
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.dw {
            Some(dw) => self.conv.forward(&dw.forward(x)?),
            None => self.conv.forward(x),
        }
    }
}

struct Fpn {
    lateral: Vec<(usize, Conv2d)>,
    post: Vec<Conv2d>,
    extra: Vec<Conv2d>,
    bns: Vec<BatchNorm2d>,
}

/// NAS-FPN cell (node level, combine is attention, inputs, is output), feats 0-4 = P3..P7.
pub const NASFPN_CELL: [(usize, bool, (usize, usize), bool); 7] = [
    (4, true, (1, 3), false),
    (4, false, (1, 5), false),
    (3, false, (0, 6), true),
    (4, false, (6, 7), true),
    (5, true, (7, 8), true),
    (7, true, (6, 9), true),
    (6, true, (9, 10), true),
];

struct NasCell {
    ops: Vec<(Conv3, BatchNorm2d)>,
}

struct NasFpn {
    /// Input projections per level (None when the width already matches).
    inputs: Vec<(usize, Option<(Conv2d, BatchNorm2d)>)>,
    cells: Vec<NasCell>,
}

enum Kind {
    Fpn(Fpn),
    NasFpn(NasFpn),
    Identity,
}

pub struct Neck {
    pub config: NeckConfig,
    kind: Kind,
}

fn neck_bn(vb: &Vb, cfg: &NeckConfig) -> Result<BatchNorm2d> {
    BatchNorm2d::new(vb, cfg.channels, cfg.bn_eps, cfg.bn_momentum)
}

/// An identity neck passes the backbone's levels through: each must be `channels` wide.
fn check_identity(cfg: &NeckConfig, backbone: &[LevelInfo]) -> Result<()> {
    for l in cfg.min_level..=cfg.max_level {
        match backbone.iter().find(|b| b.level == l) {
            Some(b) if b.channels == cfg.channels => {}
            _ => candle_core::bail!(
                "identity neck needs {} channels at every level {}..={}",
                cfg.channels,
                cfg.min_level,
                cfg.max_level
            ),
        }
    }
    Ok(())
}

impl Fpn {
    /// 1x1 laterals and 3x3 outputs on the backbone's levels, stride-2 3x3 convs for the
    /// levels above them, batch norm on every output.
    fn new(vb: &Vb, cfg: &NeckConfig, inputs: &[&LevelInfo]) -> Result<Self> {
        let ch = cfg.channels;
        let c = ConvCfg {
            bias: true,
            pad: PadMode::Same,
            ..Default::default()
        };
        let lateral = inputs
            .iter()
            .map(|l| {
                let conv = Conv2d::new(&vb.pp("lateral").pp(l.level), l.channels, ch, 1, c)?;
                Ok((l.level, conv))
            })
            .collect::<Result<Vec<_>>>()?;
        let post = inputs
            .iter()
            .map(|l| Conv2d::new(&vb.pp("post").pp(l.level), ch, ch, 3, c))
            .collect::<Result<Vec<_>>>()?;
        let top = inputs.last().map_or(cfg.min_level, |l| l.level);
        let extra = (top + 1..=cfg.max_level)
            .map(|l| Conv2d::new(&vb.pp("extra").pp(l), ch, ch, 3, ConvCfg { stride: 2, ..c }))
            .collect::<Result<Vec<_>>>()?;
        let bns = (cfg.min_level..=cfg.max_level)
            .map(|l| neck_bn(&vb.pp("bn").pp(l), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Fpn {
            lateral,
            post,
            extra,
            bns,
        })
    }
}

impl NasFpn {
    /// 1x1 projections of the levels not `channels` wide, then `repeats` cells.
    fn new(vb: &Vb, cfg: &NeckConfig, backbone: &[LevelInfo]) -> Result<Self> {
        if cfg.max_level - cfg.min_level != 4 {
            candle_core::bail!("NAS-FPN works on five levels (min_level..min_level+4)")
        }
        let ch = cfg.channels;
        let mut inputs = Vec::new();
        for l in cfg.min_level..=cfg.max_level {
            let proj = match backbone.iter().find(|b| b.level == l) {
                Some(b) if b.channels != ch => {
                    let c = ConvCfg {
                        bias: false,
                        pad: PadMode::Same,
                        ..Default::default()
                    };
                    let v = vb.pp("input").pp(l);
                    let conv = Conv2d::new(&v.pp("conv"), b.channels, ch, 1, c)?;
                    Some((conv, neck_bn(&v.pp("bn"), cfg)?))
                }
                _ => None,
            };
            inputs.push((l, proj));
        }
        let cells = (0..cfg.repeats)
            .map(|r| {
                let ops = (0..NASFPN_CELL.len())
                    .map(|n| {
                        let nvb = vb.pp("cell").pp(r).pp(n);
                        let conv = Conv3::new(&nvb.pp("conv"), ch, ch, cfg.separable, true)?;
                        Ok((conv, neck_bn(&nvb.pp("bn"), cfg)?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(NasCell { ops })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(NasFpn { inputs, cells })
    }
}

impl Neck {
    pub fn new(vb: &Vb, cfg: &NeckConfig, backbone: &[LevelInfo]) -> Result<Self> {
        let input_levels: Vec<&LevelInfo> = backbone
            .iter()
            .filter(|l| l.level >= cfg.min_level && l.level <= cfg.max_level)
            .collect();
        if input_levels.is_empty() || input_levels[0].level != cfg.min_level {
            candle_core::bail!("the backbone has no feature map at level {}", cfg.min_level)
        }
        let kind = match cfg.kind {
            NeckKind::Identity => {
                check_identity(cfg, backbone)?;
                Kind::Identity
            }
            NeckKind::Fpn => Kind::Fpn(Fpn::new(vb, cfg, &input_levels)?),
            NeckKind::NasFpn => Kind::NasFpn(NasFpn::new(vb, cfg, backbone)?),
        };
        Ok(Neck {
            config: cfg.clone(),
            kind,
        })
    }

    /// Levels min..=max, each `channels` wide.
    pub fn forward_t(&self, f: &FeatureMaps, train: bool) -> Result<Vec<Tensor>> {
        let cfg = &self.config;
        let act = cfg.act;
        match &self.kind {
            Kind::Identity => (cfg.min_level..=cfg.max_level)
                .map(|l| f.get(l).cloned())
                .collect(),
            Kind::Fpn(n) => {
                let lats: Vec<Tensor> = n
                    .lateral
                    .iter()
                    .map(|(l, c)| c.forward(f.get(*l)?))
                    .collect::<Result<_>>()?;
                // top-down: nearest upsampling of the coarser level, added to the lateral
                let mut td = vec![lats.last().unwrap().clone()];
                for i in (0..lats.len() - 1).rev() {
                    let (_, _, h, w) = lats[i].dims4()?;
                    let up = pupil_ops::resize_nearest(td.last().unwrap(), h, w)?;
                    td.push((&lats[i] + up)?);
                }
                td.reverse();
                let mut outs: Vec<Tensor> = td
                    .iter()
                    .zip(&n.post)
                    .map(|(t, c)| c.forward(t))
                    .collect::<Result<_>>()?;
                for (k, conv) in n.extra.iter().enumerate() {
                    let prev = outs.last().unwrap();
                    // ReLU before the convs above the first extra level, as the reference
                    let inp = if k > 0 {
                        act.apply(prev)?
                    } else {
                        prev.clone()
                    };
                    outs.push(conv.forward(&inp)?);
                }
                outs.iter()
                    .zip(&n.bns)
                    .map(|(o, bn)| bn.forward_t(o, train))
                    .collect()
            }
            Kind::NasFpn(n) => {
                let mut feats: Vec<Tensor> = Vec::new();
                for (l, proj) in &n.inputs {
                    let x = match f.maps.get(l) {
                        Some(t) => match proj {
                            Some((c, b)) => b.forward_t(&c.forward(t)?, train)?,
                            None => t.clone(),
                        },
                        None => {
                            // levels above the backbone: max-pool the level below
                            let prev = feats.last().unwrap();
                            let (_, _, h, w) = prev.dims4()?;
                            resize_to(prev, (h.div_ceil(2), w.div_ceil(2)))?
                        }
                    };
                    feats.push(x);
                }
                let (_, _, h0, w0) = feats[0].dims4()?;
                let size = |level: usize| level_size((h0, w0), cfg.min_level, level);
                for cell in &n.cells {
                    feats = nas_cell(cell, &feats, cfg.min_level, &size, act, train)?;
                }
                Ok(feats)
            }
        }
    }
}

fn nas_cell(
    cell: &NasCell,
    inputs: &[Tensor],
    min_level: usize,
    size: &dyn Fn(usize) -> (usize, usize),
    act: Act,
    train: bool,
) -> Result<Vec<Tensor>> {
    let mut feats: Vec<Tensor> = inputs.to_vec();
    let mut levels: Vec<usize> = (0..inputs.len()).map(|i| min_level + i).collect();
    let mut outgoing = vec![0usize; feats.len()];
    let mut out_nodes = Vec::new();
    for (k, &(level_off, attention, (a, b), is_output)) in NASFPN_CELL.iter().enumerate() {
        let level = min_level + level_off - 3;
        let s = size(level);
        let xa = resize_to(&feats[a], s)?;
        let xb = resize_to(&feats[b], s)?;
        outgoing[a] += 1;
        outgoing[b] += 1;
        let mut node = if attention {
            // coarser input gates the finer one with its global max
            let (c, f) = if levels[a] >= levels[b] {
                (xa, xb)
            } else {
                (xb, xa)
            };
            let m = pupil_nn::sigmoid(&c.max_keepdim(3)?.max_keepdim(2)?)?;
            (&c + f.broadcast_mul(&m)?)?
        } else {
            (xa + xb)?
        };
        if is_output {
            for j in 0..feats.len() {
                if outgoing[j] == 0 && levels[j] == level {
                    node = (node + &feats[j])?;
                    outgoing[j] += 1;
                }
            }
        }
        let (conv, bn) = &cell.ops[k];
        let node = bn.forward_t(&conv.forward(&act.apply(&node)?)?, train)?;
        feats.push(node);
        levels.push(level);
        outgoing.push(0);
        if is_output {
            out_nodes.push(feats.len() - 1);
        }
    }
    let mut outs: Vec<(usize, Tensor)> = out_nodes
        .iter()
        .map(|&i| (levels[i], feats[i].clone()))
        .collect();
    outs.sort_by_key(|(l, _)| *l);
    Ok(outs.into_iter().map(|(_, t)| t).collect())
}

/// Normal(0, 0.01) initialisation for head convolutions.
pub const HEAD_INIT: Init = Init::Normal {
    mean: 0.0,
    std: 0.01,
};
