//! `pupil experiment` (the pre-training vs self-training grid) and `pupil quickstart`.
use anyhow::Result;
use pupil_selftrain::config::{load_config, preset};
use pupil_selftrain::grid::{run_grid, ExperimentConfig};
use std::path::PathBuf;

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
    /// Arms trained side by side, each on one compute thread.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Write results and the report from the arms finished so far; train nothing.
    #[arg(long)]
    pub report_only: bool,
}

/// Side-by-side arms each run on one thread: candle's pool must be one thread wide before
/// it starts (an explicit RAYON_NUM_THREADS wins).
fn one_thread_per_job(jobs: usize) {
    if jobs > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: called before any thread is started.
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

pub fn run(a: ExperimentArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let exp: ExperimentConfig = load_config(a.config.as_deref(), None, &a.sets)?;
    if a.report_only {
        let (results, planned) = pupil_selftrain::grid::finished_arms(&exp, &a.out)?;
        if results.is_empty() {
            anyhow::bail!("{}: no finished arm of this grid", a.out.display());
        }
        eprintln!("{} of {planned} arms finished", results.len());
        println!(
            "{}",
            pupil_selftrain::report::write(&a.out, &exp, &results, None)?
        );
        return Ok(());
    }
    one_thread_per_job(a.jobs);
    let results = run_grid(&exp, &a.out, a.jobs, false, |r| {
        eprintln!("{}: {:.4} ({:.0}s)", r.name, r.metrics.primary, r.seconds)
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let rep = pupil_selftrain::report::write(&a.out, &exp, &results, Some(wall))?;
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
    /// Arms trained side by side, each on one compute thread.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
}

pub fn quickstart(a: QuickstartArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut sets = vec![format!("seeds=[{}]", a.seed)];
    sets.extend(a.sets.iter().cloned());
    let exp: ExperimentConfig = load_config(None, Some(preset("quickstart")?), &sets)?;
    one_thread_per_job(a.jobs);
    eprintln!(
        "pupil quickstart: supervised, self-trained and control arms from {} inits on the embedded digit scenes -> {}",
        exp.inits.len(),
        a.out.display()
    );
    let results = run_grid(&exp, &a.out, a.jobs, false, |r| {
        eprintln!(
            "  {:<40} AP {:.4}  AP50 {:.4}  ({:.0}s)",
            r.name,
            r.metrics.primary,
            r.metrics.values.get("AP50").copied().unwrap_or(0.0),
            r.seconds
        )
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let rep = pupil_selftrain::report::write(&a.out, &exp, &results, Some(wall))?;
    println!("{rep}");
    println!(
        "results: {}  report: {}  ({:.0}s)",
        a.out.join("results.json").display(),
        a.out.join("report.md").display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
