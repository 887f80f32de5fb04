//! MRC reader/writer against real files in shared/data and against Python's mrcfile.

mod common;

use lamella::io::mrc::{self, MrcKind};
use ndarray::{s, Array3};
use std::path::{Path, PathBuf};

fn all_mrc_files() -> Vec<PathBuf> {
    common::files_with_ext(&common::shared_data(), &[".mrc", ".mrcs", ".map", ".st"])
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Expected pixel size (Å) for files whose pixel size is documented in shared/data/README.md.
fn expected_pixel(p: &Path) -> Option<f32> {
    let s = p.to_string_lossy();
    if s.contains("warptools-ribosome-particles") {
        Some(12.0)
    } else if s.contains("/templates/") {
        Some(10.0)
    } else if s.ends_with("sim-independent/tilt_series.mrc") {
        Some(6.0)
    } else if s.ends_with("EMD-3197.map") {
        Some(11.4)
    } else if s.ends_with("serialem-multitilt/test_000.mrc") {
        Some(7.88)
    } else {
        None
    }
}

#[test]
fn reads_every_shared_mrc() {
    let files = all_mrc_files();
    assert!(
        files.len() >= 60,
        "expected the shared MRC files, found {}",
        files.len()
    );
    let mut modes = std::collections::BTreeSet::new();
    for p in &files {
        let m = mrc::read(p).unwrap_or_else(|e| panic!("{e}"));
        let h = &m.header;
        assert!(h.nx > 0 && h.ny > 0 && h.nz > 0, "{}", p.display());
        assert_eq!(m.data.dim(), (h.nz, h.ny, h.nx), "{}", p.display());
        assert_eq!(m.data.len(), h.nx * h.ny * h.nz);
        assert!(m.data.iter().all(|v| v.is_finite()), "{}", p.display());
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len >= h.data_offset() + h.data_bytes());
        let sd = {
            let mean = m.data.mean().unwrap();
            (m.data.mapv(|v| (v - mean).powi(2)).mean().unwrap()).sqrt()
        };
        assert!(sd > 0.0, "{}: constant data", p.display());
        if let Some(px) = expected_pixel(p) {
            let got = h.pixel_size_a();
            assert!(
                (got[0] - px).abs() < 0.01 && (got[1] - px).abs() < 0.01,
                "{}: pixel {got:?}, expected {px}",
                p.display()
            );
        }
        modes.insert(h.mode);
    }
    // The shared data cover float32, int16 (SerialEM) and float16 (WarpTools).
    assert!(
        modes.contains(&1) && modes.contains(&2) && modes.contains(&12),
        "{modes:?}"
    );
}

#[test]
fn warptools_float16_stacks() {
    let dir = common::shared_data().join("real/warptools-ribosome-particles");
    let files = common::files_with_ext(&dir, &[".mrcs"]);
    assert_eq!(files.len(), 40);
    for p in &files {
        let m = mrc::read(p).unwrap();
        assert_eq!(m.header.mode, 12);
        assert_eq!(m.data.dim(), (37, 32, 32));
        // Normalised particle images: mean ~0, sd ~0.5, values within a few sd.
        let mean = m.data.mean().unwrap();
        let sd = (m.data.mapv(|v| (v - mean).powi(2)).mean().unwrap()).sqrt();
        assert!(mean.abs() < 0.05, "{}: mean {mean}", p.display());
        assert!(sd > 0.2 && sd < 2.0, "{}: sd {sd}", p.display());
        assert!(m.data.iter().all(|v| v.abs() < 20.0));
    }
    // Numbers measured with mrcfile for one stack.
    let p = dir.join(
        "warptools_test_4-tomos_10-ptcls_box-32_angpix-12/Unt_050/Unt_050_12.00A_000001.mrcs",
    );
    let d = mrc::read(&p).unwrap().data;
    let lo = d.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = d.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((lo, hi), (-3.125, 3.136_718_8));
}

