//! `lamella reconstruct` end to end: SIRT stopped (as by SIGTERM) and resumed with
//! `--resume` writes the same file as an uninterrupted run; several binnings and a memory
//! budget that forces slabs along Y.

mod common;

use lamella::core::geometry::TiltSeriesGeometry;
use lamella::io::mrc::{self, MrcKind};
use std::path::Path;
use std::process::{Command, Output};

const PIX: f64 = 5.0;
const BLOBS: [[f64; 3]; 3] = [[-9.3, 7.4, 3.6], [8.7, -10.2, -3.3], [1.2, 12.6, 0.4]];

fn lamella() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lamella"));
    c.env_remove("RUST_LOG")
        .env_remove("LAMELLA_STOP_AFTER_ITERATIONS");
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A 25-tilt stack of 48² px (axis 85°, no shifts: the .tlt carries the angles only).
fn write_inputs(dir: &Path) {
    let angles: Vec<f64> = (0..25).map(|i| -60.0 + 5.0 * i as f64).collect();
    let g = TiltSeriesGeometry::from_angles(48, 48, PIX, &angles, 85.0);
    let st = common::project_gaussian_blobs(&g, &BLOBS, 2.5).mapv(|l| 1.0 - 0.02 * l);
    mrc::write(
        &dir.join("ts.mrc"),
        st.view(),
        PIX as f32,
        MrcKind::ImageStack,
    )
    .unwrap();
    let tlt: String = angles.iter().map(|a| format!("{a:.2}\n")).collect();
    std::fs::write(dir.join("ts.tlt"), tlt).unwrap();
}

fn base(dir: &Path) -> Command {
    let mut c = lamella();
    c.arg("reconstruct")
        .arg("--stack")
        .arg(dir.join("ts.mrc"))
        .arg("--tlt")
        .arg(dir.join("ts.tlt"))
        .args(["--axis", "85", "--thickness", "16", "--device", "cpu"]);
    c
}

#[test]
fn sirt_stopped_and_resumed_writes_the_same_tomogram() {
    let d = tempfile::tempdir().unwrap();
    write_inputs(d.path());
    let sirt = |c: &mut Command| {
        c.args([
            "--method",
            "sirt",
            "--iterations",
            "5",
            "--positivity",
            "--mask",
            "cylinder",
        ]);
    };
    let full = d.path().join("full.mrc");
    let mut c = base(d.path());
    sirt(&mut c);
    let o = c.arg("--out").arg(&full).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let ck = d.path().join("ck");
    let out = d.path().join("res.mrc");
    let mut c = base(d.path());
    sirt(&mut c);
    let o = c
        .env("LAMELLA_STOP_AFTER_ITERATIONS", "2")
        .arg("--checkpoint-dir")
        .arg(&ck)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("interrupted at iteration 2 of 5"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(ck.join("res.slab1of1.sirt.ckpt").exists());
    assert!(!out.exists());

    let mut c = base(d.path());
    sirt(&mut c);
    let o = c
        .arg("--checkpoint-dir")
        .arg(&ck)
        .arg("--resume")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        mrc::read(&out).unwrap().data,
        mrc::read(&full).unwrap().data,
        "resumed tomogram differs"
    );
    assert!(!ck.join("res.slab1of1.sirt.ckpt").exists());
}

#[test]
fn several_binnings_and_slabs_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    write_inputs(d.path());
    let one = d.path().join("one.mrc");
    let o = base(d.path()).arg("--out").arg(&one).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // 300 KiB: the pre-processed images take 281 KiB, so bin 1 needs slabs, bin 2 does not
    let o = base(d.path())
        .args(["--bin", "1,2", "--max-memory", "300K", "--out"])
        .arg(d.path().join("t.mrc"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("slabs along Y"), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("> budget 300 KiB"), "{}", text(&o));
    let b1 = mrc::read(&d.path().join("t_bin1.mrc")).unwrap();
    let b2 = mrc::read(&d.path().join("t_bin2.mrc")).unwrap();
    assert_eq!(b1.data.dim(), (16, 48, 48));
    assert_eq!(b2.data.dim(), (8, 24, 24));
    assert!((b2.header.pixel_size_a()[0] - 10.0).abs() < 1e-4);
    let want = mrc::read(&one).unwrap().data;
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let diff = b1
        .data
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff <= 1e-5 * scale, "slabs vs one piece: {diff}");
    // a budget below the images is refused early with the fix
    let o = base(d.path())
        .args(["--max-memory", "100K", "--out"])
        .arg(d.path().join("x.mrc"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("raise max_memory"));
}

#[test]
fn ctf_correction_flags() {
    let d = tempfile::tempdir().unwrap();
    write_inputs(d.path());
    // without a defocus the correction is refused as bad input, naming the fix
    let o = base(d.path())
        .args(["--ctf", "phaseflip", "--out"])
        .arg(d.path().join("a.mrc"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("defocus"), "{}", text(&o));
    // with --defocus-a every mode writes a tomogram; 3d with SIRT is a usage error
    let mut vols = Vec::new();
    for mode in ["none", "phaseflip", "wiener", "3d"] {
        let out = d.path().join(format!("{mode}.mrc"));
        let o = base(d.path())
            .args(["--ctf", mode, "--defocus-a", "20000", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{mode}: {}", text(&o));
        vols.push(mrc::read(&out).unwrap().data);
    }
    // the corrections change the volume (5 Å/px, 2 µm: the first zero is inside the band)
    for v in &vols[1..] {
        let diff = (v - &vols[0]).mapv(f32::abs).sum();
        assert!(diff > 1e-3 * vols[0].mapv(f32::abs).sum(), "{diff}");
    }
    let o = base(d.path())
        .args([
            "--ctf",
            "3d",
            "--defocus-a",
            "20000",
            "--method",
            "sirt",
            "--out",
        ])
        .arg(d.path().join("s.mrc"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
