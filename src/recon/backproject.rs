//! Voxel-driven back-projection of a tilt series into a volume (CPU twin of
//! `kernels/backproject.cu`).
//!
//! Frames (see `core::geometry`): voxel `(iz, iy, ix)` of a volume of shape `(nz, ny, nx)` and
//! voxel size `v` Å is the specimen point `p = ((ix − nx/2)·v, (iy − ny/2)·v, (iz − nz/2)·v)`
//! Å; tilt `i` sees it at image pixel `(u, v) = Projection::project(p)`. The back-projection
//! is `vol[iz, iy, ix] = Σ_i bilinear(image_i, u, v)` (0 outside the image).
//!
//! CPU and CUDA evaluate exactly the same single-precision expressions (see
//! [`voxel_to_pixel_coeffs`] and [`bilinear_f32`]) in the same order, so they agree to
//! rounding (the CUDA kernel uses explicit round-to-nearest intrinsics, no FMA contraction).

use crate::core::geometry::Projection;
use crate::device::Device;
use ndarray::{Array3, ArrayView3};
use rayon::prelude::*;

/// Per-tilt affine map from voxel indices to image pixels, in f32:
/// `u = c[3] + iy·c[1] + iz·c[2] + ix·c[0]`, `v = c[7] + iy·c[5] + iz·c[6] + ix·c[4]`
/// (evaluated in exactly that order by CPU and CUDA).
pub type VoxelCoeffs = [f32; 8];

/// Volume lines (along x) per CPU task.
const LINES_PER_TASK: usize = 16;

/// Fold the voxel size and the volume centre into each projection: returns one
/// [`VoxelCoeffs`] per tilt for a volume `(nz, ny, nx)` of `voxel_a` Å (computed in f64,
/// rounded to f32 once).
pub fn voxel_to_pixel_coeffs(
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
) -> Vec<VoxelCoeffs> {
    let (nz, ny, nx) = vol_shape;
    let c = [(nx / 2) as f64, (ny / 2) as f64, (nz / 2) as f64];
    projections
        .iter()
        .map(|p| {
            let row = |r: usize| {
                let m = &p.m[r];
                let off = m[3] - voxel_a * (m[0] * c[0] + m[1] * c[1] + m[2] * c[2]);
                [
                    (m[0] * voxel_a) as f32,
                    (m[1] * voxel_a) as f32,
                    (m[2] * voxel_a) as f32,
                    off as f32,
                ]
            };
            let (u, v) = (row(0), row(1));
            [u[0], u[1], u[2], u[3], v[0], v[1], v[2], v[3]]
        })
        .collect()
}

/// Bilinear sample of a row-major image `img` (`ny × nx`, `[y, x]`) at pixel `(u, v)` =
/// `(x, y)`, single precision, 0 outside `[0, n−1]`: the same rule as
/// `core::interp::bilinear` (and the CUDA kernel's `bilinear`). Needs `nx, ny ≥ 2`.
#[inline(always)]
pub fn bilinear_f32(img: &[f32], nx: usize, ny: usize, u: f32, v: f32) -> f32 {
    let umax = (nx - 1) as f32;
    let vmax = (ny - 1) as f32;
    if !(u >= 0.0 && v >= 0.0 && u <= umax && v <= vmax) {
        return 0.0;
    }
    assert!(img.len() >= nx * ny && nx >= 2 && ny >= 2);
    // u, v ≥ 0 here, so truncation is floor (and avoids a libm call without SSE4.1)
    let x0 = (u as usize).min(nx - 2);
    let y0 = (v as usize).min(ny - 2);
    let fx = u - x0 as f32;
    let fy = v - y0 as f32;
    let i = y0 * nx + x0;
    // SAFETY: x0 + 1 ≤ nx − 1 and y0 + 1 ≤ ny − 1, so i + nx + 1 ≤ nx·ny − 1 < img.len().
    let (p00, p01, p10, p11) = unsafe {
        (
            *img.get_unchecked(i),
            *img.get_unchecked(i + 1),
            *img.get_unchecked(i + nx),
            *img.get_unchecked(i + nx + 1),
        )
    };
    let a = p00 * (1.0 - fx) + p01 * fx;
    let b = p10 * (1.0 - fx) + p11 * fx;
    a * (1.0 - fy) + b * fy
}

/// Back-project `images` `[tilt, y, x]` (pixel `voxel_a` Å, i.e. already binned to the
/// voxel size) into a volume of shape `vol_shape = (nz, ny, nx)` and voxel `voxel_a` Å:
/// `vol[iz, iy, ix] = Σ_tilt bilinear(image, Projection::project(p))` with `p` the voxel's
/// specimen point (module docs). No normalisation (the caller divides by the tilt count).
///
/// Rayon over blocks of `(z, y)` lines; per block, per tilt, per line the inner x loop evaluates `u, v` linear in
/// x (no accumulation error, no allocation).
///
/// Panics (programming errors, validated by callers): `projections.len() != images.len_of(0)`,
/// images smaller than 2×2.
pub fn backproject_cpu(
    images: ArrayView3<f32>,
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
) -> Array3<f32> {
    let coeffs = voxel_to_pixel_coeffs(projections, vol_shape, voxel_a);
    backproject_cpu_coeffs(images, &coeffs, vol_shape)
}

