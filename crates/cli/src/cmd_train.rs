//! `pupil train`, and the config flags every training command shares.
use anyhow::Result;
use pupil_selftrain::config::{load_config, TrainConfig};
use pupil_selftrain::dist::{is_launched, Launch, Runtime};
use pupil_selftrain::experiment;
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
    /// The `--set` list with `--device` folded in.
    pub fn all_sets(&self) -> Vec<String> {
        let mut sets = self.sets.clone();
        if let Some(d) = &self.device {
            sets.push(format!("device={d}"));
        }
        sets
    }

    pub fn load(&self, base: Option<toml::Table>) -> Result<TrainConfig> {
        Ok(load_config(self.config.as_deref(), base, &self.all_sets())?)
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

pub fn train(a: TrainArgs) -> Result<()> {
    let job = Launch {
        nproc_per_node: a.nproc_per_node,
        nnodes: a.nnodes,
        node_rank: a.node_rank,
        master_addr: a.master_addr.clone(),
        master_port: a.master_port,
    };
    if job.starts_ranks() {
        // Checked here so a bad config fails once, not in every rank.
        pupil_selftrain::checks::check_config(&a.cfg.load(None)?)?;
        // The launcher holds the folder for its ranks (they skip the lock).
        let _lock = pupil_selftrain::lock::RunLock::acquire(&a.out)?;
        if a.restart {
            pupil_selftrain::trainer::reset_folder(&a.out)?;
        }
        job.run()?;
        println!(
            "{} ranks finished -> {}",
            a.nproc_per_node * a.nnodes,
            a.out.join("model.safetensors").display()
        );
        if a.node_rank == 0 {
            crate::cmd_plot::after_training(&a.out);
        }
        return Ok(());
    }
    let cfg = a.cfg.load(None)?;
    let rt = Runtime::from_env(&cfg.device)?;
    let resume = !a.restart || is_launched();
    let o = experiment::train(&cfg, &rt, &a.out, None, resume, false)?;
    if rt.is_lead() {
        report_outcome(&o);
        crate::cmd_plot::after_training(&a.out);
    }
    Ok(())
}

pub fn report_outcome(o: &pupil_selftrain::trainer::Outcome) {
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
