//! SIRT and the forward projector on small phantoms: projector adjointness, single-voxel
//! placement, residual descent, and SIRT against WBP on analytic Gaussian-blob projections.

mod common;

use lamella::core::geometry::{Projection, TiltSeriesGeometry};
use lamella::device::Device;
use lamella::recon::backproject::backproject_cpu;
use lamella::recon::filter::Filter;
use lamella::recon::project::forward_project_cpu;
use lamella::recon::sirt::{sirt, sirt_solve, SirtParams};
use lamella::recon::wbp::{wbp, WbpParams};
use ndarray::Array3;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

const N: usize = 64; // image side, px
const NZ: usize = 32; // thickness, voxels
const NT: usize = 31; // tilts, −60…60° by 4°
const PIX: f64 = 5.0; // Å
const SIGMA_VOX: f64 = 2.5; // blob σ, voxels
const CONTRAST: f64 = 0.02; // intensity drop per unit line integral

/// Blob centres in voxels relative to the tomogram centre (x, y, z), off-grid.
const BLOBS: [[f64; 3]; 5] = [
    [-12.3, 8.4, 6.6],
    [10.7, -11.2, -6.3],
    [2.2, 14.6, 0.4],
    [-8.6, -10.5, -4.7],
    [14.1, 5.3, 3.2],
];

fn geometry() -> TiltSeriesGeometry {
    let angles: Vec<f64> = (0..NT).map(|i| -60.0 + 4.0 * i as f64).collect();
    let mut g = TiltSeriesGeometry::from_angles(N, N, PIX, &angles, 85.0);
    for (i, t) in g.tilts.iter_mut().enumerate() {
        t.shift_x_a = 8.0 * (0.7 * i as f64).sin();
        t.shift_y_a = -5.0 * (0.3 * i as f64).cos();
    }
    g
}

/// Analytic line integrals of the blobs (see `common::project_gaussian_blobs`).
fn project_blobs(geom: &TiltSeriesGeometry) -> Array3<f32> {
    common::project_gaussian_blobs(geom, &BLOBS, SIGMA_VOX)
}

/// The phantom density on the voxel grid.
fn phantom() -> Array3<f32> {
    Array3::from_shape_fn((NZ, N, N), |(z, y, x)| {
        BLOBS
            .iter()
            .map(|b| {
                let d2 = (x as f64 - (N / 2) as f64 - b[0]).powi(2)
                    + (y as f64 - (N / 2) as f64 - b[1]).powi(2)
                    + (z as f64 - (NZ / 2) as f64 - b[2]).powi(2);
                (-d2 / (2.0 * SIGMA_VOX * SIGMA_VOX)).exp()
            })
            .sum::<f64>() as f32
    })
}

fn pearson(a: &Array3<f32>, b: &Array3<f32>) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b.iter()) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

fn dot(a: &Array3<f32>, b: &Array3<f32>) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn projections() -> Vec<Projection> {
    geometry().projections(1)
}

#[test]
fn forward_projector_is_the_adjoint_of_the_back_projector() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let g = Normal::new(0.0f32, 1.0).unwrap();
    let projs = projections();
    for _ in 0..3 {
        let x = Array3::from_shape_fn((NZ, N, N), |_| g.sample(&mut rng));
        let y = Array3::from_shape_fn((NT, N, N), |_| g.sample(&mut rng));
        let ax = forward_project_cpu(x.view(), &projs, (N, N), PIX);
        let aty = backproject_cpu(y.view(), &projs, (NZ, N, N), PIX);
        let (l, r) = (dot(&ax, &y), dot(&x, &aty));
        // relative to the norms (Cauchy–Schwarz bound of either side)
        let scale = (dot(&ax, &ax) * dot(&y, &y)).sqrt();
        let rel = (l - r).abs() / scale;
        println!("⟨Ax,y⟩ = {l:.6e}, ⟨x,Aᵀy⟩ = {r:.6e}, |diff|/(‖Ax‖‖y‖) = {rel:.2e}");
        assert!(rel < 1e-4, "not adjoint: {l} vs {r} ({rel:e})");
    }
}

#[test]
fn a_single_voxel_projects_to_the_predicted_pixel() {
    let projs = projections();
    let (z, y, x) = (21usize, 40usize, 19usize);
    let mut vol = Array3::<f32>::zeros((NZ, N, N));
    vol[[z, y, x]] = 1.0;
    let img = forward_project_cpu(vol.view(), &projs, (N, N), PIX);
    let p = [
        (x as f64 - (N / 2) as f64) * PIX,
        (y as f64 - (N / 2) as f64) * PIX,
        (z as f64 - (NZ / 2) as f64) * PIX,
    ];
    let mut worst = 0.0f64;
    for (t, pr) in projs.iter().enumerate() {
        let uv = pr.project(p);
        let (mut w, mut cu, mut cv) = (0.0, 0.0, 0.0);
        for ((_, yy, xx), &v) in img.indexed_iter().filter(|((tt, _, _), _)| *tt == t) {
            w += v as f64;
            cu += v as f64 * xx as f64;
            cv += v as f64 * yy as f64;
        }
        assert!((w - 1.0).abs() < 1e-5, "tilt {t}: total weight {w}");
        worst = worst.max((cu / w - uv[0]).hypot(cv / w - uv[1]));
    }
    println!("single voxel: worst centroid error {worst:.2e} px");
    assert!(worst < 1e-4);
}

