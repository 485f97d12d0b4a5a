//! `pupil data export|preview`.
#[derive(clap::Args)]
pub struct DataArgs {}

pub fn run(_a: DataArgs) -> anyhow::Result<()> {
    anyhow::bail!("data is being written")
}
