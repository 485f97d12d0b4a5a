//! SpineNet-49S/49/96/143/190: a scale-permuted backbone built from the block specs, the
//! filter scaling map, the cross-scale resampling and the drop-connect rule of the TPU
//! reference, with outputs at levels 3-7.
use candle_core::{Module, Result, Tensor};
use pupil_nn::layers::{drop_path, Act, BatchNorm2d, Conv2d, ConvCfg, PadMode};
use pupil_nn::params::Vb;
use pupil_nn::{Backbone, FeatureMaps, LevelInfo};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockFn {
    Residual,
    Bottleneck,
}

impl BlockFn {
    fn expansion(self) -> usize {
        match self {
            BlockFn::Residual => 1,
            BlockFn::Bottleneck => 4,
        }
    }
}

/// (level, block, input feats, is output); feats 0 and 1 are the two stem groups.
pub const SPINENET_BLOCK_SPECS: [(usize, BlockFn, (usize, usize), bool); 15] = [
    (2, BlockFn::Bottleneck, (0, 1), false),
    (4, BlockFn::Residual, (0, 1), false),
    (3, BlockFn::Bottleneck, (2, 3), false),
    (4, BlockFn::Bottleneck, (2, 4), false),
    (6, BlockFn::Residual, (3, 5), false),
    (4, BlockFn::Bottleneck, (3, 5), false),
    (5, BlockFn::Residual, (6, 7), false),
    (7, BlockFn::Residual, (6, 8), false),
    (5, BlockFn::Bottleneck, (8, 9), false),
    (5, BlockFn::Bottleneck, (8, 10), false),
    (4, BlockFn::Bottleneck, (5, 10), true),
    (3, BlockFn::Bottleneck, (4, 10), true),
    (5, BlockFn::Bottleneck, (7, 12), true),
    (7, BlockFn::Bottleneck, (5, 14), true),
    (6, BlockFn::Bottleneck, (12, 14), true),
];

