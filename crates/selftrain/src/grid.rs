//! The paper's grid in miniature: init x self-training x augmentation x labeled fraction x
//! seed. Each cell trains a supervised model (the teacher), a self-trained student (offline,
//! as the paper, and / or with an online EMA teacher) and the students' compute-matched
//! control; pre-trained inits are trained here once per seed.
//! Runs resume after an interruption (finished arms are read back, unfinished ones resume
//! from their checkpoints) and may run side by side (`jobs`).
use crate::config::{load_config, preset, SelfTrainMode, TrainConfig};
use crate::error::{Error, Result};
use crate::experiment::{
    control_config, online_self_train, pretrain, self_train, student_config, train,
};
use crate::online::OnlineSummary;
use crate::pseudo::{Manifest, QualityRow};
use crate::task::Metrics;
use crate::trainer::images_seen;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Every arm starts from this run config.
    pub base: TrainConfig,
    /// `random`; `fashion` or `digit-pool` (a backbone pre-trained here on that embedded
    /// set: out of domain as the paper's ImageNet, in domain as its ImageNet++); `pretrained`
    /// (pre-trained here on `pretrain_dataset`); or `pretrained:PATH|hf:...`.
    pub inits: Vec<String>,
    /// The students of a cell: `true` or `"offline"` (the paper's teacher), `"online"` (an
    /// EMA teacher, `base.selftrain`'s online keys); `false` alone trains the supervised arms
    /// only (they are always trained: they are the teachers and the baseline).
    pub self_training: Vec<Students>,
    /// Pair every self-training arm with a supervised control: the student's init, noise,
    /// steps and images per step, every image human-labeled (one control serves the
    /// offline and the online student of a cell: they share all of these).
    pub controls: bool,
    pub augment: Vec<String>,
    /// Multiplies the supervised steps for each augmentation, in the order of `augment`
    /// (stronger augmentation converges later: the paper trains S4 2.7x longer than S1);
    /// empty: 1 for all.
    pub augment_steps_factor: Vec<f64>,
    pub labeled_fractions: Vec<f64>,
    /// Supervised steps for each labeled fraction, in the order of `labeled_fractions`
    /// (a smaller set converges in fewer steps); empty: `base.optim.steps` for all.
    pub labeled_steps: Vec<usize>,
    pub seeds: Vec<u64>,
    /// The set of `inits = ["pretrained"]`: `fashion`, `digit-pool` or `folder:PATH` (class
    /// sub-folders).
    pub pretrain_dataset: String,
    pub pretrain_steps: usize,
    pub pretrain_batch: usize,
    pub pretrain_lr_per_256: f64,
    /// Student (and control) steps as a multiple of the supervised arm's steps.
    pub student_steps_factor: f64,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            base: TrainConfig::default(),
            inits: vec!["random".into(), "pretrained".into()],
            self_training: vec![Students::None, Students::Offline],
            controls: true,
            augment: vec!["s1".into(), "s2".into(), "s3".into(), "s4".into()],
            augment_steps_factor: vec![],
            labeled_fractions: vec![0.2, 0.5, 1.0],
            labeled_steps: vec![],
            seeds: vec![0],
            pretrain_dataset: "fashion".into(),
            pretrain_steps: 2000,
            pretrain_batch: 64,
            pretrain_lr_per_256: 0.4,
            student_steps_factor: 1.0,
        }
    }
}

/// An entry of an experiment's `self_training` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Students {
    /// `false`: no student.
    None,
    /// `true` or `"offline"`.
    Offline,
    /// `"online"`.
    Online,
}

impl Serialize for Students {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Students::None => s.serialize_bool(false),
            Students::Offline => s.serialize_bool(true),
            Students::Online => s.serialize_str("online"),
        }
    }
}

