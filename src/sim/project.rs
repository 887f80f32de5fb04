//! Real-space ray-sum projector: line integrals of a volume along the beam of one tilt.
//!
//! Geometry (core::geometry): a specimen point `p` (Å, about voxel `(nx/2, ny/2, nz/2)`)
//! lands at image pixel `c + [R·p]_xy / px + shift / px`, `R = TiltImage::rotation()`,
//! `c = (nx_img/2, ny_img/2)`. The ray of image pixel `(u, v)` is therefore
//! `p(t) = Rᵀ·(a, b, t)` with `(a, b) = ((u, v) − c)·px − shift`, `t` the coordinate along the
//! beam (Å). The integral is a Riemann sum with trilinear samples every half voxel on a grid
//! of `t` common to all pixels (no per-pixel phase jitter), clipped to the volume.

use crate::core::geometry::{apply, transpose, TiltImage};
use ndarray::{Array2, ArrayView3, Axis};
use rayon::prelude::*;

/// Samples per voxel along the ray.
const STEPS_PER_VOXEL: f64 = 2.0;

/// Parametric range `[k_lo, k_hi]` of samples `s0 + k·inc` inside `[0, n − 1)` on one axis.
#[inline]
fn axis_range(s0: f64, inc: f64, n: usize) -> (f64, f64) {
    span_range(s0, inc, 0.0, n as f64 - 1.0 - 1e-6)
}

/// The sample indices `k` (as a real interval) with `lo ≤ s0 + k·inc ≤ hi_edge`.
fn span_range(s0: f64, inc: f64, lo: f64, hi_edge: f64) -> (f64, f64) {
    if inc.abs() < 1e-12 {
        if s0 >= lo && s0 <= hi_edge {
            (f64::NEG_INFINITY, f64::INFINITY)
        } else {
            (1.0, 0.0)
        }
    } else {
        let a = (lo - s0) / inc;
        let b = (hi_edge - s0) / inc;
        (a.min(b), a.max(b))
    }
}

/// Side of the cubic blocks of the empty-space map, voxels (a power of two).
const BLOCK_SHIFT: usize = 2;

/// A volume prepared for ray sums: the data in standard layout plus a coarse map of blocks
/// (4³ voxels) that may hold non-zero values. A sample whose 8 trilinear corners all lie in
/// empty blocks is exactly 0 and is skipped, so the skipping changes no result.
pub struct RayProjector<'a> {
    data: std::borrow::Cow<'a, [f32]>,
    dim: (usize, usize, usize),
    occ: Vec<bool>,
    bdim: (usize, usize, usize),
}

