//! PASCAL VOC: `Annotations/*.xml` boxes, `SegmentationClass/*.png` label maps (palette or
//! gray, 255 = void) and `ImageSets/{Main,Segmentation}/*.txt` lists (optional: without
//! them every annotation or label map is listed); reading and writing.
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::io;
use crate::sample::{Plane, Sample};
use std::path::{Path, PathBuf};

pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

#[derive(Clone, Debug, PartialEq)]
pub struct VocObject {
    pub name: String,
    /// VOC's 1-based inclusive pixel box as written in the file.
    pub bndbox: [f32; 4],
    pub difficult: bool,
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VocAnnotation {
    pub filename: String,
    pub width: usize,
    pub height: usize,
    pub depth: usize,
    pub objects: Vec<VocObject>,
}

fn child<'a>(n: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    n.children().find(|c| c.has_tag_name(name))
}

fn text<'a>(n: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    child(n, name).and_then(|c| c.text()).map(str::trim)
}

/// A flag such as `<difficult>1</difficult>`; empty or missing means false.
fn flag(n: roxmltree::Node, name: &str) -> bool {
    match text(n, name) {
        Some(t) if !t.is_empty() => t.parse::<f64>().map(|v| v != 0.0).unwrap_or(false),
        _ => false,
    }
}

impl VocAnnotation {
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = io::read_limited(path, io::MAX_IMAGE_FILE_BYTES, "an annotation file")?;
        let s = std::str::from_utf8(&bytes)
            .map_err(|e| Error::invalid(path, "text", format!("is not UTF-8: {e}")))?;
        Self::parse(s, path)
    }

    /// Parses annotation XML; `path` names the file in errors.
    pub fn parse(xml: &str, path: &Path) -> Result<Self> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| Error::Xml {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let root = doc.root_element();
        if !root.has_tag_name("annotation") {
            return Err(Error::invalid(
                path,
                "root element",
                format!("expected <annotation>, found <{}>", root.tag_name().name()),
            ));
        }
        let num = |n: roxmltree::Node, tag: &str, item: &str| -> Result<f32> {
            let t = text(n, tag)
                .ok_or_else(|| Error::invalid(path, item, format!("missing <{tag}>")))?;
            t.parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    Error::invalid(path, item, format!("<{tag}> is not a number: {t:?}"))
                })
        };
        let filename = text(root, "filename").unwrap_or("").to_string();
        let (mut width, mut height, mut depth) = (0, 0, 3);
        if let Some(size) = child(root, "size") {
            let dim = |tag: &str| -> Result<usize> {
                let v = num(size, tag, "size")?;
                if v < 0.0 {
                    return Err(Error::invalid(
                        path,
                        "size",
                        format!("<{tag}> {v} is negative"),
                    ));
                }
                Ok(v as usize)
            };
            width = dim("width")?;
            height = dim("height")?;
            depth = text(size, "depth")
                .and_then(|d| d.parse().ok())
                .unwrap_or(3);
        }
        let mut objects = Vec::new();
        for (k, o) in root
            .children()
            .filter(|c| c.has_tag_name("object"))
            .enumerate()
        {
            let item = format!("object {k}");
            let name = text(o, "name")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::invalid(path, &item, "missing <name>"))?;
            let bb = child(o, "bndbox")
                .ok_or_else(|| Error::invalid(path, &item, "missing <bndbox>"))?;
            let bndbox = [
                num(bb, "xmin", &item)?,
                num(bb, "ymin", &item)?,
                num(bb, "xmax", &item)?,
                num(bb, "ymax", &item)?,
            ];
            if bndbox[2] < bndbox[0] || bndbox[3] < bndbox[1] {
                return Err(Error::invalid(
                    path,
                    format!("{item} ({name})"),
                    format!("bndbox {bndbox:?} has negative size"),
                ));
            }
            objects.push(VocObject {
                name: name.to_string(),
                bndbox,
                difficult: flag(o, "difficult"),
                truncated: flag(o, "truncated"),
            });
        }
        Ok(VocAnnotation {
            filename,
            width,
            height,
            depth,
            objects,
        })
    }

    pub fn to_xml(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut x = format!(
            "<annotation>\n  <filename>{}</filename>\n  <size>\n    <width>{}</width>\n    <height>{}</height>\n    <depth>{}</depth>\n  </size>\n  <segmented>1</segmented>\n",
            esc(&self.filename), self.width, self.height, self.depth
        );
        for o in &self.objects {
            x += &format!(
                "  <object>\n    <name>{}</name>\n    <truncated>{}</truncated>\n    <difficult>{}</difficult>\n    <bndbox>\n      <xmin>{}</xmin>\n      <ymin>{}</ymin>\n      <xmax>{}</xmax>\n      <ymax>{}</ymax>\n    </bndbox>\n  </object>\n",
                esc(&o.name), o.truncated as u8, o.difficult as u8, o.bndbox[0], o.bndbox[1], o.bndbox[2], o.bndbox[3]
            );
        }
        x + "</annotation>\n"
    }
}

