//! Unit tests of the whole simulator (the per-module maths is tested beside each module).

use super::*;
use std::path::PathBuf;

fn shared_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// A hollow-shell test map in volts (radius 40 Å, 4 Å/px).
fn shell_map() -> Structure {
    let n = 24;
    let c = (n / 2) as f64;
    let vox = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        let r =
            ((x as f64 - c).powi(2) + (y as f64 - c).powi(2) + (z as f64 - c).powi(2)).sqrt() * 4.0;
        if (25.0..40.0).contains(&r) {
            7.0f32
        } else {
            0.0
        }
    });
    Structure::Map {
        path_label: "shell".into(),
        pixel_a: 4.0,
        voxels: Arc::new(vox),
    }
}

fn small_params() -> SeriesParams {
    SeriesParams {
        name: "unit".into(),
        nx: 64,
        ny: 64,
        pixel_a: 10.0,
        thickness_a: 400.0,
        structures: vec![(shell_map(), 4)],
        vesicles: 1,
        gold_beads: 2,
        gold_diameter_a: 100.0,
        tilt_min_deg: -60.0,
        tilt_max_deg: 60.0,
        tilt_step_deg: 12.0,
        scheme: TiltScheme::DoseSymmetric,
        axis_deg: 85.0,
        shift_sigma_a: 10.0,
        angle_error_sigma_deg: 0.3,
        total_dose_e_a2: 110.0,
        voltage_kv: 300.0,
        cs_mm: 2.7,
        amplitude_contrast: 0.07,
        defocus_a: 30000.0,
        defocus_sigma_a: 1000.0,
        astigmatism_a: 300.0,
        frames_per_tilt: 3,
        drift_a_per_frame: 2.0,
        local_motion_a: 0.0,
        depth_layers: 0,
        noise: true,
        ice_structure_factor: 0.0,
    }
}

fn run_in_pool(threads: usize, p: &SeriesParams, seed: u64) -> SimulatedSeries {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| simulate_series(p, seed).unwrap())
}

#[test]
fn deterministic_for_a_seed_and_thread_count() {
    let p = small_params();
    let a = run_in_pool(1, &p, 11);
    let b = run_in_pool(2, &p, 11);
    let bits = |x: &Array3<f32>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.stack), bits(&b.stack));
    assert_eq!(bits(&a.truth_volume), bits(&b.truth_volume));
    assert_eq!(a.frames.len(), b.frames.len());
    for (fa, fb) in a.frames.iter().zip(b.frames.iter()) {
        assert_eq!(bits(fa), bits(fb));
    }
    assert_eq!(a.truth.particles, b.truth.particles);
    assert_eq!(a.truth.tilts, b.truth.tilts);
    // another seed gives another specimen and noise
    let c = run_in_pool(2, &p, 12);
    assert_ne!(bits(&a.stack), bits(&c.stack));
    assert_ne!(a.truth.particles, c.truth.particles);
    // another name gives another series with the same seed
    let mut q = p.clone();
    q.name = "unit2".into();
    let d = run_in_pool(2, &q, 11);
    assert_ne!(a.truth.particles, d.truth.particles);
}

#[test]
fn objects_inside_slab_and_apart() {
    let p = small_params();
    let s = simulate_series(&p, 3).unwrap();
    let t = &s.truth;
    assert_eq!(t.particles.len(), 4);
    assert_eq!(t.vesicles.len(), 1);
    assert_eq!(t.beads.len(), 2);
    let half = [
        (p.nx / 2) as f64 * p.pixel_a,
        (p.ny / 2) as f64 * p.pixel_a,
        0.5 * p.thickness_a,
    ];
    let mut objs: Vec<([f64; 3], f64)> = t
        .particles
        .iter()
        .map(|q| (q.position_a, q.radius_a))
        .collect();
    objs.extend(
        t.vesicles
            .iter()
            .map(|v| (v.centre_a, v.radius_a + phantom::MEMBRANE_HALF_A)),
    );
    objs.extend(t.beads.iter().map(|b| (b.centre_a, b.radius_a)));
    for (i, (c, r)) in objs.iter().enumerate() {
        for k in 0..3 {
            assert!(
                c[k].abs() + r <= half[k] + 1e-6,
                "object {i} axis {k}: {c:?} r {r}"
            );
        }
        for (c2, r2) in &objs[i + 1..] {
            let d = (0..3).map(|k| (c[k] - c2[k]).powi(2)).sum::<f64>().sqrt();
            assert!(d >= r + r2, "objects overlap: {c:?} {c2:?}");
        }
    }
    // the truth volume: ice in the slab, denser at particle centres' shells, nothing outside
    let nz = s.truth_volume.dim().0;
    assert_eq!(nz, 40);
    assert!((s.truth_volume[[nz / 2, 0, 0]] - 4.5).abs() < 0.2);
    // the membrane mask marks the shell around the vesicle radius
    let v = &t.vesicles[0];
    let ix = |k: usize, n: usize| (v.centre_a[k] / p.pixel_a + (n / 2) as f64).round() as usize;
    let (cx, cy, cz) = (ix(0, p.nx), ix(1, p.ny), ix(2, nz));
    let rx = (v.centre_a[0] + v.radius_a) / p.pixel_a + (p.nx / 2) as f64;
    assert_eq!(s.membrane_mask[[cz, cy, rx.round() as usize]], 1);
    assert_eq!(s.membrane_mask[[cz, cy, cx]], 0);
}