impl<'de> Deserialize<'de> for Students {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Students;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("false, true, \"offline\" or \"online\"")
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Students, E> {
                Ok(if v { Students::Offline } else { Students::None })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Students, E> {
                match v {
                    "offline" => Ok(Students::Offline),
                    "online" => Ok(Students::Online),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// What an arm is to its cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Trained on human labels; the cell's teacher.
    Supervised,
    /// The student: human + pseudo labels.
    SelfTraining,
    /// The student's compute-matched supervised control.
    Control,
    /// A student of an online (EMA) teacher: the offline student's init, steps and images
    /// per step.
    Online,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Supervised => "supervised",
            Role::SelfTraining => "self-training",
            Role::Control => "control",
            Role::Online => "online",
        }
    }
}

/// The teacher's pseudo labels of a self-training arm and their quality at its threshold
/// (where the unlabeled source has ground truth).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PseudoSummary {
    pub images: usize,
    pub labels: usize,
    pub threshold: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// One arm of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmResult {
    pub name: String,
    /// The init as the config names it.
    pub init: String,
    pub role: Role,
    pub self_training: bool,
    /// A student's teacher: offline or online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SelfTrainMode>,
    pub augment: String,
    pub labeled_fraction: f64,
    pub seed: u64,
    pub steps: usize,
    /// Images through the loss over the run, human + pseudo.
    pub images_seen: usize,
    pub metrics: Metrics,
    /// A self-training arm's control arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// A self-training arm's teacher arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo: Option<PseudoSummary>,
    /// Where the student started (`init`, `teacher`, ...), for self-training and controls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_init: Option<String>,
    /// An online arm's EMA teacher at the end, on the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_teacher: Option<Metrics>,
    pub seconds: f64,
}

/// How an init is obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    Random,
    /// A backbone pre-trained here on an embedded classification set.
    PretrainedHere(String),
    /// `pretrained:PATH|hf:...`.
    File(String),
}

impl Init {
    pub fn parse(s: &str, exp: &ExperimentConfig) -> Result<Init> {
        Ok(match s {
            "random" => Init::Random,
            "fashion" | "digit-pool" => Init::PretrainedHere(s.to_string()),
            "pretrained" => Init::PretrainedHere(exp.pretrain_dataset.clone()),
            p if p.starts_with("pretrained:") => Init::File(p.to_string()),
            other => {
                return Err(Error::config(format!(
                    "inits: {other:?} is not random, fashion, digit-pool, pretrained or pretrained:PATH"
                )))
            }
        })
    }

    /// A name for folders and arm names, distinct for distinct inits.
    pub fn tag(&self) -> String {
        let clean = |s: &str| -> String {
            let c = |c: char| if c.is_ascii_alphanumeric() { c } else { '-' };
            s.chars().map(c).collect()
        };
        match self {
            Init::Random => "random".into(),
            Init::PretrainedHere(d) if d.starts_with("folder:") => {
                let stem = Path::new(&d["folder:".len()..]).file_name();
                format!(
                    "folder-{}",
                    clean(&stem.unwrap_or_default().to_string_lossy())
                )
            }
            Init::PretrainedHere(d) => clean(d),
            Init::File(p) => {
                let stem = Path::new(p.trim_start_matches("pretrained:")).file_stem();
                format!(
                    "file-{}",
                    clean(&stem.unwrap_or_default().to_string_lossy())
                )
            }
        }
    }
}

/// One (seed, augmentation, fraction, init) of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub seed: u64,
    pub augment: String,
    pub fraction: f64,
    /// The init as the config names it, and how it is obtained.
    pub init_name: String,
    pub init: Init,
}

impl Cell {
    pub fn arm_name(&self, role: Role) -> String {
        format!(
            "{}-{}-f{}-seed{}-{}",
            self.init.tag(),
            self.augment,
            self.fraction,
            self.seed,
            role.name()
        )
    }
}

/// A unit of work of the grid.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    Pretrain { dataset: String, seed: u64 },
    Arm { cell: usize, role: Role },
}

/// The grid's cells and jobs, with the jobs each one waits for.
pub struct Plan {
    pub cells: Vec<Cell>,
    pub jobs: Vec<Job>,
    pub deps: Vec<Vec<usize>>,
}

