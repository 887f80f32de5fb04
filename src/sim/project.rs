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
    let hi_edge = n as f64 - 1.0 - 1e-6;
    if inc.abs() < 1e-12 {
        if s0 >= 0.0 && s0 <= hi_edge {
            (f64::NEG_INFINITY, f64::INFINITY)
        } else {
            (1.0, 0.0)
        }
    } else {
        let a = (0.0 - s0) / inc;
        let b = (hi_edge - s0) / inc;
        (a.min(b), a.max(b))
    }
}

/// Line integrals (value × Å) of `vol` (`[z, y, x]`, voxel `pixel_a` Å, centre voxel `n/2`)
/// for tilt `tilt`, into an image of `nx × ny` pixels of `pixel_a` Å (`[y, x]`).
/// Rows are computed in parallel; each pixel's sum is sequential, so the result does not
/// depend on the thread count. Matter outside the volume contributes nothing.
pub fn project_ray_sum(
    vol: ArrayView3<f32>,
    pixel_a: f64,
    tilt: &TiltImage,
    nx: usize,
    ny: usize,
) -> Array2<f32> {
    let vol = vol.as_standard_layout();
    let (vz, vy, vx) = vol.dim();
    let data = vol.as_slice().expect("standard layout");
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
    let (sx, sy) = (1usize, vx);
    let sz = vx * vy;
    img.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(v, mut row)| {
            for (u, out) in row.iter_mut().enumerate() {
                // in voxel units: p(0) = Rᵀ (a, b, 0) / px + vc
                let a = u as f64 - ic[0];
                let b = v as f64 - ic[1];
                let p0 = apply(&rt, [a, b, 0.0]);
                let s0 = [p0[0] + vc[0], p0[1] + vc[1], p0[2] + vc[2]];
                let rx = axis_range(s0[0], inc[0], vx);
                let ry = axis_range(s0[1], inc[1], vy);
                let rz = axis_range(s0[2], inc[2], vz);
                let k0 = rx.0.max(ry.0).max(rz.0).ceil();
                let k1 = rx.1.min(ry.1).min(rz.1).floor();
                if !(k1 >= k0) {
                    continue;
                }
                let mut acc = 0.0f32;
                let mut k = k0;
                while k <= k1 {
                    let x = (s0[0] + k * inc[0]).max(0.0);
                    let y = (s0[1] + k * inc[1]).max(0.0);
                    let z = (s0[2] + k * inc[2]).max(0.0);
                    let (x0, y0, z0) = (x as usize, y as usize, z as usize);
                    let (fx, fy, fz) = (
                        (x - x0 as f64) as f32,
                        (y - y0 as f64) as f32,
                        (z - z0 as f64) as f32,
                    );
                    let i = z0 * sz + y0 * sy + x0 * sx;
                    let c00 = data[i] + fx * (data[i + 1] - data[i]);
                    let c01 = data[i + sy] + fx * (data[i + sy + 1] - data[i + sy]);
                    let c10 = data[i + sz] + fx * (data[i + sz + 1] - data[i + sz]);
                    let c11 = data[i + sz + sy] + fx * (data[i + sz + sy + 1] - data[i + sz + sy]);
                    let c0 = c00 + fy * (c01 - c00);
                    let c1 = c10 + fy * (c11 - c10);
                    acc += c0 + fz * (c1 - c0);
                    k += 1.0;
                }
                *out = acc * dt;
            }
        });
    img
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
}