#[test]
fn mean_counts_equal_dose() {
    let mut p = small_params();
    p.frames_per_tilt = 0;
    let s = simulate_series(&p, 5).unwrap();
    let want = p.total_dose_e_a2 / s.geometry.len() as f64 * p.pixel_a * p.pixel_a;
    for (i, img) in s.stack.axis_iter(Axis(0)).enumerate() {
        let m = img.mean().unwrap() as f64;
        assert!(
            (m - want).abs() / want < 0.03,
            "tilt {i}: mean {m} vs {want}"
        );
    }
    // with movies the realigned sum keeps the counts too
    let mut q = small_params();
    q.noise = false;
    let s = simulate_series(&q, 5).unwrap();
    let f0 = &s.frames[0];
    assert_eq!(f0.dim().0, 3);
    let fsum: f64 = f0.iter().map(|&v| v as f64).sum();
    let ssum: f64 = s
        .stack
        .index_axis(Axis(0), 0)
        .iter()
        .map(|&v| v as f64)
        .sum();
    assert!((fsum - ssum).abs() / ssum < 1e-3);
    assert_eq!(s.truth.tilts[0].frame_drift_a.len(), 3);
}

#[test]
fn geometry_is_the_true_one() {
    let p = small_params();
    let s = simulate_series(&p, 9).unwrap();
    assert_eq!(s.geometry.len(), 11);
    assert_eq!(s.stack.dim(), (11, 64, 64));
    let dose = p.total_dose_e_a2 / 11.0;
    for (i, t) in s.geometry.tilts.iter().enumerate() {
        let tt = &s.truth.tilts[i];
        assert_eq!(t, &tt.geometry);
        assert!((t.tilt_deg - s.nominal_tilts_deg[i]).abs() < 2.0);
        assert!((t.pre_exposure_e_a2 - t.acquisition_index as f64 * dose).abs() < 1e-9);
        assert!((t.defocus_u_a - t.defocus_v_a - 300.0).abs() < 1e-9);
    }
    // zero tilt acquired first
    assert_eq!(s.geometry.tilts[5].acquisition_index, 0);
    // truth serialises to JSON and back
    let j = serde_json::to_string(&Truth {
        seed: 9,
        preset: "custom".into(),
        series: vec![s.truth.clone()],
    })
    .unwrap();
    let back: Truth = serde_json::from_str(&j).unwrap();
    assert_eq!(back.series[0].particles, s.truth.particles);
}

#[test]
fn bad_params_are_config_errors() {
    let mut p = small_params();
    p.pixel_a = 0.0;
    assert!(matches!(simulate_series(&p, 1), Err(Error::Config(_))));
    let mut p = small_params();
    p.structures = vec![(shell_map(), 500)];
    let e = simulate_series(&p, 1).err().unwrap().to_string();
    assert!(e.contains("crowded"), "{e}");
    assert!("demo".parse::<Preset>().is_ok() && "x".parse::<Preset>().is_err());
    assert_eq!(Preset::Tiny.to_string(), "tiny");
}

