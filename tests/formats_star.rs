//! STAR reader/writer on every real STAR file under shared/data, round trips, and interop
//! with Python's `starfile` package.

mod common;

use lamella::core::geometry::{TiltImage, TiltSeriesGeometry};
use lamella::io::relion::{
    write_particles_star, write_tomograms_star, ParticleRecord, TomogramEntry,
};
use lamella::io::star::StarFile;
use std::path::Path;

/// (file name, block name, kind) where kind is `Pairs(n)` or `Table(cols, rows)`.
#[derive(Debug)]
enum Shape {
    Pairs(usize),
    Table(usize, usize),
}

fn expected(name: &str) -> Option<Vec<(&'static str, Shape)>> {
    use Shape::*;
    let tomos = |v: &mut Vec<(&'static str, Shape)>| {
        for t in [
            "Unt_083.tomostar",
            "Unt_050.tomostar",
            "Unt_076.tomostar",
            "Unt_088.tomostar",
        ] {
            v.push((t, Table(9, 37)));
        }
    };
    Some(match name {
        "run_it025_data.star" => vec![
            ("general", Pairs(1)),
            ("optics", Table(11, 1)),
            ("particles", Table(26, 10)),
        ],
        "run_it025_optimisation_set.star" => vec![("", Pairs(3))],
        "example.star" => vec![("", Table(12, 1399))],
        "tomo200528_107.star" => vec![("tomo200528_107", Table(25, 35))],
        "tomograms.star" => vec![("global", Table(13, 10))],
        "017_gctf.star" => vec![("", Table(12, 60))],
        "empiar_10076_7.star" => vec![("", Table(10, 7))],
        "sta_testing.star" | "sta_testing_bin8.star" => vec![("", Table(20, 219))],
        "warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star" => vec![
            ("general", Pairs(1)),
            ("optics", Table(11, 4)),
            ("particles", Table(15, 40)),
        ],
        "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_optimisation_set.star" => {
            vec![("", Pairs(2))]
        }
        "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_tomograms.star" => {
            let mut v = vec![("global", Table(13, 4))];
            tomos(&mut v);
            v
        }
        _ => return None,
    })
}

fn star_files() -> Vec<std::path::PathBuf> {
    let files = common::files_with_ext(&common::shared_data(), &[".star"]);
    assert!(
        files.len() >= 12,
        "expected the 12 STAR files of shared/data, found {}",
        files.len()
    );
    files
}

#[test]
fn reads_every_shared_star_file_with_the_right_structure() {
    for f in star_files() {
        let s = StarFile::read(&f).unwrap_or_else(|e| panic!("{e}"));
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let want = expected(&name).unwrap_or_else(|| panic!("no expectation for {name}"));
        let got: Vec<&str> = s.blocks.iter().map(|b| b.name.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|w| w.0).collect();
        assert_eq!(got, want_names, "{name}: block names");
        for (b, (_, shape)) in s.blocks.iter().zip(&want) {
            match shape {
                Shape::Pairs(n) => {
                    assert_eq!(b.pairs.len(), *n, "{name}/{}", b.name);
                    assert!(b.table.is_none());
                }
                Shape::Table(c, r) => {
                    let t = b.table().unwrap();
                    assert_eq!(
                        (t.columns.len(), t.rows.len()),
                        (*c, *r),
                        "{name}/{}",
                        b.name
                    );
                    assert!(t.rows.iter().all(|row| row.len() == *c));
                }
            }
        }
        println!("{name}: {} blocks ok", s.blocks.len());
    }
}

#[test]
fn specific_values_of_real_files() {
    let d = common::shared_data();
    // empty quoted value
    let p = d.join("formats/cylindra/run_it025_optimisation_set.star");
    let s = StarFile::read(&p).unwrap();
    assert_eq!(s.blocks[0].get("rlnTomoTrajectoriesFile"), Some(""));
    assert_eq!(
        s.blocks[0].get("rlnTomoTomogramsFile"),
        Some("Tomograms/job_tomo/tomograms.star")
    );
    // list values and scientific notation
    let p = d.join("formats/cylindra/run_it025_data.star");
    let s = StarFile::read(&p).unwrap();
    let t = s.block("particles").unwrap().table().unwrap();
    let vis = t.str_column("rlnTomoVisibleFrames").unwrap();
    assert!(vis[0].starts_with("[0,0,") && vis[0].ends_with(']'));
    let ll = t
        .f64_column("rlnLogLikeliContribution", &p, "particles")
        .unwrap();
    assert!(ll.iter().all(|v| *v > 1e5 && *v < 1e6), "{ll:?}");
    assert_eq!(
        s.block("general")
            .unwrap()
            .get("rlnTomoSubTomosAre2DStacks"),
        Some("1")
    );
    // trailing spaces on headers (`loop_ `, `#1 `)
    let p = d.join("formats/pytom-match-pick/tilt_series/tomo200528_107.star");
    let s = StarFile::read(&p).unwrap();
    let t = s.blocks[0].table().unwrap();
    assert_eq!(t.columns[0], "rlnMicrographMovieName");
    let nominal = t
        .f64_column("rlnTomoNominalStageTiltAngle", &p, "tomo200528_107")
        .unwrap();
    assert!((nominal[0] + 50.9936).abs() < 1e-9);
    // a bad column name gives an error that names file, block and column
    let e = t
        .f64_column("rlnMicrographName", &p, "tomo200528_107")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tomo200528_107.star") && e.contains("rlnMicrographName") && e.contains("row 1"),
        "{e}"
    );
}

#[test]
fn parse_write_parse_is_identity_for_every_shared_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in star_files() {
        let a = StarFile::read(&f).unwrap();
        let out = dir.path().join(f.file_name().unwrap());
        a.write(&out).unwrap();
        let b = StarFile::read(&out).unwrap();
        assert_eq!(a, b, "{}", f.display());
    }
}

