//! SGD with momentum, weight decay on kernels only, gradient clipping by global norm,
//! warm-up + cosine / step schedules (the paper's TF recipe), and a weight EMA.
use crate::config::{OptimConfig, ScheduleKind};
use crate::error::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, TensorId, Var};
use pupil_nn::{ParamKind, ParamStore};
use pupil_ops::sgd;
use std::collections::BTreeMap;

/// Learning rate at a step: linear warm-up from `warmup_lr` to `lr`, then the schedule.
pub fn learning_rate(cfg: &OptimConfig, step: usize) -> f64 {
    let scale = cfg.batch_size as f64 / 256.0;
    let (lr, wlr) = (cfg.lr_per_256 * scale, cfg.warmup_lr_per_256 * scale);
    let w = cfg.warmup_steps;
    if step < w {
        return wlr + (lr - wlr) * step as f64 / w as f64;
    }
    match cfg.schedule {
        ScheduleKind::Constant => lr,
        ScheduleKind::Cosine => {
            let t = cfg.steps.saturating_sub(w).max(1) as f64;
            let p = ((step - w) as f64 / t).min(1.0);
            lr * ((std::f64::consts::PI * p).cos() + 1.0) / 2.0
        }
        ScheduleKind::Step => {
            let frac = step as f64 / cfg.steps.max(1) as f64;
            let mut f = 1.0;
            for &(at, m) in &cfg.step_points {
                if frac >= at {
                    f = m;
                }
            }
            lr * f
        }
    }
}

pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    pub clip_norm: f64,
    params: Vec<(String, Var, ParamKind)>,
    /// Momentum buffers by parameter name.
    pub buffers: BTreeMap<String, Tensor>,
    /// Take the fused CPU kernels when every parameter allows (the tensor-op path otherwise;
    /// both give the same step up to float rounding).
    pub fused: bool,
    /// Buffers the fused step made itself and so may update in place; any other (one read
    /// from a checkpoint, or a gradient kept by the tensor-op path) is copied first.
    owned: BTreeMap<String, TensorId>,
}

/// What a step did.
pub struct StepInfo {
    pub grad_norm: f64,
    pub clipped: bool,
    /// False when the gradients or the updated weights would not be finite: nothing was
    /// changed.
    pub applied: bool,
}

impl StepInfo {
    /// A step that changed nothing.
    pub fn skipped(grad_norm: f64) -> StepInfo {
        StepInfo {
            grad_norm,
            clipped: false,
            applied: false,
        }
    }
}

/// One f64 scalar from per-parameter 0-d values, reduced on the device (one sync).
fn reduce(parts: Vec<Tensor>, max: bool) -> Result<f64> {
    if parts.is_empty() {
        return Ok(0.0);
    }
    let all = Tensor::stack(&parts, 0)?;
    let r = if max { all.max(0)? } else { all.sum(0)? };
    Ok(r.to_scalar::<f64>()?)
}

/// An updated weight bounded by `bound` stays a finite f32.
fn fits_f32(bound: f64) -> bool {
    bound.is_finite() && bound <= f32::MAX as f64
}

impl Sgd {
    pub fn new(store: &ParamStore, cfg: &OptimConfig) -> Self {
        Sgd {
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            clip_norm: cfg.clip_norm,
            params: store.trainable(),
            buffers: BTreeMap::new(),
            fused: true,
            owned: BTreeMap::new(),
        }
    }

    /// The parameters it updates: (name, variable, kind).
    pub fn params(&self) -> &[(String, Var, ParamKind)] {
        &self.params
    }

    /// Weight decay of a parameter: kernels only (biases and norm scales take none).
    fn decay(&self, kind: ParamKind) -> f64 {
        if kind == ParamKind::Kernel {
            self.weight_decay
        } else {
            0.0
        }
    }

    /// Whether the step is clipped at this gradient norm, and the factor on the gradients.
    fn clip(&self, norm: f64) -> (bool, f64) {
        if self.clip_norm > 0.0 && norm > self.clip_norm {
            (true, self.clip_norm / norm)
        } else {
            (false, 1.0)
        }
    }