#[test]
fn serialem_int16_with_extended_header() {
    let p = common::shared_data().join("formats/serialem-multitilt/test_000.mrc");
    let m = mrc::read(&p).unwrap();
    assert_eq!(m.header.mode, 1);
    assert_eq!(m.header.nsymbt, 5120);
    assert_eq!(&m.header.exttyp, b"SERI");
    assert_eq!(m.data.dim(), (2, 1024, 1024));
    let mean = m.data.iter().map(|&v| v as f64).sum::<f64>() / m.data.len() as f64;
    assert!((mean - 4069.2794728).abs() < 1e-6, "{mean}");
}

#[test]
fn read_sections_matches_read() {
    for rel in [
        "sim-independent/tilt_series.mrc",
        "formats/serialem-multitilt/test_000.mrc",
        "real/warptools-ribosome-particles/warptools_test_4-tomos_10-ptcls_box-32_angpix-12/Unt_076/Unt_076_12.00A_000003.mrcs",
    ] {
        let p = common::shared_data().join(rel);
        let full = mrc::read(&p).unwrap().data;
        let nz = full.dim().0;
        for (z0, z1) in [(0, 1), (nz / 2, nz), (0, nz), (nz - 1, nz)] {
            let part = mrc::read_sections(&p, z0, z1).unwrap();
            assert_eq!(part, full.slice(s![z0..z1, .., ..]), "{rel} [{z0},{z1})");
        }
    }
}