impl Plan {
    pub fn new(exp: &ExperimentConfig) -> Result<Plan> {
        let (ls, lf) = (exp.labeled_steps.len(), exp.labeled_fractions.len());
        if ls != 0 && ls != lf {
            return Err(Error::config(format!(
                "labeled_steps has {ls} entries for {lf} labeled_fractions"
            )));
        }
        let (af, an) = (exp.augment_steps_factor.len(), exp.augment.len());
        if af != 0 && af != an {
            return Err(Error::config(format!(
                "augment_steps_factor has {af} entries for {an} augment"
            )));
        }
        let mut cells = Vec::new();
        for &seed in &exp.seeds {
            for aug in &exp.augment {
                for &fraction in &exp.labeled_fractions {
                    for init in &exp.inits {
                        cells.push(Cell {
                            seed,
                            augment: aug.clone(),
                            fraction,
                            init_name: init.clone(),
                            init: Init::parse(init, exp)?,
                        });
                    }
                }
            }
        }
        let mut plan = Plan {
            cells,
            jobs: Vec::new(),
            deps: Vec::new(),
        };
        plan.add_jobs(exp);
        Ok(plan)
    }

    /// The planned arms (every job but the pre-trainings), in grid order.
    pub fn arms(&self) -> impl Iterator<Item = (&Cell, Role)> {
        self.jobs.iter().filter_map(|j| match j {
            Job::Arm { cell, role } => Some((&self.cells[*cell], *role)),
            Job::Pretrain { .. } => None,
        })
    }

    fn job(&mut self, j: Job, deps: Vec<usize>) -> usize {
        if let Some(i) = self.jobs.iter().position(|x| *x == j) {
            return i;
        }
        self.jobs.push(j);
        self.deps.push(deps);
        self.jobs.len() - 1
    }

    fn add_jobs(&mut self, exp: &ExperimentConfig) {
        let offline = exp.self_training.contains(&Students::Offline);
        let online = exp.self_training.contains(&Students::Online);
        let from_teacher = exp.base.selftrain.student_init == "teacher";
        for c in 0..self.cells.len() {
            let pre: Vec<usize> = match &self.cells[c].init {
                Init::PretrainedHere(d) => {
                    let j = Job::Pretrain {
                        dataset: d.clone(),
                        seed: self.cells[c].seed,
                    };
                    vec![self.job(j, vec![])]
                }
                _ => vec![],
            };
            let arm = |role| Job::Arm { cell: c, role };
            let sup = self.job(arm(Role::Supervised), pre.clone());
            // where the student starts: the trained teacher, or the cell's init
            let start = if from_teacher { vec![sup] } else { pre.clone() };
            if offline {
                self.job(arm(Role::SelfTraining), vec![sup]);
            }
            if online {
                self.job(arm(Role::Online), start.clone());
            }
            if (offline || online) && exp.controls {
                self.job(arm(Role::Control), start);
            }
        }
    }
}

/// Runs a grid: `jobs` arms side by side (each on one compute thread: the caller sets the
/// thread count before candle starts, see the CLI), `on_arm` called as arms finish. Returns
/// every arm's result in grid order, the teachers included.
pub fn run_grid(
    exp: &ExperimentConfig,
    out: &Path,
    jobs: usize,
    quiet: bool,
    mut on_arm: impl FnMut(&ArmResult),
) -> Result<Vec<ArmResult>> {
    if jobs == 0 {
        return Err(Error::config("--jobs must be at least 1"));
    }
    crate::checks::check_config(&exp.base)?;
    let _lock = crate::lock::RunLock::acquire(out)?;
    let text = toml::to_string(exp).map_err(Error::msg)?;
    pupil_data::io::write_atomic(out.join("experiment.toml"), text.as_bytes())?;
    let plan = Plan::new(exp)?;
    let ctx = Ctx {
        exp,
        out,
        plan: &plan,
        quiet: quiet || jobs > 1,
    };
    let mut results: Vec<(usize, ArmResult)> = Vec::new();
    schedule(
        &plan,
        jobs,
        |j| ctx.run(j),
        |j, r| {
            if let Some(r) = r {
                on_arm(&r);
                results.push((j, r));
            }
        },
    )?;
    // The supervised arms are listed even where only self-training was asked for: they are
    // the teachers the students are read against.
    results.sort_by_key(|r| r.0);
    Ok(results.into_iter().map(|r| r.1).collect())
}

