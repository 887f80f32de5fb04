//! TIFF movies and images (multi-page TIFF as written by SerialEM, EPU and `tifffile`): every
//! page is one frame, `[frame, y, x]` as `f32`.
//!
//! Supported: grey-scale pages of unsigned 8/16/32-bit integers, signed 8/16/32-bit integers
//! or 32/64-bit floats; uncompressed, LZW, Deflate (zlib, also "Adobe Deflate") and PackBits;
//! strips or tiles (the `tiff` crate assembles both). Refused with an error naming the file,
//! the TIFF field and the fix: other compressions (JPEG, ZSTD, …), colour pages (RGB,
//! palette), pages of different sizes or sample types, and files that are not TIFF. EER
//! (electron-event) files are a different format and not read.

use crate::{Error, Result};
use ndarray::{Array2, Array3};
use std::path::Path;
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::{CompressionMethod, Tag};
use tiff::{ColorType, TiffError, TiffFormatError, TiffUnsupportedError};

/// What to do about a TIFF lamella cannot read.
const FIX: &str = "write the movie as an uncompressed, LZW or Deflate grey-scale TIFF, or \
                   convert it to MRC (e.g. IMOD `tif2mrc`)";

/// Read all pages of the TIFF `path` as `[page, y, x]` `f32` (module docs). Errors:
/// [`Error::Io`] when the file cannot be opened, [`Error::BadInput`] naming the file and the
/// field otherwise.
pub fn read_tiff(path: &Path) -> Result<Array3<f32>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut dec = Decoder::new(std::io::BufReader::new(file))
        .map_err(|e| tiff_error(path, 0, e))?
        .with_limits(Limits::unlimited());
    let mut data: Vec<f32> = Vec::new();
    let mut first: Option<(u32, u32, ColorType)> = None;
    let mut page = 0usize;
    loop {
        let (w, h) = dec.dimensions().map_err(|e| tiff_error(path, page, e))?;
        let comp = dec
            .find_tag_unsigned::<u16>(Tag::Compression)
            .map_err(|e| tiff_error(path, page, e))?
            .unwrap_or(1);
        // none, LZW, Adobe Deflate, PackBits, old Deflate
        if ![1u16, 5, 8, 32773, 32946].contains(&comp) {
            return Err(Error::bad_input(
                path,
                format!("page {page}: Compression"),
                format!(
                    "compression {comp} ({}) is not supported; {FIX}",
                    CompressionMethod::from_u16(comp)
                        .map_or("unknown".into(), |m| format!("{m:?}"))
                ),
            ));
        }
        let ct = dec.colortype().map_err(|e| tiff_error(path, page, e))?;
        if !matches!(ct, ColorType::Gray(_)) {
            return Err(Error::bad_input(
                path,
                format!("page {page}: PhotometricInterpretation/SamplesPerPixel"),
                format!(
                    "colour type {ct:?}: movies must be grey-scale (one sample per pixel); {FIX}"
                ),
            ));
        }
        match first {
            None => first = Some((w, h, ct)),
            Some((w0, h0, ct0)) if (w0, h0) != (w, h) || ct0 != ct => {
                return Err(Error::bad_input(
                    path,
                    format!("page {page}: ImageWidth/ImageLength/BitsPerSample"),
                    format!(
                        "{w}×{h} {ct:?} but page 0 is {w0}×{h0} {ct0:?}: every page of a movie \
                         must be a frame of the same size and type (remove thumbnails or \
                         other images from the file)"
                    ),
                ))
            }
            _ => {}
        }
        let img = dec.read_image().map_err(|e| tiff_error(path, page, e))?;
        let n = w as usize * h as usize;
        let before = data.len();
        push_f32(&mut data, img);
        if data.len() - before != n {
            return Err(Error::bad_input(
                path,
                format!("page {page}: StripByteCounts"),
                format!(
                    "decoded {} values for a {w}×{h} page: the file is truncated or damaged",
                    data.len() - before
                ),
            ));
        }
        page += 1;
        if !dec.more_images() {
            break;
        }
        dec.next_image().map_err(|e| tiff_error(path, page, e))?;
    }
    let (w, h, _) = first.expect("at least one page");
    Array3::from_shape_vec((page, h as usize, w as usize), data)
        .map_err(|e| Error::Runtime(format!("{}: TIFF pages to array: {e}", path.display())))
}

/// Read a single-page TIFF image `[y, x]` (a gain reference); errors as [`read_tiff`], and a
/// file with more than one page is refused.
pub fn read_tiff_image(path: &Path) -> Result<Array2<f32>> {
    let a = read_tiff(path)?;
    if a.dim().0 != 1 {
        return Err(Error::bad_input(
            path,
            "pages",
            format!(
                "{} pages: a gain reference must be one image (save only the gain image)",
                a.dim().0
            ),
        ));
    }
    Ok(a.index_axis_move(ndarray::Axis(0), 0))
}

