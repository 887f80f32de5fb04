//! `lamella pick` on a simulated tomogram, on 1 rank and under `mpirun -n 3` (the rotations
//! split in chunks of 40/40/39): identical score and angle maps and picks, and the picks
//! find the simulated apoferritins.

mod common;

use common::{lamella, mpirun, ok, shared_data};
use lamella::device::Device;
use lamella::io::{imod, mrc, relion};
use lamella::recon::filter::Filter;
use lamella::recon::plan::{reconstruct, Method, ReconstructOutcome, ReconstructSpec};
use lamella::sim::{preset, simulate_series, Preset};
use std::path::{Path, PathBuf};

fn prepare(dir: &Path) -> (PathBuf, PathBuf, Vec<[f64; 3]>) {
    let mut p = preset(Preset::Tiny, &shared_data()).remove(0);
    p.name = "pickcli".into();
    p.nx = 80;
    p.ny = 80;
    p.structures[0].1 = 5;
    p.vesicles = 0;
    let s = simulate_series(&p, 11).unwrap();
    let spec = ReconstructSpec {
        method: Method::Wbp {
            filter: Filter::Ramp,
        },
        binnings: vec![1],
        thickness_a: p.thickness_a,
        lowpass: None,
        invert_contrast: true,
        max_memory_bytes: Some(1 << 30),
        checkpoint: None,
        ctf_correction: Default::default(),
        wiener_snr: 3.0,
    };
    let tomo = dir.join("pickcli.mrc");
    match reconstruct(
        s.stack.view(),
        &s.geometry,
        &spec,
        &Device::Cpu,
        std::slice::from_ref(&tomo),
    )
    .unwrap()
    {
        ReconstructOutcome::Complete(_) => {}
        ReconstructOutcome::Interrupted(i) => panic!("{i}"),
    }
    let tlt = dir.join("pickcli.tlt");
    let angles: Vec<f64> = s.geometry.tilts.iter().map(|t| t.tilt_deg).collect();
    imod::write_tlt(&tlt, &angles).unwrap();
    let truth = s.truth.particles.iter().map(|q| q.position_a).collect();
    (tomo, tlt, truth)
}

fn pick_args(tomo: &Path, tlt: &Path, out: &Path) -> Vec<String> {
    [
        "pick",
        "--tomogram",
        tomo.to_str().unwrap(),
        "--tlt",
        tlt.to_str().unwrap(),
        "--template",
        shared_data().join("structures/6z6u.pdb").to_str().unwrap(),
        "--angular-step",
        "50",
        "--defocus",
        "30000",
        "--dose-per-tilt",
        "3.2",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn pick_is_identical_on_1_and_3_ranks() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pick_mpirun");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (tomo, tlt, truth) = prepare(&dir);
    let one = dir.join("one");
    let text = ok(
        lamella()
            .args(pick_args(&tomo, &tlt, &one))
            .output()
            .unwrap(),
        "lamella pick",
    );
    eprintln!("{text}");
    assert!(text.contains("119 rotations"), "{text}");
    let picks = relion::read_particles_star(&one.join("pickcli_particles.star")).unwrap();
    // every simulated particle picked within 30 Å, nothing else
    let near = |p: &[f64; 3]| {
        truth.iter().any(|t| {
            ((t[0] - p[0]).powi(2) + (t[1] - p[1]).powi(2) + (t[2] - p[2]).powi(2)).sqrt() < 30.0
        })
    };
    let hits = picks
        .iter()
        .filter(|p| near(&p.centered_coordinate_a))
        .count();
    eprintln!(
        "{} picks, {hits} on the {} particles",
        picks.len(),
        truth.len()
    );
    assert_eq!(hits, truth.len(), "{picks:?}\n{truth:?}");
    assert!(picks.len() <= truth.len() + 1, "{} picks", picks.len());
    assert!(one.join("pickcli_particles.tbl").is_file());
    assert!(one.join("pickcli_picking.h5").is_file());

    let Some(mut mpi) = mpirun(3) else {
        return;
    };
    let three = dir.join("three");
    let text3 = ok(
        mpi.args(pick_args(&tomo, &tlt, &three)).output().unwrap(),
        "mpirun -n 3 lamella pick",
    );
    assert!(text3.contains("over 3 rank(s)"), "{text3}");
    for f in ["pickcli_scores.mrc", "pickcli_angles.mrc"] {
        let a = mrc::read(&one.join(f)).unwrap().data;
        let b = mrc::read(&three.join(f)).unwrap().data;
        assert!(a == b, "{f} differs between 1 and 3 ranks");
    }
    for f in ["pickcli_particles.star", "pickcli_particles.tbl"] {
        assert_eq!(
            std::fs::read_to_string(one.join(f)).unwrap(),
            std::fs::read_to_string(three.join(f)).unwrap(),
            "{f}"
        );
    }
}
