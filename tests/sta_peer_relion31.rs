//! Peer comparison (issue 5, "Peer"): lamella's subtomogram refinement against RELION 3.1's
//! (`relion_refine_mpi --auto_refine` on 3D particles with 3D CTF volumes, through
//! `shared/peers/relion_subtomo_refine.sh`) on the same simulated particles.
//!
//! Data: `lamella run` simulates two tilt series (tiny preset, 160 px of 10 Å, 20 apoferritins
//! each, 1.5 µm defocus, ±60°) and reconstructs them (WBP, contrast inverted). The particles
//! start 6–8° and up to 15 Å from the truth (as after template matching); both programs get
//! the true apoferritin map (24³, 10 Å) as the starting reference, which each low-passes to
//! 40 Å (lamella's `--initial-resolution`, RELION's `--ini_high`), the same gold-standard
//! halves (RELION's `rlnRandomSubset` from lamella's), and O symmetry (lamella `--symmetry O`;
//! RELION `--sym O` through `RELION_EXTRA`, which overrides the script's `--sym C1`: RELION
//! keeps the last value of a repeated option). lamella does 3 local iterations from the start
//! poses; RELION does its own auto-refine (global search at healpix order 2 first, local from
//! order 3, to convergence). RELION's particles and 3D CTF × wedge × dose volumes are exported
//! by `lamella::sta::relion31` from the very boxes lamella refines.
//!
//! Both maps are scored with the same code: gold-standard FSC (masked, phase-randomisation
//! corrected, lamella's mask) of each program's unfiltered half maps, and the FSC of each
//! final map against the true map. Asserted: lamella's bound (gold-standard ≤ 25 Å, 0.8 ×
//! Nyquist) and that RELION's outputs were read; the comparison is printed (docs/sta.md,
//! "Peer: RELION 3.1 subtomogram refinement"). Without `relion_refine_mpi` on PATH the RELION
//! part prints SKIP, unless `LAMELLA_REQUIRE_PEERS=1`.

mod common;

use common::{lamella, ok, perturbed_euler, repo_root, run_pipeline, shared_data};
use lamella::core::geometry::euler_zyz_to_matrix;
use lamella::core::so3::{angle_between_sym_deg, Symmetry};
use lamella::io::mrc;
use lamella::io::relion::{read_particles_star, write_particles_star, ParticleRecord};
use lamella::io::star::StarFile;
use lamella::recon::fsc::fsc;
use lamella::sim::Structure;
use lamella::sta::fsc::gold_standard;
use lamella::sta::mask::soft_sphere;
use lamella::sta::refine::{Particle, RefineParams};
use lamella::sta::weight::CtfMode;
use ndarray::Array3;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const CONFIG: &str = r#"
out = "out"
[simulate]
preset = "tiny"
seed = 5
size = 160
particles = 20
defocus_a = 15000.0
[reconstruct]
binnings = [1]
filter = "ramp"
invert_contrast = true
device = "cpu"
"#;

const BOX: usize = 24;
const VOXEL_A: f64 = 10.0;
const MASK_RADIUS_A: f64 = 80.0;
const ITERATIONS: usize = 3;

/// Options of RELION beyond the peer script's (the last value of a repeated option wins).
const RELION_EXTRA: &str = "--sym O --ini_high 40";

fn sta_args(dir: &Path) -> Vec<String> {
    let relion = dir.join("out").join("relion");
    let mut v: Vec<String> = vec![
        "sta".into(),
        "--tomograms".into(),
        relion.join("tomograms.star").to_str().unwrap().into(),
        "--particles".into(),
        dir.join("start.star").to_str().unwrap().into(),
        "--reference".into(),
        dir.join("reference.mrc").to_str().unwrap().into(),
        "--out".into(),
        dir.join("lamella").to_str().unwrap().into(),
    ];
    for (k, val) in [
        ("--box", BOX.to_string()),
        ("--mask-radius", MASK_RADIUS_A.to_string()),
        ("--iterations", ITERATIONS.to_string()),
        ("--local-range", "12".into()),
        ("--local-step", "4".into()),
        ("--min-step", "2".into()),
        ("--symmetry", "O".into()),
        ("--initial-resolution", "40".into()),
    ] {
        v.push(k.into());
        v.push(val);
    }
    v
}

