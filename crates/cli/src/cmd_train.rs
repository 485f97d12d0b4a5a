//! `pupil train | pretrain | pseudo-label | self-train | predict | experiment | quickstart`.
use anyhow::{bail, Context, Result};
use pupil_selftrain::config::{load_config, Task, TrainConfig};
use pupil_selftrain::experiment::{self, ExperimentConfig};
use pupil_selftrain::model::{device, load_model, Model};
use pupil_selftrain::pseudo::{self, PseudoOptions};
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ConfigArgs {
    /// TOML config; every key defaults to the paper's value.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a key: --set optim.steps=500 --set backbone.name=resnet-50 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// cpu, cuda (GPU 0) or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
}

impl ConfigArgs {
    pub fn load(&self, base: Option<toml::Table>) -> Result<TrainConfig> {
        let mut sets = self.sets.clone();
        if let Some(d) = &self.device {
            sets.push(format!("device={d}"));
        }
        load_config(self.config.as_deref(), base, &sets).map_err(anyhow::Error::msg)
    }
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Run folder: checkpoints/, metrics.jsonl, model.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// Start afresh even if the folder holds a checkpoint.
    #[arg(long)]
    pub restart: bool,
    /// Data-parallel processes on this node, one per GPU (as torchrun's flag; see the
    /// README's multi-GPU section). Without it, RANK/WORLD_SIZE/MASTER_ADDR from the
    /// environment (torchrun, Slurm, Kubernetes) make this process one rank of a job.
    #[arg(long, default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Nodes in the job (with --nproc-per-node).
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This node's index among --nnodes.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Host of rank 0's rendezvous.
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
}

/// Set in the processes the launcher starts, which run as ranks instead of launching again.
const LAUNCHED: &str = "PUPIL_LAUNCHED";

pub fn train(a: TrainArgs) -> Result<()> {
    let launched = std::env::var_os(LAUNCHED).is_some();
    if a.restart && !launched {
        let _ = std::fs::remove_dir_all(pupil_selftrain::trainer::checkpoint_dir(&a.out));
    }
    if (a.nproc_per_node > 1 || a.nnodes > 1) && !launched {
        // Checked here so a bad config fails once, not in every rank.
        a.cfg.load(None)?;
        std::env::set_var(LAUNCHED, "1");
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        pupil_selftrain::dist::launch(
            a.nproc_per_node,
            a.nnodes,
            a.node_rank,
            (&a.master_addr, a.master_port),
            &args,
        )?;
        println!(
            "{} ranks finished -> {}",
            a.nproc_per_node * a.nnodes,
            a.out.join("model.safetensors").display()
        );
        return Ok(());
    }
    let mut cfg = a.cfg.load(None)?;
    if let Some(env) = pupil_selftrain::dist::DistEnv::from_env()? {
        cfg.device = pupil_selftrain::dist::device_spec(&cfg.device, &env);
        let group =
            pupil_selftrain::dist::init_group(&env, &device(&cfg.device)?).with_context(|| {
                format!("rank {} of {}: joining {}", env.rank, env.world, env.master)
            })?;
        pupil_selftrain::dist::set_group(group)?;
    }
    let resume = !a.restart || launched;
    let o = experiment::train(&cfg, &a.out, None, resume, false)?;
    if pupil_selftrain::dist::group().is_none_or(|g| g.rank() == 0) {
        report_outcome(&o);
    }
    Ok(())
}

fn report_outcome(o: &pupil_selftrain::trainer::Outcome) {
    println!(
        "trained {} steps in {:.1}s -> {}",
        o.steps,
        o.seconds,
        o.model_path.display()
    );
    if let Some(m) = &o.final_metrics {
        println!("{}", serde_json::to_string(&m.values).unwrap_or_default());
    }
}

