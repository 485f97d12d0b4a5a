//! The training loop: SGD steps over augmented batches, optionally mixing human-labeled and
//! pseudo-labeled images with the paper's loss normalization, JSON-lines metrics, a progress
//! bar, periodic evaluation, and atomic checkpoints with exact resume.
use crate::config::TrainConfig;
use crate::model::{save_model, Metrics, Model};
use crate::optim::{learning_rate, Ema, Sgd};
use candle_core::{Device, Result, Tensor};
use pupil_backbones::params::{save_tensors, ParamStore};
use pupil_data::batch::{collate, BatchConfig};
use pupil_data::dataset::{EpochIter, Loader, LoaderConfig, Transform};
use pupil_data::{Dataset, Sample};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn err(m: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(m.to_string())
}

/// Moving averages of the human and pseudo losses, kept out of the gradient:
/// `L = 1/(1+a) * (L_h + a * (avg_h / avg_p) * L_p)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossNorm {
    pub avg_h: Option<f64>,
    pub avg_p: Option<f64>,
}

impl LossNorm {
    pub fn update(&mut self, lh: f64, lp: f64, decay: f64) {
        let upd = |avg: &mut Option<f64>, v: f64| {
            *avg = Some(match *avg {
                Some(a) => decay * a + (1.0 - decay) * v,
                None => v,
            })
        };
        upd(&mut self.avg_h, lh);
        upd(&mut self.avg_p, lp);
    }

    /// The normalized loss from the two parts (the averages already include this step).
    pub fn combine(&self, lh: &Tensor, lp: &Tensor, alpha: f64) -> Result<Tensor> {
        let ratio = match (self.avg_h, self.avg_p) {
            (Some(h), Some(p)) if p > 1e-12 => h / p,
            _ => 1.0,
        };
        (lh + (lp * (alpha * ratio))?)? / (1.0 + alpha)
    }
}

/// Where each loader stands, for resuming.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub batch: usize,
}

/// Everything besides tensors that a checkpoint holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format: String,
    pub step: usize,
    pub human: Position,
    pub pseudo: Position,
    pub noise: u64,
    pub loss_norm: LossNorm,
    pub config: TrainConfig,
    pub class_names: Vec<String>,
    pub num_outputs: usize,
    pub best: Option<Metrics>,
}

/// One stream of batches that moves on to the next epoch when one ends.
struct Stream {
    loader: Loader,
    pos: Position,
    iter: Option<EpochIter>,
}

impl Stream {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ds: Arc<dyn Dataset>,
        batch: usize,
        seed: u64,
        workers: usize,
        t: Arc<Transform>,
        pos: Position,
        (rank, world): (usize, usize),
    ) -> Self {
        let loader = Loader::new(
            ds,
            LoaderConfig {
                batch_size: batch,
                shuffle: true,
                drop_last: true,
                seed,
                workers,
                prefetch: 4,
            },
        )
        .with_transform(t)
        .with_shard(rank, world);
        Stream {
            loader,
            pos,
            iter: None,
        }
    }
    fn next(&mut self) -> Result<Vec<Sample>> {
        for _ in 0..2 {
            if self.iter.is_none() {
                self.iter = Some(self.loader.epoch_from(self.pos.epoch, self.pos.batch));
            }
            if let Some(b) = self.iter.as_mut().unwrap().next() {
                self.pos.batch += 1;
                return b.map_err(err);
            }
            self.iter = None;
            self.pos = Position {
                epoch: self.pos.epoch + 1,
                batch: 0,
            };
        }
        Err(err("the training set is smaller than one batch"))
    }
}

pub struct Trainer<'a> {
    pub cfg: &'a TrainConfig,
    pub model: &'a Model,
    pub store: &'a ParamStore,
    pub device: Device,
    pub out: PathBuf,
    pub class_names: Vec<String>,
    pub num_outputs: usize,
    pub human: Arc<dyn Dataset>,
    pub pseudo: Option<Arc<dyn Dataset>>,
    pub val: Option<Arc<dyn Dataset>>,
    pub train_transform: Arc<Transform>,
    pub eval_transform: Arc<Transform>,
    /// Hide the progress bar.
    pub quiet: bool,
    /// Data-parallel group (see [`crate::dist`]); `None` trains alone.
    pub dist: Option<Arc<dyn pupil_ops::dist::Collective>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub steps: usize,
    pub seconds: f64,
    pub final_metrics: Option<Metrics>,
    pub model_path: PathBuf,
}

pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The latest checkpoint of a run directory, if any.
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    let p = checkpoint_dir(out).join("latest.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    Some(checkpoint_dir(out).join(v["file"].as_str()?))
}

impl<'a> Trainer<'a> {
    fn batch_config(&self) -> BatchConfig {
        BatchConfig {
            size_divisor: self.cfg.data.size_divisor,
            ..Default::default()
        }
    }

    fn save_checkpoint(&self, state: &TrainState, opt: &Sgd, ema: Option<&Ema>) -> Result<()> {
        let dir = checkpoint_dir(&self.out);
        let mut t: BTreeMap<String, Tensor> = BTreeMap::new();
        for (n, v) in self.store.tensors() {
            t.insert(format!("model.{n}"), v);
        }
        for (n, v) in &opt.buffers {
            t.insert(format!("opt.{n}"), v.clone());
        }
        if let Some(e) = ema {
            for (n, v) in &e.shadow {
                t.insert(format!("ema.{n}"), v.clone());
            }
        }
        let name = format!("step-{:07}.safetensors", state.step);
        let header = serde_json::to_value(state).map_err(err)?;
        save_tensors(&dir.join(&name), &t, &header)?;
        let latest = serde_json::json!({ "file": name, "step": state.step });
        pupil_data::io::write_atomic(dir.join("latest.json"), latest.to_string().as_bytes())
            .map_err(err)?;
        // keep the two newest
        let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors"))
            })
            .collect();
        old.sort();
        let keep = old.len().saturating_sub(2);
        for p in &old[..keep] {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    fn restore(&self, path: &Path, opt: &mut Sgd, ema: &mut Option<Ema>) -> Result<TrainState> {
        let h = pupil_backbones::params::read_header(path)?
            .ok_or_else(|| err(format!("{}: no state header", path.display())))?;
        let state: TrainState =
            serde_json::from_value(h).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        let mut model = std::collections::HashMap::new();
        for (k, v) in tensors {
            if let Some(n) = k.strip_prefix("model.") {
                model.insert(n.to_string(), v);
            } else if let Some(n) = k.strip_prefix("opt.") {
                opt.buffers
                    .insert(n.to_string(), v.to_device(&self.device)?);
            } else if let Some(n) = k.strip_prefix("ema.") {
                if let Some(e) = ema.as_mut() {
                    e.shadow.insert(n.to_string(), v.to_device(&self.device)?);
                }
            }
        }
        self.store
            .load_tensors(&model, &pupil_backbones::params::LoadOptions::strict())
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        self.store.set_noise_state(state.noise);
        Ok(state)
    }

    pub fn evaluate(&self, ema: Option<&Ema>) -> Result<Option<Metrics>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let run = || {
            self.model.evaluate(
                val.clone(),
                self.eval_transform.clone(),
                &self.batch_config(),
                &self.device,
                self.cfg.optim.batch_size.clamp(1, 32),
            )
        };
        Ok(Some(match ema {
            Some(e) => e.with_weights(self.store, run)?,
            None => run()?,
        }))
    }

    /// Trains to `optim.steps`, resuming from the latest checkpoint when `resume` is set.
    pub fn run(&self, resume: bool) -> Result<Outcome> {
        let cfg = self.cfg;
        let o = &cfg.optim;
        let (rank, world) = match &self.dist {
            Some(g) => (g.rank(), g.world_size()),
            None => (0, 1),
        };
        // Rank 0 alone writes; the others train in step with it.
        let lead = rank == 0;
        let quiet = self.quiet || !lead;
        if o.batch_size % world != 0 {
            return Err(err(format!(
                "optim.batch_size {} must be a multiple of the world size {world}",
                o.batch_size
            )));
        }
        pupil_backbones::nn::set_sync_batch_norm(self.dist.clone().filter(|_| o.sync_batch_norm));
        let compute = o.precision.dtype();
        if compute == candle_core::DType::BF16 && self.device.is_cpu() {
            return Err(err(
                "optim.precision = \"bf16\" needs a CUDA device (candle has no bf16 matmul on CPU); use \"f32\" or \"f16\"",
            ));
        }
        // f16 keeps small gradients representable by scaling the loss.
        let mut scaler =
            (compute == candle_core::DType::F16).then(crate::optim::LossScaler::default);
        std::fs::create_dir_all(&self.out)
            .map_err(|e| err(format!("{}: {e}", self.out.display())))?;
        let mut opt = Sgd::new(self.store, o);
        let mut ema = o.ema_decay.map(|d| Ema::new(self.store, d));
        let mut state = TrainState {
            format: "pupil-train".into(),
            step: 0,
            human: Position::default(),
            pseudo: Position::default(),
            noise: self.store.noise_state(),
            loss_norm: LossNorm::default(),
            config: cfg.clone(),
            class_names: self.class_names.clone(),
            num_outputs: self.num_outputs,
            best: None,
        };
        if resume {
            if let Some(p) = latest_checkpoint(&self.out) {
                state = self.restore(&p, &mut opt, &mut ema)?;
                if !quiet {
                    eprintln!("resumed from {} at step {}", p.display(), state.step);
                }
            }
        }
        // As the paper: the human batch keeps its size and pseudo-labeled images are added
        // (256 + 256 at a 1:1 ratio).
        let (bh, bp) = match &self.pseudo {
            Some(_) => (
                o.batch_size,
                // a multiple of the world size, so every rank gets the same share
                ((o.batch_size as f64 * cfg.selftrain.pseudo_per_human / world as f64).round()
                    as usize)
                    .max(1)
                    * world,
            ),
            None => (o.batch_size, 0),
        };
        let workers = cfg.data.workers;
        let mut human = Stream::new(
            self.human.clone(),
            bh,
            cfg.seed,
            workers,
            self.train_transform.clone(),
            state.human,
            (rank, world),
        );
        let mut pseudo = self.pseudo.as_ref().map(|p| {
            Stream::new(
                p.clone(),
                bp,
                cfg.seed ^ 0x5053_4555,
                workers,
                self.train_transform.clone(),
                state.pseudo,
                (rank, world),
            )
        });
        let bc = self.batch_config();
        let metrics_path = self.out.join("metrics.jsonl");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| err(format!("{}: {e}", metrics_path.display())))?;
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(o.steps as u64)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(state.step as u64);
        let t0 = std::time::Instant::now();
        let mut images = 0usize;
        while state.step < o.steps {
            let lr = learning_rate(o, state.step);
            let mut hb = collate(&human.next()?, &bc, &self.device).map_err(err)?;
            hb.images = hb.images.to_dtype(compute)?;
            let (loss, mut parts) = self.model.loss(&hb, true)?;
            images += hb.num_boxes.len();
            let mut record = serde_json::Map::new();
            let total = match pseudo.as_mut() {
                Some(ps) => {
                    let mut pb = collate(&ps.next()?, &bc, &self.device).map_err(err)?;
                    pb.images = pb.images.to_dtype(compute)?;
                    images += pb.num_boxes.len();
                    let (lp, pparts) = self.model.loss(&pb, true)?;
                    let mut hp = [
                        loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
                        lp.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
                    ];
                    // Every rank keeps the same averages: the means over the global batch.
                    crate::dist::mean_over_ranks(self.dist.as_ref(), &mut hp)?;
                    let [h, p] = hp;
                    state.loss_norm.update(h, p, cfg.selftrain.loss_avg_decay);
                    record.insert("L_h".into(), h.into());
                    record.insert("L_p".into(), p.into());
                    record.insert("avg_L_h".into(), state.loss_norm.avg_h.into());
                    record.insert("avg_L_p".into(), state.loss_norm.avg_p.into());
                    parts.extend(pparts.into_iter().map(|(k, v)| (format!("pseudo_{k}"), v)));
                    state.loss_norm.combine(&loss, &lp, cfg.selftrain.alpha)?
                }
                None => loss,
            };
            let value = total
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(err(format!("loss became {value} at step {}", state.step)));
            }
            let mut grads = match &scaler {
                Some(s) => (&total * s.scale)?.backward()?,
                None => total.backward()?,
            };
            if let Some(g) = &self.dist {
                crate::dist::average_gradients(&mut grads, opt.params(), g)?;
            }
            let finite = match scaler.as_mut() {
                Some(s) => s.unscale(&mut grads, opt.params())?,
                None => true,
            };
            let info = if finite {
                opt.step(&grads, lr)?
            } else {
                // Overflow in half precision: this step's update is dropped.
                record.insert("skipped_overflow".into(), true.into());
                crate::optim::StepInfo {
                    grad_norm: f64::NAN,
                    clipped: false,
                }
            };
            if let Some(s) = &scaler {
                record.insert("loss_scale".into(), s.scale.into());
            }
            if let Some(e) = ema.as_mut() {
                e.update(self.store)?;
            }
            state.step += 1;
            state.human = human.pos;
            if let Some(ps) = &pseudo {
                state.pseudo = ps.pos;
            }
            state.noise = self.store.noise_state();
            // every rank loads the same share, so the job's rate is world times this one's
            let ips = (images * world) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            if lead && (state.step % o.log_every.max(1) == 0 || state.step == o.steps) {
                record.insert("step".into(), state.step.into());
                record.insert("lr".into(), lr.into());
                record.insert("loss".into(), value.into());
                record.insert("grad_norm".into(), info.grad_norm.into());
                record.insert("images_per_s".into(), ips.into());
                for (k, v) in &parts {
                    record.insert(k.clone(), (*v).into());
                }
                writeln!(log, "{}", serde_json::Value::Object(record)).map_err(err)?;
            }
            bar.set_position(state.step as u64);
            bar.set_message(format!("loss {value:.4} lr {lr:.4} {ips:.1} img/s"));
            let eval_now =
                lead && o.eval_every > 0 && state.step % o.eval_every == 0 && state.step < o.steps;
            if eval_now {
                if let Some(m) = self.evaluate(ema.as_ref())? {
                    writeln!(
                        log,
                        "{}",
                        serde_json::json!({"step": state.step, "eval": m})
                    )
                    .map_err(err)?;
                }
            }
            if lead
                && ((o.checkpoint_every > 0 && state.step % o.checkpoint_every == 0)
                    || state.step == o.steps)
            {
                self.save_checkpoint(&state, &opt, ema.as_ref())?;
            }
        }
        bar.finish_and_clear();
        pupil_backbones::nn::set_sync_batch_norm(None);
        let model_path = self.out.join("model.safetensors");
        if !lead {
            return Ok(Outcome {
                steps: state.step,
                seconds: t0.elapsed().as_secs_f64(),
                final_metrics: None,
                model_path,
            });
        }
        // The final model: EMA weights when kept, else the live ones.
        match &ema {
            Some(e) => e.with_weights(self.store, || {
                save_model(
                    &model_path,
                    cfg,
                    &self.class_names,
                    self.num_outputs,
                    self.store,
                )
            })?,
            None => save_model(
                &model_path,
                cfg,
                &self.class_names,
                self.num_outputs,
                self.store,
            )?,
        }
        let final_metrics = self.evaluate(ema.as_ref())?;
        if let Some(m) = &final_metrics {
            writeln!(
                log,
                "{}",
                serde_json::json!({"step": state.step, "eval": m, "final": true})
            )
            .map_err(err)?;
        }
        Ok(Outcome {
            steps: state.step,
            seconds: t0.elapsed().as_secs_f64(),
            final_metrics,
            model_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn loss_normalization_balances_the_parts() {
        let mut n = LossNorm::default();
        n.update(2.0, 8.0, 0.9);
        assert_eq!((n.avg_h, n.avg_p), (Some(2.0), Some(8.0)));
        let lh = Tensor::new(2f32, &Device::Cpu).unwrap();
        let lp = Tensor::new(8f32, &Device::Cpu).unwrap();
        // (2 + 1 * (2/8) * 8) / 2 = 2
        let l = n
            .combine(&lh, &lp, 1.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - 2.0).abs() < 1e-6);
        n.update(4.0, 8.0, 0.9);
        assert!((n.avg_h.unwrap() - 2.2).abs() < 1e-12);
        // the ratio is a constant: the gradient w.r.t. L_p is alpha * ratio / (1 + alpha)
        let v = candle_core::Var::new(8f32, &Device::Cpu).unwrap();
        let g = n
            .combine(&lh, v.as_tensor(), 3.0)
            .unwrap()
            .backward()
            .unwrap();
        let gp = g.get(v.as_tensor()).unwrap().to_scalar::<f32>().unwrap();
        assert!((gp as f64 - 3.0 * (2.2 / 8.0) / 4.0).abs() < 1e-6);
    }
}
