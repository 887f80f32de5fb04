//! Gold-bead alignment on the built-in simulator: accuracy against the true geometry
//! (`align::evaluate::alignment_error`), bead positions against the true bead centres, bead
//! erasure, and the error for a series without beads.
//!
//! `cargo test --test align_beads -- --ignored --nocapture dose_sweep` prints the error vs
//! dose table of docs/alignment-beads.md.

use lamella::align::beads::{align, erase, BeadParams};
use lamella::align::evaluate::alignment_error;
use lamella::align::AlignReport;
use lamella::core::geometry::TiltSeriesGeometry;
use lamella::sim::{simulate_series, SeriesParams, SimulatedSeries, TiltScheme};
use ndarray::{Array2, Axis};
use std::sync::OnceLock;
use std::time::Instant;

const PIXEL_A: f64 = 8.0;
const THICKNESS_A: f64 = 800.0;

/// 512² at 8 Å, 25 beads of 100 Å, 41 tilts ±60°, shifts σ 15 px, axis 85°, angle errors
/// σ 0.5°, Poisson noise at `dose` e/Å² per tilt, no other objects.
fn params(dose: f64, beads: usize) -> SeriesParams {
    let nominal_count = 41.0;
    SeriesParams {
        name: "beads".into(),
        nx: 512,
        ny: 512,
        pixel_a: PIXEL_A,
        thickness_a: THICKNESS_A,
        structures: vec![],
        vesicles: 1,
        gold_beads: beads,
        gold_diameter_a: 100.0,
        tilt_min_deg: -60.0,
        tilt_max_deg: 60.0,
        tilt_step_deg: 3.0,
        scheme: TiltScheme::DoseSymmetric,
        axis_deg: 85.0,
        shift_sigma_a: 15.0 * PIXEL_A,
        angle_error_sigma_deg: 0.5,
        total_dose_e_a2: dose * nominal_count,
        voltage_kv: 300.0,
        cs_mm: 2.7,
        amplitude_contrast: 0.07,
        defocus_a: 30000.0,
        defocus_sigma_a: 1000.0,
        astigmatism_a: 300.0,
        frames_per_tilt: 0,
        drift_a_per_frame: 0.0,
        local_motion_a: 0.0,
        depth_layers: 0,
        noise: true,
        ice_structure_factor: 0.0,
    }
}

/// The nominal geometry with the tilt axis `axis_off` degrees off: what a user knows.
fn initial(sim: &SimulatedSeries, axis_off: f64) -> TiltSeriesGeometry {
    let mut g = TiltSeriesGeometry::from_angles(
        sim.geometry.nx,
        sim.geometry.ny,
        sim.geometry.pixel_a,
        &sim.nominal_tilts_deg,
        sim.geometry.tilts[0].axis_deg + axis_off,
    );
    g.optics = sim.geometry.optics.clone();
    g
}

fn shared_series() -> &'static SimulatedSeries {
    static SIM: OnceLock<SimulatedSeries> = OnceLock::new();
    SIM.get_or_init(|| {
        let t = Instant::now();
        let s = simulate_series(&params(3.0, 25), 7).unwrap();
        eprintln!("simulated in {:.1} s", t.elapsed().as_secs_f64());
        s
    })
}

/// RMS 3D distance (pixels) between solved beads and the nearest true bead centre, after
/// removing the specimen translation `t` found by `alignment_error` (`est(p + t) = truth(p)`).
fn bead_position_rms_px(report: &AlignReport, sim: &SimulatedSeries, t: [f64; 3]) -> f64 {
    let mut ss = 0.0;
    for b in &report.beads {
        let p = [
            b.position_a[0] - t[0],
            b.position_a[1] - t[1],
            b.position_a[2] - t[2],
        ];
        let d = sim
            .truth
            .beads
            .iter()
            .map(|s| {
                ((p[0] - s.centre_a[0]).powi(2)
                    + (p[1] - s.centre_a[1]).powi(2)
                    + (p[2] - s.centre_a[2]).powi(2))
                .sqrt()
            })
            .fold(f64::INFINITY, f64::min);
        ss += d * d;
    }
    (ss / report.beads.len() as f64).sqrt() / PIXEL_A
}

