//! `pupil augment` (written in the augmentation work).
#[derive(clap::Args)]
pub struct AugmentArgs {}

pub fn run(_a: AugmentArgs) -> anyhow::Result<()> {
    anyhow::bail!("augment is being written")
}
