//! PNG interop: the PNGs written by `lamella::report` are decoded by Python's standard
//! library (`zlib`, `struct`) independently of our code: chunk CRCs verify, IDAT inflates
//! to the expected filtered rows, and the y flip / percentile mapping holds.

mod common;

use lamella::report::{png::encode_gray8, write_png};
use ndarray::Array2;

/// Python: parse the PNG, verify signature, every chunk CRC (zlib.crc32), IHDR, inflate the
/// concatenated IDAT data with zlib.decompress, check every filter byte is 0, and print the
/// image as "w h" then one line of space-separated pixel values per row (top row first).
const DECODE: &str = r#"
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'signature'
pos, idat, kinds = 8, b'', []
while pos < len(data):
    (n,) = struct.unpack('>I', data[pos:pos + 4])
    kind = data[pos + 4:pos + 8]
    body = data[pos + 8:pos + 8 + n]
    (crc,) = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
    assert zlib.crc32(kind + body) & 0xffffffff == crc, 'CRC of %r' % kind
    kinds.append(kind)
    if kind == b'IHDR':
        w, h, depth, ctype, comp, filt, inter = struct.unpack('>IIBBBBB', body)
        assert (depth, ctype, comp, filt, inter) == (8, 0, 0, 0, 0)
    if kind == b'IDAT':
        idat += body
    pos += 12 + n
assert pos == len(data)
assert kinds[0] == b'IHDR' and kinds[-1] == b'IEND' and b'IDAT' in kinds, kinds
raw = zlib.decompress(idat)
assert len(raw) == h * (w + 1), (len(raw), w, h)
print(w, h)
for y in range(h):
    row = raw[y * (w + 1):(y + 1) * (w + 1)]
    assert row[0] == 0, 'filter byte'
    print(' '.join(str(b) for b in row[1:]))
"#;

fn decode(py: &std::path::Path, png: &std::path::Path) -> (usize, usize, Vec<Vec<u8>>) {
    let out = common::run_python(py, DECODE, &[png.to_str().unwrap()]);
    let mut lines = out.lines();
    let mut wh = lines.next().unwrap().split_whitespace();
    let w: usize = wh.next().unwrap().parse().unwrap();
    let h: usize = wh.next().unwrap().parse().unwrap();
    let rows = lines
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    (w, h, rows)
}

#[test]
fn gradient_png_decodes_with_python_zlib() {
    let Some(py) = common::python("gradient_png_decodes_with_python_zlib") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 300 x 260: 301 * 260 = 78260 raw bytes, deflate-compressed.
    let (w, h) = (300usize, 260usize);
    let pixel = |x: usize, y: usize| ((x + 2 * y) % 256) as u8;
    let pixels: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| pixel(x, y)))
        .collect();
    let p = dir.path().join("gradient.png");
    std::fs::write(&p, encode_gray8(w, h, &pixels)).unwrap();
    let (dw, dh, rows) = decode(&py, &p);
    assert_eq!((dw, dh), (w, h));
    assert_eq!(rows.len(), h);
    for (y, row) in rows.iter().enumerate() {
        let want: Vec<u8> = (0..w).map(|x| pixel(x, y)).collect();
        assert_eq!(row, &want, "row {y}");
    }
}

#[test]
fn write_png_flips_y_and_clips_percentiles() {
    let Some(py) = common::python("write_png_flips_y_and_clips_percentiles") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // img[y, x] = y (0..=100) over 3 columns; clip (10, 90): y <= 10 -> 0, y >= 90 -> 255.
    let img = Array2::from_shape_fn((101, 3), |(y, _)| y as f32);
    let p = dir.path().join("sub/ramp.png");
    write_png(&p, img.view(), (10.0, 90.0)).unwrap();
    let (w, h, rows) = decode(&py, &p);
    assert_eq!((w, h), (3, 101));
    for (r, row) in rows.iter().enumerate() {
        let y = 100 - r; // top picture row = highest y
        let want = (((y as f64 - 10.0) / 80.0).clamp(0.0, 1.0) * 255.0).round() as u8;
        assert_eq!(row, &vec![want; 3], "picture row {r} (y = {y})");
    }
}