impl<'a> RayProjector<'a> {
    /// Prepare `vol` (`[z, y, x]`).
    pub fn new(vol: ArrayView3<'a, f32>) -> Self {
        let dim = vol.dim();
        let data = match vol.to_slice() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(vol.iter().cloned().collect()),
        };
        let b = 1usize << BLOCK_SHIFT;
        let bdim = (dim.0.div_ceil(b), dim.1.div_ceil(b), dim.2.div_ceil(b));
        let mut occ = vec![false; bdim.0 * bdim.1 * bdim.2];
        // a non-zero voxel marks its block and the blocks of every sample cell that uses it as
        // a corner (the cell's base voxel is at most one lower on each axis)
        for z in 0..dim.0 {
            for y in 0..dim.1 {
                let row = &data[(z * dim.1 + y) * dim.2..(z * dim.1 + y + 1) * dim.2];
                for (x, &v) in row.iter().enumerate() {
                    if v != 0.0 {
                        for zz in [z.saturating_sub(1), z] {
                            for yy in [y.saturating_sub(1), y] {
                                for xx in [x.saturating_sub(1), x] {
                                    let i = ((zz >> BLOCK_SHIFT) * bdim.1 + (yy >> BLOCK_SHIFT))
                                        * bdim.2
                                        + (xx >> BLOCK_SHIFT);
                                    occ[i] = true;
                                }
                            }
                        }
                    }
                }
            }
        }
        RayProjector {
            data,
            dim,
            occ,
            bdim,
        }
    }

    /// Fraction of blocks that may hold non-zero values.
    pub fn occ_fraction(&self) -> f64 {
        self.occ.iter().filter(|&&o| o).count() as f64 / self.occ.len().max(1) as f64
    }

    /// Line integrals (value × Å) for tilt `tilt` into an `nx × ny` image (`[y, x]`) of
    /// `pixel_a` Å; see [`project_ray_sum`].
    pub fn project(&self, pixel_a: f64, tilt: &TiltImage, nx: usize, ny: usize) -> Array2<f32> {
        self.project_layer(pixel_a, tilt, nx, ny, (0, self.dim.0))
    }

    /// [`Self::project`] of the voxel planes `z0 ≤ z < z1` only (`layer = (z0, z1)`): the
    /// samples along each ray whose z coordinate lies in `[z0, z1)`, so the layers of a
    /// partition of the planes add up to the whole projection (up to samples within 1e-6
    /// voxel of a boundary).
    pub fn project_layer(
        &self,
        pixel_a: f64,
        tilt: &TiltImage,
        nx: usize,
        ny: usize,
        (z0, z1): (usize, usize),
    ) -> Array2<f32> {
        let (vz, vy, vx) = self.dim;
        let z_hi = if z1 >= vz {
            vz as f64 - 1.0 - 1e-6
        } else {
            z1 as f64 - 1e-6
        };
        let data: &[f32] = &self.data;
        let mut img = Array2::<f32>::zeros((ny, nx));
        if vz < 2 || vy < 2 || vx < 2 {
            return img;
        }
        let rt = transpose(&tilt.rotation());
        let dir = apply(&rt, [0.0, 0.0, 1.0]);
        let step = 1.0 / STEPS_PER_VOXEL; // voxels per sample along the ray
        let inc = [dir[0] * step, dir[1] * step, dir[2] * step];
        let dt = (pixel_a * step) as f32;
        let vc = [(vx / 2) as f64, (vy / 2) as f64, (vz / 2) as f64];
        let ic = [
            (nx / 2) as f64 + tilt.shift_x_a / pixel_a,
            (ny / 2) as f64 + tilt.shift_y_a / pixel_a,
        ];
        let (sy, sz) = (vx, vx * vy);
        let (bsy, bsz) = (self.bdim.2, self.bdim.2 * self.bdim.1);
        let occ = &self.occ;
        img.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(v, mut row)| {
                for (u, out) in row.iter_mut().enumerate() {
                    // in voxel units: p(0) = Rᵀ (a, b, 0) / px + vc
                    let p0 = apply(&rt, [u as f64 - ic[0], v as f64 - ic[1], 0.0]);
                    let s0 = [p0[0] + vc[0], p0[1] + vc[1], p0[2] + vc[2]];
                    let rx = axis_range(s0[0], inc[0], vx);
                    let ry = axis_range(s0[1], inc[1], vy);
                    let rz = span_range(s0[2], inc[2], z0 as f64, z_hi);
                    let k0 = rx.0.max(ry.0).max(rz.0).ceil();
                    let k1 = rx.1.min(ry.1).min(rz.1).floor();
                    if k1 < k0 || k1.is_nan() || k0.is_nan() {
                        continue;
                    }
                    let mut acc = 0.0f32;
                    let mut k = k0;
                    while k <= k1 {
                        let x = (s0[0] + k * inc[0]).max(0.0);
                        let y = (s0[1] + k * inc[1]).max(0.0);
                        let z = (s0[2] + k * inc[2]).max(0.0);
                        let ks = k;
                        k += 1.0;
                        let (x0, y0, z0) = (x as usize, y as usize, z as usize);
                        let (bx, by, bz) =
                            (x0 >> BLOCK_SHIFT, y0 >> BLOCK_SHIFT, z0 >> BLOCK_SHIFT);
                        if !occ[bz * bsz + by * bsy + bx] {
                            // jump to (at most) the first sample outside this empty block
                            let mut kk = f64::INFINITY;
                            for (pos, d, b) in [(x, inc[0], bx), (y, inc[1], by), (z, inc[2], bz)] {
                                if d > 1e-12 {
                                    kk = kk.min((((b + 1) << BLOCK_SHIFT) as f64 - pos) / d);
                                } else if d < -1e-12 {
                                    kk = kk.min(((b << BLOCK_SHIFT) as f64 - pos) / d);
                                }
                            }
                            if kk.is_finite() {
                                k = k.max((ks + kk).floor());
                            }
                            continue;
                        }
                        let (fx, fy, fz) = (
                            (x - x0 as f64) as f32,
                            (y - y0 as f64) as f32,
                            (z - z0 as f64) as f32,
                        );
                        let i = z0 * sz + y0 * sy + x0;
                        let c00 = data[i] + fx * (data[i + 1] - data[i]);
                        let c01 = data[i + sy] + fx * (data[i + sy + 1] - data[i + sy]);
                        let c10 = data[i + sz] + fx * (data[i + sz + 1] - data[i + sz]);
                        let c11 =
                            data[i + sz + sy] + fx * (data[i + sz + sy + 1] - data[i + sz + sy]);
                        let c0 = c00 + fy * (c01 - c00);
                        let c1 = c10 + fy * (c11 - c10);
                        acc += c0 + fz * (c1 - c0);
                    }
                    *out = acc * dt;
                }
            });
        img
    }
}

