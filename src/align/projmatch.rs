//! Projection matching: reconstruct a binned slab from the current geometry, reproject each
//! tilt without its own contribution (exact leave-one-out), and correlate each tilt with its
//! reprojection.
//!
//! Reconstruction: the pre-processed working images `g_j` are ramp-weighted
//! (`recon::filter::weight_tilts`) into `f_j` and back-projected, `V = (1/N)·Σ_j B_j f_j`
//! (`recon::backproject`). The leave-one-out reprojection of tilt `i` is
//! `P_i(V − B_i f_i / N) = P_i V − P_i B_i f_i / N` (`recon::project`, the exact adjoint of the
//! back-projector), so one full back-projection, one full forward projection and one
//! single-tilt back- and forward projection per tilt give all N leave-one-out reprojections
//! (twice the cost of one reconstruct-and-reproject, not N times).
//!
//! Leave-neighbours-out (`Matcher::exclude = k`, default 2 in the fiducial-free
//! parameters): the reference of tilt `i` also leaves out its `k` neighbours on each side,
//! `P_i V − P_i(Σ_{|j−i|≤k} B_j f_j)/N` (one back-projection of `2k+1` tilts and one forward
//! projection per tilt). With plain leave-one-out the reference of a tilt is dominated by its
//! neighbours, which share its error, so smooth drifts of the shifts along the tilt range
//! cost almost nothing and truncation of the reconstruction by the slab biases the optimum:
//! started from the TRUE geometry of a noise-free demo series, leave-one-out iterations
//! walked away to 0.67 px RMS (2.2 px max) while the score rose; with `k = 2` they stay at
//! 0.09 px (test `truth_is_a_fixed_point`).
//!
//! Frames: working images are the stack binned by `bin` (pixel `pixel_a·bin` Å); the
//! geometry's projections for that binning (`TiltSeriesGeometry::projections(bin)`) include
//! the current shifts, so reprojections are in the raw image frame and the correlation peak
//! of image `i` against its reprojection is the shift update `s_i ← s_i + d_i`.

use super::xcorr::{edge_window, weighted_zero_mean, Correlator, Peak};
use crate::core::geometry::{apply, TiltSeriesGeometry};
use crate::recon::backproject::backproject_cpu;
use crate::recon::filter::{weight_tilts, Filter};
use crate::recon::project::forward_project_cpu;
use ndarray::{s, Array2, Array3, ArrayView3, Axis};
use rayon::prelude::*;

/// Working data of one projection-matching level.
pub struct Matcher {
    /// Binning of the working images relative to the stack.
    pub bin: usize,
    /// Pre-processed working images `[tilt, ny/bin, nx/bin]` (contrast, tapered edges).
    pub images: Array3<f32>,
    /// Slab thickness in working voxels.
    pub nz: usize,
    /// Working voxel size, Å.
    pub voxel_a: f64,
    /// Optional low-pass of the reconstruction (fraction of the working Nyquist).
    pub lowpass: Option<f64>,
    /// Correlator planned for the working image shape.
    pub corr: Correlator,
    /// Search radius of the correlation peak, working pixels.
    pub max_shift_px: f64,
    /// Neighbours on each side (in stack order = tilt order) left out of the reference of a
    /// tilt together with the tilt itself (0: leave-one-out; module docs).
    pub exclude: usize,
}

/// Everything one evaluation of a geometry produced.
pub struct Evaluation {
    /// Per tilt the peak of the image against its leave-one-out reprojection (working px).
    pub peaks: Vec<Peak>,
    /// Leave-one-out reprojections, edge-windowed and zero-mean `[tilt, y, x]`.
    pub reprojections: Array3<f32>,
    /// Images masked the same way.
    pub masked_images: Array3<f32>,
}

impl Evaluation {
    /// Mean normalised correlation over tilts: the projection-matching score.
    pub fn score(&self) -> f64 {
        let n = self.peaks.len().max(1) as f64;
        self.peaks.iter().map(|p| p.cc).sum::<f64>() / n
    }
}

