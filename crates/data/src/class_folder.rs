//! An image-classification folder as torchvision's `ImageFolder` reads it: one sub-folder
//! per class (classes in name order), jpg/jpeg/png images anywhere below it. ImageNet's
//! layout is `train/` and `val/`, each such a folder.
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::folder::ImageFolder;
use crate::io;
use crate::sample::Sample;
use std::path::{Path, PathBuf};

pub struct ClassFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    /// (image, class index), by class then path.
    pub items: Vec<(PathBuf, u32)>,
}

/// The class sub-folders of `root` (hidden ones skipped), in name order.
pub fn class_dirs(root: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), e))?
            .is_dir();
        if dir && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(Error::invalid(
            root,
            "classes",
            "no class sub-folders (expected ROOT/<class>/*.jpg)",
        ));
    }
    Ok(names)
}

impl ClassFolder {
    /// The folder with its own sub-folders as the classes.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        Self::with_classes(root, &class_dirs(root)?)
    }

    /// The folder read with a given class list (a validation folder with its training
    /// folder's classes): every class needs its sub-folder and no other may be there.
    pub fn with_classes(root: impl AsRef<Path>, classes: &[String]) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let found = class_dirs(&root)?;
        if found != classes {
            let extra: Vec<&String> = found.iter().filter(|c| !classes.contains(c)).collect();
            let missing: Vec<&String> = classes.iter().filter(|c| !found.contains(c)).collect();
            return Err(Error::invalid(
                &root,
                "classes",
                format!("differ from the training classes: missing {missing:?}, extra {extra:?}"),
            ));
        }
        let mut items = Vec::new();
        for (k, c) in classes.iter().enumerate() {
            let dir = root.join(c);
            // an image folder without images is ImageFolder's error, naming the folder
            let images = ImageFolder::open(&dir)?.paths;
            items.extend(images.into_iter().map(|p| (p, k as u32)));
        }
        Ok(ClassFolder {
            root,
            classes: classes.to_vec(),
            items,
        })
    }

    /// (kept, held out) indices: the last tenth of every class (at least one image of a
    /// class with two or more) is held out, the validation part of a folder without a
    /// `val/` of its own.
    pub fn split(&self) -> (Vec<usize>, Vec<usize>) {
        let (mut keep, mut held) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < self.items.len() {
            let c = self.items[start].1;
            let n = self.items[start..].iter().take_while(|i| i.1 == c).count();
            let h = if n >= 2 { (n / 10).max(1) } else { 0 };
            keep.extend(start..start + n - h);
            held.extend(start + n - h..start + n);
            start += n;
        }
        (keep, held)
    }
}

impl Dataset for ClassFolder {
    fn len(&self) -> usize {
        self.items.len()
    }

    /// The image with one box over all of it, of its class.
    fn get(&self, index: usize) -> Result<Sample> {
        let (p, c) = &self.items[index];
        let mut s = Sample::new(io::read_image(p)?);
        s.boxes = vec![[0.0, 0.0, s.width() as f32, s.height() as f32]];
        s.classes = vec![*c];
        s.crowd = vec![false];
        s.image_id = index as u64 + 1;
        s.source = Some(p.clone());
        Ok(s)
    }

    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Image;

    #[test]
    fn classes_are_sub_folders_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        for (c, n) in [("dog", 3), ("cat", 12)] {
            for i in 0..n {
                let p = d.path().join(format!("{c}/x/{i:02}.png"));
                io::write_png(p, &Image::new(5 + i, 4, 3, 7)).unwrap();
            }
        }
        std::fs::create_dir_all(d.path().join(".cache")).unwrap();
        let f = ClassFolder::open(d.path()).unwrap();
        assert_eq!(f.classes, ["cat", "dog"]);
        assert_eq!(f.len(), 15);
        let s = f.get(14).unwrap();
        assert_eq!((s.classes[0], s.boxes[0]), (1, [0.0, 0.0, 7.0, 4.0]));
        // one of 12 cats and one of 3 dogs are held out, the last of each
        let (keep, held) = f.split();
        assert_eq!(held, [11, 14]);
        assert_eq!(keep.len(), 13);
        let e = ClassFolder::with_classes(d.path(), &["cat".into(), "cow".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cow") && e.contains("dog"), "{e}");
        std::fs::create_dir_all(d.path().join("emu")).unwrap();
        let e = ClassFolder::open(d.path()).err().unwrap().to_string();
        assert!(e.contains("emu") && e.contains("no .jpg"), "{e}");
    }
}
