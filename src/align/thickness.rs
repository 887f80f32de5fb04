//! Specimen slab from a binned tomogram: thickness, pitch and z offset, so that the final
//! reconstruction can be levelled, centred on the specimen and cut to its thickness.
//!
//! Method: band-pass the volume (DoG, σ 1–4 voxels) and square it; average the squares over
//! each of `tiles × tiles` columns in xy and each z plane: a variance profile along z per
//! column. Back-projected noise spreads evenly over z; specimen content (particles,
//! membranes, beads) adds variance inside the slab. Per column the slab spans the z range
//! where the smoothed profile exceeds `background + 0.25·(peak − background)` (background =
//! lower quartile of the profile). A least-squares plane through the column centres gives
//! the pitch (slope along x, i.e. a rotation about the tilt axis +Y of the specimen frame)
//! and the z offset; the thickness is the median column extent times cos(pitch).

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
    /// Columns that showed a slab (of `tiles²`).
    pub columns_used: usize,
    /// Variance profile along z (mean over columns), one value per z plane.
    pub profile: Vec<f64>,
}

/// Estimate the slab in `vol` `[z, y, x]` of voxel `voxel_a` Å, with `tiles × tiles`
/// columns (4 is a good default).
///
/// Errors: [`Error::Runtime`] when fewer than 3 columns show a slab (empty or pure-noise
/// volume: reconstruct thicker, or give `thickness_a` in the config).
pub fn estimate_slab(vol: &Array3<f32>, voxel_a: f64, tiles: usize) -> Result<SlabEstimate> {
    let (nz, ny, nx) = vol.dim();
    let tiles = tiles.max(1);
    if nz < 8 || ny < tiles * 4 || nx < tiles * 4 {
        return Err(Error::Runtime(format!(
            "slab estimate: volume {nx}×{ny}×{nz} is too small for {tiles}×{tiles} columns: \
             reconstruct at least 8 planes and {} px in x and y",
            tiles * 4
        )));
    }
    let bp = band_pass(vol, 1.0, 4.0);
    let mut columns = Vec::new(); // (x_a, y_a, z_lo_a, z_hi_a, weight)
    let mut mean_profile = vec![0.0f64; nz];
    let cz = (nz / 2) as f64;
    for ty in 0..tiles {
        for tx in 0..tiles {
            let (y0, y1) = (ty * ny / tiles, (ty + 1) * ny / tiles);
            let (x0, x1) = (tx * nx / tiles, (tx + 1) * nx / tiles);
            let mut prof: Vec<f64> = (0..nz)
                .map(|z| {
                    let mut s = 0.0f64;
                    for y in y0..y1 {
                        for x in x0..x1 {
                            s += (bp[[z, y, x]] as f64).powi(2);
                        }
                    }
                    s / ((y1 - y0) * (x1 - x0)) as f64
                })
                .collect();
            for (m, p) in mean_profile.iter_mut().zip(&prof) {
                *m += p / (tiles * tiles) as f64;
            }
            prof = smooth3(&prof);
            if let Some((lo, hi, contrast)) = extent(&prof) {
                let xc = ((x0 + x1) as f64 / 2.0 - (nx / 2) as f64) * voxel_a;
                let yc = ((y0 + y1) as f64 / 2.0 - (ny / 2) as f64) * voxel_a;
                columns.push((xc, yc, (lo - cz) * voxel_a, (hi - cz) * voxel_a, contrast));
            }
        }
    }
    if columns.len() < 3 {
        return Err(Error::Runtime(format!(
            "slab estimate: only {} of {} columns show specimen content above the noise: \
             reconstruct a thicker or less binned volume, or set thickness_a in the config",
            columns.len(),
            tiles * tiles
        )));
    }
    // weighted least squares z_c = a·x + b·y + c
    let mut ata = [[0.0f64; 3]; 3];
    let mut atb = [0.0f64; 3];
    for &(x, y, lo, hi, w) in &columns {
        let r = [x, y, 1.0];
        let zc = 0.5 * (lo + hi);
        for i in 0..3 {
            atb[i] += w * r[i] * zc;
            for j in 0..3 {
                ata[i][j] += w * r[i] * r[j];
            }
        }
    }
    let [a, b, c] = crate::align::evaluate::solve3(ata, atb);
    let mut extents: Vec<f64> = columns.iter().map(|c| c.3 - c.2).collect();
    extents.sort_by(f64::total_cmp);
    let median = extents[extents.len() / 2];
    // the slab normal is Ry(pitch)·ẑ = (sin p, 0, cos p): z = −tan(p)·x + c
    let pitch_deg = (-a).atan().to_degrees();
    Ok(SlabEstimate {
        thickness_a: median * pitch_deg.to_radians().cos(),
        pitch_deg,
        slope_y: b,
        z_offset_a: c,
        columns_used: columns.len(),
        profile: mean_profile,
    })
}

