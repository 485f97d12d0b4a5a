//! `pupil experiment` (the pre-training vs self-training grid) and `pupil quickstart`.
use anyhow::Result;
use pupil_selftrain::config::{load_config, preset};
use pupil_selftrain::experiment::{self, ExperimentConfig};
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
}

pub fn run(a: ExperimentArgs) -> Result<()> {
    let exp: ExperimentConfig = load_config(a.config.as_deref(), None, &a.sets)?;
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
    let exp: ExperimentConfig = load_config(None, Some(preset("quickstart")?), &sets)?;
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