impl Matcher {
    /// Reconstruct with `geom`, reproject leave-one-out, window each pair with a cosine edge
    /// (10 % of each side) and correlate (module docs).
    pub fn evaluate(&self, geom: &TiltSeriesGeometry) -> Evaluation {
        let (_, by, bx) = self.images.dim();
        let shape = (self.nz, by, bx);
        let reproj = reproject_leave_out(
            self.images.view(),
            geom,
            self.bin,
            shape,
            self.voxel_a,
            self.lowpass,
            self.exclude,
        );
        // a fixed cosine edge window in the image frame (weighting by the slab footprint,
        // which moves with each tilt's shift estimate, made high tilts drift: see
        // docs/alignment.md)
        let window = edge_window(by, bx, 0.1);
        let mut masked_r = reproj;
        let mut masked_i = self.images.clone();
        let peaks: Vec<Peak> = masked_r
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(masked_i.axis_iter_mut(Axis(0)).into_par_iter())
            .map_init(
                || self.corr.clone(),
                |c, (mut r, mut g)| {
                    let w = window.view();
                    let mut rr: Array2<f32> = r.to_owned();
                    let mut gg: Array2<f32> = g.to_owned();
                    weighted_zero_mean(&mut rr, w);
                    weighted_zero_mean(&mut gg, w);
                    r.assign(&rr);
                    g.assign(&gg);
                    c.correlate(rr.view(), gg.view(), self.max_shift_px)
                },
            )
            .collect();
        Evaluation {
            peaks,
            reprojections: masked_r,
            masked_images: masked_i,
        }
    }
}

/// Leave-out reprojections of `images` `[tilt, by, bx]` (working images, pixel `voxel_a` Å)
/// for a slab `vol_shape = (nz, by, bx)` of `voxel_a` Å: image `i` is
/// `P_i(V) − P_i(Σ_{|j−i| ≤ exclude} B_j f_j)/N` (module docs; `exclude` = 0: leave-one-out).
/// Returns `[tilt, by, bx]` line integrals in voxel units of the ramp-weighted
/// reconstruction.
pub fn reproject_leave_out(
    images: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    bin: usize,
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
    lowpass: Option<f64>,
    exclude: usize,
) -> Array3<f32> {
    let (nt, by, bx) = images.dim();
    let axes: Vec<f64> = geom.tilts.iter().map(|t| t.axis_deg).collect();
    let tilts: Vec<f64> = geom.tilts.iter().map(|t| t.tilt_deg).collect();
    let mut filtered = images.to_owned();
    weight_tilts(&mut filtered, &axes, &tilts, Filter::Ramp, lowpass);
    let projs = geom.projections(bin);
    let inv = 1.0 / nt as f32;
    let mut vol = backproject_cpu(filtered.view(), &projs, vol_shape, voxel_a);
    vol.par_mapv_inplace(|v| v * inv);
    let mut reproj = forward_project_cpu(vol.view(), &projs, (by, bx), voxel_a);
    drop(vol);
    reproj
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut r)| {
            // Σ_{j ∈ N(i)} B_j f_j in one back-projection, then projected along tilt i
            let (j0, j1) = (i.saturating_sub(exclude), (i + exclude).min(nt - 1));
            let own = backproject_cpu(
                filtered.slice(s![j0..j1 + 1, .., ..]),
                &projs[j0..j1 + 1],
                vol_shape,
                voxel_a,
            );
            let p = forward_project_cpu(own.view(), &projs[i..i + 1], (by, bx), voxel_a);
            r.zip_mut_with(&p.index_axis(Axis(0), 0), |a, &b| *a -= b * inv);
        });
    reproj
}

/// Per tilt and working pixel, the fraction of the full slab path that the ray through the
/// pixel travels inside the reconstructed box `vol_shape = (nz, ny, nx)` of `voxel_a` Å
/// (1 where the reprojection holds the whole specimen column, less where the ray leaves the
/// box through a side, 0 outside). `[tilt, ny, nx]` of working images binned by `bin`.
///
/// The ray of pixel `(u, v)` is `p(t) = Rᵀ·(a, b, t)`, `(a, b) = ((u, v) − c)·voxel − shift`
/// (Å); its length inside the box is clipped slab by slab, and the full path is
/// `nz·voxel / |R₂₂|`.
pub fn footprint_weights(
    geom: &TiltSeriesGeometry,
    bin: usize,
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
) -> Array3<f32> {
    let (nz, ny, nx) = vol_shape;
    let half = [
        0.5 * nx as f64 * voxel_a,
        0.5 * ny as f64 * voxel_a,
        0.5 * nz as f64 * voxel_a,
    ];
    let (iny, inx) = (geom.ny / bin.max(1), geom.nx / bin.max(1));
    let mut out = Array3::<f32>::zeros((geom.len(), iny, inx));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(geom.tilts.par_iter())
        .for_each(|(mut w, t)| {
            let r = t.rotation();
            // Rᵀ·(a, b, t) = a·row0 + b·row1 + t·row2 (rows of R as vectors)
            let d = [r[2][0], r[2][1], r[2][2]];
            let full = 2.0 * half[2] / d[2].abs().max(1e-6);
            for ((v, u), val) in w.indexed_iter_mut() {
                let a = (u as f64 - (inx / 2) as f64) * voxel_a - t.shift_x_a;
                let b = (v as f64 - (iny / 2) as f64) * voxel_a - t.shift_y_a;
                let o = [
                    a * r[0][0] + b * r[1][0],
                    a * r[0][1] + b * r[1][1],
                    a * r[0][2] + b * r[1][2],
                ];
                let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
                for k in 0..3 {
                    if d[k].abs() < 1e-12 {
                        if o[k].abs() > half[k] {
                            hi = lo;
                        }
                        continue;
                    }
                    let (t0, t1) = ((-half[k] - o[k]) / d[k], (half[k] - o[k]) / d[k]);
                    lo = lo.max(t0.min(t1));
                    hi = hi.min(t0.max(t1));
                }
                *val = ((hi - lo).max(0.0) / full).min(1.0) as f32;
            }
        });
    out
}

