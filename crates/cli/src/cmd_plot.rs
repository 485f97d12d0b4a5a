//! `pupil plot RUN_DIR`: a run's training curves from its metrics.jsonl.
use anyhow::Result;
use pupil_selftrain::plots::{run_plot, RUN_PLOT};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run folder (holding metrics.jsonl) of `pupil train`, `pretrain` or a self-training
    /// student.
    pub run: PathBuf,
    /// Picture to write (default RUN/metrics.png).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: PlotArgs) -> Result<()> {
    let out = a.out.unwrap_or_else(|| a.run.join(RUN_PLOT));
    run_plot(&a.run, &out)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The plot a training command writes at its end; a failure to plot leaves the trained
/// model standing and says why.
pub fn after_training(run: &Path) {
    let out = run.join(RUN_PLOT);
    match run_plot(run, &out) {
        Ok(()) => println!("plot: {}", out.display()),
        Err(e) => eprintln!("warning: no plot of the run: {e}"),
    }
}
