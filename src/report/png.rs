//! Minimal PNG encoder for 8-bit grayscale and RGB images.
//!
//! The rows (filter type 0) are deflate-compressed into one zlib stream (RFC 1950/1951) by
//! `miniz_oxide`; chunk framing and CRC-32 are written here. Charts of flat colours shrink
//! 20-50x against stored blocks, which keeps the self-contained HTML report small.

use std::sync::OnceLock;

/// PNG file signature (PNG spec §5.2).
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// CRC-32 (ISO 3309 / ITU-T V.42, reflected polynomial 0xEDB88320) lookup table, built once.
fn crc_table() -> &'static [u32; 256] {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (n, entry) in t.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        t
    })
}

/// Continue a CRC-32 over `bytes` from the running (pre-inverted) register `crc`.
fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    let t = crc_table();
    for &b in bytes {
        crc = t[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-32 of `bytes` as used by PNG chunks and zlib's `crc32`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, bytes) ^ 0xFFFF_FFFF
}

/// Deflate level of the IDAT stream (miniz_oxide 0-10; 6 is zlib's default speed/size balance).
const DEFLATE_LEVEL: u8 = 6;

/// Wrap `data` in a compressed zlib stream (RFC 1950: header, deflate data, Adler-32).
pub fn zlib_compress(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, DEFLATE_LEVEL)
}

/// Append one PNG chunk: length (BE), type, data, CRC-32 over type + data.
fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32_update(crc32_update(0xFFFF_FFFF, kind), data) ^ 0xFFFF_FFFF;
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encode an 8-bit grayscale image as a PNG file in memory.
///
/// `pixels` holds `height` rows of `width` bytes, row-major, the first row being the TOP row
/// of the picture (PNG order). Output: signature, IHDR (bit depth 8, colour type 0, no
/// interlace), one IDAT with a compressed zlib stream over the rows, each prefixed with filter
/// byte 0, and IEND. CRC-32 per chunk is computed here (table built at first use).
///
/// # Panics
/// If `pixels.len() != width * height`, or `width`/`height` is 0 or above 2^31 − 1 (the PNG
/// limits): these are caller bugs; [`crate::report::write_png`] checks them and returns errors.
pub fn encode_gray8(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    encode(width, height, 1, pixels)
}

/// Encode an 8-bit RGB picture as PNG: as [`encode_gray8`] with 3 bytes (R, G, B) per pixel
/// (`pixels.len() == 3·width·height`, colour type 2).
///
/// # Panics
/// As [`encode_gray8`].
pub fn encode_rgb8(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    encode(width, height, 3, pixels)
}

/// The encoder behind [`encode_gray8`] (1 channel) and [`encode_rgb8`] (3 channels).
fn encode(width: usize, height: usize, channels: usize, pixels: &[u8]) -> Vec<u8> {
    assert!(
        png_dims_ok(width, height),
        "png: image size {width} x {height} is outside PNG limits 1..=2^31-1"
    );
    assert_eq!(
        pixels.len(),
        width * height * channels,
        "png: {} bytes given for a {width} x {height} image of {channels} channel(s)",
        pixels.len()
    );
    let stride = width * channels;
    let mut raw = Vec::with_capacity((stride + 1) * height);
    for row in pixels.chunks_exact(stride) {
        raw.push(0); // filter type 0 (None)
        raw.extend_from_slice(row);
    }
    let idat = zlib_compress(&raw);
    let colour_type = if channels == 3 { 2 } else { 0 };

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, colour_type, 0, 0, 0]); // depth 8, deflate, filter 0, no interlace

    let mut out = Vec::with_capacity(idat.len() + 64);
    out.extend_from_slice(&PNG_SIGNATURE);
    push_chunk(&mut out, b"IHDR", &ihdr);
    push_chunk(&mut out, b"IDAT", &idat);
    push_chunk(&mut out, b"IEND", &[]);
    out
}

