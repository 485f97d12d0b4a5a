//! The training loop: SGD steps over augmented batches, optionally mixing human-labeled and
//! pseudo-labeled images with the paper's loss normalization, JSON-lines metrics, a progress
//! bar, periodic evaluation, and atomic checkpoints with exact resume. A step whose loss or
//! gradient is not finite is skipped (and counted); the run folder is locked for one writer.
//! An online student ([`crate::online`]) draws unlabeled images instead of labeled ones and
//! its EMA teacher labels them each step; the teacher is checkpointed with the student.
use crate::checkpoint::{self, Checkpoint};
pub use crate::checkpoint::{checkpoint_dir, latest_checkpoint};
use crate::config::{SelfTrainMode, TrainConfig};
use crate::dist::Runtime;
use crate::error::{bail, Error, Result};
use crate::lock::RunLock;
use crate::model::save_model;
use crate::online::{
    attach_labels, weak_view, OnlineData, OnlineState, OnlineSummary, Tally, STRONG_KEY, WEAK_KEY,
};
use crate::optim::{learning_rate, Ema, LossScaler, Sgd, StepInfo};
use crate::task::{EvalData, Metrics, Prediction, Task};
use candle_core::{DType, Tensor};
use pupil_data::batch::{collate, Batch, BatchConfig};
use pupil_data::dataset::{EpochIter, Loader, LoaderConfig, Transform};
use pupil_data::{Dataset, Rng, Sample};
use pupil_nn::{LoadOptions, ParamKind, ParamStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Record = serde_json::Map<String, serde_json::Value>;

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
        Ok(((lh + (lp * (alpha * ratio))?)? / (1.0 + alpha))?)
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
    /// f16 loss scaling, so a resumed run goes on with the scale it had.
    #[serde(default)]
    pub loss_scaler: Option<LossScaler>,
    /// Steps skipped for a non-finite loss or gradient: in all, and in a row until now.
    #[serde(default)]
    pub skipped_steps: usize,
    #[serde(default)]
    pub skipped_in_row: usize,
    /// An online run's teacher diagnostics.
    #[serde(default)]
    pub online: OnlineState,
}

/// One stream of batches that moves on to the next epoch when one ends.
struct Stream {
    /// "training" or "pseudo-labeled", for messages.
    name: &'static str,
    loader: Loader,
    pos: Position,
    iter: Option<EpochIter>,
}

/// How a stream draws its batches.
struct StreamSpec {
    batch: usize,
    seed: u64,
    workers: usize,
    shard: (usize, usize),
}

impl Stream {
    fn new(
        name: &'static str,
        ds: Arc<dyn Dataset>,
        t: Arc<Transform>,
        spec: StreamSpec,
        pos: Position,
    ) -> Self {
        let loader = Loader::new(
            ds,
            LoaderConfig {
                batch_size: spec.batch,
                shuffle: true,
                drop_last: true,
                seed: spec.seed,
                workers: spec.workers,
                prefetch: 4,
            },
        )
        .with_transform(t)
        .with_shard(spec.shard.0, spec.shard.1);
        Stream {
            name,
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
            if let Some(b) = self.iter.as_mut().and_then(|i| i.next()) {
                self.pos.batch += 1;
                return Ok(b?);
            }
            self.iter = None;
            self.pos = Position {
                epoch: self.pos.epoch + 1,
                batch: 0,
            };
        }
        bail!(
            "the {} set has {} images, fewer than one batch of {}",
            self.name,
            self.loader.dataset().len(),
            self.loader.config.batch_size
        )
    }
}

pub struct Trainer<'a> {
    pub cfg: &'a TrainConfig,
    pub task: &'a dyn Task,
    pub store: &'a ParamStore,
    /// Device and data-parallel group.
    pub runtime: &'a Runtime,
    pub out: PathBuf,
    pub class_names: Vec<String>,
    pub num_outputs: usize,
    pub human: Arc<dyn Dataset>,
    pub pseudo: Option<Arc<dyn Dataset>>,
    /// An online student's unlabeled images (instead of `pseudo`).
    pub online: Option<OnlineData>,
    pub val: Option<Arc<dyn Dataset>>,
    pub train_transform: Arc<Transform>,
    pub eval_transform: Arc<Transform>,
    /// Hide the progress bar.
    pub quiet: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub steps: usize,
    pub seconds: f64,
    pub final_metrics: Option<Metrics>,
    pub model_path: PathBuf,
    /// An online run's teacher (`teacher.safetensors`) on the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_metrics: Option<Metrics>,
}