/// The settings `lamella sta` runs with for [`sta_args`] (the CLI's defaults elsewhere), for
/// the export: the same boxes and transfers.
fn refine_params() -> RefineParams {
    RefineParams {
        box_px: BOX,
        mask_radius_a: MASK_RADIUS_A,
        iterations: ITERATIONS,
        symmetry: "O".into(),
        global_step_deg: None,
        local_range_deg: 12.0,
        local_step_deg: 4.0,
        min_step_deg: 2.0,
        sigma_angle_deg: Some(4.0),
        max_shift_a: 30.0,
        initial_resolution_a: 40.0,
        ctf_mode: CtfMode::Signed,
        dose_weighting: true,
        invert: false,
        seed: 1,
    }
}

/// `relion_refine_mpi` on PATH, else None after a SKIP line (panics with
/// `LAMELLA_REQUIRE_PEERS=1`).
fn relion_available() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v relion_refine_mpi && command -v mpirun"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("LAMELLA_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("relion_refine_mpi or mpirun not on PATH (apt-get install relion openmpi-bin; see shared/peers/README.md)");
        }
        eprintln!("SKIP: sta_peer_relion31: relion_refine_mpi not on PATH (RELION 3.1 comparison not run)");
    }
    found
}

/// User + system CPU seconds from a `/usr/bin/time -v` report (`None` when absent).
fn cpu_seconds(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some(field("User time (seconds):")? + field("System time (seconds):")?)
}

/// `lamella` under `/usr/bin/time -v -o time_report` when that exists (for the CPU time),
/// else plain.
fn timed_lamella(time_report: &Path) -> Command {
    if Path::new("/usr/bin/time").exists() {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-v")
            .arg("-o")
            .arg(time_report)
            .arg(env!("CARGO_BIN_EXE_lamella"))
            .env("LAMELLA_SHARED_DATA", shared_data())
            .env_remove("RUST_LOG");
        c
    } else {
        lamella()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The 0.5 crossing of the FSC of `map` against `truth` (Å) and the curve.
fn fsc_vs_truth(map: &Array3<f32>, truth: &Array3<f32>) -> (f64, Vec<f64>) {
    let f = fsc(map.view(), truth.view(), VOXEL_A);
    let cross = f
        .fsc
        .iter()
        .position(|v| *v < 0.5)
        .map(|i| 1.0 / f.s_per_a[i])
        .unwrap_or(2.0 * VOXEL_A);
    (cross, f.fsc)
}

/// RELION's particle index (1-based, from `Subtomograms/pNNNNN.mrc`) and pose per row of its
/// `run_data.star`.
fn relion_poses(path: &Path) -> Vec<(usize, [f64; 3])> {
    let f = StarFile::read(path).unwrap();
    let b = f.require_block("particles", path).unwrap();
    let t = b.require_table(path).unwrap();
    let names = t.str_column("rlnImageName").expect("rlnImageName");
    let col = |c: &str| t.f64_column(c, path, "particles").unwrap();
    let (r, ti, p) = (col("rlnAngleRot"), col("rlnAngleTilt"), col("rlnAnglePsi"));
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let stem = name.rsplit('/').next().unwrap();
            let k: usize = stem
                .trim_start_matches('p')
                .trim_end_matches(".mrc")
                .parse()
                .unwrap_or_else(|_| panic!("{}: image name {name}", path.display()));
            (k, [r[i], ti[i], p[i]])
        })
        .collect()
}