/// Block filters per level before scaling.
fn filter_size(level: usize) -> usize {
    match level {
        1 => 32,
        2 => 64,
        3 => 128,
        4 => 256,
        _ => 256,
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpineNetConfig {
    pub endpoints_num_filters: usize,
    pub filter_size_scale: f64,
    pub resample_alpha: f64,
    pub block_repeats: usize,
    /// Drop-connect rate of the last block (0 disables).
    pub init_drop_connect_rate: f64,
    pub swish: bool,
    pub bn_eps: f64,
    pub bn_momentum: f64,
    pub in_channels: usize,
}

impl SpineNetConfig {
    /// `49s`, `49`, `96`, `143`, `190`.
    pub fn variant(v: &str) -> Option<Self> {
        let (e, f, a, r) = match v {
            "49s" | "49S" => (128, 0.65, 0.5, 1),
            "49" => (256, 1.0, 0.5, 1),
            "96" => (256, 1.0, 0.5, 2),
            "143" => (256, 1.0, 1.0, 3),
            "190" => (512, 1.3, 1.0, 4),
            _ => return None,
        };
        Some(SpineNetConfig {
            endpoints_num_filters: e,
            filter_size_scale: f,
            resample_alpha: a,
            block_repeats: r,
            init_drop_connect_rate: 0.0,
            swish: true,
            bn_eps: 1e-3,
            bn_momentum: 0.003,
            in_channels: 3,
        })
    }

    fn filters(&self, level: usize) -> usize {
        (filter_size(level) as f64 * self.filter_size_scale) as usize
    }

    fn act(&self) -> Act {
        if self.swish {
            Act::Silu
        } else {
            Act::Relu
        }
    }
}

struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    fn new(
        vb: &Vb,
        cfg: &SpineNetConfig,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        let c = ConvCfg {
            stride,
            pad: PadMode::Fixed,
            ..Default::default()
        };
        Ok(ConvBn {
            conv: Conv2d::new(&vb.pp("conv"), cin, cout, k, c)?,
            bn: BatchNorm2d::new(&vb.pp("bn"), cout, cfg.bn_eps, cfg.bn_momentum)?,
        })
    }
    fn forward_t(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        self.bn.forward_act(&self.conv.forward(x)?, train, act)
    }
}

struct Block {
    layers: Vec<ConvBn>,
    projection: Option<ConvBn>,
}

impl Block {
    fn new(
        vb: &Vb,
        cfg: &SpineNetConfig,
        kind: BlockFn,
        cin: usize,
        filters: usize,
        stride: usize,
    ) -> Result<Self> {
        let cout = filters * kind.expansion();
        let projection = if cin != cout || stride != 1 {
            Some(ConvBn::new(
                &vb.pp("projection"),
                cfg,
                cin,
                cout,
                1,
                stride,
            )?)
        } else {
            None
        };
        let layers = match kind {
            BlockFn::Bottleneck => vec![
                ConvBn::new(&vb.pp("conv1"), cfg, cin, filters, 1, 1)?,
                ConvBn::new(&vb.pp("conv2"), cfg, filters, filters, 3, stride)?,
                ConvBn::new(&vb.pp("conv3"), cfg, filters, cout, 1, 1)?,
            ],
            BlockFn::Residual => vec![
                ConvBn::new(&vb.pp("conv1"), cfg, cin, filters, 3, stride)?,
                ConvBn::new(&vb.pp("conv2"), cfg, filters, filters, 3, 1)?,
            ],
        };
        Ok(Block { layers, projection })
    }

    fn forward_t(&self, x: &Tensor, train: bool, act: Act, drop: f64, vb: &Vb) -> Result<Tensor> {
        let shortcut = match &self.projection {
            Some(p) => p.forward_t(x, train, Act::None)?,
            None => x.clone(),
        };
        let mut y = x.clone();
        let (last, head) = self.layers.split_last().expect("a block has layers");
        for l in head {
            y = l.forward_t(&y, train, act)?;
        }
        if act == Act::Relu && (drop <= 0.0 || !train) {
            // no stochastic depth in the way: the last batch norm, shortcut and ReLU in one op
            return last
                .bn
                .forward_add_relu(&last.conv.forward(&y)?, &shortcut, train);
        }
        let y = last.forward_t(&y, train, Act::None)?;
        act.apply(&(drop_path(&y, drop, train, vb)? + shortcut)?)
    }
}

/// `repeats` blocks at one level; the first may project.
struct Group {
    blocks: Vec<Block>,
    drop: f64,
    vb: Vb,
}

impl Group {
    fn new(
        vb: &Vb,
        cfg: &SpineNetConfig,
        kind: BlockFn,
        cin: usize,
        filters: usize,
        drop: f64,
    ) -> Result<Self> {
        let mut blocks = Vec::new();
        let mut c = cin;
        for i in 0..cfg.block_repeats {
            blocks.push(Block::new(&vb.pp(i), cfg, kind, c, filters, 1)?);
            c = filters * kind.expansion();
        }
        Ok(Group {
            blocks,
            drop,
            vb: vb.clone(),
        })
    }
    fn forward_t(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        let mut y = x.clone();
        for b in &self.blocks {
            y = b.forward_t(&y, train, act, self.drop, &self.vb)?;
        }
        Ok(y)
    }
}

/// Cross-scale connection from a parent feature to a block's level and width.
struct Resample {
    reduce: ConvBn,
    down: Option<ConvBn>,
    expand: ConvBn,
    from_level: usize,
    to_level: usize,
}

impl Resample {
    fn new(
        vb: &Vb,
        cfg: &SpineNetConfig,
        parent_ch: usize,
        parent_fn: BlockFn,
        from: usize,
        to: usize,
        target: BlockFn,
    ) -> Result<Self> {
        let base = parent_ch / parent_fn.expansion();
        let mid = (base as f64 * cfg.resample_alpha) as usize;
        let out = cfg.filters(to) * target.expansion();
        Ok(Resample {
            reduce: ConvBn::new(&vb.pp("reduce"), cfg, parent_ch, mid, 1, 1)?,
            down: if from < to {
                Some(ConvBn::new(&vb.pp("down"), cfg, mid, mid, 3, 2)?)
            } else {
                None
            },
            expand: ConvBn::new(&vb.pp("expand"), cfg, mid, out, 1, 1)?,
            from_level: from,
            to_level: to,
        })
    }

    fn forward_t(&self, x: &Tensor, size: (usize, usize), train: bool, act: Act) -> Result<Tensor> {
        let mut y = self.reduce.forward_t(x, train, act)?;
        if let Some(d) = &self.down {
            y = d.forward_t(&y, train, act)?;
            let ratio = 1usize << (self.to_level - self.from_level);
            if ratio > 2 {
                // One more pooling covers the rest of the reduction (TPU reference).
                let stride = ratio / 2;
                let k = if ratio <= 4 { 3 } else { 5 };
                let (_, _, h, w) = y.dims4()?;
                let pad = PadMode::Same.pads(h, w, (k, k), (stride, stride), (1, 1));
                y = pupil_ops::max_pool2d(&y, (k, k), (stride, stride), pad)?;
            }
        }
        let (_, _, h, w) = y.dims4()?;
        if (h, w) != size {
            y = pupil_ops::resize_nearest(&y, size.0, size.1)?;
        }
        self.expand.forward_t(&y, train, Act::None)
    }
}

struct Node {
    level: usize,
    inputs: (usize, usize),
    resample: (Resample, Resample),
    group: Group,
}

pub struct SpineNet {
    pub config: SpineNetConfig,
    stem: ConvBn,
    stem_groups: [Group; 2],
    nodes: Vec<Node>,
    /// For each node: earlier feats with no outgoing connection that an output node adds.
    extra_inputs: Vec<Vec<usize>>,
    endpoints: BTreeMap<usize, (usize, ConvBn)>,
}

impl SpineNet {
    pub fn new(vb: &Vb, cfg: &SpineNetConfig) -> Result<Self> {
        let stem = ConvBn::new(&vb.pp("stem"), cfg, cfg.in_channels, 64, 7, 2)?;
        let f2 = cfg.filters(2);
        let sg = vb.pp("stem_groups");
        let g0 = Group::new(&sg.pp(0), cfg, BlockFn::Bottleneck, 64, f2, 0.0)?;
        let g1 = Group::new(&sg.pp(1), cfg, BlockFn::Bottleneck, f2 * 4, f2, 0.0)?;
        let mut w = Wiring {
            feats: vec![(2, BlockFn::Bottleneck, f2 * 4); 2],
            outgoing: vec![0usize; 2],
        };
        let mut nodes = Vec::new();
        let mut extra_inputs = Vec::new();
        for (i, spec) in SPINENET_BLOCK_SPECS.iter().enumerate() {
            let (node, extra) = Self::node(&vb.pp("blocks").pp(i), cfg, i, *spec, &mut w)?;
            nodes.push(node);
            extra_inputs.push(extra);
        }
        let mut endpoints = BTreeMap::new();
        for (i, &(level, _, _, is_output)) in SPINENET_BLOCK_SPECS.iter().enumerate() {
            if is_output {
                let (ch, out) = (w.feats[i + 2].2, cfg.endpoints_num_filters);
                let e = ConvBn::new(&vb.pp("endpoints").pp(level), cfg, ch, out, 1, 1)?;
                endpoints.insert(level, (i + 2, e));
            }
        }
        Ok(SpineNet {
            config: cfg.clone(),
            stem,
            stem_groups: [g0, g1],
            nodes,
            extra_inputs,
            endpoints,
        })
    }

    /// Block `i`: its two resampled inputs and its group; an output block also takes every
    /// unused feat of its level and width. Returns the node and those extra inputs.
    fn node(
        nvb: &Vb,
        cfg: &SpineNetConfig,
        i: usize,
        (level, kind, (a, b), is_output): BlockSpec,
        w: &mut Wiring,
    ) -> Result<(Node, Vec<usize>)> {
        let out_ch = cfg.filters(level) * kind.expansion();
        let resample = |name: &str, f: (usize, BlockFn, usize)| {
            Resample::new(&nvb.pp(name), cfg, f.2, f.1, f.0, level, kind)
        };
        let r0 = resample("resample0", w.feats[a])?;
        let r1 = resample("resample1", w.feats[b])?;
        w.outgoing[a] += 1;
        w.outgoing[b] += 1;
        let mut extra = Vec::new();
        if is_output {
            for (j, f) in w.feats.iter().enumerate() {
                if w.outgoing[j] == 0 && f.0 == level && f.2 == out_ch {
                    extra.push(j);
                    w.outgoing[j] += 1;
                }
            }
        }
        let rate = cfg.init_drop_connect_rate;
        let n = SPINENET_BLOCK_SPECS.len();
        let drop = if rate > 0.0 && rate < 1.0 {
            rate * (i + 1) as f64 / n as f64
        } else {
            0.0
        };
        let group = Group::new(
            &nvb.pp("group"),
            cfg,
            kind,
            out_ch,
            cfg.filters(level),
            drop,
        )?;
        w.feats.push((level, kind, out_ch));
        w.outgoing.push(0);
        let node = Node {
            level,
            inputs: (a, b),
            resample: (r0, r1),
            group,
        };
        Ok((node, extra))
    }
}

/// (level, block fn, (input a, input b), is output) of one block.
type BlockSpec = (usize, BlockFn, (usize, usize), bool);

/// The feats built so far ((level, block fn, channels), in creation order) and how many
/// blocks read each.
struct Wiring {
    feats: Vec<(usize, BlockFn, usize)>,
    outgoing: Vec<usize>,
}

impl Backbone for SpineNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<FeatureMaps> {
        let act = self.config.act();
        let (_, _, h, w) = x.dims4()?;
        let size = |level: usize| (h.div_ceil(1 << level), w.div_ceil(1 << level));
        let y = self.stem.forward_t(x, train, act)?;
        let (_, _, sh, sw) = y.dims4()?;
        let pad = PadMode::Same.pads(sh, sw, (3, 3), (2, 2), (1, 1));
        let y = pupil_ops::max_pool2d(&y, (3, 3), (2, 2), pad)?;
        let f0 = self.stem_groups[0].forward_t(&y, train, act)?;
        let f1 = self.stem_groups[1].forward_t(&f0, train, act)?;
        let mut feats = vec![f0, f1];
        for (node, extra) in self.nodes.iter().zip(&self.extra_inputs) {
            let s = size(node.level);
            let mut y = (node
                .resample
                .0
                .forward_t(&feats[node.inputs.0], s, train, act)?
                + node
                    .resample
                    .1
                    .forward_t(&feats[node.inputs.1], s, train, act)?)?;
            for &j in extra {
                y = (y + &feats[j])?;
            }
            let y = node.group.forward_t(&act.apply(&y)?, train, act)?;
            feats.push(y);
        }
        let mut out = FeatureMaps::default();
        for (&level, (idx, conv)) in &self.endpoints {
            out.maps
                .insert(level, conv.forward_t(&feats[*idx], train, act)?);
        }
        Ok(out)
    }

    fn levels(&self) -> Vec<LevelInfo> {
        self.endpoints
            .keys()
            .map(|&level| LevelInfo {
                level,
                stride: 1 << level,
                channels: self.config.endpoints_num_filters,
            })
            .collect()
    }
}
