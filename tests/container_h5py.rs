//! Interop: the HDF5 container read back by h5py (Python), through the master file's
//! external links, from working directories other than the output directory.

mod common;

use lamella::align::{AlignMethod, AlignReport, BeadResidual, TiltResidual};
use lamella::core::geometry::TiltSeriesGeometry;
use lamella::io::atomic::partial_path;
use lamella::io::container::{
    input_hash, read_series_stage, write_master, write_series_file, RunInfo, SeriesRecord,
    StageRecord, TomogramRecord,
};
use ndarray::Array3;
use serde_json::Value;
use std::path::Path;

const TILT_FIELDS: [&str; 13] = [
    "index",
    "acquisition_index",
    "nominal_tilt_deg",
    "tilt_deg",
    "axis_deg",
    "x_tilt_deg",
    "shift_x_a",
    "shift_y_a",
    "defocus_u_a",
    "defocus_v_a",
    "astig_angle_deg",
    "dose_e_a2",
    "pre_exposure_e_a2",
];

fn record(name: &str) -> SeriesRecord {
    let nominal = [-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0];
    let mut geometry = TiltSeriesGeometry::from_angles(96, 80, 1.7, &nominal, -85.3);
    for (i, t) in geometry.tilts.iter_mut().enumerate() {
        let f = i as f64;
        t.tilt_deg += 0.05 * f - 0.1;
        t.shift_x_a = 3.0 * f - 7.5;
        t.shift_y_a = -1.25 * f;
        t.defocus_u_a = 35000.0 + 50.0 * f;
        t.defocus_v_a = 34000.0 + 50.0 * f;
        t.astig_angle_deg = 12.5;
        t.dose_e_a2 = 2.5;
        t.pre_exposure_e_a2 = 2.5 * f;
        t.acquisition_index = (7 - i) % 7;
    }
    // a volume whose every voxel differs, so layout errors change the checksums
    let data = Array3::from_shape_fn((5, 8, 12), |(z, y, x)| {
        ((z * 97 + y * 13 + x) as f32).sin() * 10.0 + z as f32
    });
    let geometry_copy = geometry.clone();
    SeriesRecord {
        name: name.to_string(),
        geometry,
        nominal_tilts_deg: nominal.to_vec(),
        tomograms: vec![TomogramRecord {
            bin: 2,
            pixel_a: 3.4,
            kind: "full".into(),
            data,
            mrc_path: Some(format!("tomograms/{name}_bin2.mrc")),
        }],
        stages: vec![StageRecord {
            name: "reconstruct".into(),
            input_hash: input_hash(&[b"stack.mrc", b"bin=2"]),
            seconds: 2.5,
            complete: true,
        }],
        truth_correlation: Some(0.625),
        rank: 1,
        alignment: Some(alignment(&geometry_copy)),
        motion: None,
        ctf: None,
        picking: None,
    }
}

/// An alignment report with distinct values (7 tilts, 2 beads).
fn alignment(g: &TiltSeriesGeometry) -> AlignReport {
    AlignReport {
        method: AlignMethod::Beads,
        geometry: g.clone(),
        tilts: (0..7)
            .map(|i| TiltResidual {
                index: i,
                tilt_deg: g.tilts[i].tilt_deg,
                shift_x_px: i as f64 - 3.0,
                shift_y_px: 0.5 * i as f64,
                magnification: 1.0 + 0.001 * i as f64,
                residual_px: 0.25 + 0.01 * i as f64,
                n_obs: 2,
            })
            .collect(),
        beads: vec![
            BeadResidual {
                id: 0,
                position_a: [10.0, -20.0, 30.0],
                residual_px: 0.3,
                n_obs: 7,
            },
            BeadResidual {
                id: 1,
                position_a: [-5.0, 6.0, -70.0],
                residual_px: 0.2,
                n_obs: 6,
            },
        ],
        rms_residual_px: 0.27,
        thickness_a: Some(812.5),
        pitch_deg: Some(-1.5),
        z_offset_a: None,
        log: vec!["coarse: 7 tilts".into(), "solve: rms 0.27 px".into()],
    }
}

fn run_info() -> RunInfo {
    RunInfo {
        program_version: lamella::VERSION.into(),
        config_text: "[reconstruct]\nbin = 2\n".into(),
        command_line: "lamella run -c run.toml --out out".into(),
        ranks: 2,
        hosts: vec!["node-a".into(), "node-b".into()],
        start_time: "2025-02-01T08:00:00Z".into(),
        end_time: "2025-02-01T08:10:30Z".into(),
    }
}

const PY: &str = r#"
import sys, os, json
import numpy as np, h5py

def py(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [py(x) for x in v.tolist()]
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, list):
        return [py(x) for x in v]
    return v

def attrs(obj):
    return {k: py(v) for k, v in obj.attrs.items()}