/// (human, pseudo) images per global step of a student: the human batch keeps its size and
/// `pseudo_per_human` times as many pseudo-labeled images are added, a multiple of the
/// world size so every rank gets the same share.
pub fn batch_sizes(cfg: &TrainConfig, world: usize) -> (usize, usize) {
    let bs = cfg.optim.batch_size;
    let bp = ((bs as f64 * cfg.selftrain.pseudo_per_human / world as f64).round() as usize).max(1)
        * world;
    (bs, bp)
}

/// Images through the loss per step: the human batch, plus the pseudo share of a student.
pub fn images_per_step(cfg: &TrainConfig, student: bool) -> usize {
    let (h, p) = batch_sizes(cfg, 1);
    if student {
        h + p
    } else {
        h
    }
}

/// Images through the loss over `steps` steps of a run: an online student takes no
/// unlabeled images during its burn-in.
pub fn images_seen(cfg: &TrainConfig, student: bool, steps: usize) -> usize {
    let all = images_per_step(cfg, student) * steps;
    if student && cfg.selftrain.mode == SelfTrainMode::Online {
        let (_, p) = batch_sizes(cfg, 1);
        return all - p * steps.min(cfg.selftrain.burn_in_steps);
    }
    all
}

/// The state of a run between steps.
struct Session {
    opt: Sgd,
    ema: Option<Ema>,
    /// An online run's teacher, from the end of the burn-in on.
    teacher: Option<Ema>,
    state: TrainState,
    human: Stream,
    pseudo: Option<Stream>,
    log: std::fs::File,
    bar: indicatif::ProgressBar,
    t0: std::time::Instant,
    images: usize,
    /// Held for the whole run (see [`Trainer::take_folder`]).
    _lock: Option<RunLock>,
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn write_record(log: &mut std::fs::File, v: serde_json::Value) -> Result<()> {
    writeln!(log, "{v}").map_err(|e| Error::msg(format!("metrics.jsonl: {e}")))
}

impl<'a> Trainer<'a> {
    fn batch_config(&self) -> BatchConfig {
        BatchConfig {
            size_divisor: self.cfg.data.size_divisor,
            ..Default::default()
        }
    }

    fn lead(&self) -> bool {
        self.runtime.is_lead()
    }

    fn save_checkpoint(&self, s: &Session) -> Result<()> {
        let mut t: BTreeMap<String, Tensor> = BTreeMap::new();
        for (n, v) in self.store.tensors() {
            t.insert(format!("model.{n}"), v);
        }
        for (n, v) in &s.opt.buffers {
            t.insert(format!("opt.{n}"), v.clone());
        }
        if let Some(e) = &s.ema {
            for (n, v) in &e.shadow {
                t.insert(format!("ema.{n}"), v.clone());
            }
        }
        if let Some(e) = &s.teacher {
            for (n, v) in &e.shadow {
                t.insert(format!("teacher.{n}"), v.clone());
            }
        }
        checkpoint::write(&self.out, &s.state, &t)
    }

    /// Puts a checkpoint's tensors in place; nothing changes if the model's do not match.
    fn restore(
        &self,
        path: &Path,
        c: Checkpoint,
        (opt, ema, teacher): Averages,
    ) -> Result<TrainState> {
        let at = |e: &dyn std::fmt::Display| Error::msg(format!("{}: {e}", path.display()));
        self.check_teacher(&c).map_err(|e| at(&e))?;
        self.store
            .load_tensors(&c.model, &LoadOptions::strict())
            .map_err(|e| at(&e))?;
        let dev = &self.runtime.device;
        for (n, v) in c.opt {
            opt.buffers.insert(n, v.to_device(dev)?);
        }
        if let Some(e) = ema.as_mut() {
            for (n, v) in c.ema {
                e.shadow.insert(n, v.to_device(dev)?);
            }
        }
        // only an online run has a teacher to go on with
        if self.online.is_some() && !c.teacher.is_empty() {
            let mut shadow = BTreeMap::new();
            for (n, v) in c.teacher {
                shadow.insert(n, v.to_device(dev)?);
            }
            let decay = self.cfg.selftrain.ema_decay;
            *teacher = Some(Ema { decay, shadow });
        }
        self.store.set_noise_state(c.state.noise);
        Ok(c.state)
    }

