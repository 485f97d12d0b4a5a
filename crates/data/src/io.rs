//! File helpers: atomic writes and image / label-map decoding with errors that name the file.
use crate::error::{Error, Result};
use crate::sample::{Image, Plane};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// crash leaves either the old file or the new one, never a torn one. The temporary is
/// locked while it is written: one nobody holds was left by a dead writer (see
/// [`remove_stale_temporaries`]).
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
    let write = || -> std::io::Result<std::fs::File> {
        let mut f = std::fs::File::create(&tmp)?;
        // Best effort: a file system without locks still gets its atomic write.
        let _ = f.lock();
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(f)
    };
    let held = write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(&tmp, e)
    })?;
    let r = std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    });
    drop(held);
    r
}

/// Whether `file` is named as a temporary of [`write_atomic`]: `.{name}.{pid}.tmp`.
fn is_temporary(file: &str) -> bool {
    let Some(rest) = file.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp")) else {
        return false;
    };
    rest.rsplit_once('.')
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporaries of [`write_atomic`] in `dir` (not below it) that no writer holds:
/// those a killed process left. Safe while other processes write into the folder.
pub fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if !entry.file_name().to_str().is_some_and(is_temporary) {
            continue;
        }
        let p = entry.path();
        // Gone already (renamed by its writer) or held: not stale.
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) else {
            continue;
        };
        if f.try_lock().is_ok() {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&p, e)),
                _ => {}
            }
        }
    }
    Ok(())
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

/// Images with more pixels are refused before decoding: PIL's decompression-bomb limit
/// (twice `Image.MAX_IMAGE_PIXELS`), so 20000 x 20000 is refused, 13000 x 13000 read.
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;
/// Image files larger than this are refused before they are read.
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;
/// JSON files larger than this are refused before they are read, unless the environment
/// variable `PUPIL_MAX_JSON_BYTES` sets another limit.
pub const MAX_JSON_BYTES: u64 = 1 << 30;

/// The JSON size limit: [`MAX_JSON_BYTES`] or `PUPIL_MAX_JSON_BYTES`.
pub fn max_json_bytes() -> u64 {
    std::env::var("PUPIL_MAX_JSON_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(MAX_JSON_BYTES)
}

/// Reads a whole file after checking its size against `limit`, so an oversized file is
/// refused before anything is allocated for it.
pub fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > limit {
        return Err(Error::invalid(
            path,
            "file size",
            format!("{len} bytes is more than the {limit} bytes allowed for {what}"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    use std::io::Read;
    // `take`: a file that grows while it is read still stops at the limit.
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::invalid(
            path,
            "file size",
            format!("grew past {limit} bytes while read"),
        ));
    }
    Ok(bytes)
}

/// Reads and parses a JSON file; errors name the file, line and column. Files above
/// [`max_json_bytes`] are refused before they are read.
pub fn read_json<T: serde::de::DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    parse_json(&read_json_bytes(path)?, path)
}

/// A JSON file's bytes, refused above [`max_json_bytes`] before it is read.
pub fn read_json_bytes(path: &Path) -> Result<Vec<u8>> {
    read_limited(path, max_json_bytes(), "a JSON file (PUPIL_MAX_JSON_BYTES)")
}

/// Parses JSON bytes; `path` names the source in errors.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::json(path, &e))
}

/// Loads a JPEG or PNG as gray (1 channel) or RGB (3 channels); alpha is dropped, 16-bit
/// samples are reduced to 8 bits.
pub fn read_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let bytes = read_limited(path, MAX_IMAGE_FILE_BYTES, "an image")?;
    decode_image(&bytes, path)
}

/// Decodes image bytes; `path` is only used in error messages. Images above
/// [`MAX_IMAGE_PIXELS`] are refused from their header, before decoding; a JPEG whose data
/// ends before its last scan does is an error (as PIL's "image file is truncated").
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::image(path, e))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        jpeg_complete(bytes).map_err(|m| Error::image(path, m))?;
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 4);
    reader.limits(limits);
    let dec = reader.into_decoder().map_err(|e| Error::image(path, e))?;
    check_pixels(image::ImageDecoder::dimensions(&dec), path)?;
    let img = image::DynamicImage::from_decoder(dec).map_err(|e| Error::image(path, e))?;
    Ok(to_image(img))
}

