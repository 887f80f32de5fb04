//! Subtomogram averaging end to end on simulated data: `lamella run` (simulate + WBP +
//! RELION-5 export) → perturbed particle poses → `lamella sta` on 1 rank and on 3 ranks.
//! Asserts: identical maps and poses for 1 and 3 ranks, orientation and position errors
//! against the truth, gold-standard resolution, FSC of the map against the true structure,
//! the STAR output read back, and --resume after the last iteration.

mod common;

use common::{lamella, mpirun, ok, perturbed_euler, run_pipeline, shared_data};
use lamella::core::geometry::euler_zyz_to_matrix;
use lamella::core::so3::angle_between_deg;
use lamella::io::mrc;
use lamella::io::relion::{read_particles_star, write_particles_star};
use lamella::recon::fsc::fsc;
use lamella::sim::Structure;
use std::path::Path;

const CONFIG: &str = r#"
out = "out"
[simulate]
preset = "tiny"
seed = 3
size = 160
particles = 16
# 1.5 µm: the first CTF zero (17 Å) lies beyond Nyquist (20 Å). At the preset's 3 µm it sits at
# 24 Å and bounds the gold-standard resolution to ≈ 26 Å even at the true poses.
defocus_a = 15000.0
[reconstruct]
binnings = [1]
filter = "ramp"
invert_contrast = true
device = "cpu"
"#;