master, elsewhere = sys.argv[1], sys.argv[2]
res = {}
os.chdir(elsewhere)  # not the output directory
with h5py.File(master, "r") as f:
    res["root"] = attrs(f)
    res["root_keys"] = sorted(f.keys())
    res["complete_type"] = type(f["tilt_series/tsA"].attrs["complete"]).__name__
    link = f["tilt_series"].get("tsA", getlink=True)
    res["link"] = [type(link).__name__, link.filename, link.path]
    g = f["tilt_series/tsA"]
    res["ts"] = attrs(g)
    t = g["alignment/tilts"]
    res["tilt_fields"] = list(t.dtype.names)
    res["tilt_dtypes"] = {n: str(t.dtype[n]) for n in t.dtype.names}
    res["tilts"] = {n: t[n].tolist() for n in t.dtype.names}
    d = g["tomograms/bin2/full"]
    a = d[...]
    res["tomo"] = {
        "shape": list(d.shape), "dtype": str(d.dtype), "chunks": list(d.chunks),
        "sum": float(a.astype(np.float64).sum()),
        "wsum": float((a.astype(np.float64).ravel() * (np.arange(a.size) % 7)).sum()),
        "v123": float(a[1, 2, 3]),
        "attrs": attrs(d),
    }
    res["stage"] = attrs(g["stages/reconstruct"])
    al = g["alignment"]
    res["align_attrs"] = attrs(al)
    res["residuals"] = {n: py(al["residuals"][n]) for n in al["residuals"].dtype.names}
    res["beads"] = {n: py(al["beads"][n]) for n in al["beads"].dtype.names}
# the master opened by a relative path from the output directory's parent
out = os.path.dirname(os.path.abspath(master))
os.chdir(os.path.dirname(out))
with h5py.File(os.path.join(os.path.basename(out), os.path.basename(master)), "r") as f:
    res["relative_v123"] = float(f["tilt_series/tsB/tomograms/bin2/full"][1, 2, 3])