#[test]
fn apoferritin_is_a_hollow_sphere() {
    let path = shared_data().join("structures/6z6u.pdb");
    if !path.exists() {
        eprintln!("SKIP: {} missing", path.display());
        return;
    }
    let m = Structure::Pdb(path).render(2.0).unwrap();
    let n = m.potential.dim().0;
    let c = (n / 2) as f64;
    // radial mean profile in 2 Å shells
    let nb = 45;
    let mut sum = vec![0.0f64; nb];
    let mut cnt = vec![0usize; nb];
    for ((z, y, x), &v) in m.potential.indexed_iter() {
        let r =
            ((x as f64 - c).powi(2) + (y as f64 - c).powi(2) + (z as f64 - c).powi(2)).sqrt() * 2.0;
        let b = (r / 2.0) as usize;
        if b < nb {
            sum[b] += v as f64;
            cnt[b] += 1;
        }
    }
    let prof: Vec<f64> = sum
        .iter()
        .zip(&cnt)
        .map(|(s, &c)| s / c.max(1) as f64)
        .collect();
    let peak = prof.iter().cloned().fold(0.0, f64::max);
    // hollow: the inner 30 Å is nearly empty
    assert!(prof[..15].iter().all(|&v| v < 0.1 * peak), "{prof:?}");
    // outer radius: last radius above 10% of the peak, in 60–70 Å
    let outer = (0..nb).rev().find(|&b| prof[b] > 0.1 * peak).unwrap() as f64 * 2.0 + 1.0;
    assert!(
        (58.0..=70.0).contains(&outer),
        "outer radius {outer} Å, profile {prof:?}"
    );
    // shell density plausible: peak a few volts
    assert!((2.0..20.0).contains(&peak), "peak {peak} V");
    assert!(m.radius_a > 60.0 && m.radius_a < 90.0, "{}", m.radius_a);
}

/// `local_motion_a = 0` is left out of the serialised parameters (configs, presets and the
/// resume hashes made from them are unchanged) and reads back as 0 when absent.
#[test]
fn local_motion_default_is_not_serialised() {
    let p = small_params();
    let j = serde_json::to_string(&p).unwrap();
    assert!(!j.contains("local_motion_a"), "{j}");
    let back: SeriesParams = serde_json::from_str(&j).unwrap();
    assert_eq!(back.local_motion_a, 0.0);
    let mut q = p.clone();
    q.local_motion_a = 5.0;
    assert!(serde_json::to_string(&q)
        .unwrap()
        .contains("\"local_motion_a\":5.0"));
}

#[test]
fn depth_layers_are_automatic_for_thick_fine_specimens_and_add_up() {
    let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let presets = [Preset::Tiny, Preset::Demo];
    for p in presets.iter().flat_map(|&k| preset(k, &shared)) {
        assert_eq!(
            depth_layer_count(&p),
            1,
            "{}: presets image in one layer",
            p.name
        );
    }
    let mut p = preset(Preset::Tiny, &shared).remove(0);
    p.pixel_a = 4.0;
    p.thickness_a = 2000.0;
    // tolerance at Nyquist (1/8 Å⁻¹, 300 kV): 813 Å, along the beam at 60°: 407 Å
    assert_eq!(depth_layer_count(&p), 5);
    p.depth_layers = 1;
    assert_eq!(depth_layer_count(&p), 1);
    // the layers of a ray-sum partition add up to the whole projection
    let vol = ndarray::Array3::from_shape_fn((20, 24, 24), |(z, y, x)| {
        ((z * 3 + y * 5 + x * 7) % 11) as f32
    });
    let pr = project::RayProjector::new(vol.view());
    let mut t = crate::core::geometry::TiltSeriesGeometry::from_angles(32, 32, 2.0, &[35.0], 80.0)
        .tilts
        .remove(0);
    t.shift_x_a = 3.0;
    let whole = pr.project(2.0, &t, 32, 32);
    let mut sum = ndarray::Array2::<f32>::zeros((32, 32));
    for (a, b) in [(0, 7), (7, 13), (13, 20)] {
        sum += &pr.project_layer(2.0, &t, 32, 32, (a, b));
    }
    let scale = whole.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = (&sum - &whole)
        .mapv(f32::abs)
        .fold(0.0f32, |m, &v| m.max(v));
    assert!(
        diff < 1e-4 * scale,
        "layers add to {diff} off (max {scale})"
    );
}