/// 3-tap box smoothing with clamped ends.
fn smooth3(p: &[f64]) -> Vec<f64> {
    let n = p.len();
    (0..n)
        .map(|i| (p[i.saturating_sub(1)] + p[i] + p[(i + 1).min(n - 1)]) / 3.0)
        .collect()
}

/// The slab in one column profile: `(lo, hi, contrast)` in plane indices. The region is the
/// contiguous run around the peak above `bg + 0.15·(peak − bg)` (background `bg` = lower
/// quartile; the 2 planes at each end, where the band-pass is biased, are ignored); inside
/// it, with weights `w = prof − bg`, the centre is the weighted mean `c` and the width is
/// `T = sqrt(12·Σw(z − c)²/Σw)` (exact for a uniform slab): `(c − T/2, c + T/2)`. None when the
/// contrast `(peak − bg)/bg` is below 0.3 or the peak is less than 10 standard deviations of
/// the profile's lower half above the background (no slab).
fn extent(prof: &[f64]) -> Option<(f64, f64, f64)> {
    let n = prof.len();
    let inner = &prof[2.min(n)..n.saturating_sub(2).max(2.min(n))];
    let mut sorted = inner.to_vec();
    sorted.sort_by(f64::total_cmp);
    let bg = *sorted.get(sorted.len() / 4)?;
    let (ipk, &peak) = inner.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    let contrast = (peak - bg) / bg.max(1e-30);
    // fluctuation of the background: spread of the lower half of the profile
    let low = &sorted[..sorted.len().div_ceil(2)];
    let mean_low = low.iter().sum::<f64>() / low.len() as f64;
    let sd_low =
        (low.iter().map(|v| (v - mean_low).powi(2)).sum::<f64>() / low.len() as f64).sqrt();
    if !(contrast > 0.3 && peak - bg > 10.0 * sd_low) {
        return None;
    }
    let level = bg + 0.15 * (peak - bg);
    let (mut lo, mut hi) = (ipk, ipk);
    while lo > 0 && inner[lo - 1] > level {
        lo -= 1;
    }
    while hi + 1 < inner.len() && inner[hi + 1] > level {
        hi += 1;
    }
    let (mut sw, mut swz) = (0.0, 0.0);
    for (z, &p) in inner.iter().enumerate().take(hi + 1).skip(lo) {
        sw += p - bg;
        swz += (p - bg) * z as f64;
    }
    let c = swz / sw;
    let var: f64 = (lo..=hi)
        .map(|z| (inner[z] - bg) * (z as f64 - c).powi(2))
        .sum::<f64>()
        / sw;
    let t = (12.0 * var).sqrt();
    let off = 2.min(n) as f64;
    Some((off + c - 0.5 * t, off + c + 0.5 * t, contrast))
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
        let e = estimate_slab(&v, 10.0, 4).unwrap();
        assert!((e.pitch_deg - 6.0).abs() < 1.5, "{e:?}");
        assert!((e.z_offset_a - 50.0).abs() < 20.0, "{e:?}");
        assert!((e.thickness_a - 240.0).abs() < 60.0, "{e:?}");
        assert!(e.slope_y.abs() < 0.03, "{e:?}");
    }

    #[test]
    fn pure_noise_is_refused() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let v = Array3::from_shape_fn((32, 64, 64), |_| rng.random_range(-1.0f32..1.0));
        assert!(estimate_slab(&v, 10.0, 4).is_err());
    }

    #[test]
    fn levelling_keeps_image_positions_of_specimen_points() {
        let g = TiltSeriesGeometry::from_angles(100, 100, 5.0, &[-30.0, 0.0, 45.0], 85.0);
        let slab = SlabEstimate {
            thickness_a: 300.0,
            pitch_deg: 4.0,
            slope_y: 0.0,
            z_offset_a: 60.0,
            columns_used: 9,
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