/// Remove from per-tilt shift updates `u_i` (Å, image x/y) the part explained by a 3D
/// translation `t` of the specimen, `[R_i·t]_xy` (least squares over tilts): the gauge
/// freedom of every alignment. Returns the removed `t` (Å).
pub fn remove_translation(updates: &mut [[f64; 2]], geom: &TiltSeriesGeometry) -> [f64; 3] {
    let mut ata = [[0.0f64; 3]; 3];
    let mut atb = [0.0f64; 3];
    for (u, ti) in updates.iter().zip(&geom.tilts) {
        let r = ti.rotation();
        for row in 0..2 {
            for a in 0..3 {
                atb[a] += r[row][a] * u[row];
                for c in 0..3 {
                    ata[a][c] += r[row][a] * r[row][c];
                }
            }
        }
    }
    // a small ridge keeps the (weakly constrained) z direction of narrow tilt ranges finite
    let tr = ata[0][0] + ata[1][1] + ata[2][2];
    for (k, row) in ata.iter_mut().enumerate() {
        row[k] += 1e-6 * tr;
    }
    let t = crate::align::evaluate::solve3(ata, atb);
    for (u, ti) in updates.iter_mut().zip(&geom.tilts) {
        let q = apply(&ti.rotation(), t);
        u[0] -= q[0];
        u[1] -= q[1];
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_is_removed_exactly() {
        let angles: Vec<f64> = (-20..=20).map(|k| k as f64 * 3.0).collect();
        let geom = TiltSeriesGeometry::from_angles(64, 64, 2.0, &angles, 85.0);
        let t = [12.0, -7.0, 30.0];
        let mut u: Vec<[f64; 2]> = geom
            .tilts
            .iter()
            .map(|ti| {
                let q = apply(&ti.rotation(), t);
                [q[0], q[1]]
            })
            .collect();
        u[3][0] += 5.0;
        let got = remove_translation(&mut u, &geom);
        // the translation is recovered (up to the one outlier's pull) and the outlier remains
        assert!(
            (got[0] - t[0]).abs() < 0.5 && (got[2] - t[2]).abs() < 2.0,
            "{got:?}"
        );
        assert!(u[3][0] > 4.0, "{:?}", u[3]);
    }

    /// Blobs in a slab, projected with the true geometry; the matcher started from a geometry
    /// with a few tilts off finds their offsets.
    #[test]
    fn leave_one_out_matching_finds_shift_errors() {
        use super::super::xcorr::Bandpass;
        use crate::core::geometry::TiltImage;
        let (n, nz, vox) = (64usize, 16usize, 4.0);
        let angles: Vec<f64> = (-10..=10).map(|k| k as f64 * 6.0).collect();
        let mut truth = TiltSeriesGeometry::from_angles(n, n, vox, &angles, 85.0);
        for (i, t) in truth.tilts.iter_mut().enumerate() {
            t.shift_x_a = vox * (((i * 7) % 5) as f64 - 2.0);
            t.shift_y_a = vox * (((i * 3) % 7) as f64 - 3.0);
        }
        let mut s = 17u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64) / ((1u64 << 53) as f64)
        };
        let blobs: Vec<[f64; 3]> = (0..80)
            .map(|_| [rnd() * 44.0 + 10.0, rnd() * 44.0 + 10.0, rnd() * 10.0 + 3.0])
            .collect();
        let vol = Array3::from_shape_fn((nz, n, n), |(z, y, x)| {
            blobs
                .iter()
                .map(|b| {
                    let r2 = (x as f64 - b[0]).powi(2)
                        + (y as f64 - b[1]).powi(2)
                        + (z as f64 - b[2]).powi(2);
                    (-r2 / 3.0).exp() as f32
                })
                .sum()
        });
        let images = forward_project_cpu(vol.view(), &truth.projections(1), (n, n), vox);
        let mut start = truth.clone();
        start.tilts[3].shift_x_a += 2.0 * vox;
        start.tilts[15].shift_y_a -= 1.5 * vox;
        let m = Matcher {
            bin: 1,
            images,
            nz,
            voxel_a: vox,
            lowpass: None,
            corr: Correlator::new(
                n,
                n,
                Bandpass {
                    highpass_cycles: 2.0,
                    lowpass_nyquist: 0.6,
                },
            ),
            max_shift_px: 6.0,
            exclude: 0,
        };
        let ev = m.evaluate(&start);
        let _ = TiltImage::nominal(0.0, 0.0);
        for (i, p) in ev.peaks.iter().enumerate() {
            let want = match i {
                3 => [-2.0, 0.0],
                15 => [0.0, 1.5],
                _ => [0.0, 0.0],
            };
            assert!(
                (p.dx - want[0]).abs() < 0.5 && (p.dy - want[1]).abs() < 0.5,
                "tilt {i}: {p:?} want {want:?}"
            );
        }
        assert!((ev.peaks[3].dx + 2.0).abs() < 0.3, "{:?}", ev.peaks[3]);
    }

    #[test]
    fn footprint_is_full_in_the_centre_and_partial_at_high_tilt_edges() {
        let geom = TiltSeriesGeometry::from_angles(64, 64, 2.0, &[0.0, 60.0], 90.0);
        let w = footprint_weights(&geom, 1, (16, 64, 64), 2.0);
        assert!((w[[0, 32, 32]] - 1.0).abs() < 1e-6);
        assert!((w[[1, 32, 32]] - 1.0).abs() < 1e-6);
        // axis 90°: perpendicular direction is image y; at 60° the box spans
        // ±(32·cos60 + 8·sin60) = ±22.9 px, full path only within ±(16 − 6.9)
        assert_eq!(w[[1, 2, 32]], 0.0);
        assert!(w[[1, 32 + 15, 32]] > 0.0 && w[[1, 32 + 15, 32]] < 1.0);
        assert!((w[[1, 32 + 8, 32]] - 1.0).abs() < 1e-6);
    }
}

