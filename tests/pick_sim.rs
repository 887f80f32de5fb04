//! Template matching on simulated tomograms against the simulator's truth: apoferritin
//! (6z6u) in a 10 Å/px slab with a vesicle and gold beads, the dose of the `tiny` preset
//! (100 e/Å²), WBP reconstruction with the true geometry, the true structure as template.

use lamella::comm::LocalComm;
use lamella::core::geometry::euler_zyz_to_matrix;
use lamella::device::Device;
use lamella::pick::evaluate::{evaluate, Posed};
use lamella::pick::template::{Contrast, Template};
use lamella::pick::{pick_tomogram, PickParams};
use lamella::recon::filter::Filter;
use lamella::recon::plan::{reconstruct, Method, ReconstructOutcome, ReconstructSpec};
use lamella::sim::{preset, simulate_series, Preset, SeriesParams};
use ndarray::Array3;
use std::path::PathBuf;
use std::time::Instant;

fn shared_data() -> PathBuf {
    std::env::var("LAMELLA_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

fn params(copies: usize, n: usize, vesicles: usize) -> SeriesParams {
    let mut p = preset(Preset::Tiny, &shared_data()).remove(0);
    p.name = "pick".into();
    p.nx = n;
    p.ny = n;
    p.structures[0].1 = copies;
    p.vesicles = vesicles;
    p
}

struct Simulated {
    tomogram: Array3<f32>,
    geometry: lamella::core::geometry::TiltSeriesGeometry,
    truth: Vec<Posed>,
    template: Template,
    clutter: Vec<([f64; 3], f64, &'static str)>,
}

fn simulate(copies: usize, n: usize, vesicles: usize, seed: u64, invert: bool) -> Simulated {
    let t0 = Instant::now();
    let p = params(copies, n, vesicles);
    let s = simulate_series(&p, seed).unwrap();
    let spec = ReconstructSpec {
        method: Method::Wbp {
            filter: Filter::Ramp,
        },
        binnings: vec![1],
        thickness_a: p.thickness_a,
        lowpass: None,
        invert_contrast: invert,
        max_memory_bytes: Some(1 << 30),
        checkpoint: None,
        ctf_correction: Default::default(),
        wiener_snr: 3.0,
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pick_sim");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("tomo_{seed}_{vesicles}_{invert}.mrc"));
    let tomogram =
        match reconstruct(s.stack.view(), &s.geometry, &spec, &Device::Cpu, &[out]).unwrap() {
            ReconstructOutcome::Complete(mut v) => v.remove(0).volume.unwrap(),
            ReconstructOutcome::Interrupted(i) => panic!("{i}"),
        };
    let truth = s
        .truth
        .particles
        .iter()
        .map(|q| Posed {
            position_a: q.position_a,
            pose: euler_zyz_to_matrix(q.rot_deg, q.tilt_deg, q.psi_deg),
        })
        .collect();
    let template = Template::from_structure(&p.structures[0].0, p.pixel_a, None).unwrap();
    eprintln!(
        "simulated + reconstructed {:?} in {:.1} s; template {}³, radius {:.0} Å",
        tomogram.dim(),
        t0.elapsed().as_secs_f64(),
        template.size(),
        template.radius_a
    );
    let mut clutter = Vec::new();
    for b in &s.truth.beads {
        clutter.push((b.centre_a, b.radius_a, "bead"));
    }
    for b in &s.truth.vesicles {
        clutter.push((b.centre_a, b.radius_a, "vesicle"));
    }
    Simulated {
        clutter,
        tomogram,
        geometry: s.geometry,
        truth,
        template,
    }
}

/// Pick with the true structure at 45° (163 rotations) and score against the truth.
fn pick_and_score(sim: &Simulated) -> lamella::pick::evaluate::PickAccuracy {
    let params = PickParams {
        angular_step_deg: 45.0,
        ..Default::default()
    };
    let t = Instant::now();
    let r = pick_tomogram(
        sim.tomogram.view(),
        10.0,
        Some(&sim.geometry),
        &sim.template,
        &params,
        None,
        &LocalComm,
        &Device::Cpu,
    )
    .unwrap();
    let acc = evaluate(&pick_posed(&r.picks), &sim.truth, 0.5 * r.radius_a, &[]);
    eprintln!(
        "{} rotations in {:.1} s; threshold {:.3} (σ {:.4}); {acc:?}",
        r.rotations.len(),
        t.elapsed().as_secs_f64(),
        r.threshold,
        r.sigma,
    );
    for p in &r.picks {
        let d: Vec<String> = sim
            .clutter
            .iter()
            .map(|(c, rad, w)| {
                let d = ((c[0] - p.position_a[0]).powi(2)
                    + (c[1] - p.position_a[1]).powi(2)
                    + (c[2] - p.position_a[2]).powi(2))
                .sqrt();
                format!("{w} at {d:.0} Å (r {rad:.0})")
            })
            .collect();
        eprintln!(
            "pick {:?} score {:.3}; {}",
            p.position_a,
            p.score,
            d.join(", ")
        );
    }
    acc
}

/// Recall and precision ≥ 0.9 for apoferritin at the preset dose among gold beads; the
/// orientation error (raw C1: the octahedral symmetry of 6z6u is not aligned to the axes,
/// so a pick in a symmetry-equivalent pose counts its full angle) is reported.
#[test]
fn apoferritin_recall_and_precision() {
    let sim = simulate(10, 128, 0, 3, true);
    let acc = pick_and_score(&sim);
    assert!(acc.recall >= 0.9, "recall {:.2}", acc.recall);
    assert!(acc.precision >= 0.9, "precision {:.2}", acc.precision);
    assert!(acc.median_distance_a <= 10.0, "{acc:?}");
}

/// With a lipid vesicle: the curved bilayer seen from inside correlates with the
/// apoferritin shell (scores 0.15–0.20 against ≥ 0.38 for the true particles, measured
/// 2026-12-08) above the false-alarm threshold (0.14); the background shell of the mask
/// (`mask_scale` 1.3) and the score-gap rule drop them: recall and precision ≥ 0.9
/// (1.0 / 1.0 measured; 1.0 / 0.67 without the two).
#[test]
fn apoferritin_with_a_vesicle() {
    let sim = simulate(10, 128, 1, 3, true);
    let acc = pick_and_score(&sim);
    assert!(acc.recall >= 0.9, "recall {:.2}", acc.recall);
    assert!(acc.precision >= 0.9, "precision {:.2}", acc.precision);
}

/// The sign check: lamella's default tomogram (contrast inverted, dense matter bright)
/// needs `Contrast::Bright` (picks within 10 Å of the particles); the dark template on the
/// same tomogram lands on the shell's rim (≈ 35 Å off, measured 2026-12-07).
#[test]
fn contrast_sign_matters() {
    let sim = simulate(6, 96, 0, 5, true);
    let run = |c: Contrast| {
        let mut params = PickParams {
            angular_step_deg: 60.0,
            ..Default::default()
        };
        params.weight.contrast = c;
        let r = pick_tomogram(
            sim.tomogram.view(),
            10.0,
            Some(&sim.geometry),
            &sim.template,
            &params,
            None,
            &LocalComm,
            &Device::Cpu,
        )
        .unwrap();
        evaluate(&pick_posed(&r.picks), &sim.truth, 0.5 * r.radius_a, &[])
    };
    let bright = run(Contrast::Bright);
    let dark = run(Contrast::Dark);
    eprintln!("bright {bright:?}\ndark {dark:?}");
    assert!(bright.recall >= 0.9, "{bright:?}");
    assert!(bright.median_distance_a <= 10.0, "{bright:?}");
    assert!(
        dark.n_matched == 0 || dark.median_distance_a > 20.0,
        "{dark:?}"
    );
}

fn pick_posed(p: &[lamella::pick::Pick]) -> Vec<Posed> {
    p.iter()
        .map(|q| Posed {
            position_a: q.position_a,
            pose: q.pose,
        })
        .collect()
}