#[test]
fn beads_align_a_noisy_series_to_sub_pixel() {
    let sim = shared_series();
    let init = initial(sim, 2.0);
    let t = Instant::now();
    let report = align(sim.stack.view(), &init, &BeadParams::default()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    for l in &report.log {
        eprintln!("{l}");
    }
    let e = alignment_error(&report.geometry, &sim.geometry, THICKNESS_A).unwrap();
    let bead_rms = bead_position_rms_px(&report, sim, e.translation_a);
    eprintln!(
        "align {secs:.2} s: {} beads, RMS residual {:.3} px; shift RMS {:.3} px (max {:.3}), \
         axis error {:.3}°, tilt offset {:.3}°, tilt RMS {:.3}°, reprojection RMS {:.3} px, \
         bead 3D RMS {bead_rms:.3} px",
        report.beads.len(),
        report.rms_residual_px,
        e.rms_shift_px,
        e.max_shift_px,
        e.axis_error_deg,
        e.tilt_offset_deg,
        e.rms_tilt_error_deg,
        e.rms_reprojection_px
    );
    assert!(report.beads.len() >= 15, "{} beads", report.beads.len());
    assert!(e.rms_shift_px < 0.5, "{e:?}");
    assert!(e.axis_error_deg.abs() < 0.3, "{e:?}");
    // per-tilt angle errors (σ 0.5° in the truth) are recovered
    assert!(e.rms_tilt_error_deg < 0.15, "{e:?}");
    assert!(bead_rms < 1.0, "bead positions off by {bead_rms} px RMS");
    assert!(report.rms_residual_px < 1.0, "{}", report.rms_residual_px);
    // every tilt is observed and has a sane residual
    for t in &report.tilts {
        assert!(t.n_obs >= 5 && t.residual_px < 2.0, "{t:?}");
        assert_eq!(t.magnification, 1.0);
    }

    // the same with magnification solved: it stays ≈ 1 (the simulator has none) and
    // the accuracy holds
    let p = BeadParams {
        solve_magnification: true,
        ..BeadParams::default()
    };
    let report = align(sim.stack.view(), &init, &p).unwrap();
    let e = alignment_error(&report.geometry, &sim.geometry, THICKNESS_A).unwrap();
    let worst_mag = report
        .tilts
        .iter()
        .map(|t| (t.magnification - 1.0).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "with magnification: shift RMS {:.3} px, axis error {:.3}°, tilt RMS {:.3}°, \
         largest |mag − 1| {worst_mag:.5}",
        e.rms_shift_px, e.axis_error_deg, e.rms_tilt_error_deg
    );
    assert!(
        e.rms_shift_px < 0.5 && e.axis_error_deg.abs() < 0.3,
        "{e:?}"
    );
    assert!(worst_mag < 0.01, "{worst_mag}");
}

/// Ring-minus-disk contrast of one bead and the ring's pixel σ.
fn bead_contrast(img: &Array2<f32>, c: [f64; 2], r: f64) -> Option<(f64, f64, f64)> {
    let (ny, nx) = img.dim();
    if c[0] < 3.0 * r || c[1] < 3.0 * r || c[0] > nx as f64 - 3.0 * r || c[1] > ny as f64 - 3.0 * r
    {
        return None;
    }
    let (mut si, mut ni, mut so, mut so2, mut no) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for y in (c[1] - 2.5 * r) as usize..(c[1] + 2.5 * r) as usize {
        for x in (c[0] - 2.5 * r) as usize..(c[0] + 2.5 * r) as usize {
            let d = (x as f64 - c[0]).hypot(y as f64 - c[1]);
            let v = img[[y, x]] as f64;
            if d < r {
                si += v;
                ni += 1.0;
            } else if d > 1.8 * r && d < 2.5 * r {
                so += v;
                so2 += v * v;
                no += 1.0;
            }
        }
    }
    let mo = so / no;
    Some((mo - si / ni, (so2 / no - mo * mo).sqrt(), ni))
}

#[test]
fn erased_beads_fall_to_the_noise_level() {
    let sim = shared_series();
    let report = align(sim.stack.view(), &initial(sim, 2.0), &BeadParams::default()).unwrap();
    let mut erased = sim.stack.clone();
    erase(&mut erased, &report, 100.0).unwrap();
    let r = 0.5 * 100.0 / PIXEL_A;
    let (mut before, mut after, mut n) = (0.0, 0.0, 0.0);
    let mut worst: f64 = 0.0;
    for i in 0..sim.geometry.len() {
        let pr = sim.geometry.tilts[i].projection(PIXEL_A, 512, 512);
        let (a, b) = (
            sim.stack.index_axis(Axis(0), i).to_owned(),
            erased.index_axis(Axis(0), i).to_owned(),
        );
        for bead in &sim.truth.beads {
            let c = pr.project(bead.centre_a);
            let (Some((cb, _, _)), Some((ca, sd, npx))) =
                (bead_contrast(&a, c, r), bead_contrast(&b, c, r))
            else {
                continue;
            };
            // standard error of the disk mean against the ring mean
            let se = sd / npx.sqrt();
            before += cb / se;
            after += ca / se;
            worst = worst.max((ca / se).abs());
            n += 1.0;
        }
    }
    let (before, after) = (before / n, after / n);
    eprintln!(
        "bead contrast in standard errors: before {before:.1}, after {after:.2} (worst single \
         {worst:.1}) over {n} bead images"
    );
    assert!(before > 20.0, "{before}");
    assert!(after.abs() < 1.0, "{after}");
}

#[test]
fn a_series_without_beads_is_refused_with_the_fix() {
    let mut p = params(3.0, 0);
    p.nx = 256;
    p.ny = 256;
    p.tilt_step_deg = 6.0;
    let sim = simulate_series(&p, 3).unwrap();
    let err = align(
        sim.stack.view(),
        &initial(&sim, 0.0),
        &BeadParams::default(),
    )
    .expect_err("a bead-free series must be refused");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("gold beads"), "{msg}");
    assert!(msg.contains("bead_diameter_a"), "{msg}");
    assert!(msg.contains("fiducial_free"), "{msg}");
}

