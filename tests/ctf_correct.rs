//! CTF correction in reconstruction against the truth: a simulated specimen (the
//! simulator's apoferritin field and clean volume) imaged with a depth-dependent CTF, then
//! reconstructed by WBP without correction, with per-tilt phase flipping / Wiener filtering
//! (strips along the axis) and with the 3D (per Z slab) correction; FSC against the true
//! volume averaged over the shells past the first CTF zero.
//!
//! Forward model: the simulator's depth-layered image formation (`sim::image::layered_counts`,
//! which the simulator uses itself for specimens thicker than the π/4 defocus tolerance at
//! Nyquist): the clean volume is cut into thin Z layers; each layer is projected
//! (`recon::project`) and imaged with the CTF of the defocus at its height (the tilt's centre
//! defocus minus the depth offset `z/cos`, plus the simulator's in-plane gradient), and the
//! phases of the layers add (`I = N·exp(−Σ c_k)`).

mod common;

use lamella::core::fourier::Fft2;
use lamella::core::geometry::TiltSeriesGeometry;
use lamella::ctf::Ctf;
use lamella::device::Device;
use lamella::recon::ctfcorr::{z_slab_projections, CtfCorrection};
use lamella::recon::filter::Filter;
use lamella::recon::fsc::fsc;
use lamella::recon::plan::{reconstruct, Method, ReconstructOutcome, ReconstructSpec};
use lamella::recon::project::forward_project_cpu;
use lamella::report::plot::{write_chart_png, Chart, Series, Style, PALETTE};
use lamella::sim::{self, Preset};
use ndarray::{s, Array2, Array3, Axis};
use rayon::prelude::*;
use std::path::PathBuf;

const N: usize = 128;
const PIX: f64 = 4.0;
const THICK: f64 = 2000.0;
const DEFOCUS: f64 = 30000.0;
const LAYERS: usize = 24;

/// The tilt series of the module docs: `[tilt, y, x]` counts.
fn image_series(truth: &Array3<f32>, g: &TiltSeriesGeometry) -> Array3<f32> {
    let nz = truth.dim().0;
    let pad = sim::image_pad(N);
    let pn = N + 2 * pad;
    let mut gp = g.clone();
    gp.nx = pn;
    gp.ny = pn;
    let projs = gp.projections(1);
    // per layer: the line integrals (V·Å) of every tilt and the layer's height
    let layers: Vec<(Array3<f32>, f64)> = (0..LAYERS)
        .map(|k| {
            let (z0, z1) = (k * nz / LAYERS, (k + 1) * nz / LAYERS);
            let layer = truth.slice(s![z0..z1, .., ..]).to_owned();
            let (lp, zc) = z_slab_projections(&projs, nz, z0, z1 - z0, PIX);
            let p = forward_project_cpu(layer.view(), &lp, (pn, pn), PIX).mapv(|v| v * PIX as f32);
            (p, zc)
        })
        .collect();
    let mut out = Array3::<f32>::zeros((g.len(), N, N));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut o)| {
            let mut plan = Fft2::new(pn, pn);
            let tilt: Vec<(Array2<f32>, f64)> = layers
                .iter()
                .map(|(p, zc)| (p.index_axis(Axis(0), i).to_owned(), *zc))
                .collect();
            let counts = sim::image::layered_counts(&tilt, &gp, i, &mut plan);
            o.assign(&counts.slice(s![pad..pad + N, pad..pad + N]));
        });
    out
}

/// First zero of the CTF (1/Å) at `defocus` Å.
fn first_zero(c: &Ctf) -> f64 {
    let mut prev = c.value(0.0, 0.0);
    for i in 1..100_000 {
        let s = i as f64 * 1e-5;
        let v = c.value(s, 0.0);
        if v.signum() != prev.signum() {
            return s;
        }
        prev = v;
    }
    panic!("no zero");
}