    /// The decayed gradients by parameter index and their global norm.
    fn gradients(&self, grads: &GradStore) -> Result<(Vec<(usize, Tensor)>, f64)> {
        let mut gs: Vec<(usize, Tensor)> = Vec::new();
        let mut sq = Vec::new();
        for (i, (_, var, kind)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: buffers must not keep the step's graph alive.
            let mut g = g.detach();
            let wd = self.decay(*kind);
            if wd > 0.0 {
                // d/dw of wd * 0.5 * |w|^2
                g = (g + (var.as_tensor().detach() * wd)?)?;
            }
            sq.push(g.sqr()?.sum_all()?.to_dtype(DType::F64)?);
            gs.push((i, g));
        }
        Ok((gs, reduce(sq, false)?.sqrt()))
    }

    /// One update with learning rate `lr` from the gradients of a loss. Nothing changes when
    /// the gradient norm is not finite (clipping cannot mend a NaN) or an updated weight
    /// would overflow.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<StepInfo> {
        let fusable = || {
            self.params.iter().all(|(_, var, _)| {
                grads
                    .get(var.as_tensor())
                    .is_none_or(|g| sgd::fusable(var.as_tensor(), g))
            })
        };
        if self.fused && fusable() {
            return self.step_fused(grads, lr);
        }
        let (gs, norm) = self.gradients(grads)?;
        let skipped = StepInfo::skipped(norm);
        if !norm.is_finite() {
            return Ok(skipped);
        }
        let (clipped, scale) = self.clip(norm);
        let mut velocities = Vec::with_capacity(gs.len());
        let mut bounds = Vec::with_capacity(gs.len());
        for (i, g) in gs {
            let (name, var, _) = &self.params[i];
            let g = if clipped { (g * scale)? } else { g };
            let v = match self.buffers.get(name) {
                Some(b) => ((b * self.momentum)? + g)?,
                None => g,
            };
            // |w - lr v| <= max|w| + lr max|v|: finite bounds keep every weight finite.
            let w = var.as_tensor().abs()?.max_all()?.to_dtype(DType::F64)?;
            bounds.push((w + (v.abs()?.max_all()?.to_dtype(DType::F64)? * lr)?)?);
            velocities.push((i, v));
        }
        if !fits_f32(reduce(bounds, true)?) {
            return Ok(skipped);
        }
        for (i, v) in velocities {
            let (name, var, _) = &self.params[i];
            var.set(&(var.as_tensor().detach() - (&v * lr)?)?)?;
            self.buffers.insert(name.clone(), v);
        }
        Ok(StepInfo {
            grad_norm: norm,
            clipped,
            applied: true,
        })
    }

    /// [`Sgd::step`] on the fused kernels: one read pass per tensor for the norm and the
    /// overflow bound, then the update in place. The bound uses
    /// |w - lr v| <= max|w| + lr (momentum max|buf| + scale max|d|), a little looser than
    /// the tensor-op path's exact max|v|, so both skip the same non-finite steps.
    fn step_fused(&mut self, grads: &GradStore, lr: f64) -> Result<StepInfo> {
        let mut items = Vec::with_capacity(self.params.len());
        let mut sumsq = 0f64;
        for (i, (name, var, kind)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let wd = self.decay(*kind);
            let st = sgd::step_stats(var.as_tensor(), g, self.buffers.get(name), wd)?;
            sumsq += st.sumsq;
            items.push((i, g.clone(), wd, st));
        }
        let norm = sumsq.sqrt();
        let skipped = StepInfo::skipped(norm);
        if !norm.is_finite() {
            return Ok(skipped);
        }
        let (clipped, scale) = self.clip(norm);
        let m = self.momentum;
        // Each bound on its own: a max over them would drop a NaN (f64::max ignores it).
        let fits = items
            .iter()
            .all(|(_, _, _, st)| fits_f32(st.max_w + lr * (m * st.max_buf + scale * st.max_d)));
        if !fits {
            return Ok(skipped);
        }
        for (i, g, wd, _) in items {
            let (name, var, _) = &self.params[i];
            let w = var.as_tensor();
            let buf = match self.buffers.get(name) {
                Some(b) if self.owned.get(name) == Some(&b.id()) => b.clone(),
                Some(b) => b.to_dtype(DType::F32)?.copy()?,
                None => w.zeros_like()?,
            };
            sgd::step_update(w, &g, &buf, wd, scale, m, lr)?;
            self.owned.insert(name.clone(), buf.id());
            self.buffers.insert(name.clone(), buf);
        }
        Ok(StepInfo {
            grad_norm: norm,
            clipped,
            applied: true,
        })
    }
}