/// Error vs dose per tilt (docs/alignment-beads.md). Not run by default.
#[test]
#[ignore]
fn dose_sweep() {
    println!("| dose e/Å²/tilt | beads | residual px | shift RMS px | axis err ° | tilt RMS ° | bead 3D RMS px | align s |");
    println!("|---|---|---|---|---|---|---|---|");
    for dose in [0.03, 0.05, 0.07, 0.1, 0.25, 1.0, 3.0, 10.0] {
        let sim = simulate_series(&params(dose, 25), 7).unwrap();
        let t = Instant::now();
        match align(
            sim.stack.view(),
            &initial(&sim, 2.0),
            &BeadParams::default(),
        ) {
            Ok(rep) => {
                let secs = t.elapsed().as_secs_f64();
                for l in &rep.log {
                    eprintln!("{dose}: {l}");
                }
                let e = alignment_error(&rep.geometry, &sim.geometry, THICKNESS_A).unwrap();
                let b = bead_position_rms_px(&rep, &sim, e.translation_a);
                println!(
                    "| {dose} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {b:.3} | {secs:.2} |",
                    rep.beads.len(),
                    rep.rms_residual_px,
                    e.rms_shift_px,
                    e.axis_error_deg,
                    e.rms_tilt_error_deg
                );
            }
            Err(err) => println!("| {dose} | failed: {err} |"),
        }
    }
}

/// Detected bead centres against the true projections of the bead centres.
#[test]
fn detected_centres_match_true_projections() {
    let mut p = params(3.0, 12);
    p.nx = 256;
    p.ny = 256;
    p.tilt_step_deg = 15.0;
    let sim = simulate_series(&p, 5).unwrap();
    let mut det = lamella::align::beads::detect::Detector::new(256, 256, 2, 12.5, 6.0);
    let mut all: Vec<_> = (0..sim.geometry.len())
        .map(|i| det.detect(sim.stack.index_axis(Axis(0), i), 100))
        .collect();
    lamella::align::beads::centre::refine_candidates(sim.stack.view(), &mut all, 6.25).unwrap();
    let mut errs = Vec::new();
    for (i, cands) in all.iter().enumerate() {
        let pr = sim.geometry.tilts[i].projection(PIXEL_A, 256, 256);
        for b in &sim.truth.beads {
            let q = pr.project(b.centre_a);
            let best = cands
                .iter()
                .map(|c| (c.x - q[0], c.y - q[1]))
                .min_by(|a, b| a.0.hypot(a.1).total_cmp(&b.0.hypot(b.1)));
            if let Some((dx, dy)) = best {
                if dx.hypot(dy) < 5.0 {
                    errs.push((dx, dy));
                }
            }
        }
    }
    let n = errs.len() as f64;
    let mx = errs.iter().map(|e| e.0).sum::<f64>() / n;
    let my = errs.iter().map(|e| e.1).sum::<f64>() / n;
    let rms = (errs.iter().map(|e| e.0 * e.0 + e.1 * e.1).sum::<f64>() / n).sqrt();
    eprintln!("{n} matches: mean error ({mx:.3}, {my:.3}) px, RMS {rms:.3} px");
    assert!(n > 30.0 && rms < 0.25, "{n} matches, RMS {rms} px");
}