#[test]
fn three_d_beats_phase_flip_beats_none_past_the_first_zero() {
    let shared = common::shared_data();
    if !shared.join("structures").join("6z6u.pdb").exists() {
        eprintln!("SKIP: {} missing", shared.display());
        return;
    }
    let t0 = std::time::Instant::now();
    // the specimen: apoferritins through a thick slab (only 3 tilts simulated: the volume is
    // what is used here)
    let base = sim::preset(Preset::Tiny, &shared).remove(0);
    let p = sim::SeriesParams {
        name: "ctfcorr".into(),
        nx: N,
        ny: N,
        pixel_a: PIX,
        thickness_a: THICK,
        structures: vec![(base.structures[0].0.clone(), 40)],
        vesicles: 0,
        gold_beads: 0,
        tilt_min_deg: -3.0,
        tilt_max_deg: 3.0,
        tilt_step_deg: 3.0,
        noise: false,
        frames_per_tilt: 0,
        ..base
    };
    let ser = sim::simulate_series(&p, 21).unwrap();
    // the excess over the ice (a uniform slab: the per-plane minimum), as the simulator
    // projects it: the ice's step at the box edges would dominate the images otherwise
    let mut truth = ser.truth_volume;
    for mut plane in truth.axis_iter_mut(Axis(0)) {
        let m = plane.fold(f32::INFINITY, |a, &b| a.min(b));
        plane.mapv_inplace(|v| v - m);
    }
    if std::env::var("CTF_DEBUG").is_ok() {
        let nz = truth.dim().0;
        let prof: Vec<String> = (0..10)
            .map(|k| {
                let sl = truth.slice(s![k * nz / 10..(k + 1) * nz / 10, .., ..]);
                let m = sl.mean().unwrap();
                format!(
                    "{:.3}",
                    sl.mapv(|v| (v - m) * (v - m)).mean().unwrap().sqrt()
                )
            })
            .collect();
        eprintln!("truth RMS per tenth of the depth: {}", prof.join(" "));
    }
    eprintln!(
        "specimen {:?} in {:.1} s",
        truth.dim(),
        t0.elapsed().as_secs_f64()
    );

    // the acquisition: ±60° every 3°, axis 85°, defocus 3 µm ± 0.1 µm, 200 Å astigmatism,
    // dose-symmetric exposure of 2 e/Å² per tilt
    let angles: Vec<f64> = (-40..=40).map(|k| 1.5 * k as f64).collect();
    let mut g = TiltSeriesGeometry::from_angles(N, N, PIX, &angles, 85.0);
    for (i, t) in g.tilts.iter_mut().enumerate() {
        let d = DEFOCUS + 1000.0 * ((i as f64) * 0.7).sin();
        t.defocus_u_a = d + 100.0;
        t.defocus_v_a = d - 100.0;
        t.astig_angle_deg = 20.0 + 3.0 * i as f64;
        t.dose_e_a2 = 1.0;
        let order = (t.tilt_deg.abs() / 1.5).round() as usize * 2;
        t.pre_exposure_e_a2 = order as f64;
    }
    let stack = image_series(&truth, &g);
    eprintln!("tilt series in {:.1} s", t0.elapsed().as_secs_f64());

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ctf_correct");
    std::fs::create_dir_all(&dir).unwrap();
    let run = |mode: CtfCorrection| -> Array3<f32> {
        let spec = ReconstructSpec {
            method: Method::Wbp {
                filter: Filter::Ramp,
            },
            binnings: vec![1],
            thickness_a: THICK,
            lowpass: None,
            invert_contrast: true,
            max_memory_bytes: Some(2 << 30),
            checkpoint: None,
            ctf_correction: mode,
            wiener_snr: 3.0,
        };
        let out = dir.join(format!("{mode:?}.mrc"));
        let t = std::time::Instant::now();
        match reconstruct(stack.view(), &g, &spec, &Device::Cpu, &[out]).unwrap() {
            ReconstructOutcome::Complete(mut v) => {
                eprintln!("{mode:?}: {:.1} s", t.elapsed().as_secs_f64());
                v.remove(0).volume.unwrap()
            }
            ReconstructOutcome::Interrupted(i) => panic!("{i}"),
        }
    };
    let c = Ctf {
        voltage_kv: 300.0,
        cs_mm: 2.7,
        amplitude_contrast: 0.07,
        defocus_u_a: DEFOCUS,
        defocus_v_a: DEFOCUS,
        astig_angle_deg: 0.0,
        phase_shift_deg: 0.0,
    };
    let s0 = first_zero(&c);
    let s_hi = 0.9 * 0.5 / PIX;
    // central 96² in x and y (WBP edges left out), the whole thickness
    let m = (N - 96) / 2;
    let crop = |v: &Array3<f32>| v.slice(s![.., m..N - m, m..N - m]).to_owned();
    let tc = crop(&truth);
    let modes = [
        CtfCorrection::None,
        CtfCorrection::Phaseflip,
        CtfCorrection::Wiener,
        CtfCorrection::ThreeD,
    ];
    let mut chart = Chart::new(
        &format!(
            "FSC VS TRUTH ({PIX} A/PX, {THICK} A THICK, {} UM)",
            DEFOCUS / 1e4
        ),
        "SPATIAL FREQUENCY (1/A)",
        "FSC",
    );
    chart.y_range = Some((-0.2, 1.0));
    chart.hlines.push((0.0, [128, 128, 128]));
    let mut score = Vec::new();
    let mut depth_scores: Vec<Vec<f64>> = Vec::new();
    for (k, &mode) in modes.iter().enumerate() {
        let v = run(mode);
        assert_eq!(v.dim(), truth.dim());
        let f = fsc(crop(&v).view(), tc.view(), PIX);
        let past = f.mean_in(s0, s_hi);
        let before = f.mean_in(0.0, s0);
        eprintln!(
            "{mode:?}: mean FSC {s0:.4}..{s_hi:.4}/Å (past the first zero) {past:.4}; before {before:.4}"
        );
        chart.series.push(Series {
            label: format!("{mode:?} {past:.3}"),
            points: f
                .s_per_a
                .iter()
                .cloned()
                .zip(f.fsc.iter().cloned())
                .collect(),
            color: PALETTE[k],
            style: Style::Line,
        });
        score.push(past);
        // the bottom and top fifths of the depth (largest defocus error of a mid-plane
        // correction) and the middle fifth
        let nz = v.dim().0;
        let mut parts = Vec::new();
        for (a, b) in [(0, nz / 5), (2 * nz / 5, 3 * nz / 5), (4 * nz / 5, nz)] {
            let cv = crop(&v).slice(s![a..b, .., ..]).to_owned();
            let ct = tc.slice(s![a..b, .., ..]).to_owned();
            let f = fsc(cv.view(), ct.view(), PIX);
            parts.push(f.mean_in(s0, s_hi));
        }
        eprintln!(
            "  bottom / middle / top fifth past the first zero: {:.4} / {:.4} / {:.4}",
            parts[0], parts[1], parts[2]
        );
        depth_scores.push(parts);
        if std::env::var("CTF_DEBUG").is_ok() {
            let row: Vec<String> = f.fsc.iter().map(|x| format!("{x:.2}")).collect();
            eprintln!("{}", row.join(" "));
        }
    }
    let png = dir.join("ctf_correction_fsc.png");
    write_chart_png(&png, &chart).unwrap();
    eprintln!(
        "wrote {} ({:.1} s in all)",
        png.display(),
        t0.elapsed().as_secs_f64()
    );
    let (none, flip, wiener, three) = (score[0], score[1], score[2], score[3]);
    // measured 2026-12-07: none −0.005, phase flip 0.312, Wiener 0.296, 3D 0.319; outer
    // fifths phase flip 0.244 / 0.227, 3D 0.257 / 0.238
    assert!(none.abs() < 0.05, "uncorrected {none}");
    assert!(flip > none + 0.25, "phase flip {flip} vs none {none}");
    assert!(wiener > none + 0.25, "Wiener {wiener} vs none {none}");
    assert!(three > flip + 0.004, "3D {three} vs phase flip {flip}");
    for k in [0, 2] {
        let (f, t) = (depth_scores[1][k], depth_scores[3][k]);
        assert!(t > f + 0.008, "fifth {k}: 3D {t} vs phase flip {f}");
    }
    // the middle fifth: both correct with about the right defocus
    assert!((depth_scores[3][1] - depth_scores[1][1]).abs() < 0.01);
}
