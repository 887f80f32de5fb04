//! Shared bench geometry: 61 tilts (−60°..60°, 2°) of `n × n` pixels of 4 Å.
//!
//! `axis_deg = 0` is the geometry of ASTRA's slice-by-slice parallel beam and of an aligned
//! stack (tilt axis along image y, no shifts): the separable fast paths run. `axis_deg = 85`
//! with per-tilt shifts is a raw (unaligned) series: the general kernels run.

#![allow(dead_code)]

use lamella::core::geometry::{Projection, TiltSeriesGeometry};
use ndarray::Array3;

/// Voxel and pixel size of the bench cases, Å.
pub const VOXEL_A: f64 = 4.0;

/// Projections of 61 tilts of `n × n` pixels; shifts only for a non-zero axis.
pub fn projections(n: usize, axis_deg: f64) -> Vec<Projection> {
    let angles: Vec<f64> = (0..61).map(|i| -60.0 + 2.0 * i as f64).collect();
    let mut g = TiltSeriesGeometry::from_angles(n, n, VOXEL_A, &angles, axis_deg);
    if axis_deg != 0.0 {
        for (i, t) in g.tilts.iter_mut().enumerate() {
            t.shift_x_a = 6.0 * (i as f64).sin();
            t.shift_y_a = -4.0 * (i as f64).cos();
        }
    }
    g.projections(1)
}

/// Deterministic non-trivial images `[61, n, n]`.
pub fn images(n: usize) -> Array3<f32> {
    Array3::from_shape_fn((61, n, n), |(t, y, x)| {
        ((t * 7 + y * 13 + x * 3) % 17) as f32
    })
}

/// Deterministic non-trivial volume `[nz, n, n]`.
pub fn volume(n: usize, nz: usize) -> Array3<f32> {
    Array3::from_shape_fn((nz, n, n), |(z, y, x)| {
        ((z * 5 + y * 11 + x * 3) % 13) as f32
    })
}

/// Criterion settings that keep `make bench` to a few minutes.
pub fn quick<M: criterion::measurement::Measurement>(g: &mut criterion::BenchmarkGroup<M>) {
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(4));
}

/// The `shared/data` folder (`LAMELLA_SHARED_DATA` or `../shared/data` of the repository).
pub fn shared_data() -> std::path::PathBuf {
    std::env::var("LAMELLA_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
        })
}

/// A simulated tomogram and what is in it.
pub struct Simulated {
    /// WBP (ramp) reconstruction, dense matter bright, `[z, y, x]`, voxel `pixel_a`.
    pub tomogram: ndarray::Array3<f32>,
    /// The true geometry it was reconstructed with.
    pub geometry: TiltSeriesGeometry,
    /// Voxel size, Å.
    pub pixel_a: f64,
    /// The particles (apoferritin, 6z6u): positions Å about the tomogram centre, ZYZ poses.
    pub particles: Vec<lamella::sim::ParticleTruth>,
    /// The structure that was simulated.
    pub structure: lamella::sim::Structure,
}

/// Simulate one `tiny`-preset series (10 Å/px, −60…60° every 4°, 100 e/Å²) of `n × n`
/// pixels with `copies` apoferritins in `thickness_a` Å of ice, and reconstruct it by WBP
/// on the CPU with the true geometry: an `(thickness_a/10, n, n)` tomogram.
pub fn simulated_tomogram(n: usize, thickness_a: f64, copies: usize, seed: u64) -> Simulated {
    use lamella::recon::filter::Filter;
    use lamella::recon::plan::{reconstruct, Method, ReconstructOutcome, ReconstructSpec};
    let mut p = lamella::sim::preset(lamella::sim::Preset::Tiny, &shared_data()).remove(0);
    p.name = "bench".into();
    p.nx = n;
    p.ny = n;
    p.thickness_a = thickness_a;
    p.structures[0].1 = copies;
    let s = lamella::sim::simulate_series(&p, seed).expect("simulate");
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
    let dir = tempfile::tempdir().expect("temporary folder");
    let out = dir.path().join("bench.mrc");
    let tomogram = match reconstruct(
        s.stack.view(),
        &s.geometry,
        &spec,
        &lamella::device::Device::Cpu,
        &[out],
    )
    .expect("reconstruct")
    {
        ReconstructOutcome::Complete(mut v) => v.remove(0).volume.expect("volume in memory"),
        ReconstructOutcome::Interrupted(i) => panic!("{i}"),
    };
    let particles = s
        .truth
        .particles
        .iter()
        .filter(|q| q.structure_index == 0)
        .cloned()
        .collect();
    Simulated {
        tomogram,
        geometry: s.geometry,
        pixel_a: p.pixel_a,
        particles,
        structure: p.structures[0].0.clone(),
    }
}

/// A refinement problem for the STA benches: one simulated `n × n × 50` tomogram (500 Å of
/// ice at 10 Å/px) with `particles` apoferritins at their true poses and positions
/// (alternating halves, one class), the refinement settings of `tests/sta_refine.rs` for one
/// iteration (box 24, mask 80 Å, O symmetry, local search ±12° at 4°, Gaussian prior σ 4°,
/// shifts ≤ 30 Å, signed CTF, dose weighting) and the true structure boxed to 24³ as the
/// reference. The speed of an iteration does not depend on how far the start poses are
/// from the truth (the local grid is the same).
pub struct StaProblem {
    /// The tomogram(s) the particles are cut from.
    pub tomograms: Vec<lamella::sta::refine::Tomogram>,
    /// The particles.
    pub particles: Vec<lamella::sta::refine::Particle>,
    /// One reference per class, `box³`, dense positive.
    pub references: Vec<ndarray::Array3<f32>>,
    /// Refinement settings.
    pub params: lamella::sta::refine::RefineParams,
}

/// [`StaProblem`] with `particles` apoferritins in an `n × n` field (seed fixed).
pub fn sta_problem(n: usize, particles: usize) -> StaProblem {
    use lamella::sta::refine::{Particle, RefineParams, Tomogram};
    let sim = simulated_tomogram(n, 500.0, particles, 3);
    let box_px = 24;
    let reference = lamella::pick::template::recentre_box(
        &sim.structure.render(sim.pixel_a).expect("render").potential,
        box_px,
    );
    let particles = sim
        .particles
        .iter()
        .enumerate()
        .map(|(i, q)| Particle {
            tomo: 0,
            position_a: q.position_a,
            euler_deg: [q.rot_deg, q.tilt_deg, q.psi_deg],
            half: i % 2,
            class: 0,
            score: 0.0,
        })
        .collect();
    let params = RefineParams {
        box_px,
        mask_radius_a: 80.0,
        iterations: 1,
        symmetry: "O".into(),
        global_step_deg: None,
        local_range_deg: 12.0,
        local_step_deg: 4.0,
        min_step_deg: 2.0,
        sigma_angle_deg: Some(4.0),
        max_shift_a: 30.0,
        initial_resolution_a: 40.0,
        ctf_mode: lamella::sta::weight::CtfMode::Signed,
        dose_weighting: true,
        invert: false,
        seed: 1,
    };
    StaProblem {
        tomograms: vec![Tomogram {
            name: "bench".into(),
            volume: sim.tomogram,
            voxel_a: sim.pixel_a,
            geometry: sim.geometry,
        }],
        particles,
        references: vec![reference],
        params,
    }
}
