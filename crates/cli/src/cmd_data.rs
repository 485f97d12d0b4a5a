//! `pupil data export|preview`.
use crate::source::SourceArgs;
use anyhow::{bail, Context, Result};
use pupil_data::{draw, io};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    cmd: DataCmd,
}

#[derive(clap::Subcommand)]
enum DataCmd {
    /// Write a dataset as COCO JSON + PNG images (OUT/coco) and as a VOC-style folder
    /// (OUT/voc: JPEGImages, Annotations, SegmentationClass, ImageSets).
    Export {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Draw a grid of samples with their boxes and masks.
    Preview {
        #[command(flatten)]
        source: SourceArgs,
        /// Number of samples.
        #[arg(long, default_value_t = 16)]
        n: usize,
        #[arg(long, default_value_t = 4)]
        cols: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: DataArgs) -> Result<()> {
    match a.cmd {
        DataCmd::Export { source, out } => export(&source, &out),
        DataCmd::Preview {
            source,
            n,
            cols,
            out,
        } => {
            let ds = source.open()?;
            let n = n.min(ds.len());
            if n == 0 {
                bail!("the dataset is empty");
            }
            let names = ds.class_names();
            let tiles = (0..n)
                .map(|i| Ok(draw::draw_sample(&ds.get(i)?, &names)))
                .collect::<Result<Vec<_>>>()?;
            io::write_png(&out, &draw::grid(&tiles, cols))?;
            println!("wrote {} ({} samples)", out.display(), n);
            Ok(())
        }
    }
}

fn export(source: &SourceArgs, out: &Path) -> Result<()> {
    let ds = source.open()?;
    let e = pupil_data::export::export(ds.as_ref(), &source.split, out)
        .with_context(|| format!("exporting {:?}", source.dataset))?;
    println!(
        "wrote {} images, {} boxes: {} and {}",
        e.images,
        e.boxes,
        out.join("coco/annotations.json").display(),
        out.join("voc").display()
    );
    Ok(())
}
