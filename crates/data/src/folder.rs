//! An unlabeled image folder (recursive; jpg, jpeg and png), the input of pseudo-labeling.
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::io;
use crate::sample::Sample;
use std::path::{Path, PathBuf};

pub struct ImageFolder {
    pub root: PathBuf,
    /// Image paths in sorted order; a sample's `image_id` is its position here plus one.
    pub paths: Vec<PathBuf>,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let p = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(&p, e))?;
        if ft.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl ImageFolder {
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut paths = Vec::new();
        walk(&root, &mut paths)?;
        if paths.is_empty() {
            return Err(Error::invalid(
                &root,
                "folder",
                "holds no .jpg, .jpeg or .png image",
            ));
        }
        paths.sort();
        Ok(ImageFolder { root, paths })
    }

    /// Path relative to the root, as written into pseudo-label files.
    pub fn relative(&self, index: usize) -> String {
        let p = &self.paths[index];
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn get(&self, index: usize) -> Result<Sample> {
        let p = &self.paths[index];
        let mut s = Sample::new(io::read_image(p)?);
        s.image_id = index as u64 + 1;
        s.source = Some(p.clone());
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Image;

    #[test]
    fn lists_images_recursively_in_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/c")).unwrap();
        io::write_png(d.path().join("b/c/z.png"), &Image::new(3, 2, 3, 1)).unwrap();
        io::write_png(d.path().join("a.PNG"), &Image::new(2, 2, 1, 1)).unwrap();
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        let f = ImageFolder::open(d.path()).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f.relative(0), "a.PNG");
        assert_eq!(f.relative(1), "b/c/z.png");
        assert_eq!(f.get(1).unwrap().width(), 3);
        assert!(ImageFolder::open(d.path().join("missing")).is_err());
        std::fs::create_dir_all(d.path().join("empty")).unwrap();
        let e = ImageFolder::open(d.path().join("empty"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("empty") && e.contains("no .jpg"), "{e}");
    }
}
