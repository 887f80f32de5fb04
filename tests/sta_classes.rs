//! Two-class subtomogram averaging on simulated data, and orientations of a structure with
//! features: `lamella run` simulates apoferritin (6z6u, O) and the 20S proteasome (3j9i,
//! D7) in the same tomograms; `lamella sta --classes 2` starts from perturbed poses and
//! labels that ignore the truth. Asserts: ≥ 90 % of the particles end in their true class,
//! the proteasomes' orientation error falls from the start and ends small,
//! positions are recovered.

mod common;

use common::{lamella, ok, perturbed_euler, run_pipeline, shared_data};
use lamella::core::geometry::euler_zyz_to_matrix;
use lamella::core::so3::angle_between_deg;
use lamella::io::mrc;
use lamella::io::relion::{read_particles_star, write_particles_star, ParticleRecord};
use lamella::sim::Structure;

const CONFIG: &str = r#"
out = "out"
[simulate]
preset = "tiny"
seed = 11
size = 160
particles = 10
structures = ["6z6u.pdb", "3j9i.pdb"]
[reconstruct]
binnings = [1]
filter = "ramp"
invert_contrast = true
device = "cpu"
"#;

fn pose(p: &ParticleRecord) -> [[f64; 3]; 3] {
    euler_zyz_to_matrix(p.euler_deg[0], p.euler_deg[1], p.euler_deg[2])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn two_classes_are_separated_and_proteasome_orientations_refine() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_pipeline(d, CONFIG, "lamella run (apoferritin + proteasome)");
    let relion = d.join("out").join("relion");
    let truth = read_particles_star(&relion.join("particles_truth.star")).unwrap();
    assert_eq!(truth.len(), 40);
    assert_eq!(truth.iter().filter(|p| p.class == 2).count(), 20);
    // Start 5–8° and up to 15 Å from the truth, classes alternating (half of them wrong).
    let start: Vec<ParticleRecord> = truth
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut q = p.clone();
            let k = i as f64;
            q.euler_deg = perturbed_euler(p.euler_deg, i, 5.0, 3.0);
            q.centered_coordinate_a[0] += 12.0 * (k * 0.9).cos();
            q.centered_coordinate_a[2] -= 8.0 * (k * 1.7).sin();
            q.class = 1 + i % 2;
            q
        })
        .collect();
    write_particles_star(&d.join("start.star"), 10.0, 24, &start).unwrap();
    let mut refs = Vec::new();
    for (k, name) in ["6z6u.pdb", "3j9i.pdb"].iter().enumerate() {
        let m = Structure::Pdb(shared_data().join("structures").join(name))
            .render(10.0)
            .unwrap();
        let t = lamella::pick::template::recentre_box(&m.potential, 24);
        let p = d.join(format!("ref{k}.mrc"));
        mrc::write(&p, t.view(), 10.0, mrc::MrcKind::Volume).unwrap();
        refs.push(p);
    }
    let out = d.join("sta");
    let mut args: Vec<String> = [
        "sta",
        "--tomograms",
        relion.join("tomograms.star").to_str().unwrap(),
        "--particles",
        d.join("start.star").to_str().unwrap(),
        "--classes",
        "2",
        "--box",
        "24",
        "--mask-radius",
        "100",
        "--iterations",
        "3",
        "--local-range",
        "10",
        "--local-step",
        "3",
        "--min-step",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for r in &refs {
        args.push("--reference".into());
        args.push(r.to_str().unwrap().into());
    }
    ok(
        lamella().args(&args).output().unwrap(),
        "lamella sta --classes 2",
    );
    let refined = read_particles_star(&out.join("particles.star")).unwrap();
    assert_eq!(refined.len(), truth.len());

    let correct = refined
        .iter()
        .zip(&truth)
        .filter(|(r, t)| r.class == t.class)
        .count();
    // Plain (C1) angles: a local search of ±10° cannot reach a D7 mate (≥ 51° away).
    let err = |set: &[ParticleRecord], class: usize| {
        median(
            set.iter()
                .zip(&truth)
                .filter(|(_, t)| t.class == class)
                .map(|(r, t)| angle_between_deg(&pose(r), &pose(t)))
                .collect(),
        )
    };
    let (p0, p1) = (err(&start, 2), err(&refined, 2));
    let (a0, a1) = (err(&start, 1), err(&refined, 1));
    let pos = median(
        refined
            .iter()
            .zip(&truth)
            .map(|(r, t)| {
                (0..3)
                    .map(|k| (r.centered_coordinate_a[k] - t.centered_coordinate_a[k]).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect(),
    );
    eprintln!(
        "classes: {correct}/{} correct; proteasome orientation error {p0:.2}° → {p1:.2}°; \
         apoferritin {a0:.2}° → {a1:.2}°; median position error {pos:.2} Å",
        truth.len()
    );
    assert!(
        correct * 10 >= truth.len() * 9,
        "{correct}/{} particles in their true class",
        truth.len()
    );
    assert!(
        p1 < 0.6 * p0 && p1 < 4.0,
        "proteasome orientation error {p0:.2}° → {p1:.2}°"
    );
    assert!(pos < 4.0, "median position error {pos:.2} Å");
}
