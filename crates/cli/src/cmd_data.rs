//! `pupil data export|preview`.
use crate::source::SourceArgs;
use anyhow::{bail, Context, Result};
use pupil_data::{draw, io, Dataset, Image};
use pupil_selftrain::config::TrainConfig;
use pupil_selftrain::data::unlabeled_source;
use pupil_selftrain::model::read_model_header;
use pupil_selftrain::pseudo::{self, PseudoLabeled};
use std::collections::HashSet;
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
    /// Draw a grid of samples with their boxes and masks (or a pseudo-label folder's labels
    /// and scores: --dataset pseudo --pseudo DIR [--images SRC]).
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
            let tiles = if source.dataset == "pseudo" {
                pseudo_tiles(&source, n)?
            } else {
                tiles(&source, n)?
            };
            if tiles.is_empty() {
                bail!("the dataset is empty");
            }
            io::write_png(&out, &draw::grid(&tiles, cols))?;
            println!("wrote {} ({} samples)", out.display(), tiles.len());
            Ok(())
        }
    }
}

/// Small images are enlarged to this side in previews, so their labels stay readable.
pub const TILE: usize = 192;

/// The first `n` samples drawn with their labels.
fn tiles(source: &SourceArgs, n: usize) -> Result<Vec<Image>> {
    let ds = source.open()?;
    let names = ds.class_names();
    (0..n.min(ds.len()))
        .map(|i| {
            Ok(draw::draw_sample(
                &draw::readable(&ds.get(i)?, TILE),
                &names,
            ))
        })
        .collect()
}

/// The first `n` images of a pseudo-label folder's done shards with the teacher's hard
/// labels and scores, on the folder's source (or `--images`).
fn pseudo_tiles(source: &SourceArgs, n: usize) -> Result<Vec<Image>> {
    let dir = source
        .pseudo
        .as_ref()
        .context("--dataset pseudo needs --pseudo DIR")?;
    let (m, all) = pseudo::merge_done(dir)?;
    let src = (source.images.as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| m.source.clone());
    // the digit scenes as the teacher made them, where its file is at hand
    let cfg = read_model_header(Path::new(&m.teacher))
        .map(|h| h.config)
        .unwrap_or_else(|_| {
            let mut c = TrainConfig::default();
            c.data.digits = source.digits_config();
            c
        });
    let ds = PseudoLabeled::new(
        unlabeled_source(&cfg, &src)?,
        dir,
        &m,
        &all,
        m.score_threshold,
        None,
    );
    let done: HashSet<u64> = all.images.iter().map(|i| i.id).collect();
    let names = ds.class_names();
    let mut tiles = Vec::new();
    for i in 0..ds.len() {
        if tiles.len() == n {
            break;
        }
        let s = ds.get(i)?;
        if done.contains(&s.image_id) {
            let big = draw::readable(&s, TILE);
            tiles.push(draw::draw_scored(&big, &names, ds.scores(s.image_id)));
        }
    }
    Ok(tiles)
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
