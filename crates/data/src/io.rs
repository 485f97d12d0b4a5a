//! File helpers: atomic writes and image / label-map decoding with errors that name the file.
use crate::error::{Error, Result};
use crate::sample::{Image, Plane};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(path, "path", "has no file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| {
        Error::Other(format!(
            "{}: cannot serialise JSON: {e}",
            path.as_ref().display()
        ))
    })?;
    write_atomic(path, &bytes)
}

/// Reads and parses a JSON file; errors name the file, line and column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(path, &e))
}

/// Loads a JPEG or PNG as gray (1 channel) or RGB (3 channels); alpha is dropped, 16-bit
/// samples are reduced to 8 bits.
pub fn read_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, path)
}

/// Decodes image bytes; `path` is only used in error messages.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::image(path, e))?;
    Ok(match img {
        image::DynamicImage::ImageLuma8(g) => {
            let (w, h) = g.dimensions();
            Image::from_raw(w as usize, h as usize, 1, g.into_raw())
        }
        image::DynamicImage::ImageLuma16(_)
        | image::DynamicImage::ImageLumaA8(_)
        | image::DynamicImage::ImageLumaA16(_) => {
            let g = img.to_luma8();
            let (w, h) = g.dimensions();
            Image::from_raw(w as usize, h as usize, 1, g.into_raw())
        }
        other => {
            let rgb = other.to_rgb8();
            let (w, h) = rgb.dimensions();
            Image::from_raw(w as usize, h as usize, 3, rgb.into_raw())
        }
    })
}

/// Encodes an image as PNG bytes.
pub fn encode_png(img: &Image) -> Result<Vec<u8>> {
    let color = if img.channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    };
    encode_png_raw(img.width, img.height, color, &img.data, None)
}

fn encode_png_raw(
    width: usize,
    height: usize,
    color: png::ColorType,
    data: &[u8],
    palette: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        if let Some(p) = palette {
            enc.set_palette(p.to_vec());
        }
        let mut w = enc
            .write_header()
            .map_err(|e| Error::Other(format!("PNG encoding: {e}")))?;
        w.write_image_data(data)
            .map_err(|e| Error::Other(format!("PNG encoding: {e}")))?;
    }
    Ok(out)
}

/// Writes an image as PNG, atomically.
pub fn write_png(path: impl AsRef<Path>, img: &Image) -> Result<()> {
    write_atomic(path, &encode_png(img)?)
}

/// Writes a label map as an 8-bit gray PNG (pixel = class id, 255 = ignore), atomically.
pub fn write_label_png(path: impl AsRef<Path>, plane: &Plane) -> Result<()> {
    let bytes = encode_png_raw(
        plane.width,
        plane.height,
        png::ColorType::Grayscale,
        &plane.data,
        None,
    )?;
    write_atomic(path, &bytes)
}

/// The PASCAL VOC colour map (index i -> RGB), used to write palette label PNGs.
pub fn voc_palette() -> Vec<u8> {
    let mut pal = Vec::with_capacity(256 * 3);
    for i in 0..256u32 {
        let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
        let mut c = i;
        for j in 0..8 {
            r |= (((c >> 0) & 1) as u8) << (7 - j);
            g |= (((c >> 1) & 1) as u8) << (7 - j);
            b |= (((c >> 2) & 1) as u8) << (7 - j);
            c >>= 3;
        }
        pal.extend_from_slice(&[r, g, b]);
    }
    pal
}

/// Writes a label map as a palette PNG with the VOC colour map (as `SegmentationClass/`).
pub fn write_label_png_palette(path: impl AsRef<Path>, plane: &Plane) -> Result<()> {
    let pal = voc_palette();
    let bytes = encode_png_raw(
        plane.width,
        plane.height,
        png::ColorType::Indexed,
        &plane.data,
        Some(&pal),
    )?;
    write_atomic(path, &bytes)
}

/// Reads a label map PNG: palette PNGs give their raw indices (as VOC's `SegmentationClass`),
/// 8-bit gray PNGs their values. Anything else is an error naming the file.
pub fn read_label_png(path: impl AsRef<Path>) -> Result<Plane> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| Error::image(path, e))?;
    let (color, depth) = reader.output_color_type();
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::image(path, "image too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| Error::image(path, e))?;
    let (w, h) = (info.width as usize, info.height as usize);
    buf.truncate(info.buffer_size());
    match (color, depth) {
        (png::ColorType::Grayscale | png::ColorType::Indexed, png::BitDepth::Eight) => {
            let stride = info.line_size;
            let mut data = Vec::with_capacity(w * h);
            for y in 0..h {
                data.extend_from_slice(&buf[y * stride..y * stride + w]);
            }
            Ok(Plane::from_raw(w, h, data))
        }
        (png::ColorType::Indexed, d) if (d as u8) < 8 => {
            // Packed indices (1, 2 or 4 bits).
            let bits = d as usize;
            let stride = info.line_size;
            let mut data = Vec::with_capacity(w * h);
            for y in 0..h {
                let row = &buf[y * stride..(y + 1) * stride];
                for x in 0..w {
                    let bit = x * bits;
                    let byte = row[bit / 8];
                    let shift = 8 - bits - (bit % 8);
                    data.push((byte >> shift) & ((1 << bits) - 1) as u8);
                }
            }
            Ok(Plane::from_raw(w, h, data))
        }
        (c, d) => Err(Error::image(
            path,
            format!("a label map must be an 8-bit gray or palette PNG, found {c:?} {d:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_and_palette_indices() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Plane::new(5, 3, 0);
        p.set(1, 1, 7);
        p.set(4, 2, 255);
        let a = dir.path().join("a.png");
        write_label_png_palette(&a, &p).unwrap();
        assert_eq!(read_label_png(&a).unwrap(), p);
        let b = dir.path().join("b.png");
        write_label_png(&b, &p).unwrap();
        assert_eq!(read_label_png(&b).unwrap(), p);
        let img = Image::from_raw(2, 1, 3, vec![1, 2, 3, 4, 5, 6]);
        let c = dir.path().join("c.png");
        write_png(&c, &img).unwrap();
        assert_eq!(read_image(&c).unwrap(), img);
    }

    #[test]
    fn voc_palette_first_entries() {
        let p = voc_palette();
        assert_eq!(&p[0..3], &[0, 0, 0]);
        assert_eq!(&p[3..6], &[128, 0, 0]);
        assert_eq!(&p[6..9], &[0, 128, 0]);
        assert_eq!(&p[255 * 3..256 * 3], &[224, 224, 192]);
    }

    #[test]
    fn truncated_image_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let img = Image::new(8, 8, 3, 9);
        let bytes = encode_png(&img).unwrap();
        let f = dir.path().join("cut.png");
        std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
        let e = read_image(&f).unwrap_err().to_string();
        assert!(e.contains("cut.png"), "{e}");
    }
}
