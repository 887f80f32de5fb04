//! Motion correction end to end: `lamella run` with `[motioncorr]` on the `tiny` preset
//! (trajectory error against the simulator's drift, files checked by mrcfile, the container's
//! `motion/frames` table read by h5py, resume), and `lamella motioncorr` under mpirun (the
//! same stacks on 1 and 2 ranks, resume after a stop, bad input).

mod common;

use common::{lamella, mpirun, ok};
use std::path::Path;

/// The issue's accuracy target for global motion: RMS trajectory error < 0.2 px at
/// 0.3–0.5 e/Å² per frame. tiny: 3.2 e/Å² per tilt over 10 frames = 0.32 e/Å² per frame,
/// 10 Å pixels, drift 0.5 px per frame; measured 0.12 px on both series (seed 3).
const MAX_RMS_TRAJECTORY_PX: f64 = 0.2;

const PY_CHECK: &str = r#"
import sys, json
import numpy as np, mrcfile, h5py
out, name = sys.argv[1], sys.argv[2]
res = {}
stacks = {}
for k in ["", "_even", "_odd"]:
    p = f"{out}/motioncorr/{name}{k}.mrc"
    res["valid" + k] = bool(mrcfile.validate(p, print_file=open("/dev/null", "w")))
    with mrcfile.open(p, permissive=False) as m:
        stacks[k] = m.data.astype(np.float64)
res["even_plus_odd_rel"] = float(np.abs(stacks["_even"] + stacks["_odd"] - stacks[""]).max() / np.abs(stacks[""]).max())
with h5py.File(f"{out}/lamella.h5", "r") as f:
    m = f[f"tilt_series/{name}/motion"]
    fr = m["frames"][()]
    res["fields"] = list(fr.dtype.names)
    res["rows"] = int(fr.shape[0])
    res["method"] = m.attrs["method"] if isinstance(m.attrs["method"], str) else m.attrs["method"].decode()
    res["dose_weighted"] = bool(m.attrs["dose_weighted"])
    res["frame0_zero"] = bool(np.all(fr["shift_x_px"][fr["frame"] == 0] == 0))
    res["max_frame"] = int(fr["frame"].max())
    res["stages"] = sorted(f[f"tilt_series/{name}/stages"].keys())
print(json.dumps(res))
"#;

