//! Specimen slab from a binned tomogram: thickness, pitch and z offset, so that the final
//! reconstruction can be levelled, centred on the specimen and cut to its thickness.
//!
//! Method: band-pass the volume (DoG, σ 1–4 voxels) and square it. Features are the local
//! maxima (26 neighbours) of the squared band-pass above [`FEATURE_THRESHOLD`] × its median;
//! a greedy non-maximum suppression over [`OBJECT_RADIUS_A`] keeps one point per object, so a
//! large object (a vesicle, a bead with its streaks) counts about as much as a small one. A
//! robust (Tukey) least-squares plane `z = a·x + b·y + c` through the objects gives the
//! z offset and, when the slope is significant (> 3 standard errors), the pitch (slope along
//! x: a rotation about the tilt axis +Y of the specimen frame) and the slope along y; an
//! insignificant slope is reported as 0 (sparse specimens: 20 objects scattered through an
//! 800 Å slab cannot tell a pitch of a few degrees). The thickness is the spread of the
//! objects about the plane (2.5 to 97.5 % quantiles, / 0.95) plus one object radius, times
//! cos(pitch). It measures where the content is, not the ice (a flat ice surface lies in the
//! missing wedge and is invisible).

use crate::core::geometry::{apply, TiltSeriesGeometry};
use crate::pipeline::metrics::band_pass;
use crate::{Error, Result};
use ndarray::Array3;
use serde::{Deserialize, Serialize};

/// The specimen slab found in a tomogram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlabEstimate {
    /// Thickness perpendicular to the slab, Å.
    pub thickness_a: f64,
    /// Rotation of the slab about +Y (the tilt axis in the specimen frame), degrees: the slab
    /// normal is `Ry(pitch)·ẑ`.
    pub pitch_deg: f64,
    /// Slope of the slab along y (dz/dy, dimensionless); not correctable by a tilt offset.
    pub slope_y: f64,
    /// z of the slab centre at the volume centre, Å (specimen frame).
    pub z_offset_a: f64,
    /// Objects the estimate used.
    pub objects_used: usize,
    /// Mean squared band-pass per z plane (a variance profile along z).
    pub profile: Vec<f64>,
}

/// Features must exceed this multiple of the median squared band-pass (WBP noise is
/// structured: 60× still let ≈ 2500 noise maxima through on a 128³ demo volume, 200× ≈ 100
/// real ones).
pub const FEATURE_THRESHOLD: f64 = 200.0;
/// Radius of the non-maximum suppression: one feature per object, Å.
pub const OBJECT_RADIUS_A: f64 = 100.0;
/// Fewest objects for an estimate.
const MIN_OBJECTS: usize = 6;

