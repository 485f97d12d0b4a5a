//! `pupil augment`: a grid of augmented samples with their boxes and masks drawn.
use crate::source::SourceArgs;
use anyhow::{bail, Context, Result};
use pupil_augment::ladder::{ladder_with, LadderOptions};
use pupil_augment::{parse_pipeline, parse_toml, Augment, Pipeline, Size};
use pupil_data::coco::CocoDataset;
use pupil_data::{draw, io, Dataset, Rng, Sample};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct AugmentArgs {
    /// A ladder (s1, s2, s3, s4) or a pipeline such as
    /// "lsj(0.5,2.0,size=256) | randaugment(n=2,m=10) | hflip".
    #[arg(long, default_value = "s4")]
    pub policy: String,
    /// A TOML pipeline ([[op]] tables or pipeline = "..."); replaces --policy.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output size of a named ladder, N or WxH (default: the input's longer side).
    #[arg(long)]
    pub size: Option<String>,
    /// A named ladder pads its output to a multiple of this.
    #[arg(long, default_value_t = 128)]
    pub pad: usize,
    /// Number of augmented samples to draw.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Seed of the augmentation; sample i uses the stream (seed, epoch, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    /// Grid columns (default: about the square root of n).
    #[arg(long)]
    pub cols: Option<usize>,
    /// One image to augment n times instead of a dataset.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// COCO JSON holding the annotations of --image.
    #[arg(long, requires = "image")]
    pub coco: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[arg(long)]
    pub out: PathBuf,
}

/// The single image of `--image`, with its COCO annotations when `--coco` is given.
fn single_image(image: &Path, coco: Option<&Path>) -> Result<(Sample, Vec<String>)> {
    let Some(json) = coco else {
        let mut s = Sample::new(io::read_image(image)?);
        s.source = Some(image.to_path_buf());
        return Ok((s, Vec::new()));
    };
    let root = image.parent().unwrap_or(Path::new("."));
    let ds = CocoDataset::open(json, root)?.with_masks(true);
    let name = image.file_name().context("--image needs a file name")?;
    let index = ds
        .file
        .images
        .iter()
        .position(|im| Path::new(&im.file_name).file_name() == Some(name))
        .with_context(|| {
            format!(
                "{} lists no image named {}",
                json.display(),
                name.to_string_lossy()
            )
        })?;
    let ds_root_image = root.join(&ds.file.images[index].file_name);
    if !ds_root_image.exists() {
        // The JSON names the image with a sub-folder; read it from where the user said it is.
        let img = io::read_image(image)?;
        let mut s = Sample::new(img);
        ds.targets(index, &mut s)?;
        return Ok((s, ds.class_names()));
    }
    Ok((ds.get(index)?, ds.class_names()))
}

fn parse_size(text: &str) -> Result<Size> {
    let parts: Vec<&str> = text.split(['x', 'X']).collect();
    let num = |s: &str| -> Result<usize> {
        match s.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => bail!("--size must be N or WxH with positive integers, got {text:?}"),
        }
    };
    match parts[..] {
        [n] => Ok(Size::square(num(n)?)),
        [w, h] => Ok(Size::new(num(w)?, num(h)?)),
        _ => bail!("--size must be N or WxH, got {text:?}"),
    }
}

fn pipeline(a: &AugmentArgs, first: &Sample) -> Result<Pipeline> {
    if let Some(path) = &a.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return parse_toml(&text).with_context(|| format!("{}", path.display()));
    }
    let name = a.policy.trim().to_ascii_lowercase();
    if matches!(name.as_str(), "s1" | "s2" | "s3" | "s4") {
        let size = match &a.size {
            Some(s) => parse_size(s)?,
            None => Size::square(first.image.width.max(first.image.height)),
        };
        let o = LadderOptions {
            pad_multiple: a.pad,
            ..LadderOptions::new(size)
        };
        return Ok(ladder_with(&name, o)?);
    }
    if a.size.is_some() {
        bail!("--size applies to the named ladders; give size= inside the pipeline instead");
    }
    Ok(parse_pipeline(&a.policy)?)
}

pub fn run(a: AugmentArgs) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    // Inputs: one image n times, or the first n samples of a dataset (cycled).
    let (inputs, names): (Vec<Sample>, Vec<String>) = match &a.image {
        Some(img) => {
            let (s, names) = single_image(img, a.coco.as_deref())?;
            (vec![s; a.n], names)
        }
        None => {
            let ds = a.source.open()?;
            if ds.is_empty() {
                bail!("the dataset is empty");
            }
            let inputs = (0..a.n)
                .map(|i| ds.get(i % ds.len()))
                .collect::<pupil_data::Result<Vec<_>>>()?;
            (inputs, ds.class_names())
        }
    };
    let p = pipeline(&a, &inputs[0])?;
    let tiles: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            p.apply(&mut s, &mut Rng::for_sample(a.seed, a.epoch, i as u64));
            draw::draw_sample(&draw::readable(&s, crate::cmd_data::TILE), &names)
        })
        .collect();
    let cols = a
        .cols
        .unwrap_or_else(|| (a.n as f64).sqrt().ceil() as usize);
    io::write_png(&a.out, &draw::grid(&tiles, cols))?;
    println!(
        "wrote {} ({} samples, {})",
        a.out.display(),
        a.n,
        p.describe()
    );
    Ok(())
}