    /// An online checkpoint past its burn-in holds a teacher of the model's tensors.
    fn check_teacher(&self, c: &Checkpoint) -> std::result::Result<(), String> {
        let burn_in = self.cfg.selftrain.burn_in_steps;
        if self.online.is_none() || (c.teacher.is_empty() && c.state.step <= burn_in) {
            return Ok(());
        }
        if c.teacher.is_empty() {
            return Err(format!(
                "an online run at step {}, past its burn-in of {burn_in} steps, without its teacher's tensors",
                c.state.step
            ));
        }
        let names = self.store.names();
        if c.teacher.len() != names.len() || !names.iter().all(|n| c.teacher.contains_key(n)) {
            return Err("the teacher's tensors are not those of the model".into());
        }
        Ok(())
    }

    pub fn evaluate(&self, ema: Option<&Ema>) -> Result<Option<Metrics>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let bc = self.batch_config();
        let data = EvalData {
            dataset: val.clone(),
            transform: self.eval_transform.clone(),
            batch: &bc,
            device: &self.runtime.device,
            batch_size: self.cfg.optim.batch_size.clamp(1, 32),
        };
        let run = || self.task.evaluate(&data);
        Ok(Some(match ema {
            Some(e) => e.with_weights(self.store, run)?,
            None => run()?,
        }))
    }

    /// Trains to `optim.steps`, resuming from the latest checkpoint when `resume` is set.
    pub fn run(&self, resume: bool) -> Result<Outcome> {
        self.check()?;
        let mut s = self.start(resume)?;
        while s.state.step < self.cfg.optim.steps {
            self.step(&mut s)?;
        }
        s.bar.finish_and_clear();
        self.finish(s)
    }

    fn check(&self) -> Result<()> {
        let (o, world) = (&self.cfg.optim, self.runtime.world_size());
        if o.batch_size % world != 0 {
            bail!(
                "optim.batch_size {} must be a multiple of the world size {world}",
                o.batch_size
            )
        }
        if o.precision.dtype() == DType::BF16 && self.runtime.device.is_cpu() {
            bail!("optim.precision = \"bf16\" needs a CUDA device (candle has no bf16 matmul on CPU); use \"f32\" or \"f16\"")
        }
        Ok(())
    }

