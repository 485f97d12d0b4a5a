//! `pupil data export|preview`.
use crate::source::SourceArgs;
use anyhow::{bail, Context, Result};
use pupil_data::coco::CocoFile;
use pupil_data::voc::{VocAnnotation, VocObject};
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
    let names = ds.class_names();
    if names.is_empty() {
        bail!("dataset {:?} has no classes to export", source.dataset);
    }
    let split = source.split.as_str();
    let coco_dir = out.join("coco");
    let voc_dir = out.join("voc");
    let mut ids = Vec::new();
    let mut with_labels = false;
    let mut file = CocoFile::default();
    for i in 0..ds.len() {
        let mut s = ds.get(i).with_context(|| format!("sample {i}"))?;
        let stem = format!("{:06}", s.image_id);
        let file_name = format!("{stem}.png");
        io::write_png(coco_dir.join("images").join(&file_name), &s.image)?;
        s.source = Some(file_name.into());
        let one = CocoFile::from_samples(std::slice::from_ref(&s), &names);
        file.categories = one.categories;
        file.images.extend(one.images);
        let first_id = file.annotations.len() as u64;
        file.annotations
            .extend(one.annotations.into_iter().map(|mut a| {
                a.id += first_id;
                a
            }));
        let mut objects = Vec::new();
        for (k, b) in s.boxes.iter().enumerate() {
            objects.push(VocObject {
                name: names[s.classes[k] as usize].clone(),
                // VOC boxes are 1-based and inclusive.
                bndbox: [b[0] + 1.0, b[1] + 1.0, b[2], b[3]],
                difficult: s.crowd[k],
                truncated: false,
            });
        }
        write_jpeg(
            &voc_dir.join("JPEGImages").join(format!("{stem}.jpg")),
            &s.image,
        )?;
        let ann = VocAnnotation {
            filename: format!("{stem}.jpg"),
            width: s.width(),
            height: s.height(),
            depth: s.image.channels,
            objects,
        };
        io::write_atomic(
            voc_dir.join("Annotations").join(format!("{stem}.xml")),
            ann.to_xml().as_bytes(),
        )?;
        if let Some(l) = &s.label_map {
            with_labels = true;
            io::write_label_png_palette(
                voc_dir
                    .join("SegmentationClass")
                    .join(format!("{stem}.png")),
                l,
            )?;
        }
        ids.push(stem);
    }
    file.write(coco_dir.join("annotations.json"))?;
    let list = ids.join("\n") + "\n";
    io::write_atomic(
        voc_dir.join("ImageSets/Main").join(format!("{split}.txt")),
        list.as_bytes(),
    )?;
    if with_labels {
        io::write_atomic(
            voc_dir
                .join("ImageSets/Segmentation")
                .join(format!("{split}.txt")),
            list.as_bytes(),
        )?;
    }
    let labels = std::iter::once("background".to_string())
        .chain(names.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    io::write_atomic(voc_dir.join("labels.txt"), labels.as_bytes())?;
    println!(
        "wrote {} images, {} boxes: {} and {}",
        ids.len(),
        file.annotations.len(),
        coco_dir.join("annotations.json").display(),
        voc_dir.display()
    );
    Ok(())
}

fn write_jpeg(path: &Path, img: &pupil_data::Image) -> Result<()> {
    let mut bytes = Vec::new();
    let color = if img.channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
        .encode(&img.data, img.width as u32, img.height as u32, color)
        .with_context(|| format!("encoding {}", path.display()))?;
    io::write_atomic(path, &bytes)?;
    Ok(())
}