/// Refuses sizes above [`MAX_IMAGE_PIXELS`].
fn check_pixels((w, h): (u32, u32), path: &Path) -> Result<()> {
    if w as u64 * h as u64 > MAX_IMAGE_PIXELS {
        return Err(Error::image(
            path,
            format!("{w}x{h} is more than the {MAX_IMAGE_PIXELS} pixels allowed"),
        ));
    }
    Ok(())
}

fn to_image(img: image::DynamicImage) -> Image {
    match img {
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
    }
}

/// Walks a JPEG's marker segments and entropy-coded scans up to its EOI marker; an error
/// when the data ends first. The decoder itself pads a cut scan with gray silently.
fn jpeg_complete(b: &[u8]) -> std::result::Result<(), &'static str> {
    let mut i = 2; // after SOI
    loop {
        // Next marker: 0xFF, fill bytes, then the code (stray bytes skipped, as libjpeg).
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&m) = b.get(i) else {
            return Err("the JPEG data ends before its end-of-image marker (truncated file)");
        };
        i += 1;
        match m {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD8 | 0x00 => continue,
            _ => {}
        }
        let len = match b.get(i..i + 2) {
            Some(l) => u16::from_be_bytes([l[0], l[1]]) as usize,
            None => return Err("the JPEG data ends inside a marker segment (truncated file)"),
        };
        i += len;
        if i > b.len() {
            return Err("the JPEG data ends inside a marker segment (truncated file)");
        }
        if m == 0xDA {
            // Entropy-coded data: runs to the next marker that is not a stuffed 0xFF00 or
            // a restart marker.
            loop {
                let Some(k) = b[i..].iter().position(|&x| x == 0xFF) else {
                    i = b.len();
                    break;
                };
                i += k;
                if i + 1 >= b.len() || !matches!(b[i + 1], 0x00 | 0xD0..=0xD7) {
                    break;
                }
                i += 2;
            }
        }
    }
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
    let bytes = read_limited(path, MAX_IMAGE_FILE_BYTES, "a label map")?;
    decode_label_png(&bytes, path)
}

/// Decodes label map PNG bytes (see [`read_label_png`]); `path` names them in errors.
pub fn decode_label_png(bytes: &[u8], path: &Path) -> Result<Plane> {
    let limits = png::Limits {
        bytes: MAX_IMAGE_PIXELS as usize,
    };
    let mut dec = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| Error::image(path, e))?;
    let (w, h) = (reader.info().width, reader.info().height);
    check_pixels((w, h), path)?;
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
    let stride = info.line_size;
    match (color, depth) {
        (png::ColorType::Grayscale | png::ColorType::Indexed, png::BitDepth::Eight) => {
            let mut data = Vec::with_capacity(w * h);
            for y in 0..h {
                data.extend_from_slice(&buf[y * stride..y * stride + w]);
            }
            Ok(Plane::from_raw(w, h, data))
        }
        (png::ColorType::Indexed, d) if (d as u8) < 8 => Ok(Plane::from_raw(
            w,
            h,
            unpack_indices(&buf, (w, h), stride, d as usize),
        )),
        (c, d) => Err(Error::image(
            path,
            format!("a label map must be an 8-bit gray or palette PNG, found {c:?} {d:?}"),
        )),
    }
}

/// Packed palette indices (1, 2 or 4 bits) as one byte each.
fn unpack_indices(buf: &[u8], (w, h): (usize, usize), stride: usize, bits: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(w * h);
    for y in 0..h {
        let row = &buf[y * stride..(y + 1) * stride];
        for x in 0..w {
            let bit = x * bits;
            let shift = 8 - bits - (bit % 8);
            data.push((row[bit / 8] >> shift) & ((1 << bits) - 1) as u8);
        }
    }
    data
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