#[test]
fn truncated_real_file_refused() {
    let src = common::shared_data().join("sim-independent/tilt_series.mrc");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut_tilt_series.mrc");
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    for e in [
        mrc::read(&p).unwrap_err(),
        mrc::read_header(&p).unwrap_err(),
        mrc::read_sections(&p, 0, 1).unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(msg.contains("cut_tilt_series.mrc"), "{msg}");
        assert!(msg.contains(&format!("{}", bytes.len())), "{msg}");
        assert!(msg.contains(&format!("{}", bytes.len() - 1000)), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
        assert_eq!(e.exit_code(), 3);
    }
}

#[test]
fn mode_99_refused() {
    let src = common::shared_data().join("real/emdb/EMD-3197.map");
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[12..16].copy_from_slice(&99i32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mode99.map");
    std::fs::write(&p, &bytes).unwrap();
    let msg = mrc::read(&p).unwrap_err().to_string();
    assert!(
        msg.contains("mode99.map") && msg.contains("mode = 99"),
        "{msg}"
    );
}

fn test_volume() -> Array3<f32> {
    Array3::from_shape_fn((6, 10, 12), |(z, y, x)| {
        ((x as f32 * 0.7).sin() + (y as f32 * 0.3).cos()) * (z as f32 + 1.0) - 0.25
    })
}

#[test]
fn written_files_pass_mrcfile_validate() {
    let Some(py) = common::python("written_files_pass_mrcfile_validate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = test_volume();
    let vol = dir.path().join("vol.mrc");
    let stack = dir.path().join("stack.mrcs");
    mrc::write(&vol, a.view(), 3.5, MrcKind::Volume).unwrap();
    mrc::write(&stack, a.view(), 3.5, MrcKind::ImageStack).unwrap();
    let code = r#"
import sys, io, mrcfile, numpy as np
for path, kind in ((sys.argv[1], "volume"), (sys.argv[2], "stack")):
    buf = io.StringIO()
    ok = mrcfile.validate(path, print_file=buf)
    with mrcfile.open(path) as m:
        d = m.data
        vs = m.voxel_size
        print(kind, ok, m.is_volume(), m.is_image_stack(), d.shape, float(vs.x), float(vs.z),
              float(np.abs(d.astype(np.float64)).sum()), repr(buf.getvalue()))
"#;
    let out = common::run_python(&py, code, &[path_str(&vol), path_str(&stack)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let abs_sum: f64 = a.iter().map(|&v| v.abs() as f64).sum();
    for (line, kind) in lines.iter().zip(["volume", "stack"]) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], kind);
        assert_eq!(f[1], "True", "mrcfile.validate failed: {line}");
        let (is_vol, is_stack) = (f[2] == "True", f[3] == "True");
        assert_eq!(
            (is_vol, is_stack),
            (kind == "volume", kind == "stack"),
            "{line}"
        );
        assert!(line.contains("(6, 10, 12)"), "{line}");
        assert_eq!(f[7].parse::<f64>().unwrap(), 3.5);
        assert_eq!(f[8].parse::<f64>().unwrap(), 3.5);
        let s: f64 = f[9].parse().unwrap();
        assert!((s - abs_sum).abs() < 1e-6 * abs_sum, "{s} vs {abs_sum}");
    }
}

/// Files written by mrcfile in modes 0, 1, 2, 6, 12 (and big-endian) read back exactly.
#[test]
fn reads_mrcfile_written_modes() {
    let Some(py) = common::python("reads_mrcfile_written_modes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let code = r#"
import sys, os, mrcfile, numpy as np
d = sys.argv[1]
base = (np.arange(3*4*5).reshape(3, 4, 5) * 1.5 - 20)
for name, dt in (("m0", np.int8), ("m1", np.int16), ("m2", np.float32), ("m6", np.uint16),
                 ("m12", np.float16), ("be2", ">f4"), ("be1", ">i2")):
    a = base.copy()
    if name == "m6":
        a = a + 30
    a = a.astype(dt)
    with mrcfile.new(os.path.join(d, name + ".mrc"), overwrite=True) as m:
        m.set_data(a)
        m.voxel_size = 2.0
    np.ascontiguousarray(a, dtype="<f4").tofile(os.path.join(d, name + ".f32"))
print("ok")
"#;
    let out = common::run_python(&py, code, &[path_str(dir.path())]);
    assert!(out.contains("ok"));
    for (name, mode, le) in [
        ("m0", 0, true),
        ("m1", 1, true),
        ("m2", 2, true),
        ("m6", 6, true),
        ("m12", 12, true),
        ("be2", 2, false),
        ("be1", 1, false),
    ] {
        let m = mrc::read(&dir.path().join(format!("{name}.mrc"))).unwrap();
        assert_eq!(m.header.mode, mode, "{name}");
        assert_eq!(m.header.little_endian, le, "{name}");
        assert_eq!(m.header.pixel_size_a(), [2.0; 3], "{name}");
        let want: Vec<f32> = std::fs::read(dir.path().join(format!("{name}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(m.data.dim(), (3, 4, 5));
        assert_eq!(m.data.as_slice().unwrap(), &want[..], "{name}");
    }
}

/// Every shared MRC file decodes to exactly what mrcfile reads.
#[test]
fn shared_files_match_mrcfile() {
    let Some(py) = common::python("shared_files_match_mrcfile") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = all_mrc_files();
    let code = r#"
import sys, os, warnings, mrcfile, numpy as np
warnings.simplefilter("ignore")
out = sys.argv[1]
for i, f in enumerate(sys.argv[2:]):
    with mrcfile.open(f, permissive=True) as m:
        np.ascontiguousarray(m.data, dtype="<f4").tofile(os.path.join(out, f"{i}.f32"))
print("ok")
"#;
    let mut args = vec![path_str(dir.path())];
    args.extend(files.iter().map(|p| path_str(p)));
    common::run_python(&py, code, &args);
    for (i, p) in files.iter().enumerate() {
        let want = std::fs::read(dir.path().join(format!("{i}.f32"))).unwrap();
        let got = mrc::read(p).unwrap().data;
        let got_bytes: Vec<u8> = got.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(
            got_bytes == want,
            "{}: data differ from mrcfile's",
            p.display()
        );
    }
}