/// The arms of `exp` finished so far under `out`, in grid order, and the number the grid
/// plans; trains nothing (a report of a partial grid).
pub fn finished_arms(exp: &ExperimentConfig, out: &Path) -> Result<(Vec<ArmResult>, usize)> {
    let plan = Plan::new(exp)?;
    let mut done = Vec::new();
    for (cell, role) in plan.arms() {
        let p = out.join(cell.arm_name(role)).join("result.json");
        if p.exists() {
            done.push(pupil_data::io::read_json::<ArmResult>(&p)?);
        }
    }
    Ok((done, plan.arms().count()))
}

/// Runs every job once its dependencies are done, up to `jobs` at a time on scoped threads;
/// `done` sees each finished job's output on the calling thread. The first error stops new
/// jobs and is returned once the running ones end.
fn schedule<T: Send>(
    plan: &Plan,
    jobs: usize,
    run: impl Fn(usize) -> Result<T> + Sync,
    mut done: impl FnMut(usize, T),
) -> Result<()> {
    let n = plan.jobs.len();
    let mut finished = BTreeSet::new();
    let mut started = vec![false; n];
    let mut first_err = None;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<T>)>();
        let mut running = 0;
        loop {
            while first_err.is_none() && running < jobs {
                let next = (0..n)
                    .find(|&j| !started[j] && plan.deps[j].iter().all(|d| finished.contains(d)));
                let Some(j) = next else { break };
                started[j] = true;
                running += 1;
                let (tx, run) = (tx.clone(), &run);
                s.spawn(move || {
                    let _ = tx.send((j, run(j)));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((j, r)) = rx.recv() else { break };
            running -= 1;
            match r {
                Ok(v) => {
                    finished.insert(j);
                    done(j, v);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    });
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a job needs to run.
struct Ctx<'a> {
    exp: &'a ExperimentConfig,
    out: &'a Path,
    plan: &'a Plan,
    quiet: bool,
}

impl Ctx<'_> {
    fn run(&self, j: usize) -> Result<Option<ArmResult>> {
        match &self.plan.jobs[j] {
            Job::Pretrain { dataset, seed } => {
                self.pretrained_backbone(dataset, *seed)?;
                Ok(None)
            }
            Job::Arm { cell, role } => self.arm(&self.plan.cells[*cell], *role).map(Some),
        }
    }

    fn pretrain_dir(&self, init: &Init, seed: u64) -> PathBuf {
        self.out.join(format!("pretrain-{}-seed{seed}", init.tag()))
    }

    /// A backbone pre-trained on an embedded set with the `configs/pretrain.toml` preset.
    fn pretrained_backbone(&self, dataset: &str, seed: u64) -> Result<PathBuf> {
        let exp = self.exp;
        let dir = self.pretrain_dir(&Init::PretrainedHere(dataset.to_string()), seed);
        let done = dir.join("model.safetensors");
        if done.exists() && dir.join("outcome.json").exists() {
            return Ok(done);
        }
        let mut base = crate::config::to_table(&exp.base);
        crate::config::merge(&mut base, preset("pretrain")?);
        let mut c: TrainConfig = load_config(None, Some(base), &[])?;
        c.seed = seed;
        c.data.dataset = dataset.to_string();
        let o = &mut c.optim;
        o.steps = exp.pretrain_steps;
        o.batch_size = exp.pretrain_batch;
        o.lr_per_256 = exp.pretrain_lr_per_256;
        o.warmup_lr_per_256 = exp.pretrain_lr_per_256 / 100.0;
        o.warmup_steps = exp.pretrain_steps / 20;
        o.eval_every = 0;
        o.checkpoint_every = 0;
        if !self.quiet {
            eprintln!("pre-training the backbone on {dataset} ({} steps)", o.steps);
        }
        pretrain(&c, &dir, self.quiet)
    }

    /// The run config of a cell's supervised arm.
    fn base_config(&self, cell: &Cell) -> TrainConfig {
        let mut base = self.exp.base.clone();
        base.seed = cell.seed;
        base.augment.policy = cell.augment.clone();
        base.data.labeled_fraction = cell.fraction;
        base.optim.steps = supervised_steps(self.exp, &cell.augment, cell.fraction);
        base.init = match &cell.init {
            Init::Random => "random".into(),
            Init::PretrainedHere(_) => {
                let p = self
                    .pretrain_dir(&cell.init, cell.seed)
                    .join("model.safetensors");
                format!("pretrained:{}", p.display())
            }
            Init::File(p) => p.clone(),
        };
        base
    }

    /// The student's base config: the cell's with the student's steps.
    fn student_base(&self, cell: &Cell) -> TrainConfig {
        let mut s = self.base_config(cell);
        s.optim.steps = (s.optim.steps as f64 * self.exp.student_steps_factor).round() as usize;
        s
    }

    fn arm(&self, cell: &Cell, role: Role) -> Result<ArmResult> {
        let name = cell.arm_name(role);
        let dir = self.out.join(&name);
        let result_path = dir.join("result.json");
        if let Ok(r) = pupil_data::io::read_json::<ArmResult>(&result_path) {
            return Ok(r);
        }
        if !self.quiet {
            eprintln!("arm {name}");
        }
        let t0 = std::time::Instant::now();
        let teacher_path = self
            .out
            .join(cell.arm_name(Role::Supervised))
            .join("model.safetensors");
        let (cfg, outcome) = match role {
            Role::Supervised => {
                let cfg = self.base_config(cell);
                let rt = crate::dist::Runtime::single(&cfg.device)?;
                let o = train(&cfg, &rt, &dir, None, true, self.quiet)?;
                (cfg, o)
            }
            Role::SelfTraining => {
                let base = mode_config(&self.student_base(cell), SelfTrainMode::Offline);
                let o = self_train(&teacher_path, &base, &dir, self.quiet)?;
                (student_config(&base, &teacher_path), o)
            }
            Role::Online => {
                let base = mode_config(&self.student_base(cell), SelfTrainMode::Online);
                let o = online_self_train(Some(&teacher_path), &base, &dir, self.quiet)?;
                (student_config(&base, &teacher_path), o)
            }
            Role::Control => {
                let cfg = control_config(&student_config(&self.student_base(cell), &teacher_path));
                let rt = crate::dist::Runtime::single(&cfg.device)?;
                let o = train(&cfg, &rt, &dir, None, true, self.quiet)?;
                (cfg, o)
            }
        };
        let student = matches!(role, Role::SelfTraining | Role::Online);
        let mut r = ArmResult {
            name,
            init: cell.init_name.clone(),
            role,
            self_training: student,
            mode: student.then_some(cfg.selftrain.mode),
            augment: cell.augment.clone(),
            labeled_fraction: cell.fraction,
            seed: cell.seed,
            steps: outcome.steps,
            images_seen: images_seen(&cfg, student, outcome.steps),
            metrics: outcome.final_metrics.unwrap_or_default(),
            control: None,
            teacher: None,
            pseudo: None,
            student_init: None,
            ema_teacher: outcome.teacher_metrics,
            seconds: t0.elapsed().as_secs_f64(),
        };
        if role != Role::Supervised {
            r.student_init = Some(self.exp.base.selftrain.student_init.clone());
        }
        if student {
            r.control = self.exp.controls.then(|| cell.arm_name(Role::Control));
        }
        if role == Role::SelfTraining {
            r.teacher = Some(cell.arm_name(Role::Supervised));
            r.pseudo = pseudo_summary(&dir.join("round-0").join("pseudo"));
        }
        if role == Role::Online {
            r.pseudo = online_summary(&dir.join("student"));
        }
        pupil_data::io::write_json_atomic(&result_path, &r)?;
        Ok(r)
    }
}

/// A student's config in one mode: the other mode's teacher keys back at their defaults, so a
/// grid's base may hold both (the offline student labels with `teacher_scales` and
/// `teacher_flip`, the online one with its weak view).
pub fn mode_config(cfg: &TrainConfig, mode: SelfTrainMode) -> TrainConfig {
    let mut c = cfg.clone();
    c.selftrain.mode = mode;
    c.selftrain.reset_other_mode(mode);
    c
}

/// The supervised steps of an (augmentation, fraction) cell.
pub fn supervised_steps(exp: &ExperimentConfig, augment: &str, fraction: f64) -> usize {
    let fi = exp.labeled_fractions.iter().position(|&f| f == fraction);
    let steps = fi
        .and_then(|i| exp.labeled_steps.get(i).copied())
        .unwrap_or(exp.base.optim.steps);
    let ai = exp.augment.iter().position(|a| a == augment);
    let k = ai
        .and_then(|i| exp.augment_steps_factor.get(i).copied())
        .unwrap_or(1.0);
    (steps as f64 * k).round() as usize
}

/// The first round's pseudo labels: counts from the manifest, precision and recall at the
/// threshold from the quality report (detection on a source with ground truth).
fn pseudo_summary(dir: &Path) -> Option<PseudoSummary> {
    let m: Manifest = pupil_data::io::read_json(dir.join("manifest.json")).ok()?;
    let q: Vec<QualityRow> =
        pupil_data::io::read_json(dir.join("quality.json")).unwrap_or_default();
    let row = q
        .iter()
        .find(|r| r.class == "all" && (r.threshold - m.score_threshold).abs() < 1e-9);
    Some(PseudoSummary {
        images: m.images,
        labels: m.labels,
        threshold: m.score_threshold,
        precision: row.map(|r| r.precision),
        recall: row.map(|r| r.recall),
    })
}

/// An online arm's labels over its run (`online.json`), precision and recall where the
/// unlabeled source has ground truth.
fn online_summary(dir: &Path) -> Option<PseudoSummary> {
    let s: OnlineSummary = pupil_data::io::read_json(dir.join("online.json")).ok()?;
    Some(PseudoSummary {
        images: s.total.images,
        labels: s.total.labels,
        threshold: s.score_threshold,
        precision: s.precision,
        recall: s.recall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::images_per_step;

    #[test]
    fn a_control_matches_its_student_in_steps_and_images_per_step() {
        let mut base = TrainConfig::default();
        base.optim.batch_size = 4;
        base.optim.steps = 700;
        base.selftrain.pseudo_per_human = 1.5;
        base.selftrain.student_lr_scale = 0.5;
        base.selftrain.drop_path = 0.3;
        base.selftrain.student_augment = Some("s4".into());
        let student = student_config(&base, Path::new("teacher.safetensors"));
        let control = control_config(&student);
        assert_eq!(control.optim.steps, student.optim.steps);
        assert_eq!(images_per_step(&student, true), 10);
        assert_eq!(images_per_step(&control, false), 10);
        // same learning rate per step, same init, noise and augmentation
        let lr = |c: &TrainConfig| c.optim.lr_per_256 * c.optim.batch_size as f64 / 256.0;
        assert!((lr(&control) - lr(&student)).abs() < 1e-15);
        assert_eq!(control.init, student.init);
        assert_eq!(control.backbone.drop_path, Some(0.3));
        assert_eq!(control.augment.policy, "s4");
        base.selftrain.student_init = "teacher".into();
        let s = student_config(&base, Path::new("t.safetensors"));
        assert_eq!(control_config(&s).init, "pretrained:t.safetensors");
    }

    #[test]
    fn distinct_inits_get_distinct_arms_and_a_plan_in_dependency_order() {
        let exp = ExperimentConfig {
            inits: vec![
                "random".into(),
                "fashion".into(),
                "digit-pool".into(),
                "pretrained:/a/b.safetensors".into(),
            ],
            augment: vec!["s1".into()],
            labeled_fractions: vec![1.0],
            seeds: vec![0, 1],
            ..Default::default()
        };
        let plan = Plan::new(&exp).unwrap();
        let names: BTreeSet<String> = (plan.cells.iter())
            .map(|c| c.arm_name(Role::Supervised))
            .collect();
        assert_eq!(names.len(), 8, "{names:?}");
        assert!(names.contains("file-b-s1-f1-seed0-supervised"), "{names:?}");
        // 2 seeds x 2 pre-training sets, and 3 arms per cell
        let pre = plan
            .jobs
            .iter()
            .filter(|j| matches!(j, Job::Pretrain { .. }))
            .count();
        assert_eq!((pre, plan.jobs.len()), (4, 4 + 8 * 3));
        for (j, deps) in plan.deps.iter().enumerate() {
            assert!(deps.iter().all(|&d| d < j), "job {j} waits for a later job");
        }
        let e = Plan::new(&ExperimentConfig {
            inits: vec!["imagenet".into()],
            ..Default::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("imagenet"), "{e}");
    }

    #[test]
    fn the_online_preset_plans_both_students_per_seed() {
        let text = include_str!("../../../configs/paper-miniature-online.toml");
        let exp: ExperimentConfig = load_config(None, Some(text.parse().unwrap()), &[]).unwrap();
        crate::checks::check_config(&exp.base).unwrap();
        let plan = Plan::new(&exp).unwrap();
        assert_eq!((plan.cells.len(), plan.jobs.len()), (3, 12));
        let online = mode_config(&exp.base, SelfTrainMode::Online);
        crate::checks::check_config(&online).unwrap();
        assert_eq!(online.selftrain.teacher_scales, None);
    }

    #[test]
    fn online_students_share_the_offline_students_control() {
        let sets = |v: &str| vec![format!("self_training={v}"), "augment=[\"s1\"]".into()];
        let exp: ExperimentConfig =
            load_config(None, None, &sets("[false, \"offline\", \"online\"]")).unwrap();
        assert_eq!(
            exp.self_training,
            vec![Students::None, Students::Offline, Students::Online]
        );
        let exp = ExperimentConfig {
            inits: vec!["random".into()],
            labeled_fractions: vec![0.2],
            ..exp
        };
        let plan = Plan::new(&exp).unwrap();
        let roles: Vec<Role> = (plan.jobs.iter())
            .map(|j| match j {
                Job::Arm { role, .. } => *role,
                Job::Pretrain { .. } => unreachable!("a random init pre-trains nothing"),
            })
            .collect();
        assert_eq!(
            roles,
            vec![
                Role::Supervised,
                Role::SelfTraining,
                Role::Online,
                Role::Control
            ]
        );
        // the student starts from its own init: the online arm does not wait for a teacher
        assert_eq!(plan.deps[2], Vec::<usize>::new());
        assert_eq!(
            plan.cells[0].arm_name(Role::Online),
            "random-s1-f0.2-seed0-online"
        );
        // the list goes back to TOML as it came (false / true / "online")
        let text = toml::to_string(&exp).unwrap();
        let back: ExperimentConfig = load_config(None, Some(text.parse().unwrap()), &[]).unwrap();
        assert_eq!(back.self_training, exp.self_training);
        let e = load_config::<ExperimentConfig>(None, None, &sets("[\"onlin\"]"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("onlin") && e.contains("\"online\""), "{e}");
        // each mode's student leaves the other mode's keys at their defaults
        let mut base = TrainConfig::default();
        base.selftrain.teacher_flip = true;
        base.selftrain.ema_decay = 0.9;
        let on = mode_config(&base, SelfTrainMode::Online);
        assert!(!on.selftrain.teacher_flip && on.selftrain.ema_decay == 0.9);
        let off = mode_config(&base, SelfTrainMode::Offline);
        assert!(off.selftrain.teacher_flip && off.selftrain.ema_decay == 0.999);
        assert!(crate::experiment::unused_keys(&on).is_empty());
        assert!(crate::experiment::unused_keys(&off).is_empty());
        assert_eq!(
            crate::experiment::unused_keys(&base),
            vec!["selftrain.ema_decay"]
        );
    }
}
