//! End-to-end checks of the simulator against its own ground truth.

use lamella::sim::{preset, simulate_series, Preset, SeriesParams, TiltScheme};
use ndarray::Axis;
use std::path::PathBuf;
use std::time::Instant;

fn shared_data() -> PathBuf {
    std::env::var("LAMELLA_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

fn bead_only() -> SeriesParams {
    let mut p = preset(Preset::Tiny, &shared_data()).remove(0);
    p.name = "bead".into();
    p.structures.clear();
    p.vesicles = 0;
    p.gold_beads = 1;
    p.axis_deg = 85.0;
    p.tilt_step_deg = 10.0;
    p.shift_sigma_a = 25.0;
    p.angle_error_sigma_deg = 1.0;
    p.scheme = TiltScheme::DoseSymmetric;
    p.noise = false;
    p
}

/// A gold bead is dark and lands where the TRUE geometry of each tilt puts it.
#[test]
fn bead_lands_at_true_projection() {
    let p = bead_only();
    // a seed whose bead sits away from the image edges (the images are periodic)
    let s = (0..100)
        .map(|seed| simulate_series(&p, seed).unwrap())
        .find(|s| {
            s.truth.beads[0].centre_a[..2]
                .iter()
                .all(|c| c.abs() < 150.0)
        })
        .unwrap();
    let bead = &s.truth.beads[0];
    let n_e = (p.total_dose_e_a2 / s.geometry.len() as f64 * p.pixel_a * p.pixel_a) as f32;
    for (i, img) in s.stack.axis_iter(Axis(0)).enumerate() {
        let t = &s.geometry.tilts[i];
        let want = t.projection(p.pixel_a, p.nx, p.ny).project(bead.centre_a);
        // darkest pixel, then the centroid of darkness around it
        let (mut my, mut mx, mut mv) = (0, 0, f32::INFINITY);
        for ((y, x), &v) in img.indexed_iter() {
            if v < mv {
                (my, mx, mv) = (y, x, v);
            }
        }
        assert!(mv < 0.8 * n_e, "tilt {i}: bead not dark ({mv} vs {n_e})");
        // iterated centroid of darkness in a circular window (radius = bead radius in px)
        let mut c = [mx as f64, my as f64];
        let r = bead.radius_a / p.pixel_a;
        for _ in 0..5 {
            let (mut sw, mut sx, mut sy) = (0.0f64, 0.0, 0.0);
            for ((y, x), &v) in img.indexed_iter() {
                let (dx, dy) = (x as f64 - c[0], y as f64 - c[1]);
                if dx * dx + dy * dy <= r * r {
                    let w = (n_e - v).max(0.0) as f64;
                    sw += w;
                    sx += w * x as f64;
                    sy += w * y as f64;
                }
            }
            c = [sx / sw, sy / sw];
        }
        let err = ((c[0] - want[0]).powi(2) + (c[1] - want[1]).powi(2)).sqrt();
        assert!(
            err < 0.5,
            "tilt {i} ({:.1}°): bead at {c:?}, truth {want:?}",
            t.tilt_deg
        );
    }
}

/// Truth records are complete and consistent with the stack.
#[test]
fn tiny_preset_truth_is_consistent() {
    let params = preset(Preset::Tiny, &shared_data());
    if !shared_data().join("structures/6z6u.pdb").exists() {
        eprintln!("SKIP: shared data missing");
        return;
    }
    assert_eq!(params.len(), 2);
    for p in &params {
        let s = simulate_series(p, 1).unwrap();
        let t = &s.truth;
        assert_eq!(s.stack.dim(), (31, p.ny, p.nx));
        assert_eq!(t.tilts.len(), 31);
        assert_eq!(t.particles.len(), 3);
        assert_eq!(t.beads.len(), 2);
        assert_eq!(t.vesicles.len(), 1);
        assert_eq!(s.frames.len(), if p.frames_per_tilt > 0 { 31 } else { 0 });
        // stack sorted by nominal tilt, acquisition indices a permutation
        assert!(s.nominal_tilts_deg.windows(2).all(|w| w[0] < w[1]));
        let mut acq: Vec<usize> = t
            .tilts
            .iter()
            .map(|x| x.geometry.acquisition_index)
            .collect();
        acq.sort();
        assert_eq!(acq, (0..31).collect::<Vec<_>>());
        // counts are non-negative and finite
        assert!(s.stack.iter().all(|v| v.is_finite() && *v >= 0.0));
        // the truth volume is denser at particle shells than the ice around
        let px = p.pixel_a;
        let nz = s.truth_volume.dim().0;
        for q in &t.particles {
            let idx = |k: usize, n: usize| (q.position_a[k] / px + (n / 2) as f64).round() as usize;
            let (x, y, z) = (idx(0, p.nx), idx(1, p.ny), idx(2, nz));
            // apoferritin: hollow centre, shell at ~50 Å: max along ±x of the shell > ice
            let shell = (3..=7)
                .map(|d| s.truth_volume[[z, y, x + d]].max(s.truth_volume[[z, y, x - d]]))
                .fold(0.0f32, f32::max);
            assert!(
                shell > 5.0,
                "particle shell {shell} V at {:?}",
                q.position_a
            );
        }
    }
}

/// Wall time of the presets; run once with
/// `cargo test --release --test sim_truth -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_presets() {
    for pr in [Preset::Tiny, Preset::Demo] {
        let t0 = Instant::now();
        let mut n = 0;
        for p in preset(pr, &shared_data()) {
            let s = simulate_series(&p, 7).unwrap();
            n += s.stack.len();
        }
        println!(
            "preset {pr}: {:.2} s ({} threads, {n} pixels)",
            t0.elapsed().as_secs_f64(),
            rayon::current_num_threads()
        );
    }
}
