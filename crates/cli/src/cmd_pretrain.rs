//! `pupil pretrain`: classification pre-training of a backbone.
use crate::cmd_train::{report_outcome, ConfigArgs};
use anyhow::Result;
use pupil_selftrain::dist::Runtime;
use pupil_selftrain::experiment;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// fashion (out of domain), digit-pool (in domain) or folder:PATH, a folder of class
    /// sub-folders (PATH/<class>/*.jpg, or ImageNet's PATH/train/<class> and
    /// PATH/val/<class>; without val/ the last tenth of each class is validation).
    #[arg(long, default_value = "fashion")]
    pub dataset: String,
    /// Run folder (model.safetensors holds the pre-trained backbone).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: PretrainArgs) -> Result<()> {
    let cfg = experiment::pretrain_config(&a.dataset, a.cfg.config.as_deref(), &a.cfg.all_sets())?;
    let rt = Runtime::single(&cfg.device)?;
    let o = experiment::train(&cfg, &rt, &a.out, None, true, false)?;
    report_outcome(&o);
    crate::cmd_plot::after_training(&a.out);
    println!(
        "use it with: --set init=\"pretrained:{}\"",
        o.model_path.display()
    );
    Ok(())
}