/// Dynamic loss scaling for f16 training: the loss is multiplied by `scale` before the
/// backward pass so small gradients survive in half precision; a step whose gradients
/// overflow is skipped and the scale halved, and after `growth_interval` good steps in a row
/// it doubles (PyTorch's GradScaler defaults).
/// Kept in checkpoints, so a resumed run goes on with the scale it had.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    pub growth_interval: usize,
    good_steps: usize,
}

impl Default for LossScaler {
    /// PyTorch's GradScaler start: 2^16.
    fn default() -> Self {
        Self::new(65536.0)
    }
}

impl LossScaler {
    pub fn new(initial: f64) -> Self {
        LossScaler {
            scale: initial,
            growth_interval: 2000,
            good_steps: 0,
        }
    }

    /// Divides the gradients by the scale; `false` (skip this step) when any is not finite.
    pub fn unscale(
        &mut self,
        grads: &mut GradStore,
        params: &[(String, Var, ParamKind)],
    ) -> Result<bool> {
        let mut unscaled = Vec::new();
        let mut total = 0f64;
        for (_, v, _) in params {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = (g.to_dtype(candle_core::DType::F32)? / self.scale)?;
                total += g
                    .abs()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                unscaled.push((v.as_tensor().clone(), g));
            }
        }
        if !total.is_finite() {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            return Ok(false);
        }
        for (t, g) in unscaled {
            grads.insert(&t, g);
        }
        self.good_steps += 1;
        if self.good_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        Ok(true)
    }
}

/// Exponential moving average of every tensor of a store (running statistics included).
pub struct Ema {
    pub decay: f64,
    pub shadow: BTreeMap<String, Tensor>,
}

impl Ema {
    /// Starts from copies of the weights: the live ones change in place.
    pub fn new(store: &ParamStore, decay: f64) -> Result<Self> {
        let shadow = store
            .tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<_>>()?;
        Ok(Ema { decay, shadow })
    }

    pub fn update(&mut self, store: &ParamStore) -> Result<()> {
        for (name, cur) in store.tensors() {
            let s = match self.shadow.get(&name) {
                Some(s) => ((s * self.decay)? + (cur * (1.0 - self.decay))?)?,
                None => cur.copy()?,
            };
            self.shadow.insert(name, s);
        }
        Ok(())
    }

