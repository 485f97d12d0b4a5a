//! A dataset written out as COCO (JSON + PNG images) and as a PASCAL VOC folder
//! (JPEGImages, Annotations, SegmentationClass, ImageSets), the two layouts pycocotools,
//! torchvision and detectron2 read.
use crate::coco::CocoFile;
use crate::voc::{VocAnnotation, VocObject};
use crate::{io, Dataset, Error, Image, Result};
use std::path::Path;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    pub images: usize,
    pub boxes: usize,
}

/// Writes every sample of `ds` under `out/coco` and `out/voc`; `split` names the image set.
pub fn export(ds: &dyn Dataset, split: &str, out: &Path) -> Result<Exported> {
    let names = ds.class_names();
    if names.is_empty() {
        return Err(Error::Other("the dataset has no classes to export".into()));
    }
    let (coco_dir, voc_dir) = (out.join("coco"), out.join("voc"));
    let mut ids = Vec::new();
    let mut with_labels = false;
    let mut file = CocoFile::default();
    for i in 0..ds.len() {
        let mut s = ds.get(i)?;
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
        let objects = s
            .boxes
            .iter()
            .enumerate()
            .map(|(k, b)| VocObject {
                name: names[s.classes[k] as usize].clone(),
                // VOC boxes are 1-based and inclusive.
                bndbox: [b[0] + 1.0, b[1] + 1.0, b[2], b[3]],
                difficult: s.crowd[k],
                truncated: false,
            })
            .collect();
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
        let xml = voc_dir.join("Annotations").join(format!("{stem}.xml"));
        io::write_atomic(xml, ann.to_xml().as_bytes())?;
        if let Some(l) = &s.label_map {
            with_labels = true;
            let p = voc_dir
                .join("SegmentationClass")
                .join(format!("{stem}.png"));
            io::write_label_png_palette(p, l)?;
        }
        ids.push(stem);
    }
    file.write(coco_dir.join("annotations.json"))?;
    write_lists(&voc_dir, split, &ids, with_labels, &names)?;
    Ok(Exported {
        images: ids.len(),
        boxes: file.annotations.len(),
    })
}

fn write_lists(voc: &Path, split: &str, ids: &[String], seg: bool, names: &[String]) -> Result<()> {
    let list = ids.join("\n") + "\n";
    let sets = voc.join("ImageSets");
    io::write_atomic(
        sets.join("Main").join(format!("{split}.txt")),
        list.as_bytes(),
    )?;
    if seg {
        let p = sets.join("Segmentation").join(format!("{split}.txt"));
        io::write_atomic(p, list.as_bytes())?;
    }
    let labels = std::iter::once("background")
        .chain(names.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    io::write_atomic(voc.join("labels.txt"), labels.as_bytes())
}

fn write_jpeg(path: &Path, img: &Image) -> Result<()> {
    let mut bytes = Vec::new();
    let color = if img.channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
        .encode(&img.data, img.width as u32, img.height as u32, color)
        .map_err(|e| Error::image(path, format!("encoding: {e}")))?;
    io::write_atomic(path, &bytes)
}