/// Append the decoded samples as `f32`.
fn push_f32(out: &mut Vec<f32>, img: DecodingResult) {
    match img {
        DecodingResult::U8(v) => out.extend(v.into_iter().map(f32::from)),
        DecodingResult::U16(v) => out.extend(v.into_iter().map(f32::from)),
        DecodingResult::U32(v) => out.extend(v.into_iter().map(|x| x as f32)),
        DecodingResult::U64(v) => out.extend(v.into_iter().map(|x| x as f32)),
        DecodingResult::I8(v) => out.extend(v.into_iter().map(f32::from)),
        DecodingResult::I16(v) => out.extend(v.into_iter().map(f32::from)),
        DecodingResult::I32(v) => out.extend(v.into_iter().map(|x| x as f32)),
        DecodingResult::I64(v) => out.extend(v.into_iter().map(|x| x as f32)),
        DecodingResult::F16(v) => out.extend(v.into_iter().map(f32::from)),
        DecodingResult::F32(v) => out.extend(v),
        DecodingResult::F64(v) => out.extend(v.into_iter().map(|x| x as f32)),
    }
}

/// A `tiff` crate error as [`Error`]: I/O errors stay I/O errors; unsupported features and
/// format errors name the file, the page and the fix.
fn tiff_error(path: &Path, page: usize, e: TiffError) -> Error {
    let (field, what) = match &e {
        TiffError::IoError(io) => {
            return Error::io(path, std::io::Error::new(io.kind(), io.to_string()))
        }
        TiffError::UnsupportedError(u) => (
            match u {
                TiffUnsupportedError::UnsupportedCompressionMethod(_)
                | TiffUnsupportedError::UnknownCompressionMethod => "Compression",
                TiffUnsupportedError::UnsupportedSampleFormat(_) => "SampleFormat",
                TiffUnsupportedError::UnsupportedBitsPerChannel(_)
                | TiffUnsupportedError::InconsistentBitsPerSample(_) => "BitsPerSample",
                TiffUnsupportedError::UnsupportedPlanarConfig(_) => "PlanarConfiguration",
                TiffUnsupportedError::HorizontalPredictor(_)
                | TiffUnsupportedError::FloatingPointPredictor(_) => "Predictor",
                _ => "PhotometricInterpretation",
            },
            format!("unsupported TIFF: {e}"),
        ),
        TiffError::FormatError(TiffFormatError::TiffSignatureNotFound)
        | TiffError::FormatError(TiffFormatError::TiffSignatureInvalid) => {
            ("header", format!("not a TIFF file ({e})"))
        }
        _ => ("structure", format!("malformed TIFF: {e}")),
    };
    Error::bad_input(
        path,
        format!("page {page}: {field}"),
        format!("{what}; {FIX}"),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tiff::encoder::{colortype, Compression, TiffEncoder};

    /// Write `pages` as a multi-page uint16 TIFF (test fixture, `tiff` crate encoder).
    pub(crate) fn write_u16(path: &Path, pages: &Array3<f32>, lzw: bool) {
        let f = std::fs::File::create(path).unwrap();
        let mut enc = TiffEncoder::new(std::io::BufWriter::new(f))
            .unwrap()
            .with_compression(if lzw {
                Compression::Lzw
            } else {
                Compression::Uncompressed
            });
        let (_, ny, nx) = pages.dim();
        for p in pages.outer_iter() {
            let v: Vec<u16> = p.iter().map(|&x| x.round() as u16).collect();
            enc.write_image::<colortype::Gray16>(nx as u32, ny as u32, &v)
                .unwrap();
        }
    }

    #[test]
    fn round_trips_pages_and_refuses_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let a = Array3::from_shape_fn((3, 5, 7), |(f, y, x)| (f * 100 + y * 7 + x) as f32);
        for lzw in [false, true] {
            let p = d.path().join(format!("m{lzw}.tif"));
            write_u16(&p, &a, lzw);
            assert_eq!(read_tiff(&p).unwrap(), a);
        }
        let e = read_tiff_image(&d.path().join("mtrue.tif"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 pages"), "{e}");
        // mixed page sizes
        let p = d.path().join("mixed.tif");
        {
            let f = std::fs::File::create(&p).unwrap();
            let mut enc = TiffEncoder::new(f).unwrap();
            enc.write_image::<colortype::Gray8>(4, 4, &[0u8; 16])
                .unwrap();
            enc.write_image::<colortype::Gray8>(2, 2, &[0u8; 4])
                .unwrap();
        }
        let e = read_tiff(&p).unwrap_err().to_string();
        assert!(
            e.contains("mixed.tif") && e.contains("page 1") && e.contains("same size"),
            "{e}"
        );
        // colour
        let p = d.path().join("rgb.tif");
        {
            let f = std::fs::File::create(&p).unwrap();
            let mut enc = TiffEncoder::new(f).unwrap();
            enc.write_image::<colortype::RGB8>(2, 2, &[0u8; 12])
                .unwrap();
        }
        let e = read_tiff(&p).unwrap_err().to_string();
        assert!(e.contains("grey-scale"), "{e}");
        // not a TIFF
        let p = d.path().join("junk.tif");
        std::fs::write(&p, b"this is not a tiff file at all").unwrap();
        let e = read_tiff(&p).unwrap_err().to_string();
        assert!(e.contains("junk.tif") && e.contains("MRC"), "{e}");
    }
}