#[test]
fn lamella_and_relion31_refine_the_same_subtomograms() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_pipeline(d, CONFIG, "lamella run (tiny, 2 × 20 apoferritins)");
    let relion_dir = d.join("out").join("relion");
    let truth = read_particles_star(&relion_dir.join("particles_truth.star")).unwrap();
    assert_eq!(truth.len(), 40);
    let start: Vec<ParticleRecord> = truth
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
    write_particles_star(&d.join("start.star"), VOXEL_A, BOX, &start).unwrap();
    let apo = Structure::Pdb(shared_data().join("structures").join("6z6u.pdb"))
        .render(VOXEL_A)
        .unwrap();
    let true_map = lamella::pick::template::recentre_box(&apo.potential, BOX);
    mrc::write(
        &d.join("reference.mrc"),
        true_map.view(),
        VOXEL_A as f32,
        mrc::MrcKind::Volume,
    )
    .unwrap();
    let mask = soft_sphere(BOX, MASK_RADIUS_A / VOXEL_A, 3.0);
    let o = Symmetry::O.matrices();
    let pose = |e: [f64; 3]| euler_zyz_to_matrix(e[0], e[1], e[2]);

    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // lamella: 1 rank, rayon over both cores.
    eprintln!("load average before lamella: {}", load().trim());
    let t0 = Instant::now();
    ok(
        timed_lamella(&d.join("lamella_time.txt"))
            .args(sta_args(d))
            .output()
            .unwrap(),
        "lamella sta",
    );
    let lamella_s = t0.elapsed().as_secs_f64();
    let lamella_cpu = cpu_seconds(&d.join("lamella_time.txt"));
    let ld = d.join("lamella");
    let l_h = [1, 2].map(|h| mrc::read(&ld.join(format!("half{h}.mrc"))).unwrap().data);
    let l_gs = gold_standard(l_h[0].view(), l_h[1].view(), mask.view(), VOXEL_A, 1);
    let l_map = mrc::read(&ld.join("map.mrc")).unwrap().data;
    let (l_truth05, l_curve) = fsc_vs_truth(&l_map, &true_map);
    let refined = read_particles_star(&ld.join("particles.star")).unwrap();
    let l_ang = median(
        refined
            .iter()
            .zip(&truth)
            .map(|(r, t)| angle_between_sym_deg(&pose(r.euler_deg), &pose(t.euler_deg), &o))
            .collect(),
    );
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ld.join("sta.json")).unwrap()).unwrap();
    let lamella_own = log.as_array().unwrap().last().unwrap()["resolution_a"][0]
        .as_f64()
        .unwrap();
    let per_iter: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{:.1}", l["seconds"].as_f64().unwrap_or(f64::NAN)))
        .collect();
    eprintln!(
        "lamella: iterations took {} s; CPU {:?} s",
        per_iter.join(", "),
        lamella_cpu
    );
    eprintln!(
        "lamella: {lamella_s:.1} s, gold-standard {:.1} Å, FSC vs truth 0.5 at {l_truth05:.1} Å, median O-sym. orientation error {l_ang:.2}°",
        l_gs.resolution_a
    );
    // The issue's bound for lamella: 0.8 × Nyquist of the 10 Å data.
    assert!(
        l_gs.resolution_a <= 25.0,
        "lamella gold-standard resolution {:.1} Å (bound 25 Å)",
        l_gs.resolution_a
    );

    if !relion_available() {
        return;
    }
    // The RELION 3.1 input: lamella's boxes and transfers of the start particles.
    let tomos = lamella::pipeline::sta::read_tomograms(&relion_dir.join("tomograms.star")).unwrap();
    let particles: Vec<Particle> = start
        .iter()
        .enumerate()
        .map(|(i, r)| Particle {
            tomo: tomos.iter().position(|t| t.name == r.tomo_name).unwrap(),
            position_a: r.centered_coordinate_a,
            euler_deg: r.euler_deg,
            // `lamella sta`'s rule: the STAR's subset, else alternate.
            half: match r.random_subset {
                1 | 2 => r.random_subset - 1,
                _ => i % 2,
            },
            class: 0,
            score: 0.0,
        })
        .collect();
    let export = lamella::sta::relion31::write_relion31_subtomograms(
        &d.join("relion31"),
        &tomos,
        &particles,
        &refine_params(),
    )
    .unwrap();
    assert_eq!(export.particles, 40);
    let out = d.join("relion31_refine");
    let script = repo_root().join("../shared/peers/relion_subtomo_refine.sh");
    eprintln!("load average before RELION: {}", load().trim());
    let t1 = Instant::now();
    let r = Command::new("bash")
        .arg(&script)
        .arg(&export.star)
        .arg(d.join("reference.mrc"))
        .arg(&out)
        .arg(format!("{}", 2.0 * MASK_RADIUS_A))
        .arg("3")
        .env("RELION_EXTRA", RELION_EXTRA)
        .output()
        .unwrap();
    let relion_s = t1.elapsed().as_secs_f64();
    let tail = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    assert!(
        r.status.success(),
        "relion_subtomo_refine.sh failed ({:?}):\n{}\n{}\nstdout.txt tail:\n{}\nstderr.txt:\n{}",
        r.status.code(),
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr),
        tail("stdout.txt")
            .chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>(),
        tail("stderr.txt")
    );
    eprintln!("{}", String::from_utf8_lossy(&r.stdout));
    // RELION's own figure: rlnCurrentResolution of the final model.
    let model = StarFile::read(&out.join("run_model.star")).unwrap();
    let relion_own: f64 = model
        .block("model_general")
        .and_then(|b| b.get("rlnCurrentResolution"))
        .expect("run_model.star: data_model_general/_rlnCurrentResolution")
        .parse()
        .unwrap();
    // The last iteration RELION wrote (`run_itNNN_*`).
    let iterations = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("run_it")?.get(..3)?.parse::<usize>().ok()
        })
        .max()
        .expect("no run_itNNN files from RELION");
    let relion_cpu = cpu_seconds(&out.join("time.txt"));
    let r_h = [1, 2].map(|h| {
        mrc::read(&out.join(format!("run_half{h}_class001_unfil.mrc")))
            .unwrap()
            .data
    });
    assert_eq!(r_h[0].dim(), (BOX, BOX, BOX));
    let r_gs = gold_standard(r_h[0].view(), r_h[1].view(), mask.view(), VOXEL_A, 1);
    let r_map = mrc::read(&out.join("run_class001.mrc")).unwrap().data;
    let (r_truth05, r_curve) = fsc_vs_truth(&r_map, &true_map);
    let rp = relion_poses(&out.join("run_data.star"));
    assert_eq!(rp.len(), 40, "run_data.star rows");
    let r_ang = median(
        rp.iter()
            .map(|(k, e)| angle_between_sym_deg(&pose(*e), &pose(truth[k - 1].euler_deg), &o))
            .collect(),
    );
    assert!(relion_own.is_finite() && relion_own > 0.0);
    assert!(r_gs.resolution_a.is_finite() && r_truth05.is_finite());

    let show_cpu = |c: Option<f64>| c.map_or("n/a".to_string(), |v| format!("{v:.1} s"));
    let fmt = |c: &[f64]| {
        c.iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "\nPeer comparison, 40 apoferritin subtomograms, 24³ × 10 Å (Nyquist 20 Å), O symmetry, 2 cores:\n\
         | | lamella sta ({ITERATIONS} it, 1 rank) | RELION 3.1 auto-refine ({iterations} it, 3 ranks) |\n\
         | --- | --- | --- |\n\
         | gold-standard, lamella's FSC (masked, corrected) | {:.1} Å | {:.1} Å |\n\
         | program's own figure | {:.1} Å (sta.json) | {relion_own:.1} Å (rlnCurrentResolution) |\n\
         | FSC vs true map = 0.5 at | {l_truth05:.1} Å | {r_truth05:.1} Å |\n\
         | median O-sym. orientation error | {l_ang:.2}° | {r_ang:.2}° |\n\
         | wall time | {lamella_s:.1} s | {relion_s:.1} s |\n\
         | CPU time (user + sys) | {} | {} |\n\
         wall-time ratio lamella/RELION = {:.3}, CPU-time ratio = {}\n\
         FSC vs truth per shell, lamella: {}\n\
         FSC vs truth per shell, RELION:  {}",
        l_gs.resolution_a,
        r_gs.resolution_a,
        lamella_own,
        show_cpu(lamella_cpu),
        show_cpu(relion_cpu),
        lamella_s / relion_s,
        match (lamella_cpu, relion_cpu) {
            (Some(a), Some(b)) => format!("{:.3}", a / b),
            _ => "n/a".into(),
        },
        fmt(&l_curve),
        fmt(&r_curve),
    );
}