#[test]
fn sirt_beats_wbp_and_descends_monotonically() {
    let geom = geometry();
    let proj = project_blobs(&geom);
    let truth = phantom();

    // residual descent on the raw line integrals, with and without positivity
    let projs = projections();
    for positivity in [false, true] {
        let p = SirtParams {
            iterations: 20,
            positivity,
            thickness_px: NZ,
            ..SirtParams::default()
        };
        let out = sirt_solve(proj.view(), &projs, (NZ, N, N), PIX, &p, &Device::Cpu).unwrap();
        let r = &out.residuals;
        println!(
            "positivity {positivity}: ‖b − Ax_k‖ k=0,1,5,10,19: {:.4} {:.4} {:.4} {:.4} {:.4}; \
             corr {:.4}",
            r[0],
            r[1],
            r[5],
            r[10],
            r[19],
            pearson(&out.volume, &truth)
        );
        for w in r.windows(2) {
            assert!(w[1] < w[0], "residual went up: {r:?}");
        }
        for w in out.weighted_residuals.windows(2) {
            assert!(w[1] < w[0], "weighted residual went up");
        }
        // measured: 0.075 (free), 0.113 (positivity) of the initial residual
        let bound = if positivity { 0.15 } else { 0.1 };
        assert!(r[19] < bound * r[0], "residual {} → {}", r[0], r[19]);
        if positivity {
            let min = out.volume.iter().cloned().fold(f32::MAX, f32::min);
            assert!(min >= 0.0, "positivity: min {min}");
        }
    }

    // the full stage on intensities (bright background, dark blobs), against WBP
    let stack = proj.mapv(|p| 1.0 - (CONTRAST * p as f64) as f32);
    let wp = WbpParams {
        bin: 1,
        thickness_px: NZ,
        filter: Filter::Ramp,
        lowpass: None,
        invert_contrast: true,
    };
    let w = wbp(stack.view(), &geom, &wp, &Device::Cpu).unwrap();
    let c_wbp = pearson(&w, &truth);
    let mut c_sirt = Vec::new();
    for (it, positivity) in [(5u32, false), (20, false), (20, true)] {
        let p = SirtParams {
            iterations: it,
            positivity,
            thickness_px: NZ,
            ..SirtParams::default()
        };
        let v = sirt(stack.view(), &geom, &p, &Device::Cpu).unwrap();
        assert_eq!(v.dim(), (NZ, N, N));
        c_sirt.push(pearson(&v, &truth));
    }
    println!(
        "correlation with the phantom: WBP (ramp) {c_wbp:.4}; SIRT 5 it {:.4}, 20 it {:.4}, \
         20 it with positivity {:.4}",
        c_sirt[0], c_sirt[1], c_sirt[2]
    );
    // measured: WBP 0.833; SIRT 20 it 0.857 (+0.024), with positivity 0.965 (+0.13)
    assert!(c_sirt[1] > c_wbp + 0.01, "SIRT {c_sirt:?} vs WBP {c_wbp}");
    assert!(c_sirt[2] > c_wbp + 0.08, "SIRT {c_sirt:?} vs WBP {c_wbp}");
    assert!(
        c_sirt[1] > c_sirt[0],
        "more iterations should help: {c_sirt:?}"
    );
}

/// Timing, not a check: `cargo test --release --test sirt -- --ignored --nocapture`.
/// 61 tilts of 256² into 256²×64: forward vs back-projection and one SIRT iteration.
#[test]
#[ignore]
fn timing_forward_vs_back_projection() {
    use std::time::Instant;
    let (n, nz, nt) = (256usize, 64usize, 61usize);
    let angles: Vec<f64> = (0..nt).map(|i| -60.0 + 2.0 * i as f64).collect();
    let g = TiltSeriesGeometry::from_angles(n, n, 4.0, &angles, 85.0);
    let projs = g.projections(1);
    let vol = Array3::from_shape_fn((nz, n, n), |(z, y, x)| {
        ((z * 7 + y * 13 + x * 3) % 17) as f32
    });
    let imgs = forward_project_cpu(vol.view(), &projs, (n, n), 4.0);
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let tf = best(&|| {
        forward_project_cpu(vol.view(), &projs, (n, n), 4.0);
    });
    let tb = best(&|| {
        backproject_cpu(imgs.view(), &projs, (nz, n, n), 4.0);
    });
    let p = SirtParams {
        iterations: 3,
        thickness_px: nz,
        ..SirtParams::default()
    };
    let t = Instant::now();
    sirt_solve(imgs.view(), &projs, (nz, n, n), 4.0, &p, &Device::Cpu).unwrap();
    let ts = t.elapsed().as_secs_f64();
    let up = (nt * n * n * nz) as f64;
    println!(
        "{} threads: forward {tf:.3} s ({:.2} Gvox·tilt/s), back {tb:.3} s ({:.2} Gvox·tilt/s), \
         SIRT 3 it {ts:.3} s",
        rayon::current_num_threads(),
        up / tf * 1e-9,
        up / tb * 1e-9
    );
}