/// Started from the TRUE geometry of a simulated demo-like series (noise on, exact tilt
/// angles), projection-matching shift iterations must stay at the truth: the regression test
/// of the leave-neighbours-out reference (module docs; plain leave-one-out drifts to
/// ≈ 0.6 px RMS, 2 px max here).
#[cfg(test)]
mod fixed_point {
    use super::*;
    use crate::align::evaluate::alignment_error;
    use crate::align::xcorr::Bandpass;
    use crate::sim::{preset, simulate_series, Preset};

    fn drift_from_truth(exclude: usize, iterations: usize) -> (f64, f64) {
        let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        let mut p = preset(Preset::Demo, &shared).remove(0);
        p.tilt_step_deg = 3.0;
        p.axis_deg = 85.0;
        p.shift_sigma_a = 15.0 * p.pixel_a;
        p.angle_error_sigma_deg = 0.0;
        p.total_dose_e_a2 = 120.0;
        let s = simulate_series(&p, 5).unwrap();
        let truth = s.geometry.clone();
        let images = crate::recon::wbp::preprocess(s.stack.view(), &truth, 1, true).unwrap();
        let (_, by, bx) = images.dim();
        let bp = Bandpass {
            highpass_cycles: 4.0,
            lowpass_nyquist: 0.5,
        };
        let m = Matcher {
            bin: 1,
            images,
            nz: (0.4 * bx as f64).round() as usize,
            voxel_a: truth.pixel_a,
            lowpass: None,
            corr: Correlator::new(by, bx, bp),
            max_shift_px: 8.0,
            exclude,
        };
        let mut g = truth.clone();
        for _ in 0..iterations {
            let ev = m.evaluate(&g);
            let mut upd: Vec<[f64; 2]> = ev
                .peaks
                .iter()
                .map(|p| [p.dx * m.voxel_a, p.dy * m.voxel_a])
                .collect();
            remove_translation(&mut upd, &g);
            for (t, u) in g.tilts.iter_mut().zip(&upd) {
                t.shift_x_a += u[0];
                t.shift_y_a += u[1];
            }
        }
        let e = alignment_error(&g, &truth, p.thickness_a).unwrap();
        (e.rms_shift_px, e.max_shift_px)
    }

    #[test]
    fn truth_is_a_fixed_point() {
        let (rms, max) = drift_from_truth(4, 4);
        eprintln!("leave-4-neighbours-out from the truth: {rms:.3} px RMS, {max:.3} px max");
        assert!(
            rms < 0.2 && max < 0.5,
            "drifted {rms:.3} px RMS, {max:.3} px max"
        );
    }
}