#[derive(clap::Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// fashion (out of domain) or digit-pool (in domain).
    #[arg(long, default_value = "fashion")]
    pub dataset: String,
    /// Run folder (model.safetensors holds the pre-trained backbone).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn pretrain(a: PretrainArgs) -> Result<()> {
    let mut base = toml::Table::new();
    pupil_selftrain::config::set_path(&mut base, "task", "\"classification\"")
        .map_err(anyhow::Error::msg)?;
    pupil_selftrain::config::set_path(&mut base, "data.dataset", &format!("{:?}", a.dataset))
        .map_err(anyhow::Error::msg)?;
    pupil_selftrain::config::set_path(&mut base, "augment.policy", "\"none\"")
        .map_err(anyhow::Error::msg)?;
    pupil_selftrain::config::set_path(&mut base, "augment.size", "32")
        .map_err(anyhow::Error::msg)?;
    pupil_selftrain::config::set_path(&mut base, "data.size_divisor", "32")
        .map_err(anyhow::Error::msg)?;
    let cfg = a.cfg.load(Some(base))?;
    if cfg.task != Task::Classification {
        bail!("pretrain trains a classifier: task must stay classification");
    }
    let o = experiment::train(&cfg, &a.out, None, true, false)?;
    report_outcome(&o);
    println!(
        "use it with: --set init=\"pretrained:{}\"",
        o.model_path.display()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct PseudoArgs {
    /// Teacher model (model.safetensors of a run).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Unlabeled images: a folder (recursive jpg/png) or digits:unlabeled.
    #[arg(long)]
    pub images: String,
    /// Output folder: shard files, manifest.json, pseudo.json, labels/.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0.5)]
    pub score_threshold: f64,
    /// This process's shard, I/N (0-based); shards already written are kept.
    #[arg(long, default_value = "0/1")]
    pub shard: String,
    /// Also label the mirrored image and merge.
    #[arg(long)]
    pub flip: bool,
    /// Extra inference scales, e.g. 0.75,1.25.
    #[arg(long, value_delimiter = ',')]
    pub scales: Vec<f64>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn pseudo_label(a: PseudoArgs) -> Result<()> {
    let (i, n) = a
        .shard
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
        .context("--shard must be I/N, e.g. 3/16")?;
    let dev = device(&a.device)?;
    let teacher = load_model(&a.teacher, &dev)?;
    let source = pupil_selftrain::data::unlabeled_source(&teacher.config, &a.images)
        .map_err(anyhow::Error::msg)?;
    let opts = PseudoOptions {
        score_threshold: a.score_threshold,
        shard: (i, n),
        flip: a.flip,
        scales: a.scales.clone(),
        ..Default::default()
    };
    let s = pseudo::label_shard(
        &teacher,
        &a.teacher.display().to_string(),
        source,
        &a.images,
        &a.out,
        &opts,
        &dev,
    )?;
    let kept = s
        .detections
        .iter()
        .filter(|d| d.score >= a.score_threshold)
        .count();
    println!(
        "shard {i}/{n}: {} images, {} pseudo boxes, {} label maps",
        s.images.len(),
        kept,
        s.label_maps.len()
    );
    if kept == 0 && s.label_maps.is_empty() {
        eprintln!(
            "WARNING: the teacher emitted no pseudo labels on this shard at threshold {}",
            a.score_threshold
        );
    }
    if let Ok((m, all)) = pseudo::merge(&a.out) {
        pupil_data::io::write_json_atomic(a.out.join("pseudo.json"), &pseudo::to_coco(&m, &all))?;
        println!(
            "all {} shards done: {} images, {} labels -> {}",
            m.shards,
            m.images,
            m.labels,
            a.out.join("pseudo.json").display()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SelfTrainArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Teacher model (model.safetensors of a run); its config is the student's base.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Run folder: round-N/pseudo and round-N/student.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn self_train(a: SelfTrainArgs) -> Result<()> {
    // the student starts from the teacher's config, then the file and --set overrides
    let teacher = load_model(&a.teacher, &candle_core::Device::Cpu)?;
    let base = pupil_selftrain::config::to_table(&teacher.config);
    let cfg = a.cfg.load(Some(base))?;
    let o = experiment::self_train(&a.teacher, &cfg, &a.out, false)?;
    report_outcome(&o);
    Ok(())
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Model (model.safetensors of a run).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A JPEG or PNG image.
    #[arg(long)]
    pub image: PathBuf,
    /// Picture with boxes or masks drawn.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write detections as COCO results JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn predict(a: PredictArgs) -> Result<()> {
    let dev = device(&a.device)?;
    let l = load_model(&a.checkpoint, &dev)?;
    let img = pupil_data::io::read_image(&a.image)?;
    let mut s = pupil_data::Sample::new(img);
    s.image_id = 1;
    let t = pupil_selftrain::data::eval_transform(&l.config);
    let view = t(s.clone(), &mut pupil_data::Rng::new(0))?;
    let bc = pupil_data::batch::BatchConfig {
        size_divisor: l.config.data.size_divisor,
        ..Default::default()
    };
    let batch = pupil_data::batch::collate(std::slice::from_ref(&view), &bc, &dev)?;
    match &l.model {
        Model::Detector(m) => {
            let dets = m.predict(&batch.images, &batch.info)?.remove(0);
            for d in &dets {
                s.boxes.push(d.bbox);
                s.classes.push(d.class);
                s.crowd.push(false);
            }
            println!("{} detections", dets.len());
            for d in &dets {
                let name = l
                    .class_names
                    .get(d.class as usize)
                    .cloned()
                    .unwrap_or_default();
                println!(
                    "  {name:>12} {:.3} [{:.1}, {:.1}, {:.1}, {:.1}]",
                    d.score, d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]
                );
            }
            if let Some(j) = &a.json {
                let out: Vec<pupil_data::coco::CocoDetection> = dets
                    .iter()
                    .map(|d| pupil_data::coco::CocoDetection {
                        image_id: 1,
                        category_id: d.class as u64 + 1,
                        bbox: [
                            d.bbox[0] as f64,
                            d.bbox[1] as f64,
                            (d.bbox[2] - d.bbox[0]) as f64,
                            (d.bbox[3] - d.bbox[1]) as f64,
                        ],
                        score: d.score as f64,
                        segmentation: None,
                    })
                    .collect();
                pupil_data::coco::write_results(j, &out)?;
            }
        }
        Model::Segmenter(m) => {
            let (plane, _) = m.predict(&batch.images, &batch.info)?.remove(0);
            s.label_map = Some(plane);
        }
        Model::Classifier(_) => bail!(
            "{}: a classifier; predict draws detections or masks",
            a.checkpoint.display()
        ),
    }
    pupil_data::io::write_png(&a.out, &pupil_data::draw::draw_sample(&s, &l.class_names))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct ExperimentArgs {
    /// Experiment TOML: [base] (a run config), inits, self_training, augment,
    /// labeled_fractions, seeds, pretrain_*.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a key, e.g. seeds=[0,1,2] or base.optim.steps=500.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Experiment folder: one folder per arm, results.json/csv, report.md, plots.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_experiment(a: ExperimentArgs) -> Result<()> {
    let exp: ExperimentConfig =
        load_config(a.config.as_deref(), None, &a.sets).map_err(anyhow::Error::msg)?;
    let results = experiment::run_grid(&exp, &a.out, false, |r| {
        eprintln!("{}: {:.4}", r.name, r.metrics.primary)
    })?;
    let rep = pupil_selftrain::report::write(&a.out, &exp, &results)?;
    println!("{rep}");
    Ok(())
}

#[derive(clap::Args)]
pub struct QuickstartArgs {
    /// Output folder: results.json, report.md, plot_arms.png and one folder per arm.
    #[arg(long, default_value = "out/quickstart")]
    pub out: PathBuf,
    /// Seed of every arm (data order, initialisation, augmentation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override a key of the quickstart's experiment config, e.g. base.optim.steps=500.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

pub fn quickstart(a: QuickstartArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut sets = vec![format!("seeds=[{}]", a.seed)];
    sets.extend(a.sets.iter().cloned());
    let exp: ExperimentConfig = load_config(
        None,
        Some(pupil_selftrain::report::quickstart_preset()),
        &sets,
    )
    .map_err(anyhow::Error::msg)?;
    eprintln!(
        "pupil quickstart: {} arms on the embedded digit scenes -> {}",
        exp.inits.len() * exp.self_training.len(),
        a.out.display()
    );
    let results = experiment::run_grid(&exp, &a.out, false, |r| {
        eprintln!(
            "  {:<40} AP {:.4}  AP50 {:.4}  ({:.0}s)",
            r.name,
            r.metrics.primary,
            r.metrics.values.get("AP50").copied().unwrap_or(0.0),
            r.seconds
        )
    })?;
    let rep = pupil_selftrain::report::write(&a.out, &exp, &results)?;
    println!("{rep}");
    println!(
        "results: {}  report: {}  ({:.0}s)",
        a.out.join("results.json").display(),
        a.out.join("report.md").display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
