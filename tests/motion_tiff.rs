//! TIFF movies written by Python's `tifffile` read by `motion::movie::read_movie` exactly as
//! the numpy data (uint8 / uint16 / float32; uncompressed, LZW, Deflate; strips and tiles),
//! and TIFFs lamella cannot read refused with the file, the TIFF field and a fix.

mod common;

use lamella::motion::movie::read_movie;
use ndarray::Array3;

/// Writes every case as `<dir>/<name>.tif` plus the numpy data as raw little-endian float32
/// `<dir>/<name>.f32`; prints `name nf ny nx` per case.
const WRITE: &str = r#"
import sys, numpy as np, tifffile
d = sys.argv[1]
rng = np.random.default_rng(5)
shape = (4, 48, 40)
cases = {
    "u8_lzw": (rng.integers(0, 256, shape).astype(np.uint8), dict(compression="lzw")),
    "u16_raw": (rng.integers(0, 65536, shape).astype(np.uint16), dict()),
    "u16_lzw": (rng.poisson(2.0, shape).astype(np.uint16), dict(compression="lzw")),
    "u16_tiled": (rng.integers(0, 4096, shape).astype(np.uint16), dict(tile=(16, 16))),
    "f32_deflate": (rng.normal(1.0, 3.0, shape).astype(np.float32), dict(compression="zlib")),
    "f32_raw": (rng.normal(0.0, 1.0, shape).astype(np.float32), dict()),
}
for name, (a, kw) in cases.items():
    tifffile.imwrite(f"{d}/{name}.tif", a, photometric="minisblack", **kw)
    a.astype("<f4").tofile(f"{d}/{name}.f32")
    print(name, *a.shape)
tifffile.imwrite(f"{d}/jpeg.tif", rng.integers(0, 256, shape).astype(np.uint8), compression="jpeg", photometric="minisblack")
tifffile.imwrite(f"{d}/zstd.tif", rng.integers(0, 256, shape).astype(np.uint16), compression="zstd", photometric="minisblack")
with tifffile.TiffWriter(f"{d}/mixed.tif") as w:
    w.write(np.zeros((32, 32), np.uint16))
    w.write(np.zeros((16, 16), np.uint16))
"#;

#[test]
fn reads_tifffile_movies_exactly() {
    let Some(py) = common::python("reads_tifffile_movies_exactly") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let out = common::run_python(&py, WRITE, &[d.path().to_str().unwrap()]);
    let mut n = 0;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let dims: Vec<usize> = f[1..].iter().map(|s| s.parse().unwrap()).collect();
        let raw = std::fs::read(d.path().join(format!("{}.f32", f[0]))).unwrap();
        let want: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let want = Array3::from_shape_vec((dims[0], dims[1], dims[2]), want).unwrap();
        let got = read_movie(&d.path().join(format!("{}.tif", f[0])))
            .unwrap_or_else(|e| panic!("{}: {e}", f[0]));
        assert_eq!(got, want, "{}", f[0]);
        n += 1;
    }
    assert_eq!(n, 6);
    for (name, field) in [
        ("jpeg", "Compression"),
        ("zstd", "Compression"),
        ("mixed", "page 1"),
    ] {
        let e = read_movie(&d.path().join(format!("{name}.tif")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{name}.tif")) && e.contains(field) && e.contains("MRC")
                || name == "mixed" && e.contains("same size"),
            "{name}: {e}"
        );
        eprintln!("{name}: {e}");
    }
}