fn sta_args(dir: &Path, out: &str) -> Vec<String> {
    let relion = dir.join("out").join("relion");
    [
        "sta",
        "--tomograms",
        relion.join("tomograms.star").to_str().unwrap(),
        "--particles",
        dir.join("start.star").to_str().unwrap(),
        "--box",
        "24",
        "--mask-radius",
        "80",
        "--iterations",
        "3",
        "--local-range",
        "12",
        "--local-step",
        "4",
        "--min-step",
        "2",
        "--symmetry",
        "O",
        "--reference",
        dir.join("reference.mrc").to_str().unwrap(),
        "--out",
        dir.join(out).to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn refinement_recovers_poses_and_structure_and_is_rank_independent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_pipeline(
        d,
        CONFIG,
        "lamella run (tiny, 160 px, 16 apoferritins per series)",
    );
    let relion = d.join("out").join("relion");
    // Start 6–8° and up to 15 Å away from the truth, as after template matching.
    let truth = read_particles_star(&relion.join("particles_truth.star")).unwrap();
    assert_eq!(truth.len(), 32);
    let start: Vec<_> = truth
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut q = p.clone();
            let k = i as f64;
            q.euler_deg = perturbed_euler(p.euler_deg, i, 6.0, 2.0);
            q.centered_coordinate_a[0] += 15.0 * (k * 0.9).cos();
            q.centered_coordinate_a[1] -= 10.0 * (k * 1.7).sin();
            q
        })
        .collect();
    write_particles_star(&d.join("start.star"), 10.0, 24, &start).unwrap();
    // The template: the true structure (sta low-passes it to 40 Å before the first iteration).
    let apo = Structure::Pdb(shared_data().join("structures").join("6z6u.pdb"))
        .render(10.0)
        .unwrap();
    let t = lamella::pick::template::recentre_box(&apo.potential, 24);
    mrc::write(
        &d.join("reference.mrc"),
        t.view(),
        10.0,
        mrc::MrcKind::Volume,
    )
    .unwrap();

    ok(
        lamella().args(sta_args(d, "sta1")).output().unwrap(),
        "lamella sta (1 rank)",
    );
    let refined = read_particles_star(&d.join("sta1").join("particles.star")).unwrap();
    assert_eq!(refined.len(), truth.len());
    let pose = |p: &lamella::io::relion::ParticleRecord| {
        euler_zyz_to_matrix(p.euler_deg[0], p.euler_deg[1], p.euler_deg[2])
    };
    let o = lamella::core::so3::Symmetry::O.matrices();
    let mut sym: Vec<f64> = refined
        .iter()
        .zip(&truth)
        .map(|(r, t)| lamella::core::so3::angle_between_sym_deg(&pose(r), &pose(t), &o))
        .collect();
    eprintln!("median O-symmetric orientation error {:.2}", {
        sym.sort_by(|a, b| a.partial_cmp(b).unwrap());
        sym[sym.len() / 2]
    });
    let mut ang: Vec<f64> = refined
        .iter()
        .zip(&truth)
        .map(|(r, t)| angle_between_deg(&pose(r), &pose(t)))
        .collect();
    let mut ang0: Vec<f64> = start
        .iter()
        .zip(&truth)
        .map(|(r, t)| angle_between_deg(&pose(r), &pose(t)))
        .collect();
    let mut pos: Vec<f64> = refined
        .iter()
        .zip(&truth)
        .map(|(r, t)| {
            (0..3)
                .map(|k| (r.centered_coordinate_a[k] - t.centered_coordinate_a[k]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (ma, ma0, mp) = (med(&mut ang), med(&mut ang0), med(&mut pos));
    eprintln!(
        "median orientation error {ma:.2}° (start {ma0:.2}°), median position error {mp:.2} Å"
    );
    // Apoferritin at 20–25 Å is almost a featureless hollow sphere: its orientation is barely
    // determined by these data. Searched from the exact truth with the true map as
    // reference, the best pose is already 6–9° away (zero-mean, random errors; docs/sta.md),
    // so orientation is checked on the proteasome (tests/sta_classes.rs); position is here.
    assert!(ma < 12.0, "orientation error {ma:.2}° (start {ma0:.2}°)");
    assert!(mp < 3.0, "median position error {mp:.2} Å (start ≈ 12 Å)");

    // Gold-standard resolution and FSC against the true structure.
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("sta1").join("sta.json")).unwrap())
            .unwrap();
    let res = log.as_array().unwrap().last().unwrap()["resolution_a"][0]
        .as_f64()
        .unwrap();
    let map = mrc::read(&d.join("sta1").join("map.mrc")).unwrap().data;
    let f = fsc(map.view(), t.view(), 10.0);
    let cross = f
        .fsc
        .iter()
        .position(|v| *v < 0.5)
        .map(|i| f.s_per_a[i])
        .unwrap_or(0.05);
    eprintln!(
        "gold-standard resolution {res:.1} Å; FSC vs truth {:?}; 0.5 crossing at {:.1} Å",
        f.fsc,
        1.0 / cross
    );
    // The issue's bound: 0.8 × Nyquist of the (10 Å) data = 25 Å.
    assert!(
        res <= 25.0,
        "gold-standard resolution {res:.1} Å (Nyquist 20 Å)"
    );
    assert!(
        1.0 / cross < 26.0,
        "FSC against the truth falls below 0.5 at {:.1} Å",
        1.0 / cross
    );

    // 3 ranks: the same maps and poses.
    if let Some(mut mpi) = mpirun(3) {
        let args = sta_args(d, "sta3");
        ok(
            mpi.args(&args[..]).output().unwrap(),
            "lamella sta (3 ranks)",
        );
        let m3 = mrc::read(&d.join("sta3").join("map.mrc")).unwrap().data;
        let scale = map.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let diff = map
            .iter()
            .zip(m3.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff <= 1e-4 * scale,
            "1 vs 3 ranks: maps differ by {diff} (max {scale})"
        );
        let p3 = read_particles_star(&d.join("sta3").join("particles.star")).unwrap();
        for (a, b) in refined.iter().zip(&p3) {
            assert!(angle_between_deg(&pose(a), &pose(b)) < 1e-3);
        }
    }

    // --resume after the last iteration redoes nothing and leaves the same map.
    let before = std::fs::metadata(d.join("sta1").join("iter_03").join("half1.mrc"))
        .unwrap()
        .modified()
        .unwrap();
    let mut args = sta_args(d, "sta1");
    args.push("--resume".into());
    ok(
        lamella().args(&args).output().unwrap(),
        "lamella sta --resume",
    );
    let after = std::fs::metadata(d.join("sta1").join("iter_03").join("half1.mrc"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "--resume recomputed a finished iteration");
}