    /// Optimizer, averages, loaders and logs of a fresh or resumed run.
    fn start(&self, resume: bool) -> Result<Session> {
        let (cfg, o) = (self.cfg, &self.cfg.optim);
        let lock = self.take_folder(resume)?;
        let mut opt = Sgd::new(self.store, o);
        let mut ema = o.ema_decay.map(|d| Ema::new(self.store, d)).transpose()?;
        let mut teacher = None;
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
            // f16 keeps small gradients representable by scaling the loss.
            loss_scaler: (o.precision.dtype() == DType::F16).then(LossScaler::default),
            skipped_steps: 0,
            skipped_in_row: 0,
            online: OnlineState::default(),
        };
        let quiet = self.quiet || !self.lead();
        let found = match resume {
            true => checkpoint::find_resumable(&self.out)?,
            false => None,
        };
        if let Some((p, c)) = found {
            state = self.resumed_state(&p, c, (&mut opt, &mut ema, &mut teacher), quiet)?;
        }
        let (human, pseudo) = self.streams(&state);
        let log = self.open_log(state.step)?;
        let bar = progress_bar(quiet, o.steps, state.step);
        Ok(Session {
            opt,
            ema,
            teacher,
            state,
            human,
            pseudo,
            log,
            bar,
            t0: std::time::Instant::now(),
            images: 0,
            _lock: lock,
        })
    }

    /// The run folder for this process. The lead locks it (unless pupil's launcher started
    /// it: the launcher holds the lock for its ranks), removes what killed runs left half
    /// written, and without `resume` (`--restart`) the old checkpoints and metrics.
    fn take_folder(&self, resume: bool) -> Result<Option<RunLock>> {
        std::fs::create_dir_all(&self.out)
            .map_err(|e| Error::msg(format!("{}: {e}", self.out.display())))?;
        if !self.lead() {
            return Ok(None);
        }
        let lock = match crate::dist::is_launched() {
            true => None,
            false => Some(RunLock::acquire(&self.out)?),
        };
        let ck = checkpoint_dir(&self.out);
        pupil_data::io::remove_stale_temporaries(&self.out)?;
        pupil_data::io::remove_stale_temporaries(&ck)?;
        if !resume {
            reset_folder(&self.out)?;
        }
        Ok(lock)
    }

    /// The state of a checkpoint, its tensors in place, and what differs from this run's
    /// config said (the run goes on with this one's).
    fn resumed_state(
        &self,
        path: &Path,
        c: Checkpoint,
        averages: Averages,
        quiet: bool,
    ) -> Result<TrainState> {
        let old = c.state.config.clone();
        let mut state = self.restore(path, c, averages)?;
        if !quiet {
            eprintln!("resumed from {} at step {}", path.display(), state.step);
            let changes = checkpoint::config_changes(&old, self.cfg);
            if !changes.is_empty() {
                eprintln!(
                    "the config differs from the checkpoint's: {}",
                    changes.join(", ")
                );
            }
        }
        state.config = self.cfg.clone();
        if state.loss_scaler.is_none() && self.cfg.optim.precision.dtype() == DType::F16 {
            state.loss_scaler = Some(LossScaler::default());
        }
        Ok(state)
    }

    /// `metrics.jsonl`, cut back to the resumed step, opened for appending (lead only writes).
    fn open_log(&self, step: usize) -> Result<std::fs::File> {
        let path = self.out.join("metrics.jsonl");
        if self.lead() {
            checkpoint::trim_log(&path, step)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))
    }

    /// The human stream and, for a student, the pseudo stream. As the paper, the human
    /// batch keeps its size and pseudo-labeled images are added (256 + 256 at 1:1). An
    /// online student's second stream yields the unlabeled images as they are (its teacher
    /// labels and the student's augmentation follow in the step).
    fn streams(&self, state: &TrainState) -> (Stream, Option<Stream>) {
        let cfg = self.cfg;
        let (rank, world) = (self.runtime.rank(), self.runtime.world_size());
        let (bs, bp) = batch_sizes(cfg, world);
        let spec = |batch, seed| StreamSpec {
            batch,
            seed,
            workers: cfg.data.workers,
            shard: (rank, world),
        };
        let human = Stream::new(
            "training",
            self.human.clone(),
            self.train_transform.clone(),
            spec(bs, cfg.seed),
            state.human,
        );
        let pseudo = self.pseudo.as_ref().map(|p| {
            Stream::new(
                "pseudo-labeled",
                p.clone(),
                self.train_transform.clone(),
                spec(bp, cfg.seed ^ 0x5053_4555),
                state.pseudo,
            )
        });
        let unlabeled = self.online.as_ref().map(|d| {
            let as_is: Arc<Transform> = Arc::new(|s, _| Ok(s));
            Stream::new(
                "unlabeled",
                d.source.clone(),
                as_is,
                spec(bp, cfg.seed ^ 0x5053_4555),
                state.pseudo,
            )
        });
        (human, pseudo.or(unlabeled))
    }

    fn next_batch(&self, stream: &mut Stream) -> Result<Batch> {
        let mut b = collate(&stream.next()?, &self.batch_config(), &self.runtime.device)?;
        b.images = b.images.to_dtype(self.cfg.optim.precision.dtype())?;
        Ok(b)
    }

    /// The step's loss: the human batch's, or for a student the normalized mix of the human
    /// and pseudo losses.
    fn loss(&self, s: &mut Session, record: &mut Record) -> Result<(Tensor, Vec<(String, f64)>)> {
        // The online teacher labels first: its weights are in the store while it predicts.
        let online = match &self.online {
            Some(d) if s.state.step >= self.cfg.selftrain.burn_in_steps => {
                Some(self.online_batch(s, d, record)?)
            }
            Some(_) => {
                record.insert("burn_in".into(), true.into());
                None
            }
            None => None,
        };
        let hb = self.next_batch(&mut s.human)?;
        let (lh, mut parts) = self.task.loss(&hb, true)?;
        s.images += hb.num_boxes.len();
        let pb = match (online, s.pseudo.as_mut()) {
            (Some(b), _) => b,
            (None, Some(ps)) if self.online.is_none() => self.next_batch(ps)?,
            _ => return Ok((lh, parts)),
        };
        s.images += pb.num_boxes.len();
        let (lp, pparts) = self.task.loss(&pb, true)?;
        let mut hp = [scalar(&lh)?, scalar(&lp)?];
        // Every rank keeps the same averages: the means over the global batch.
        crate::dist::mean_over_ranks(self.runtime.group.as_ref(), &mut hp)?;
        let [h, p] = hp;
        if !h.is_finite() || !p.is_finite() {
            // The averages must not take in a NaN: they would stay NaN.
            record.insert("L_h".into(), h.into());
            record.insert("L_p".into(), p.into());
            return Ok(((lh + lp)?, parts));
        }
        let st = &self.cfg.selftrain;
        s.state.loss_norm.update(h, p, st.loss_avg_decay);
        record.insert("L_h".into(), h.into());
        record.insert("L_p".into(), p.into());
        record.insert("avg_L_h".into(), s.state.loss_norm.avg_h.into());
        record.insert("avg_L_p".into(), s.state.loss_norm.avg_p.into());
        parts.extend(pparts.into_iter().map(|(k, v)| (format!("pseudo_{k}"), v)));
        let total = if st.normalize_loss {
            s.state.loss_norm.combine(&lh, &lp, st.alpha)?
        } else {
            (lh + (lp * st.alpha)?)?
        };
        Ok((total, parts))
    }

    /// An online step's pseudo-labeled batch: the EMA teacher (a copy of the student when
    /// the burn-in has just ended) labels the weak view of each unlabeled image, the labels go
    /// on the original and the student's augmentation makes its view of it. Every view draws
    /// from a generator of (seed, step, position in the global batch).
    fn online_batch(
        &self,
        s: &mut Session,
        data: &OnlineData,
        record: &mut Record,
    ) -> Result<Batch> {
        let (cfg, st) = (self.cfg, &self.cfg.selftrain);
        let teacher = match &mut s.teacher {
            Some(t) => t,
            slot => slot.insert(Ema::new(self.store, st.ema_decay)?),
        };
        let Some(ps) = s.pseudo.as_mut() else {
            bail!("an online student has no unlabeled stream")
        };
        let originals = ps.next()?;
        let first = self.runtime.rank() * originals.len();
        let step = s.state.step as u64;
        let rng = |key: u64, i: usize| Rng::derive(&[cfg.seed, key, step, (first + i) as u64]);
        let weak: Vec<Sample> = (originals.iter().enumerate())
            .map(|(i, o)| weak_view(o, cfg, &mut rng(WEAK_KEY, i)))
            .collect();
        // f32, as evaluation: the teacher predicts as the model is scored
        let wb = collate(&weak, &self.batch_config(), &self.runtime.device)?;
        let preds = teacher.with_weights(self.store, || self.task.predict(&wb))?;
        let mut tally = Tally::new(self.num_outputs);
        let mut strong = Vec::with_capacity(originals.len());
        for (i, (mut o, p)) in originals.into_iter().zip(preds).enumerate() {
            let Prediction::Boxes(dets) = p else {
                bail!(
                    "selftrain.mode = \"online\": a {} model predicts no boxes",
                    self.task.kind().name()
                )
            };
            attach_labels(&mut o, &dets, st.score_threshold, st.ignore_from);
            let truth = match &data.truth {
                Some(t) => truth_of(t.as_ref(), o.image_id)?,
                None => None,
            };
            tally.add_image(&o, truth.as_ref());
            strong.push((self.train_transform)(o, &mut rng(STRONG_KEY, i))?);
        }
        if self.runtime.world_size() > 1 {
            // the counts of the whole job, the same on every rank
            let mut v = tally.to_counts();
            crate::dist::mean_over_ranks(self.runtime.group.as_ref(), &mut v)?;
            let w = self.runtime.world_size() as f64;
            tally = Tally::from_counts(&v.iter().map(|x| x * w).collect::<Vec<_>>());
        }
        self.count_teacher(s, &tally, record);
        let mut pb = collate(&strong, &self.batch_config(), &self.runtime.device)?;
        pb.images = pb.images.to_dtype(cfg.optim.precision.dtype())?;
        Ok(pb)
    }

    /// Adds a step's labels to the diagnostics; warns every `silent_warn_steps` steps in a
    /// row the teacher emits no label.
    fn count_teacher(&self, s: &mut Session, tally: &Tally, record: &mut Record) {
        let st = &self.cfg.selftrain;
        let o = &mut s.state.online;
        o.silent_steps = if tally.labels == 0 {
            o.silent_steps + 1
        } else {
            0
        };
        o.window.add(tally);
        o.total.add(tally);
        record.insert("teacher_labels".into(), tally.labels.into());
        if o.silent_steps > 0 && o.silent_steps % st.silent_warn_steps == 0 && self.lead() {
            let (step, n) = (s.state.step + 1, o.silent_steps);
            s.bar.suspend(|| {
                eprintln!(
                    "WARNING: step {step}: the online teacher has emitted no box at score {} for {n} steps in a row; the student learns background only from the unlabeled images (lower selftrain.score_threshold or lengthen selftrain.burn_in_steps)",
                    st.score_threshold
                )
            });
        }
    }

    /// Backward pass, gradient averaging over the job, unscaling and the SGD step; the EMA
    /// and an online teacher follow an applied step.
    fn update(
        &self,
        s: &mut Session,
        total: Tensor,
        lr: f64,
        record: &mut Record,
    ) -> Result<StepInfo> {
        let mut grads = match &s.state.loss_scaler {
            Some(sc) => (&total * sc.scale)?.backward()?,
            None => total.backward()?,
        };
        // The graph's activations are freed before the step allocates its buffers.
        drop(total);
        if let Some(g) = &self.runtime.group {
            crate::dist::average_gradients(&mut grads, s.opt.params(), g)?;
        }
        let finite = match s.state.loss_scaler.as_mut() {
            Some(sc) => sc.unscale(&mut grads, s.opt.params())?,
            None => true,
        };
        let info = if finite {
            s.opt.step(&grads, lr)?
        } else {
            // Overflow in half precision: this step's update is dropped.
            record.insert("skipped_overflow".into(), true.into());
            StepInfo::skipped(f64::NAN)
        };
        if let Some(sc) = &s.state.loss_scaler {
            record.insert("loss_scale".into(), sc.scale.into());
        }
        if let (Some(e), true) = (s.ema.as_mut(), info.applied) {
            e.update(self.store)?;
        }
        if let (Some(t), true) = (s.teacher.as_mut(), info.applied) {
            t.update(self.store)?;
        }
        Ok(info)
    }

    /// Copies of the running statistics, which the forward pass updates in place.
    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = Vec::new();
        for (n, t) in self.store.tensors() {
            if self.store.kind(&n) == Some(ParamKind::Buffer) {
                v.push((n, t.copy()?));
            }
        }
        Ok(v)
    }

    /// The loss and, when it is finite on every rank, the update.
    fn attempt(&self, s: &mut Session, lr: f64, record: &mut Record) -> Result<Attempt> {
        let (total, parts) = self.loss(s, record)?;
        let local = scalar(&total)?;
        let mut v = [local];
        // Every rank skips or none: the mean is NaN when any rank's loss is.
        crate::dist::mean_over_ranks(self.runtime.group.as_ref(), &mut v)?;
        if !v[0].is_finite() {
            return Ok(Attempt {
                value: v[0],
                info: StepInfo::skipped(f64::NAN),
                parts,
            });
        }
        let info = self.update(s, total, lr, record)?;
        Ok(Attempt {
            value: local,
            info,
            parts,
        })
    }

    /// A step that changed nothing: the running statistics go back and it is counted. The
    /// error to stop with when too many came in a row.
    fn skip(
        &self,
        s: &mut Session,
        saved: Vec<(String, Tensor)>,
        a: &Attempt,
    ) -> Result<Option<Error>> {
        for (n, t) in &saved {
            self.store.set(n, t)?;
        }
        let st = &mut s.state;
        st.skipped_steps += 1;
        st.skipped_in_row += 1;
        let what = if a.value.is_finite() {
            "gradient"
        } else {
            "loss"
        };
        if self.lead() {
            s.bar.suspend(|| {
                eprintln!(
                    "WARNING: step {}: the {what} is not finite (loss {}, gradient norm {}); step skipped ({} in a row)",
                    st.step + 1,
                    a.value,
                    a.info.grad_norm,
                    st.skipped_in_row
                )
            });
        }
        let limit = self.cfg.optim.max_nonfinite_steps;
        if st.skipped_in_row < limit.max(1) {
            return Ok(None);
        }
        let kept = match latest_checkpoint(&self.out) {
            Some(p) => format!("the last checkpoint, {}, is intact", p.display()),
            None => "no checkpoint was written".into(),
        };
        Ok(Some(Error::msg(format!(
            "stopped at step {}: the loss or gradient was not finite {} steps in a row (optim.max_nonfinite_steps = {limit}); {kept}. Lower optim.lr_per_256, raise optim.warmup_steps or check the data",
            st.step + 1,
            st.skipped_in_row,
        ))))
    }

    fn step(&self, s: &mut Session) -> Result<()> {
        let o = &self.cfg.optim;
        let lr = learning_rate(o, s.state.step);
        let mut record = Record::new();
        let saved = self.buffers()?;
        let a = self.attempt(s, lr, &mut record)?;
        let mut stop = None;
        if a.info.applied {
            s.state.skipped_in_row = 0;
        } else {
            stop = self.skip(s, saved, &a)?;
            record.insert("skipped".into(), true.into());
        }
        s.state.step += 1;
        s.state.human = s.human.pos;
        if let Some(ps) = &s.pseudo {
            s.state.pseudo = ps.pos;
        }
        s.state.noise = self.store.noise_state();
        self.log_step(s, lr, &a, record, stop.is_some())?;
        if let Some(e) = stop {
            // Before any checkpoint of this state: the last one stays the run's.
            return Err(e);
        }
        let step = s.state.step;
        if self.lead() && o.eval_every > 0 && step % o.eval_every == 0 && step < o.steps {
            if let Some(m) = self.evaluate(s.ema.as_ref())? {
                write_record(&mut s.log, serde_json::json!({"step": step, "eval": m}))?;
            }
            if let Some(m) = self.evaluate_teacher(s)? {
                let v = serde_json::json!({"step": step, "eval_teacher": m});
                write_record(&mut s.log, v)?;
            }
        }
        let every = o.checkpoint_every > 0 && step % o.checkpoint_every == 0;
        if self.lead() && (every || step == o.steps) {
            self.save_checkpoint(s)?;
        }
        Ok(())
    }

    /// The step's line of `metrics.jsonl` (every `log_every` steps) and the progress bar.
    fn log_step(
        &self,
        s: &mut Session,
        lr: f64,
        a: &Attempt,
        mut record: Record,
        last: bool,
    ) -> Result<()> {
        let o = &self.cfg.optim;
        // every rank loads the same share, so the job's rate is world times this one's
        let world = self.runtime.world_size();
        let ips = (s.images * world) as f64 / s.t0.elapsed().as_secs_f64().max(1e-9);
        let step = s.state.step;
        let logged = step % o.log_every.max(1) == 0 || step == o.steps || last;
        // every rank starts a new window at a log line, so their states stay alike
        let window =
            (logged && self.online.is_some()).then(|| std::mem::take(&mut s.state.online.window));
        if self.lead() && logged {
            if let Some(w) = window {
                self.teacher_record(&w, s.state.online.silent_steps, &mut record);
            }
            record.insert("step".into(), step.into());
            record.insert("lr".into(), lr.into());
            record.insert("loss".into(), a.value.into());
            record.insert("grad_norm".into(), a.info.grad_norm.into());
            record.insert("images_per_s".into(), ips.into());
            record.insert("skipped_steps".into(), s.state.skipped_steps.into());
            for (k, v) in &a.parts {
                record.insert(k.clone(), (*v).into());
            }
            write_record(&mut s.log, serde_json::Value::Object(record))?;
        }
        s.bar.set_position(step as u64);
        s.bar
            .set_message(format!("loss {:.4} lr {lr:.4} {ips:.1} img/s", a.value));
        Ok(())
    }

    /// The diagnostics of the teacher's labels since the last log line.
    fn teacher_record(&self, w: &Tally, silent: usize, record: &mut Record) {
        record.insert("teacher_silent_steps".into(), silent.into());
        if w.images == 0 {
            return;
        }
        let per = |n: usize| n as f64 / w.images as f64;
        record.insert("pseudo_images".into(), w.images.into());
        record.insert("pseudo_labels_per_image".into(), per(w.labels).into());
        record.insert("pseudo_ignored_per_image".into(), per(w.ignored).into());
        let classes: serde_json::Map<String, serde_json::Value> = (w.per_class.iter())
            .enumerate()
            .map(|(c, &n)| {
                let name = self.class_names.get(c).cloned().unwrap_or(c.to_string());
                (name, n.into())
            })
            .collect();
        record.insert("pseudo_per_class".into(), classes.into());
        if let Some(p) = w.precision() {
            record.insert("pseudo_precision".into(), p.into());
        }
        if let Some(r) = w.recall() {
            record.insert("pseudo_recall".into(), r.into());
        }
    }

    /// An online run's teacher on the validation split.
    fn evaluate_teacher(&self, s: &Session) -> Result<Option<Metrics>> {
        match &s.teacher {
            Some(t) => self.evaluate(Some(t)),
            None => Ok(None),
        }
    }

    /// An online run's teacher: `teacher.safetensors`, its evaluation and `online.json`.
    fn finish_teacher(&self, s: &mut Session, outcome: &mut Outcome) -> Result<()> {
        let Some(t) = &s.teacher else { return Ok(()) };
        let path = self.out.join("teacher.safetensors");
        t.with_weights(self.store, || {
            save_model(
                &path,
                self.cfg,
                &self.class_names,
                self.num_outputs,
                self.store,
            )
        })?;
        outcome.teacher_metrics = self.evaluate_teacher(s)?;
        if let Some(m) = &outcome.teacher_metrics {
            let v = serde_json::json!({"step": s.state.step, "eval_teacher": m, "final": true});
            write_record(&mut s.log, v)?;
        }
        let (st, total) = (&self.cfg.selftrain, &s.state.online.total);
        let summary = OnlineSummary {
            ema_decay: st.ema_decay,
            burn_in_steps: st.burn_in_steps,
            steps: s.state.step,
            score_threshold: st.score_threshold,
            labels_per_image: total.labels_per_image(),
            precision: total.precision(),
            recall: total.recall(),
            total: total.clone(),
            teacher_metrics: outcome.teacher_metrics.clone(),
        };
        Ok(pupil_data::io::write_json_atomic(
            self.out.join("online.json"),
            &summary,
        )?)
    }

    /// The final model (EMA weights when kept) and its evaluation.
    fn finish(&self, mut s: Session) -> Result<Outcome> {
        let model_path = self.out.join("model.safetensors");
        let mut outcome = Outcome {
            steps: s.state.step,
            seconds: s.t0.elapsed().as_secs_f64(),
            final_metrics: None,
            model_path: model_path.clone(),
            teacher_metrics: None,
        };
        if !self.lead() {
            return Ok(outcome);
        }
        let save = || {
            save_model(
                &model_path,
                self.cfg,
                &self.class_names,
                self.num_outputs,
                self.store,
            )
        };
        match &s.ema {
            Some(e) => e.with_weights(self.store, save)?,
            None => save()?,
        }
        outcome.final_metrics = self.evaluate(s.ema.as_ref())?;
        if let Some(m) = &outcome.final_metrics {
            let v = serde_json::json!({"step": s.state.step, "eval": m, "final": true});
            write_record(&mut s.log, v)?;
        }
        self.finish_teacher(&mut s, &mut outcome)?;
        outcome.seconds = s.t0.elapsed().as_secs_f64();
        Ok(outcome)
    }
}