/// Reads an `ImageSets/*/<set>.txt` list: the first token of each non-empty line.
pub fn read_image_set(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(s.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The ids of a set: `ImageSets/{Main,Segmentation}/<set>.txt` where the folder has that
/// list folder, else every `Annotations/*.xml` (detection) or `SegmentationClass/*.png`
/// (segmentation) in name order, as labelme and many exporters write VOC folders.
pub fn list_ids(root: &Path, image_set: &str, task: VocTask) -> Result<Vec<String>> {
    let (sub, dir, ext) = match task {
        VocTask::Detection => ("Main", "Annotations", "xml"),
        VocTask::Segmentation => ("Segmentation", "SegmentationClass", "png"),
    };
    let lists = root.join("ImageSets").join(sub);
    if lists.is_dir() {
        let file = lists.join(format!("{image_set}.txt"));
        if !file.exists() {
            let sets = stems(&lists, "txt")?.join(", ");
            return Err(Error::invalid(
                &lists,
                format!("image set {image_set:?}"),
                format!("there is no {image_set}.txt (sets here: {sets})"),
            ));
        }
        return read_image_set(file);
    }
    let ids = stems(&root.join(dir), ext)?;
    if ids.is_empty() {
        return Err(Error::invalid(
            root.join(dir),
            "listing",
            format!("no .{ext} files (and no ImageSets/{sub}/ lists)"),
        ));
    }
    Ok(ids)
}

/// File stems of `dir` with extension `ext` (any case), sorted.
fn stems(dir: &Path, ext: &str) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        let matches = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case(ext));
        if let (true, Some(stem)) = (matches, p.file_stem().and_then(|s| s.to_str())) {
            out.push(stem.to_string());
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocTask {
    /// Boxes from `Annotations/`, list from `ImageSets/Main/` (every annotation without it).
    Detection,
    /// Label maps from `SegmentationClass/`, list from `ImageSets/Segmentation/` (every label
    /// map without it); boxes too when the annotation file exists.
    Segmentation,
}

/// A VOC-layout folder as a [`Dataset`]. Boxes are converted as detectron2 does: 1 is taken
/// from xmin and ymin, giving 0-based `[x1, y1, x2, y2)` pixel boxes. Difficult objects are
/// flagged as crowd, so COCO evaluation ignores them as VOC's does.
pub struct VocDataset {
    pub root: PathBuf,
    pub ids: Vec<String>,
    pub classes: Vec<String>,
    pub task: VocTask,
}

impl VocDataset {
    pub fn open(
        root: impl AsRef<Path>,
        image_set: &str,
        task: VocTask,
        classes: Option<Vec<String>>,
    ) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let ids = list_ids(&root, image_set, task)?;
        Ok(VocDataset {
            root,
            ids,
            classes: classes.unwrap_or_else(|| VOC_CLASSES.iter().map(|s| s.to_string()).collect()),
            task,
        })
    }

    fn image_path(&self, id: &str, ann: Option<&VocAnnotation>) -> PathBuf {
        let dir = self.root.join("JPEGImages");
        if let Some(a) = ann.filter(|a| !a.filename.is_empty()) {
            let p = dir.join(&a.filename);
            if p.exists() {
                return p;
            }
        }
        for ext in ["jpg", "jpeg", "png", "JPG", "PNG"] {
            let p = dir.join(format!("{id}.{ext}"));
            if p.exists() {
                return p;
            }
        }
        dir.join(format!("{id}.jpg"))
    }
}

/// Label values are 0 (background), 1..=classes or 255 (void); anything else is an error
/// naming the first such pixel.
fn check_labels(l: &Plane, classes: usize, path: &Path) -> Result<()> {
    let bad = l
        .data
        .iter()
        .position(|&v| v as usize > classes && v != crate::sample::IGNORE);
    match bad {
        Some(i) => Err(Error::invalid(
            path,
            format!("pixel (x={}, y={})", i % l.width.max(1), i / l.width.max(1)),
            format!(
                "label {} is above the {classes} classes (0 is background, 255 void)",
                l.data[i]
            ),
        )),
        None => Ok(()),
    }
}

impl Dataset for VocDataset {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let id = &self.ids[index];
        let ann_path = self.root.join("Annotations").join(format!("{id}.xml"));
        let ann = match (self.task, ann_path.exists()) {
            (VocTask::Detection, _) | (VocTask::Segmentation, true) => {
                Some(VocAnnotation::read(&ann_path)?)
            }
            _ => None,
        };
        let img_path = self.image_path(id, ann.as_ref());
        let image = io::read_image(&img_path)?;
        let mut s = Sample::new(image);
        s.image_id = index as u64;
        s.source = Some(img_path.clone());
        if let Some(a) = &ann {
            for (k, o) in a.objects.iter().enumerate() {
                let c = self
                    .classes
                    .iter()
                    .position(|c| *c == o.name)
                    .ok_or_else(|| {
                        Error::invalid(
                            &ann_path,
                            format!("object {k}"),
                            format!("unknown class {:?}", o.name),
                        )
                    })?;
                let b = o.bndbox;
                s.boxes.push([b[0] - 1.0, b[1] - 1.0, b[2], b[3]]);
                s.classes.push(c as u32);
                s.crowd.push(o.difficult);
            }
        }
        if self.task == VocTask::Segmentation {
            let lp = self
                .root
                .join("SegmentationClass")
                .join(format!("{id}.png"));
            let l: Plane = io::read_label_png(&lp)?;
            check_labels(&l, self.classes.len(), &lp)?;
            if (l.width, l.height) != (s.width(), s.height()) {
                return Err(Error::invalid(
                    &lp,
                    format!("label map of {id}"),
                    format!(
                        "is {}x{} but its image {} is {}x{}",
                        l.width,
                        l.height,
                        img_path.display(),
                        s.width(),
                        s.height()
                    ),
                ));
            }
            s.label_map = Some(l);
        }
        Ok(s)
    }

    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_float_coordinates_and_empty_fields() {
        let xml = r#"<?xml version="1.0"?>
<annotation><folder/><filename>a.jpg</filename>
 <size><width>500</width><height>375</height><depth>3</depth></size>
 <object><name>dog</name><pose/><truncated/><difficult/>
   <bndbox><xmin>48.5</xmin><ymin>240</ymin><xmax>195.25</xmax><ymax>371</ymax></bndbox></object>
 <object><name>person</name><difficult>1</difficult>
   <bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox></object>
</annotation>"#;
        let a = VocAnnotation::parse(xml, Path::new("a.xml")).unwrap();
        assert_eq!((a.width, a.height), (500, 375));
        assert_eq!(a.objects.len(), 2);
        assert_eq!(a.objects[0].bndbox, [48.5, 240.0, 195.25, 371.0]);
        assert!(!a.objects[0].difficult && !a.objects[0].truncated);
        assert!(a.objects[1].difficult);
        let again = VocAnnotation::parse(&a.to_xml(), Path::new("b.xml")).unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn malformed_xml_names_the_file() {
        let e = VocAnnotation::parse("<annotation><object>", Path::new("bad.xml")).unwrap_err();
        assert!(e.to_string().contains("bad.xml"), "{e}");
        let e = VocAnnotation::parse(
            "<annotation><object><name>x</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
            Path::new("c.xml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("c.xml") && e.contains("object 0") && e.contains("xmin"),
            "{e}"
        );
        let e = VocAnnotation::parse(
            "<annotation><object><name>x</name><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>",
            Path::new("d.xml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("negative size") && e.contains("object 0"), "{e}");
    }
}