    /// Runs `f` with the EMA weights in the store, then puts the live weights back.
    pub fn with_weights<T>(&self, store: &ParamStore, f: impl FnOnce() -> Result<T>) -> Result<T> {
        // Copies: the store's tensors share storage with weights that `set` overwrites.
        let live = store
            .tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<Result<Vec<_>>>()?;
        for (n, t) in &self.shadow {
            store.set(n, t)?;
        }
        let r = f();
        for (n, t) in &live {
            store.set(n, t)?;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Shape};
    use pupil_nn::Init;

    #[test]
    fn schedule_warms_up_then_decays() {
        let c = OptimConfig {
            steps: 1100,
            batch_size: 256,
            ..Default::default()
        };
        assert!((learning_rate(&c, 0) - 0.0032).abs() < 1e-12);
        assert!((learning_rate(&c, 500) - (0.0032 + (0.32 - 0.0032) * 0.5)).abs() < 1e-12);
        assert!((learning_rate(&c, 1000) - 0.32).abs() < 1e-12);
        assert!((learning_rate(&c, 1050) - 0.16).abs() < 1e-9);
        assert!(learning_rate(&c, 1100).abs() < 1e-12);
        let half = OptimConfig {
            batch_size: 128,
            ..c.clone()
        };
        assert!(
            (learning_rate(&half, 1000) - 0.16).abs() < 1e-12,
            "linear scaling rule"
        );
        let s = OptimConfig {
            schedule: ScheduleKind::Step,
            steps: 100,
            warmup_steps: 0,
            ..c
        };
        assert!((learning_rate(&s, 89) - 0.32).abs() < 1e-12);
        assert!((learning_rate(&s, 90) - 0.032).abs() < 1e-12);
        assert!((learning_rate(&s, 99) - 0.0032).abs() < 1e-12);
    }

    #[test]
    fn momentum_decay_on_kernels_only_and_clipping() {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let r = store.root();
        let k = r.get(2, "k", Init::Const(1.0), ParamKind::Kernel).unwrap();
        let b = r.get(2, "b", Init::Const(1.0), ParamKind::Bias).unwrap();
        let cfg = OptimConfig {
            momentum: 0.9,
            weight_decay: 0.1,
            clip_norm: 0.0,
            ..Default::default()
        };
        let mut opt = Sgd::new(&store, &cfg);
        // loss = sum(k) + sum(b): gradient 1 everywhere
        let loss = (k.sum_all().unwrap() + b.sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        opt.step(&g, 0.5).unwrap();
        // kernel: g = 1 + 0.1 * 1 = 1.1 -> 1 - 0.55; bias: 1 - 0.5
        assert_eq!(
            store.get("k").unwrap().to_vec1::<f32>().unwrap(),
            vec![0.45, 0.45]
        );
        assert_eq!(
            store.get("b").unwrap().to_vec1::<f32>().unwrap(),
            vec![0.5, 0.5]
        );
        let loss = (store.get("k").unwrap().sum_all().unwrap()
            + store.get("b").unwrap().sum_all().unwrap())
        .unwrap();
        let g = loss.backward().unwrap();
        opt.step(&g, 0.5).unwrap();
        // bias velocity 0.9 * 1 + 1 = 1.9 -> 0.5 - 0.95
        let bv = store.get("b").unwrap().to_vec1::<f32>().unwrap();
        assert!((bv[0] + 0.45).abs() < 1e-6, "{bv:?}");
        // clipping: global norm of [3, 4] is 5, clipped to 1
        let s2 = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let w = s2
            .root()
            .get(2, "w", Init::Const(0.0), ParamKind::Bias)
            .unwrap();
        let c2 = OptimConfig {
            momentum: 0.0,
            weight_decay: 0.0,
            clip_norm: 1.0,
            ..Default::default()
        };
        let mut o2 = Sgd::new(&s2, &c2);
        let t = Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap();
        let g = (w * t).unwrap().sum_all().unwrap().backward().unwrap();
        let info = o2.step(&g, 1.0).unwrap();
        assert!(info.clipped && (info.grad_norm - 5.0).abs() < 1e-6);
        let wv = s2.get("w").unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (wv[0] + 0.6).abs() < 1e-6 && (wv[1] + 0.8).abs() < 1e-6,
            "{wv:?}"
        );
    }

    /// Three parameters (one big enough to be split across threads), a few steps with
    /// weight decay, momentum and clipping on and off: the fused and the tensor-op paths
    /// end at the same weights and buffers.
    #[test]
    fn fused_and_tensor_op_steps_agree() {
        let run = |fused: bool| {
            let store = ParamStore::new(&Device::Cpu, DType::F32, 7);
            let params: [(Shape, &str, f64, ParamKind); 3] = [
                ((300, 300).into(), "k", 0.1, ParamKind::Kernel),
                (5.into(), "b", 1.0, ParamKind::Bias),
                ((3, 4).into(), "k2", 1.0, ParamKind::Kernel),
            ];
            for (shape, name, std, kind) in params {
                let init = Init::Normal { mean: 0.0, std };
                store.root().get(shape, name, init, kind).unwrap();
            }
            let cfg = OptimConfig {
                momentum: 0.9,
                weight_decay: 0.01,
                clip_norm: 50.0,
                ..Default::default()
            };
            let mut opt = Sgd::new(&store, &cfg);
            opt.fused = fused;
            let mut clipped = Vec::new();
            for step in 0..4 {
                // loss = sum(c * w^2) with a step-dependent c: clipped on the big steps
                let c = [1.0, 40.0, 0.5, 60.0][step];
                let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
                for (_, v, _) in store.trainable() {
                    let t = (v.as_tensor().sqr().unwrap() * c).unwrap();
                    loss = (loss + t.sum_all().unwrap()).unwrap();
                }
                let g = loss.backward().unwrap();
                let info = opt.step(&g, 0.05).unwrap();
                assert!(info.applied);
                clipped.push(info.clipped);
            }
            let w: Vec<Vec<f32>> = ["k", "b", "k2"]
                .iter()
                .map(|n| {
                    store
                        .get(n)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap()
                })
                .collect();
            let b: Vec<Vec<f32>> = ["k", "b", "k2"]
                .iter()
                .map(|n| opt.buffers[*n].flatten_all().unwrap().to_vec1().unwrap())
                .collect();
            (w, b, clipped)
        };
        let (wf, bf, cf) = run(true);
        let (wt, bt, ct) = run(false);
        assert_eq!(cf, ct);
        assert!(cf.contains(&true) && cf.contains(&false), "{cf:?}");
        for (x, y) in wf.iter().flatten().zip(wt.iter().flatten()) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
        for (x, y) in bf.iter().flatten().zip(bt.iter().flatten()) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// A momentum buffer put in from outside (a restored checkpoint) is not written through:
    /// the fused step works on a copy.
    #[test]
    fn fused_step_never_writes_into_a_buffer_it_did_not_make() {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let w = store
            .root()
            .get(2, "w", Init::Const(1.0), ParamKind::Bias)
            .unwrap();
        let mut opt = Sgd::new(
            &store,
            &OptimConfig {
                momentum: 0.5,
                ..Default::default()
            },
        );
        let outside = Tensor::new(&[1f32, 1.0], &Device::Cpu).unwrap();
        opt.buffers.insert("w".into(), outside.clone());
        let g = w.sum_all().unwrap().backward().unwrap();
        assert!(opt.step(&g, 0.1).unwrap().applied);
        assert_eq!(outside.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        // velocity 0.5 * 1 + 1 = 1.5, w = 1 - 0.15
        assert_eq!(opt.buffers["w"].to_vec1::<f32>().unwrap(), vec![1.5, 1.5]);
        let wv = w.to_vec1::<f32>().unwrap();
        assert!((wv[0] - 0.85).abs() < 1e-6, "{wv:?}");
    }

    #[test]
    fn non_finite_gradients_and_overflowing_updates_change_nothing() {
        for fused in [true, false] {
            non_finite_steps_change_nothing(fused);
        }
    }

    /// A NaN in one parameter's momentum buffer (the first in order) skips the step even
    /// when a later parameter's bound is finite.
    #[test]
    fn a_nan_buffer_before_finite_parameters_skips_the_step() {
        for fused in [true, false] {
            let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
            let r = store.root();
            let a = r.get(2, "a", Init::Const(1.0), ParamKind::Bias).unwrap();
            let b = r.get(2, "b", Init::Const(1.0), ParamKind::Bias).unwrap();
            let cfg = OptimConfig {
                momentum: 0.9,
                ..Default::default()
            };
            let mut opt = Sgd::new(&store, &cfg);
            opt.fused = fused;
            let nan = Tensor::new(&[f32::NAN, 0.0], &Device::Cpu).unwrap();
            opt.buffers.insert("a".into(), nan);
            let g = (a.sum_all().unwrap() + b.sum_all().unwrap())
                .unwrap()
                .backward()
                .unwrap();
            assert!(!opt.step(&g, 0.1).unwrap().applied, "fused {fused}");
            assert_eq!(a.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
            assert_eq!(b.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        }
    }

    fn non_finite_steps_change_nothing(fused: bool) {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let w = store
            .root()
            .get(2, "w", Init::Const(1.0), ParamKind::Bias)
            .unwrap();
        let cfg = OptimConfig {
            momentum: 0.9,
            clip_norm: 10.0,
            ..Default::default()
        };
        let mut opt = Sgd::new(&store, &cfg);
        opt.fused = fused;
        let grads_of = |v: [f32; 2]| {
            let t = Tensor::new(&v, &Device::Cpu).unwrap();
            (w.clone() * t)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        // NaN > clip_norm is false: clipping alone would apply a NaN step
        let info = opt.step(&grads_of([f32::NAN, 1.0]), 0.1).unwrap();
        assert!(!info.applied && info.grad_norm.is_nan());
        let info = opt.step(&grads_of([1.0, 2.0]), 1e39).unwrap();
        assert!(!info.applied, "the update would overflow f32");
        assert_eq!(w.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        assert!(opt.buffers.is_empty(), "no momentum from a skipped step");
        let info = opt.step(&grads_of([1.0, 2.0]), 0.1).unwrap();
        assert!(info.applied);
        assert_eq!(w.to_vec1::<f32>().unwrap(), vec![0.9, 0.8]);
    }

    #[test]
    fn ema_starts_from_a_copy_of_the_weights() {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let w = store
            .root()
            .get(1, "w", Init::Const(1.0), ParamKind::Bias)
            .unwrap();
        let ema = Ema::new(&store, 0.5).unwrap();
        store
            .set("w", &Tensor::new(&[3f32], &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(w.to_vec1::<f32>().unwrap(), vec![3.0]);
        assert_eq!(ema.shadow["w"].to_vec1::<f32>().unwrap(), vec![1.0]);
        // the live weights come back after a run with the EMA's (an evaluation mid-training)
        let seen = ema
            .with_weights(&store, || Ok(w.to_vec1::<f32>()?))
            .unwrap();
        assert_eq!(seen, vec![1.0]);
        assert_eq!(w.to_vec1::<f32>().unwrap(), vec![3.0]);
    }

    #[test]
    fn ema_update_weighs_the_old_average_by_the_decay_running_statistics_too() {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let r = store.root();
        r.get(2, "w", Init::Const(1.0), ParamKind::Kernel).unwrap();
        r.get(1, "mean", Init::Const(0.0), ParamKind::Buffer)
            .unwrap();
        let mut ema = Ema::new(&store, 0.75).unwrap();
        let set = |n: &str, v: &[f32]| {
            store
                .set(n, &Tensor::new(v, &Device::Cpu).unwrap())
                .unwrap()
        };
        set("w", &[5.0, -3.0]);
        set("mean", &[8.0]);
        ema.update(&store).unwrap();
        // 0.75 * 1 + 0.25 * 5, 0.75 * 1 + 0.25 * -3, 0.75 * 0 + 0.25 * 8
        assert_eq!(ema.shadow["w"].to_vec1::<f32>().unwrap(), vec![2.0, 0.0]);
        assert_eq!(ema.shadow["mean"].to_vec1::<f32>().unwrap(), vec![2.0]);
        ema.update(&store).unwrap();
        assert_eq!(ema.shadow["w"].to_vec1::<f32>().unwrap(), vec![2.75, -0.75]);
        // the live weights are the student's: the update reads them, never writes them
        assert_eq!(
            store.get("w").unwrap().to_vec1::<f32>().unwrap(),
            vec![5.0, -3.0]
        );
    }

    #[test]
    fn loss_scaler_skips_overflow_halves_and_grows() {
        let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
        let w = store
            .root()
            .get(2, "w", Init::Const(1.0), ParamKind::Kernel)
            .unwrap();
        let params = store.trainable();
        let mut s = LossScaler::new(1024.0);
        s.growth_interval = 2;
        let grads_of = |v: f32| {
            let loss = (w.clone() * v as f64).unwrap().sum_all().unwrap();
            loss.backward().unwrap()
        };
        let mut g = grads_of(2048.0);
        assert!(s.unscale(&mut g, &params).unwrap());
        assert_eq!(g.get(&w).unwrap().to_vec1::<f32>().unwrap(), vec![2.0, 2.0]);
        let mut g = grads_of(f32::INFINITY);
        assert!(
            !s.unscale(&mut g, &params).unwrap(),
            "overflow skips the step"
        );
        assert_eq!(s.scale, 512.0);
        for _ in 0..2 {
            let mut g = grads_of(1.0);
            assert!(s.unscale(&mut g, &params).unwrap());
        }
        assert_eq!(s.scale, 1024.0, "two good steps double it");
        let mut g = grads_of(1.0);
        assert!(s.unscale(&mut g, &params).unwrap());
        // checkpoints keep the scale and the count towards the next doubling
        let back: LossScaler = serde_json::from_value(serde_json::to_value(s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.good_steps, 1);
    }
}
