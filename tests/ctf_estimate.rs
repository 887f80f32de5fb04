//! CTF estimation against truth: a synthetic CTF-filtered noise image, and simulated tilt
//! series near 0° tilt.

use lamella::core::fourier::{fftfreq, rfftfreq, Fft2};
use lamella::ctf::{estimate, Ctf, CtfSearch};
use lamella::sim::{self, Preset};
use ndarray::Array2;
use num_complex::Complex32;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::PathBuf;

/// Smallest difference of two astigmatism angles (degrees, period 180°).
fn angle_diff(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(180.0);
    d.min(180.0 - d)
}

fn noise(n: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    Array2::from_shape_fn((n, n), |_| StandardNormal.sample(rng))
}

#[test]
fn recovers_synthetic_astigmatic_ctf() {
    // 1024² (49 tiles): over noise seeds 1–8 the errors are ≤ 16 Å and ≤ 0.23° (512² gives
    // about twice that), so the 20 Å / 2° bounds hold with margin
    let (n, px) = (1024usize, 1.5f64);
    let truth = Ctf {
        voltage_kv: 300.0,
        cs_mm: 2.7,
        amplitude_contrast: 0.07,
        defocus_u_a: 21000.0,
        defocus_v_a: 19500.0,
        astig_angle_deg: 35.0,
        phase_shift_deg: 0.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut plan = Fft2::new(n, n);
    let mut spec = plan.forward(noise(n, &mut rng).view());
    let (fy, fx) = (fftfreq(n), rfftfreq(n));
    for ((y, x), v) in spec.indexed_iter_mut() {
        let (sy, sx) = (fy[y] as f64 / px, fx[x] as f64 / px);
        let env = (-25.0 * (sx * sx + sy * sy)).exp(); // B = 100 Å²
        *v *= Complex32::new((truth.value(sx, sy) * env) as f32, 0.0);
    }
    let signal = plan.inverse(spec);
    let sig_rms = (signal.iter().map(|v| v * v).sum::<f32>() / (n * n) as f32).sqrt();
    // white noise of the same RMS as the signal (SNR 1 per pixel)
    let img = &signal + &noise(n, &mut rng).mapv(|v| v * sig_rms);

    let mut s = CtfSearch::new(px, 300.0, 2.7, 0.07);
    s.resolution_band_a = (30.0, 5.0);
    s.tile = 256;
    s.defocus_min_a = 5000.0;
    s.defocus_max_a = 50000.0;
    let fit = estimate(img.view(), &s).unwrap();
    eprintln!("synthetic fit {fit:?}");
    assert!(
        (fit.defocus_u_a - truth.defocus_u_a).abs() < 20.0,
        "{fit:?}"
    );
    assert!(
        (fit.defocus_v_a - truth.defocus_v_a).abs() < 20.0,
        "{fit:?}"
    );
    assert!(
        angle_diff(fit.astig_angle_deg, truth.astig_angle_deg) < 2.0,
        "{fit:?}"
    );
    assert!(fit.score > 0.2, "{fit:?}");
    assert!(fit.fit_resolution_a < 8.0, "{fit:?}");
}

#[test]
fn recovers_defocus_of_simulated_low_tilts() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if !shared.join("structures").join("6z6u.pdb").exists() {
        eprintln!("SKIP: {} missing", shared.display());
        return;
    }
    let base = sim::preset(Preset::Tiny, &shared).remove(0);
    let mut errs_df = vec![];
    let mut errs_ang = vec![];
    for (k, (defocus, astig)) in [(15000.0, 600.0), (30000.0, 1000.0), (45000.0, 300.0)]
        .into_iter()
        .enumerate()
    {
        // Noise-free counts: with Poisson noise at 3 e/Å² per tilt a 256² image carries no
        // usable Thon rings (docs/ctf.md, "Measured accuracy"); the CTF, its defocus
        // gradient and the dose filter are the simulator's.
        let p = sim::SeriesParams {
            name: format!("ctf_{k}"),
            nx: 256,
            ny: 256,
            pixel_a: 5.0,
            thickness_a: 600.0,
            tilt_min_deg: -3.0,
            tilt_max_deg: 3.0,
            tilt_step_deg: 3.0,
            // 3 e/Å² per tilt (a 41-tilt series of 120 e/Å²)
            total_dose_e_a2: 9.0,
            defocus_a: defocus,
            defocus_sigma_a: 500.0,
            astigmatism_a: astig,
            frames_per_tilt: 0,
            noise: false,
            ice_structure_factor: 0.0,
            // a crowded field: Thon rings need broadband specimen power (the simulated ice
            // is a uniform slab and gives none)
            structures: vec![(base.structures[0].0.clone(), 40)],
            vesicles: 3,
            gold_beads: 4,
            ..base.clone()
        };
        let ser = sim::simulate_series(&p, 11 + k as u64).unwrap();
        let mut s = CtfSearch::new(p.pixel_a, p.voltage_kv, p.cs_mm, p.amplitude_contrast);
        s.tile = 128;
        s.defocus_min_a = 10000.0;
        s.defocus_max_a = 60000.0;
        s.resolution_band_a = (40.0, 11.0);
        for (i, t) in ser.geometry.tilts.iter().enumerate() {
            let img = ser.stack.index_axis(ndarray::Axis(0), i);
            let fit = estimate(img, &s).unwrap();
            let e_u = fit.defocus_u_a - t.defocus_u_a;
            let e_v = fit.defocus_v_a - t.defocus_v_a;
            let e_a = angle_diff(fit.astig_angle_deg, t.astig_angle_deg);
            eprintln!(
                "series {k} tilt {:.1}: true U {:.0} V {:.0} ang {:.1}; fit U {:.0} V {:.0} ang {:.1} score {:.3} res {:.1} Å; err U {e_u:.0} V {e_v:.0} ang {e_a:.1}",
                t.tilt_deg, t.defocus_u_a, t.defocus_v_a, t.astig_angle_deg,
                fit.defocus_u_a, fit.defocus_v_a, fit.astig_angle_deg, fit.score, fit.fit_resolution_a
            );
            errs_df.push(e_u.abs());
            errs_df.push(e_v.abs());
            errs_ang.push(e_a);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (md, ma) = (median(&mut errs_df), median(&mut errs_ang));
    eprintln!("median |defocus error| {md:.0} Å, median angle error {ma:.1}°");
    // Measured (seeds 11–13): median |error| 341 Å, max 565 Å, median angle error 3.8°.
    // The residual is a bias of a few hundred Å per series (same sign within a series): the
    // specimen here is apoferritin shells whose own power spectrum has zeros spaced like the
    // Thon rings, and the truth is the defocus at the slab mid-plane, not at the mass centre.
    // Bounds: about twice the measured values.
    let max = errs_df.iter().cloned().fold(0.0, f64::max);
    assert!(md < 700.0, "median |defocus error| {md} Å");
    assert!(max < 1500.0, "max |defocus error| {max} Å");
    assert!(ma < 10.0, "median angle error {ma}°");
}