/// Whether `width` x `height` is a valid PNG size (each in 1..=2^31-1).
pub fn png_dims_ok(width: usize, height: usize) -> bool {
    const MAX: usize = (1 << 31) - 1;
    (1..=MAX).contains(&width) && (1..=MAX).contains(&height)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent bitwise CRC-32 (no table), to check the table-driven one.
    fn crc32_bitwise(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                let mask = (c & 1).wrapping_neg();
                c = (c >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
        !c
    }

    /// Parse a PNG into (type, data) chunks, asserting the signature and every CRC.
    fn parse_chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        assert_eq!(&png[..8], &PNG_SIGNATURE);
        let mut pos = 8;
        let mut chunks = Vec::new();
        while pos < png.len() {
            let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = png[pos + 4..pos + 8].try_into().unwrap();
            let data = png[pos + 8..pos + 8 + len].to_vec();
            let crc = u32::from_be_bytes(png[pos + 8 + len..pos + 12 + len].try_into().unwrap());
            assert_eq!(
                crc,
                crc32_bitwise(&png[pos + 4..pos + 8 + len]),
                "CRC of {kind:?}"
            );
            chunks.push((kind, data));
            pos += 12 + len;
        }
        assert_eq!(pos, png.len());
        chunks
    }

    /// Inflate a zlib stream with an independent decoder path (miniz's inflate checks the
    /// header and the Adler-32 trailer).
    fn inflate(z: &[u8]) -> Vec<u8> {
        assert_eq!(z[0] & 0x0F, 8, "CM = deflate");
        assert_eq!((z[0] as u32 * 256 + z[1] as u32) % 31, 0, "FCHECK");
        miniz_oxide::inflate::decompress_to_vec_zlib(z).expect("valid zlib stream")
    }

    #[test]
    fn crc_matches_known_value_and_bitwise_version() {
        // Published check value: CRC-32("123456789") = 0xCBF43926.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert_eq!(crc32(&big), crc32_bitwise(&big));
    }

    #[test]
    fn png_structure_and_rows_round_trip() {
        // 300 x 500 => 301 * 500 = 150500 raw bytes (more than one deflate block).
        let (w, h) = (300usize, 500usize);
        let pixels: Vec<u8> = (0..w * h).map(|i| ((i % w) + 3 * (i / w)) as u8).collect();
        let png = encode_gray8(w, h, &pixels);
        let chunks = parse_chunks(&png);
        let kinds: Vec<&[u8; 4]> = chunks.iter().map(|c| &c.0).collect();
        assert_eq!(kinds, vec![b"IHDR", b"IDAT", b"IEND"]);
        let ihdr = &chunks[0].1;
        assert_eq!(u32::from_be_bytes(ihdr[0..4].try_into().unwrap()), w as u32);
        assert_eq!(u32::from_be_bytes(ihdr[4..8].try_into().unwrap()), h as u32);
        assert_eq!(&ihdr[8..], &[8, 0, 0, 0, 0]);
        assert!(chunks[2].1.is_empty());
        let raw = inflate(&chunks[1].1);
        assert_eq!(raw.len(), (w + 1) * h);
        for (y, row) in raw.chunks_exact(w + 1).enumerate() {
            assert_eq!(row[0], 0, "filter byte of row {y}");
            assert_eq!(&row[1..], &pixels[y * w..(y + 1) * w]);
        }
    }

    #[test]
    fn flat_charts_compress_and_tiny_images_round_trip() {
        // A 640 x 400 RGB chart of flat colours compresses far below its raw size.
        let (w, h) = (640usize, 400usize);
        let pixels: Vec<u8> = (0..w * h * 3)
            .map(|i| if (i / 3 / w) % 40 == 0 { 0 } else { 255 })
            .collect();
        let png = encode_rgb8(w, h, &pixels);
        assert!(png.len() * 20 < pixels.len(), "{} bytes", png.len());
        let chunks = parse_chunks(&png);
        let raw = inflate(&chunks[1].1);
        assert_eq!(raw.len(), (3 * w + 1) * h);
        assert_eq!(inflate(&zlib_compress(&[])), Vec::<u8>::new());
        // 1 x 1 image.
        let png = encode_gray8(1, 1, &[200]);
        let chunks = parse_chunks(&png);
        assert_eq!(inflate(&chunks[1].1), vec![0, 200]);
    }

    #[test]
    #[should_panic(expected = "bytes given")]
    fn wrong_pixel_count_panics() {
        encode_gray8(4, 4, &[0; 15]);
    }
}