print(json.dumps(res))
"#;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn h5py_reads_master_through_external_links() {
    let Some(py) = common::python("h5py_reads_master_through_external_links") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let elsewhere = tempfile::tempdir().unwrap();
    let (a, b) = (record("tsA"), record("tsB"));
    write_series_file(&out.join("ts/tsA.h5"), &a).unwrap();
    write_series_file(&out.join("ts/tsB.h5"), &b).unwrap();
    let master = out.join("lamella.h5");
    let series = vec![
        ("tsA".to_string(), "ts/tsA.h5".to_string()),
        ("tsB".to_string(), "ts/tsB.h5".to_string()),
    ];
    write_master(&master, &run_info(), &series, &[]).unwrap();

    let stdout = common::run_python(
        &py,
        PY,
        &[master.to_str().unwrap(), elsewhere.path().to_str().unwrap()],
    );
    let r: Value = serde_json::from_str(stdout.trim()).expect("python printed JSON");

    // root attributes and groups
    let info = run_info();
    let root = &r["root"];
    assert_eq!(root["program_version"], info.program_version.as_str());
    assert_eq!(root["config_text"], info.config_text.as_str());
    assert_eq!(root["command_line"], info.command_line.as_str());
    assert_eq!(root["ranks"], 2);
    assert_eq!(root["hosts"], serde_json::json!(["node-a", "node-b"]));
    assert_eq!(root["start_time"], info.start_time.as_str());
    assert_eq!(root["end_time"], info.end_time.as_str());
    assert_eq!(
        r["root_keys"],
        serde_json::json!(["particles", "sta", "tilt_series"])
    );
    assert_eq!(
        r["link"],
        serde_json::json!(["ExternalLink", "ts/tsA.h5", "/tilt_series/tsA"])
    );

    // series attributes: complete is a real boolean for h5py
    let ts = &r["ts"];
    assert_eq!(ts["complete"], true);
    assert_eq!(r["complete_type"], "bool");
    assert_eq!(ts["name"], "tsA");
    assert_eq!(ts["rank"], 1);
    assert_eq!(ts["n_tilts"], 7);
    assert_eq!((ts["nx"].clone(), ts["ny"].clone()), (96.into(), 80.into()));
    assert_eq!(f(&ts["pixel_a"]), 1.7);
    assert_eq!(f(&ts["voltage_kv"]), 300.0);
    assert_eq!(f(&ts["cs_mm"]), 2.7);
    assert_eq!(f(&ts["amplitude_contrast"]), 0.07);
    assert_eq!(f(&ts["hand"]), 1.0);
    assert_eq!(f(&ts["truth_correlation"]), 0.625);

    // the compound tilt table: names, types, values in stack order
    assert_eq!(r["tilt_fields"], serde_json::json!(TILT_FIELDS));
    for name in TILT_FIELDS {
        let want = if name == "index" || name == "acquisition_index" {
            "uint32"
        } else {
            "float64"
        };
        assert_eq!(r["tilt_dtypes"][name], want, "{name}");
    }
    let col = |n: &str| -> Vec<f64> { r["tilts"][n].as_array().unwrap().iter().map(f).collect() };
    let g = &a.geometry;
    assert_eq!(col("index"), (0..7).map(|i| i as f64).collect::<Vec<_>>());
    assert_eq!(col("nominal_tilt_deg"), a.nominal_tilts_deg);
    let pick = |get: fn(&lamella::core::geometry::TiltImage) -> f64| -> Vec<f64> {
        g.tilts.iter().map(get).collect()
    };
    assert_eq!(col("tilt_deg"), pick(|t| t.tilt_deg));
    assert_eq!(col("axis_deg"), pick(|t| t.axis_deg));
    assert_eq!(col("x_tilt_deg"), pick(|t| t.x_tilt_deg));
    assert_eq!(col("shift_x_a"), pick(|t| t.shift_x_a));
    assert_eq!(col("shift_y_a"), pick(|t| t.shift_y_a));
    assert_eq!(col("defocus_u_a"), pick(|t| t.defocus_u_a));
    assert_eq!(col("defocus_v_a"), pick(|t| t.defocus_v_a));
    assert_eq!(col("astig_angle_deg"), pick(|t| t.astig_angle_deg));
    assert_eq!(col("dose_e_a2"), pick(|t| t.dose_e_a2));
    assert_eq!(col("pre_exposure_e_a2"), pick(|t| t.pre_exposure_e_a2));
    assert_eq!(
        col("acquisition_index"),
        pick(|t| t.acquisition_index as f64)
    );

    // the tomogram: shape [z, y, x], float32, chunked by z-slice, same values in C order
    let data = &a.tomograms[0].data;
    let tomo = &r["tomo"];
    assert_eq!(tomo["shape"], serde_json::json!([5, 8, 12]));
    assert_eq!(tomo["dtype"], "float32");
    assert_eq!(tomo["chunks"], serde_json::json!([1, 8, 12]));
    let sum: f64 = data.iter().map(|&v| v as f64).sum();
    let wsum: f64 = data
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 * (i % 7) as f64)
        .sum();
    assert!((f(&tomo["sum"]) - sum).abs() < 1e-9 * sum.abs().max(1.0));
    assert!((f(&tomo["wsum"]) - wsum).abs() < 1e-9 * wsum.abs().max(1.0));
    assert_eq!(f(&tomo["v123"]), data[[1, 2, 3]] as f64);
    assert_eq!(f(&r["relative_v123"]), data[[1, 2, 3]] as f64);
    let ta = &tomo["attrs"];
    assert_eq!(f(&ta["pixel_a"]), 3.4);
    assert_eq!(ta["bin"], 2);
    assert_eq!(ta["axes"], "zyx");
    assert_eq!(ta["units"], "A");
    assert_eq!(ta["mrc_path"], "tomograms/tsA_bin2.mrc");

    // the stage record
    let st = &r["stage"];
    assert_eq!(st["input_hash"], a.stages[0].input_hash.as_str());
    assert_eq!(f(&st["seconds"]), 2.5);
    assert_eq!(st["complete"], true);

    // the alignment residual tables and attributes
    let al = &r["align_attrs"];
    assert_eq!(al["method"], "beads");
    assert_eq!(f(&al["rms_residual_px"]), 0.27);
    assert_eq!(f(&al["thickness_a"]), 812.5);
    assert_eq!(f(&al["pitch_deg"]), -1.5);
    assert!(al.get("z_offset_a").is_none(), "absent when unknown");
    assert_eq!(
        al["log"],
        serde_json::json!(["coarse: 7 tilts", "solve: rms 0.27 px"])
    );
    let want = a.alignment.as_ref().unwrap();
    let res = &r["residuals"];
    for (i, t) in want.tilts.iter().enumerate() {
        assert_eq!(res["index"][i], i);
        assert_eq!(f(&res["shift_x_px"][i]), t.shift_x_px);
        assert_eq!(f(&res["magnification"][i]), t.magnification);
        assert_eq!(f(&res["residual_px"][i]), t.residual_px);
        assert_eq!(res["n_obs"][i], 2);
    }
    let beads = &r["beads"];
    assert_eq!(f(&beads["z_a"][1]), -70.0);
    assert_eq!(f(&beads["x_a"][0]), 10.0);
    assert_eq!(beads["n_obs"][1], 6);
}

#[test]
fn failed_and_partial_writes_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ts/tsA.h5");
    // a duplicate tomogram makes HDF5 fail in the middle of the file
    let mut bad = record("tsA");
    bad.tomograms.push(bad.tomograms[0].clone());
    let e = write_series_file(&p, &bad).unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(!p.exists(), "a failed write must not leave {}", p.display());
    assert!(!partial_path(&p).exists());
    assert_eq!(read_series_stage(&p, "tsA", "reconstruct").unwrap(), None);

    // a complete file renamed to *.partial (a crash before the rename) is ignored by resume
    write_series_file(&p, &record("tsA")).unwrap();
    std::fs::rename(&p, partial_path(&p)).unwrap();
    assert_eq!(read_series_stage(&p, "tsA", "reconstruct").unwrap(), None);

    // and the committed file answers
    write_series_file(&p, &record("tsA")).unwrap();
    let s = read_series_stage(&p, "tsA", "reconstruct")
        .unwrap()
        .unwrap();
    assert_eq!(s, record("tsA").stages[0]);
    assert!(Path::new(&p).is_file());
}