/// [`backproject_cpu`] with precomputed [`VoxelCoeffs`] (one per tilt).
pub fn backproject_cpu_coeffs(
    images: ArrayView3<f32>,
    coeffs: &[VoxelCoeffs],
    vol_shape: (usize, usize, usize),
) -> Array3<f32> {
    let (nt, iny, inx) = images.dim();
    assert_eq!(nt, coeffs.len(), "backproject: one projection per tilt");
    assert!(
        inx >= 2 && iny >= 2,
        "backproject: images must be at least 2×2"
    );
    let (nz, ny, nx) = vol_shape;
    let images = images.as_standard_layout();
    let img = images.as_slice().expect("standard layout");
    let img_plane = inx * iny;
    let mut vol = Array3::<f32>::zeros(vol_shape);
    if nx == 0 || ny == 0 || nz == 0 {
        return vol;
    }
    // Tasks are blocks of LINES_PER_TASK consecutive y lines of one z plane. Within a task the
    // loop runs tilt → line → x, so neighbouring lines, which sample neighbouring image
    // pixels, reuse the cache lines just loaded (the x line of a volume maps to an image
    // column when the tilt axis is near ±90°). The sum over tilts stays in tilt order.
    let out = vol.as_slice_mut().expect("fresh array is contiguous");
    out.par_chunks_mut(ny * nx)
        .enumerate()
        .for_each(|(iz, plane)| {
            let fz = iz as f32;
            plane
                .par_chunks_mut(nx * LINES_PER_TASK)
                .enumerate()
                .for_each(|(blk, lines)| {
                    for (t, c) in coeffs.iter().enumerate() {
                        let im = &img[t * img_plane..(t + 1) * img_plane];
                        for (k, acc) in lines.chunks_mut(nx).enumerate() {
                            let fy = (blk * LINES_PER_TASK + k) as f32;
                            // u, v of this line's voxel ix = 0; then linear in x
                            let ul = c[3] + fy * c[1] + fz * c[2];
                            let vl = c[7] + fy * c[5] + fz * c[6];
                            for (ix, a) in acc.iter_mut().enumerate() {
                                let fx = ix as f32;
                                let u = ul + fx * c[0];
                                let v = vl + fx * c[4];
                                *a += bilinear_f32(im, inx, iny, u, v);
                            }
                        }
                    }
                });
        });
    vol
}

/// Back-project on `device` (see [`backproject_cpu`] for shapes, frames and units).
pub fn backproject(
    device: &Device,
    images: ArrayView3<f32>,
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
) -> crate::Result<Array3<f32>> {
    match device {
        Device::Cpu => Ok(backproject_cpu(images, projections, vol_shape, voxel_a)),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            crate::device::cuda::backproject(d, images, projections, vol_shape, voxel_a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::TiltImage;
    use crate::core::interp::bilinear;
    use ndarray::Array3;

    fn lcg(s: &mut u64) -> f32 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*s >> 40) as f32) / ((1u64 << 24) as f32)
    }

    #[test]
    fn zero_tilt_smears_the_image_along_z() {
        let img = Array3::from_shape_fn((1, 12, 10), |(_, y, x)| (y * 10 + x) as f32);
        let p = TiltImage::nominal(0.0, 0.0).projection(2.0, 10, 12);
        let vol = backproject_cpu(img.view(), &[p], (5, 12, 10), 2.0);
        for ((_, y, x), v) in vol.indexed_iter() {
            assert!((v - img[[0, y, x]]).abs() < 1e-4);
        }
    }

    #[test]
    fn matches_an_f64_reference_through_projection_project() {
        let (nt, iny, inx) = (5, 33, 40);
        let mut s = 7u64;
        let img = Array3::from_shape_fn((nt, iny, inx), |_| lcg(&mut s));
        let projs: Vec<_> = (0..nt)
            .map(|i| {
                let mut t = TiltImage::nominal(-50.0 + 25.0 * i as f64, 84.0);
                t.shift_x_a = 3.7 * i as f64;
                t.shift_y_a = -2.1 * i as f64;
                t.projection(3.0, inx, iny)
            })
            .collect();
        let shape = (9, 31, 37);
        let vol = backproject_cpu(img.view(), &projs, shape, 3.0);
        let mut max_err = 0.0f32;
        for ((z, y, x), v) in vol.indexed_iter() {
            let pt = [
                (x as f64 - 18.0) * 3.0,
                (y as f64 - 15.0) * 3.0,
                (z as f64 - 4.0) * 3.0,
            ];
            let want: f32 = (0..nt)
                .map(|t| {
                    let uv = projs[t].project(pt);
                    bilinear(&img.index_axis(ndarray::Axis(0), t), uv[1], uv[0])
                })
                .sum();
            max_err = max_err.max((v - want).abs());
        }
        // f32 coordinates of ≤ 40 px carry ≤ ~1e-5 px error; values are ≤ 5
        assert!(max_err < 1e-3, "max error {max_err}");
    }

    #[test]
    fn bilinear_f32_matches_core_interp() {
        let img = ndarray::Array2::from_shape_fn((6, 7), |(y, x)| ((y * 7 + x * 3) % 5) as f32);
        let sl = img.as_slice().unwrap();
        for &(u, v) in &[
            (0.0, 0.0),
            (6.0, 5.0),
            (3.3, 2.7),
            (-0.01, 1.0),
            (6.01, 1.0),
            (2.0, 5.0),
        ] {
            let a = bilinear_f32(sl, 7, 6, u, v);
            let b = bilinear(&img.view(), v as f64, u as f64);
            assert!((a - b).abs() < 1e-5, "{u} {v}: {a} vs {b}");
        }
    }
}
