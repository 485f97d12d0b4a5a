//! `pupil eval detection|segmentation` (written in the evaluation work).
#[derive(clap::Args)]
pub struct EvalArgs {}

pub fn run(_a: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("eval is being written")
}