#[test]
fn run_with_motioncorr_recovers_the_simulated_drift() {
    let d = tempfile::tempdir().unwrap();
    let (text, out, s) = common::run_pipeline(
        d.path(),
        "out = \"out\"\n[simulate]\npreset = \"tiny\"\nseed = 3\n[motioncorr]\n[reconstruct]\nbinnings = [1]\ndevice = \"cpu\"\n",
        "lamella run with [motioncorr]",
    );
    assert!(
        text.contains("drift err"),
        "table has motion columns:\n{text}"
    );
    for series in s["series"].as_array().unwrap() {
        let name = series["name"].as_str().unwrap();
        let m = &series["motion"];
        let err = m["rms_error_px"].as_f64().unwrap();
        let path = m["mean_path_px"].as_f64().unwrap();
        let corr = series["truth_correlation"]["bin1"].as_f64().unwrap();
        eprintln!(
            "{name}: RMS trajectory error {err:.3} px, mean path {path:.2} px, corr {corr:.3}"
        );
        assert!(err < MAX_RMS_TRAJECTORY_PX, "{name}: {err} px");
        // 9 steps of 0.5 px in a slowly turning direction
        assert!((3.0..=4.8).contains(&path), "{name}: mean path {path} px");
        // the corrected sums reconstruct as well as the simulator's ideal sums (0.69–0.71)
        assert!(corr > 0.6, "{name}: correlation with the truth {corr}");
        assert!(out.join(format!("motioncorr/{name}_drift.png")).is_file());
        if let Some(py) = common::python("motioncorr h5py/mrcfile") {
            let r: serde_json::Value = serde_json::from_str(&common::run_python(
                &py,
                PY_CHECK,
                &[out.to_str().unwrap(), name],
            ))
            .unwrap();
            for k in [
                "valid",
                "valid_even",
                "valid_odd",
                "dose_weighted",
                "frame0_zero",
            ] {
                assert_eq!(r[k], true, "{name}: {k}: {r}");
            }
            assert!(r["even_plus_odd_rel"].as_f64().unwrap() < 1e-5, "{r}");
            assert_eq!(r["rows"], 31 * 10, "{r}");
            assert_eq!(r["max_frame"], 9, "{r}");
            assert_eq!(r["method"], "global", "{r}");
            for f in [
                "tilt",
                "frame",
                "shift_x_px",
                "shift_y_px",
                "pre_exposure_e_a2",
                "dose_e_a2",
            ] {
                assert!(
                    r["fields"].as_array().unwrap().iter().any(|x| x == f),
                    "{f}: {r}"
                );
            }
            assert!(
                r["stages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == "motioncorr"),
                "{r}"
            );
        }
    }
    let again = ok(
        lamella()
            .args(["run", d.path().join("c.toml").to_str().unwrap(), "--resume"])
            .output()
            .unwrap(),
        "resume",
    );
    assert_eq!(again.matches("resumed").count(), 2, "{again}");
}

fn motioncorr(mdoc: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = lamella();
    c.args([
        "motioncorr",
        "--mdoc",
        mdoc.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .args(extra);
    c
}

fn read_stack(p: &Path) -> ndarray::Array3<f32> {
    lamella::io::mrc::read(p).unwrap().data
}

#[test]
fn motioncorr_cli_is_rank_independent_and_resumes_after_a_stop() {
    let d = tempfile::tempdir().unwrap();
    let sim = d.path().join("sim");
    ok(
        lamella()
            .args([
                "simulate",
                "--preset",
                "tiny",
                "--seed",
                "5",
                "--out",
                sim.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "simulate",
    );
    // tiny_02 has movies: 4 frames per tilt, 0.3 px drift per frame
    let mdoc = sim.join("tiny_02.mdoc");
    let one = d.path().join("one");
    ok(
        motioncorr(&mdoc, &one, &[]).output().unwrap(),
        "motioncorr, 1 rank",
    );
    let reference = read_stack(&one.join("tiny_02.mrc"));
    assert_eq!(reference.dim(), (31, 96, 96));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("tiny_02_motion.json")).unwrap())
            .unwrap();
    assert_eq!(rec["tilts"].as_array().unwrap().len(), 31);
    assert!(!one.join("tiny_02_tilts").exists(), "checkpoints removed");

    if let Some(mut two) = mpirun(2) {
        let out = d.path().join("two");
        ok(
            two.args([
                "motioncorr",
                "--mdoc",
                mdoc.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
            "motioncorr, 2 ranks",
        );
        let s = read_stack(&out.join("tiny_02.mrc"));
        let diff = (&s - &reference)
            .mapv(f32::abs)
            .fold(0.0f32, |a, &b| a.max(b));
        assert!(diff == 0.0, "2 ranks differ from 1 by {diff}");
    }

    // a stop after 5 movies leaves 5 checkpoints; --resume finishes with the same stacks
    let part = d.path().join("part");
    let o = motioncorr(&mdoc, &part, &[])
        .env("LAMELLA_STOP_AFTER_MOVIES", "5")
        .output()
        .unwrap();
    assert!(!o.status.success(), "a stopped run must not report success");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--resume"), "{err}");
    let kept = std::fs::read_dir(part.join("tiny_02_tilts"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(kept, 5);
    assert!(
        !part.join("tiny_02.mrc").exists(),
        "no final stack from a stopped run"
    );
    let t = ok(
        motioncorr(&mdoc, &part, &["--resume", "-v"])
            .output()
            .unwrap(),
        "resume",
    );
    assert!(t.contains("tiny_02"), "{t}");
    assert_eq!(read_stack(&part.join("tiny_02.mrc")), reference);

    // a gain reference: frames divided by a known gain (stored left-right flipped) and
    // corrected with it give the sums of the original frames
    let movie = sim.join("tiny_02_frames/tiny_02_003.mrcs");
    let frames = read_stack(&movie);
    let (_, ny, nx) = frames.dim();
    let gain = ndarray::Array2::from_shape_fn((ny, nx), |(y, x)| {
        1.0 + 0.3 * ((x as f32 * 0.21).sin() * (y as f32 * 0.13).cos())
    });
    let mut divided = frames.clone();
    for mut f in divided.outer_iter_mut() {
        f.zip_mut_with(&gain, |v, g| *v /= g);
    }
    let mut stored = gain.clone();
    stored.invert_axis(ndarray::Axis(1));
    let stored = stored
        .as_standard_layout()
        .to_owned()
        .insert_axis(ndarray::Axis(0));
    let gdir = d.path().join("gain");
    std::fs::create_dir_all(&gdir).unwrap();
    let px = 10.0;
    let kind = lamella::io::mrc::MrcKind::ImageStack;
    lamella::io::mrc::write(&gdir.join("raw.mrcs"), divided.view(), px, kind).unwrap();
    lamella::io::mrc::write(&gdir.join("orig.mrcs"), frames.view(), px, kind).unwrap();
    lamella::io::mrc::write(
        &gdir.join("gain.mrc"),
        stored.view(),
        px,
        lamella::io::mrc::MrcKind::Volume,
    )
    .unwrap();
    let single = |movie: &str, extra: &[&str]| {
        let mut c = lamella();
        c.args([
            "motioncorr",
            "--movie",
            gdir.join(movie).to_str().unwrap(),
            "--out",
        ])
        .arg(gdir.join(format!("out_{movie}")))
        .args(extra);
        ok(c.output().unwrap(), movie);
        read_stack(&gdir.join(format!(
            "out_{movie}/{}.mrc",
            movie.trim_end_matches(".mrcs")
        )))
    };
    let want = single("orig.mrcs", &[]);
    let gpath = gdir.join("gain.mrc");
    let got = single(
        "raw.mrcs",
        &["--gain", gpath.to_str().unwrap(), "--gain-flip", "2"],
    );
    let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let diff = (&got - &want).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
    assert!(
        diff < 1e-3 * scale,
        "gain-corrected sum differs by {diff} (max {scale})"
    );
    let unflipped = single("raw.mrcs", &["--gain", gpath.to_str().unwrap()]);
    let d2 = (&unflipped - &want)
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    assert!(
        d2 > 10.0 * diff.max(1e-6),
        "the flip code must matter: {d2} vs {diff}"
    );

    // local motion: the model is fitted on a 3x3 grid and named in the record
    let local = d.path().join("local");
    ok(
        motioncorr(&mdoc, &local, &["--patches", "3x3"])
            .output()
            .unwrap(),
        "local",
    );
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(local.join("tiny_02_motion.json")).unwrap())
            .unwrap();
    assert_eq!(rec["method"], "global+local");

    // a movie that is not there: exit 3, the message names the .mdoc and the tilt
    let text = std::fs::read_to_string(&mdoc).unwrap().replace(
        "tiny_02_frames/tiny_02_007.mrcs",
        "tiny_02_frames/missing.mrcs",
    );
    let bad = sim.join("bad.mdoc");
    std::fs::write(&bad, text).unwrap();
    let o = motioncorr(&bad, &d.path().join("badout"), &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("bad.mdoc") && err.contains("ZValue = 7"),
        "{err}"
    );
}