fn progress_bar(quiet: bool, steps: usize, at: usize) -> indicatif::ProgressBar {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(steps as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(at as u64);
    bar
}

/// The optimizer, the weight EMA and an online teacher, which a checkpoint restores.
type Averages<'s> = (&'s mut Sgd, &'s mut Option<Ema>, &'s mut Option<Ema>);

/// The ground truth of an unlabeled image, where its source has it under that id.
fn truth_of(truth: &dyn Dataset, image_id: u64) -> Result<Option<Sample>> {
    let Some(i) = (image_id as usize)
        .checked_sub(1)
        .filter(|&i| i < truth.len())
    else {
        return Ok(None);
    };
    let s = truth.get(i)?;
    Ok((s.image_id == image_id).then_some(s))
}

/// What one step computed: the loss (the mean over the job), the update, the loss parts.
struct Attempt {
    value: f64,
    info: StepInfo,
    parts: Vec<(String, f64)>,
}

/// Removes a file or folder that may not exist.
/// A run folder made ready for a fresh start: its checkpoints and metrics log removed (a
/// restart), the model and other outputs left to be overwritten.
pub fn reset_folder(out: &Path) -> Result<()> {
    remove_if_there(&checkpoint_dir(out), true)?;
    remove_if_there(&out.join("metrics.jsonl"), false)
}

fn remove_if_there(p: &Path, dir: bool) -> Result<()> {
    let r = match dir {
        true => std::fs::remove_dir_all(p),
        false => std::fs::remove_file(p),
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::msg(format!("{}: {e}", p.display())))
        }
        _ => Ok(()),
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