#[test]
fn crlf_and_errors() {
    let p = Path::new("x.star");
    let s = StarFile::parse(
        "data_a\r\n\r\nloop_\r\n_rlnA #1\r\n_rlnB #2\r\n1 \"two words\"\r\n",
        p,
    )
    .unwrap();
    assert_eq!(s.blocks[0].table().unwrap().rows[0][1], "two words");
    let e = StarFile::parse("data_a\nloop_\n_a #1\n1 2\n", p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.star") && e.contains("row 1"), "{e}");
}

// ---------------------------------------------------------------- Python interop

/// Python: dump every block of a STAR file read by `starfile` as JSON
/// `{block: {"pairs": {k: str}} | {"columns": [...], "rows": [[str]]}}`.
const DUMP: &str = r#"
import json, sys, starfile
d = starfile.read(sys.argv[1], always_dict=True)
out = {}
def s(v):
    return repr(v) if isinstance(v, float) else str(v)
for k, v in d.items():
    if isinstance(v, dict):
        out[k] = {"pairs": {kk: s(vv) for kk, vv in v.items()}}
    else:
        out[k] = {"columns": [str(c) for c in v.columns],
                  "rows": [[s(x) for x in r] for r in v.itertuples(index=False)]}
print(json.dumps(out))
"#;

fn same_value(a: &str, b: &str) -> bool {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

/// Assert that Python's starfile reads `path` to exactly the blocks, columns and values
/// our parser sees.
fn check_with_starfile(py: &Path, path: &Path) {
    let ours = StarFile::read(path).unwrap();
    let js = common::run_python(py, DUMP, &[path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(js.trim()).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(
        obj.len(),
        ours.blocks.len(),
        "{}: block count",
        path.display()
    );
    for b in &ours.blocks {
        let pb = obj
            .get(&b.name)
            .unwrap_or_else(|| panic!("{}: starfile lacks block {}", path.display(), b.name));
        if let Some(t) = &b.table {
            let cols: Vec<String> = pb["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            assert_eq!(cols, t.columns, "{}/{}", path.display(), b.name);
            let rows = pb["rows"].as_array().unwrap();
            assert_eq!(rows.len(), t.rows.len());
            for (r, pr) in t.rows.iter().zip(rows) {
                for (x, px) in r.iter().zip(pr.as_array().unwrap()) {
                    let px = px.as_str().unwrap();
                    assert!(
                        same_value(x, px),
                        "{}/{}: ours `{x}` starfile `{px}`",
                        path.display(),
                        b.name
                    );
                }
            }
        } else {
            let pairs = pb["pairs"].as_object().unwrap();
            assert_eq!(pairs.len(), b.pairs.len());
            for (k, x) in &b.pairs {
                let px = pairs[k].as_str().unwrap();
                assert!(
                    same_value(x, px),
                    "{}: {k}: `{x}` vs `{px}`",
                    path.display()
                );
            }
        }
    }
}

fn sample_geometry(n: usize, axis: f64) -> TiltSeriesGeometry {
    let angles: Vec<f64> = (0..n)
        .map(|i| -45.0 + 90.0 * i as f64 / (n - 1) as f64)
        .collect();
    let mut g = TiltSeriesGeometry::from_angles(400, 380, 3.2, &angles, axis);
    g.hand = -1.0;
    for (i, t) in g.tilts.iter_mut().enumerate() {
        *t = TiltImage {
            shift_x_a: 1.5 * i as f64 - 4.0,
            shift_y_a: -2.25 * i as f64,
            defocus_u_a: 31000.0 + 10.0 * i as f64,
            defocus_v_a: 30500.0,
            astig_angle_deg: 33.0,
            pre_exposure_e_a2: 3.0 * i as f64,
            ..t.clone()
        };
    }
    g
}

#[test]
fn python_starfile_reads_our_tomograms_and_particles() {
    let Some(py) = common::python("python_starfile_reads_our_tomograms_and_particles") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<TomogramEntry> = (0..2)
        .map(|k| TomogramEntry {
            name: format!("TS_{k:02}"),
            geometry: sample_geometry(7 + k, 85.0 + k as f64),
            tomo_size_px: [400, 380, 120],
            binning: 4.0,
            tilt_series_stack: format!("stacks/TS_{k:02}.mrcs"),
            reconstructed: Some(format!("tomograms/TS_{k:02}.mrc")),
        })
        .collect();
    write_tomograms_star(dir.path(), &entries).unwrap();
    check_with_starfile(&py, &dir.path().join("tomograms.star"));
    for e in &entries {
        check_with_starfile(
            &py,
            &dir.path().join(format!("tilt_series/{}.star", e.name)),
        );
    }
    let parts: Vec<ParticleRecord> = (0..25)
        .map(|i| ParticleRecord {
            tomo_name: format!("TS_{:02}", i % 2),
            centered_coordinate_a: [i as f64 * 12.5 - 100.0, 3.0 * i as f64, -40.0 + i as f64],
            euler_deg: [
                i as f64 * 7.0 - 90.0,
                5.0 * i as f64,
                180.0 - 3.0 * i as f64,
            ],
            optics_group: 1 + i % 2,
            random_subset: 1 + i % 2,
            class: 1 + i % 3,
        })
        .collect();
    let pp = dir.path().join("particles.star");
    write_particles_star(&pp, 12.8, 48, &parts).unwrap();
    check_with_starfile(&py, &pp);
}

#[test]
fn python_starfile_agrees_on_every_shared_file() {
    let Some(py) = common::python("python_starfile_agrees_on_every_shared_file") else {
        return;
    };
    for f in star_files() {
        check_with_starfile(&py, &f);
    }
}