/// Estimate the slab in `vol` `[z, y, x]` of voxel `voxel_a` Å from its objects (module
/// docs). `SlabEstimate::profile` is the mean squared band-pass per z plane.
///
/// Errors: [`Error::Runtime`] when the volume is too small or fewer than 6 objects stand out
/// of the noise (empty or pure-noise volume: reconstruct thicker or less binned, or give
/// `thickness_a` in the config).
pub fn estimate_slab(vol: &Array3<f32>, voxel_a: f64) -> Result<SlabEstimate> {
    let (nz, ny, nx) = vol.dim();
    if nz < 8 || ny < 8 || nx < 8 {
        return Err(Error::Runtime(format!(
            "slab estimate: volume {nx}×{ny}×{nz} is too small: reconstruct at least 8 voxels \
             in x, y and z"
        )));
    }
    let mut e = band_pass(vol, 1.0, 4.0);
    e.par_mapv_inplace(|v| v * v);
    let profile: Vec<f64> = e
        .outer_iter()
        .map(|p| p.iter().map(|&v| v as f64).sum::<f64>() / (ny * nx) as f64)
        .collect();
    let objects = objects_in(&e, voxel_a);
    if objects.len() < MIN_OBJECTS {
        return Err(Error::Runtime(format!(
            "slab estimate: only {} objects stand out of the noise (need {MIN_OBJECTS}): \
             reconstruct a thicker or less binned volume, or set thickness_a in the config",
            objects.len()
        )));
    }
    let mut w = vec![1.0; objects.len()];
    let mut fit = fit_plane(&objects, &w);
    for _ in 0..4 {
        let res: Vec<f64> = objects.iter().map(|f| f[2] - eval(&fit.0, f)).collect();
        let mut abs: Vec<f64> = res.iter().map(|r| r.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let sigma = (1.4826 * abs[abs.len() / 2]).max(voxel_a);
        // Tukey bisquare, wide (the content is spread through the slab, not around a plane)
        let c = 4.685 * sigma;
        for (wi, r) in w.iter_mut().zip(&res) {
            let u = r / c;
            *wi = if u.abs() < 1.0 {
                (1.0 - u * u).powi(2)
            } else {
                0.0
            };
        }
        fit = fit_plane(&objects, &w);
    }
    let ([mut a, mut b, c], se) = fit;
    // an insignificant slope is no evidence of a pitch
    if a.abs() < 3.0 * se[0] {
        a = 0.0;
    }
    if b.abs() < 3.0 * se[1] {
        b = 0.0;
    }
    let plane = [a, b, c];
    let mut res: Vec<f64> = objects.iter().map(|f| f[2] - eval(&plane, f)).collect();
    res.sort_by(f64::total_cmp);
    let q = |p: f64| res[((res.len() - 1) as f64 * p).round() as usize];
    // 95 % of a uniform spread, plus half an object radius on each side for the extent of
    // the objects beyond their strongest point
    let spread = (q(0.975) - q(0.025)) / 0.95 + OBJECT_RADIUS_A;
    let pitch_deg = (-a).atan().to_degrees();
    Ok(SlabEstimate {
        thickness_a: spread * pitch_deg.to_radians().cos(),
        pitch_deg,
        slope_y: b,
        z_offset_a: c,
        objects_used: objects.len(),
        profile,
    })
}

/// Objects of a squared band-passed volume `e` `[z, y, x]` (voxel `voxel_a` Å): local maxima
/// (26 neighbours) above [`FEATURE_THRESHOLD`] × the median, thinned by non-maximum
/// suppression over [`OBJECT_RADIUS_A`], strongest first. Each is `[x, y, z, value]`, Å about
/// the volume centre `(nx/2, ny/2, nz/2)`.
pub(crate) fn objects_in(e: &Array3<f32>, voxel_a: f64) -> Vec<[f64; 4]> {
    use rayon::prelude::*;
    let (nz, ny, nx) = e.dim();
    if nz < 5 || ny < 3 || nx < 3 {
        return Vec::new();
    }
    let mut sample: Vec<f32> = e.iter().step_by(7).copied().collect();
    let mid = sample.len() / 2;
    let median = *sample.select_nth_unstable_by(mid, f32::total_cmp).1 as f64;
    let thr = (FEATURE_THRESHOLD * median).max(f64::MIN_POSITIVE) as f32;
    let (cz, cy, cx) = ((nz / 2) as f64, (ny / 2) as f64, (nx / 2) as f64);
    // local maxima, the 2 planes at each z end excluded (the band-pass is biased there)
    let mut feats: Vec<[f64; 4]> = (2..nz - 2)
        .into_par_iter()
        .flat_map_iter(|z| {
            let e = &e;
            (1..ny - 1).flat_map(move |y| {
                (1..nx - 1).filter_map(move |x| {
                    let v = e[[z, y, x]];
                    let neighbours =
                        (0..27).map(|k| e[[z + k / 9 - 1, y + (k / 3) % 3 - 1, x + k % 3 - 1]]);
                    if v <= thr || neighbours.into_iter().any(|n| n > v) {
                        return None;
                    }
                    Some([
                        (x as f64 - cx) * voxel_a,
                        (y as f64 - cy) * voxel_a,
                        (z as f64 - cz) * voxel_a,
                        v as f64,
                    ])
                })
            })
        })
        .collect();
    // one point per object: strongest first, none within OBJECT_RADIUS_A of a kept one
    feats.sort_by(|a, b| b[3].total_cmp(&a[3]));
    let mut objects: Vec<[f64; 4]> = Vec::new();
    let r2 = OBJECT_RADIUS_A * OBJECT_RADIUS_A;
    for f in feats {
        let near = objects
            .iter()
            .any(|o| (o[0] - f[0]).powi(2) + (o[1] - f[1]).powi(2) + (o[2] - f[2]).powi(2) < r2);
        if !near {
            objects.push(f);
        }
    }
    objects
}

fn eval(p: &[f64; 3], f: &[f64; 4]) -> f64 {
    p[0] * f[0] + p[1] * f[1] + p[2]
}

/// Weighted least squares `z = a·x + b·y + c` over points `[x, y, z, _]`: the coefficients
/// and the standard errors of `a` and `b` (from the weighted residual variance).
fn fit_plane(pts: &[[f64; 4]], w: &[f64]) -> ([f64; 3], [f64; 2]) {
    let mut ata = [[0.0f64; 3]; 3];
    let mut atb = [0.0f64; 3];
    for (f, &wi) in pts.iter().zip(w) {
        let r = [f[0], f[1], 1.0];
        for i in 0..3 {
            atb[i] += wi * r[i] * f[2];
            for j in 0..3 {
                ata[i][j] += wi * r[i] * r[j];
            }
        }
    }
    let p = crate::align::evaluate::solve3(ata, atb);
    let (mut ss, mut sw) = (0.0, 0.0);
    for (f, &wi) in pts.iter().zip(w) {
        ss += wi * (f[2] - eval(&p, f)).powi(2);
        sw += wi;
    }
    let var = ss / (sw - 3.0).max(1.0);
    // diagonal of (AᵀWA)⁻¹ for a and b
    let ia = crate::align::evaluate::solve3(ata, [1.0, 0.0, 0.0])[0];
    let ib = crate::align::evaluate::solve3(ata, [0.0, 1.0, 0.0])[1];
    (p, [(var * ia).max(0.0).sqrt(), (var * ib).max(0.0).sqrt()])
}

/// Level and centre a geometry on an estimated slab: every tilt angle gets `+pitch` (the
/// slab becomes horizontal at tilt 0, as `R_i·Ry(pitch)` = `Rz·Ry(tilt + pitch)` for x-tilt 0) and the shifts move the slab centre to the tomogram
/// centre (`s_i += [R_i·(0, 0, z_offset)]_xy` with the levelled rotations). Returns the new
/// geometry; the estimate's `thickness_a` is the slab thickness to reconstruct.
pub fn level_geometry(geom: &TiltSeriesGeometry, slab: &SlabEstimate) -> TiltSeriesGeometry {
    let mut g = geom.clone();
    // new specimen frame q with p = Ry(pitch)·q + z0·ẑ; every specimen point keeps its image
    // position: R_new·q + s_new = R_old·p + s_old, so R_new = R_old·Ry(pitch) and
    // s_new = s_old + [R_old·(0, 0, z0)]_xy.
    let centre = [0.0, 0.0, slab.z_offset_a];
    for t in g.tilts.iter_mut() {
        let old = t.rotation();
        let c = apply(&old, centre);
        t.shift_x_a += c[0];
        t.shift_y_a += c[1];
        t.tilt_deg += slab.pitch_deg;
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Blobs filling a slab of `thick` voxels tilted by `pitch` about y, centred at `z0`.
    fn slab_volume(pitch_deg: f64, thick: f64, z0: f64) -> Array3<f32> {
        let (nz, ny, nx) = (64, 96, 96);
        let mut v = Array3::<f32>::zeros((nz, ny, nx));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (s, c) = pitch_deg.to_radians().sin_cos();
        let mut placed = 0;
        while placed < 4000 {
            let x = rng.random_range(2.0..(nx - 3) as f64) - 48.0;
            let y = rng.random_range(2.0..(ny - 3) as f64) - 48.0;
            let d = rng.random_range(-0.5..0.5) * thick; // along the normal
                                                         // point = in-plane x along (c, 0, -s), normal (s, 0, c)
            let px = x * c + d * s;
            let pz = -x * s + d * c + z0;
            let (ix, iy, iz) = (px + 48.0, y + 48.0, pz + 32.0);
            if !(1.0..=94.0).contains(&ix) || !(1.0..=62.0).contains(&iz) {
                continue;
            }
            v[[
                iz.round() as usize,
                iy.round() as usize,
                ix.round() as usize,
            ]] += 10.0;
            placed += 1;
        }
        for x in v.iter_mut() {
            *x += rng.random_range(-0.5..0.5);
        }
        v
    }

    #[test]
    fn finds_thickness_pitch_and_offset_of_a_tilted_slab() {
        let v = slab_volume(6.0, 24.0, 5.0);
        let e = estimate_slab(&v, 10.0).unwrap();
        assert!((e.pitch_deg - 6.0).abs() < 1.5, "{e:?}");
        assert!((e.z_offset_a - 50.0).abs() < 20.0, "{e:?}");
        // the content spread plus one object radius (100 Å) for the objects' own extent
        assert!(e.thickness_a > 220.0 && e.thickness_a < 400.0, "{e:?}");
        assert!(e.slope_y.abs() < 0.03, "{e:?}");
    }

    #[test]
    fn pure_noise_is_refused() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let v = Array3::from_shape_fn((32, 64, 64), |_| rng.random_range(-1.0f32..1.0));
        assert!(estimate_slab(&v, 10.0).is_err());
    }

    #[test]
    fn levelling_keeps_image_positions_of_specimen_points() {
        let g = TiltSeriesGeometry::from_angles(100, 100, 5.0, &[-30.0, 0.0, 45.0], 85.0);
        let slab = SlabEstimate {
            thickness_a: 300.0,
            pitch_deg: 4.0,
            slope_y: 0.0,
            z_offset_a: 60.0,
            objects_used: 9,
            profile: vec![],
        };
        let lv = level_geometry(&g, &slab);
        // the new tomogram centre is the old point (0, 0, z0): same image position
        for (a, b) in g.tilts.iter().zip(&lv.tilts) {
            let old = apply(&a.rotation(), [0.0, 0.0, 60.0]);
            let pa = [old[0] + a.shift_x_a, old[1] + a.shift_y_a];
            let pb = [b.shift_x_a, b.shift_y_a];
            assert!((pa[0] - pb[0]).abs() < 1e-9 && (pa[1] - pb[1]).abs() < 1e-9);
            // and any point q of the levelled frame is p = Ry(pitch)·q + z0·ẑ of the old one
            let q = [120.0, -40.0, 75.0];
            let r = crate::core::geometry::apply(&crate::core::geometry::rot_y(4.0), q);
            let p = [r[0], r[1], r[2] + 60.0];
            let old = apply(&a.rotation(), p);
            let new = apply(&b.rotation(), q);
            assert!((old[0] + a.shift_x_a - new[0] - b.shift_x_a).abs() < 1e-9);
            assert!((old[1] + a.shift_y_a - new[1] - b.shift_y_a).abs() < 1e-9);
        }
    }
}