/// Line integrals (value × Å) of `vol` (`[z, y, x]`, voxel `pixel_a` Å, centre voxel `n/2`)
/// for tilt `tilt`, into an image of `nx × ny` pixels of `pixel_a` Å (`[y, x]`).
/// Rows are computed in parallel; each pixel's sum is sequential, so the result does not
/// depend on the thread count. Matter outside the volume contributes nothing. For many
/// tilts of one volume build a [`RayProjector`] once.
pub fn project_ray_sum(
    vol: ArrayView3<f32>,
    pixel_a: f64,
    tilt: &TiltImage,
    nx: usize,
    ny: usize,
) -> Array2<f32> {
    RayProjector::new(vol).project(pixel_a, tilt, nx, ny)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    /// A Gaussian blob of integral `mass` (value·Å³) at specimen position `pos` (Å).
    fn blob(n: [usize; 3], px: f64, pos: [f64; 3], sigma_a: f64, mass: f64) -> Array3<f32> {
        let (nz, ny, nx) = (n[2], n[1], n[0]);
        let norm = mass / ((2.0 * std::f64::consts::PI).powf(1.5) * sigma_a.powi(3));
        Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
            let p = [
                (x as f64 - (nx / 2) as f64) * px - pos[0],
                (y as f64 - (ny / 2) as f64) * px - pos[1],
                (z as f64 - (nz / 2) as f64) * px - pos[2],
            ];
            let r2 = p[0] * p[0] + p[1] * p[1] + p[2] * p[2];
            (norm * (-r2 / (2.0 * sigma_a * sigma_a)).exp()) as f32
        })
    }

    fn centroid(img: &Array2<f32>) -> ([f64; 2], f64) {
        let (mut s, mut sx, mut sy) = (0.0, 0.0, 0.0);
        for ((y, x), &v) in img.indexed_iter() {
            let v = v as f64;
            s += v;
            sx += v * x as f64;
            sy += v * y as f64;
        }
        ([sx / s, sy / s], s)
    }

    #[test]
    fn blob_lands_where_geometry_predicts_and_mass_is_conserved() {
        let px = 10.0;
        let pos = [83.0, -121.0, 57.0];
        let n = [64, 64, 40];
        let mass = 1.0e5;
        let vol = blob(n, px, pos, 12.0, mass);
        for &(tilt, axis, sx, sy) in &[
            (0.0, 85.0, 0.0, 0.0),
            (-57.0, 85.0, 13.0, -27.0),
            (33.0, -95.3, -40.0, 8.0),
            (60.0, 30.0, 5.0, 5.0),
        ] {
            let mut t = TiltImage::nominal(tilt, axis);
            t.shift_x_a = sx;
            t.shift_y_a = sy;
            let img = project_ray_sum(vol.view(), px, &t, 72, 80);
            let want = t.projection(px, 72, 80).project(pos);
            let (c, total) = centroid(&img);
            let err = ((c[0] - want[0]).powi(2) + (c[1] - want[1]).powi(2)).sqrt();
            assert!(
                err < 0.3,
                "tilt {tilt} axis {axis}: centroid {c:?} vs {want:?}"
            );
            // ∫∫ P du dv = mass: image sum · px² (values are V·Å)
            let m = total * px * px;
            assert!(
                (m - mass).abs() / mass < 0.01,
                "tilt {tilt}: mass {m} vs {mass}"
            );
        }
    }

    #[test]
    fn empty_space_skipping_is_exact() {
        // a sparse volume: a cut-off blob and a single voxel near a block corner
        let mut vol = blob([40, 36, 20], 8.0, [30.0, -20.0, 10.0], 8.0, 1e4);
        vol.mapv_inplace(|v| if v < 1e-2 { 0.0 } else { v });
        vol[[8, 4, 4]] = 3.0;
        let fast = RayProjector::new(vol.view());
        let mut dense = RayProjector::new(vol.view());
        dense.occ.iter_mut().for_each(|o| *o = true);
        assert!(fast.occ.iter().any(|o| !o));
        for &(tilt, axis) in &[(0.0, 0.0), (37.0, 85.0), (-60.0, -20.0)] {
            let t = TiltImage::nominal(tilt, axis);
            let a = fast.project(8.0, &t, 48, 44);
            let b = dense.project(8.0, &t, 48, 44);
            assert_eq!(a, b, "tilt {tilt}");
        }
    }
}
