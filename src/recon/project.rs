//! Voxel-driven forward projection of a volume into tilt images, the exact adjoint of
//! [`crate::recon::backproject::backproject_cpu`].
//!
//! Frames as in [`crate::recon::backproject`]: voxel `(iz, iy, ix)` of a volume `(nz, ny, nx)`
//! of `voxel_a` Å is the specimen point `((ix − nx/2)·v, (iy − ny/2)·v, (iz − nz/2)·v)` Å and
//! tilt `t` sees it at image pixel `(u, v)` given by the same f32 coefficients
//! ([`voxel_to_pixel_coeffs`]), evaluated in the same order, as the back-projector.
//!
//! The back-projector is `vol[p] = Σ_t Σ_k w_k(p, t)·img_t[q_k(p, t)]` with `q_k`, `w_k` the
//! four pixels and weights of the bilinear sample at `(u, v)` ([`bilinear_f32`]: cell
//! `x0 = min(⌊u⌋, nx−2)`, `y0 = min(⌊v⌋, ny−2)`, nothing when `(u, v)` is outside
//! `[0, nx−1] × [0, ny−1]`). Its adjoint, computed here, is
//! `img_t[q] = Σ_p Σ_k [q_k(p, t) = q]·w_k(p, t)·vol[p]`: every voxel splats its value into
//! the four pixels with the same weights. Hence `⟨A·x, y⟩ = ⟨x, Aᵀ·y⟩` up to f32 rounding.
//!
//! [`bilinear_f32`]: crate::recon::backproject::bilinear_f32

use crate::core::geometry::Projection;
use crate::device::Device;
use crate::recon::backproject::{fma_available, separable, voxel_to_pixel_coeffs, VoxelCoeffs};
use ndarray::{Array3, ArrayView3, Axis};
use rayon::prelude::*;

/// Forward-project `vol` `[z, y, x]` (voxel `voxel_a` Å, centred on the tomogram centre) into
/// one image per projection, `[tilt, y, x]` of `image_shape = (ny, nx)` pixels of `voxel_a`
/// Å (images binned to the voxel size, as for [`backproject_cpu`]).
///
/// The result is the exact adjoint of [`backproject_cpu`] with the same projections, shapes
/// and voxel size (module docs): line integrals in voxel units (a unit-density voxel adds
/// a total weight of 1 to each tilt where it lands inside the image).
///
/// Parallel over tilts (rayon); each tilt's image is accumulated by one task in a fixed
/// voxel order, so the result is deterministic.
///
/// Panics (programming errors, validated by callers): images smaller than 2×2.
///
/// [`backproject_cpu`]: crate::recon::backproject::backproject_cpu
pub fn forward_project_cpu(
    vol: ArrayView3<f32>,
    projections: &[Projection],
    image_shape: (usize, usize),
    voxel_a: f64,
) -> Array3<f32> {
    let coeffs = voxel_to_pixel_coeffs(projections, vol.dim(), voxel_a);
    forward_project_cpu_coeffs(vol, &coeffs, image_shape)
}

/// Forward-project on `device` (see [`forward_project_cpu`] for shapes, frames and units):
/// `vol` `[z, y, x]` of `voxel_a` Å → images `[tilt, y, x]` of `image_shape = (ny, nx)`
/// pixels of `voxel_a` Å, one per projection. The CPU result is the exact adjoint of
/// [`crate::recon::backproject::backproject`] on the CPU; the CUDA result
/// (`kernels/project.cu`) equals the CPU's to f32 rounding of the sums.
///
/// Errors ([`crate::Error::Runtime`]): images smaller than 2×2, a voxel size that is not a
/// positive finite number, or a failing CUDA call / too little device memory.
pub fn forward_project(
    device: &Device,
    vol: ArrayView3<f32>,
    projections: &[Projection],
    image_shape: (usize, usize),
    voxel_a: f64,
) -> crate::Result<Array3<f32>> {
    match device {
        Device::Cpu => {
            validate_forward_inputs(image_shape, voxel_a)
                .map_err(|e| crate::Error::Runtime(format!("forward_project: {e}")))?;
            Ok(forward_project_cpu(vol, projections, image_shape, voxel_a))
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            crate::device::cuda::forward_project(d, vol, projections, image_shape, voxel_a)
        }
    }
}

/// Why a forward projection with these inputs cannot run (a message naming the value and
/// the fix), shared by the CPU and CUDA entry points.
pub(crate) fn validate_forward_inputs(
    (iny, inx): (usize, usize),
    voxel_a: f64,
) -> Result<(), String> {
    if iny < 2 || inx < 2 {
        return Err(format!(
            "image shape {iny}×{inx} (ny×nx) is smaller than 2×2; pass the tilt-series \
             image shape at the voxel size"
        ));
    }
    if !(voxel_a.is_finite() && voxel_a > 0.0) {
        return Err(format!(
            "voxel size {voxel_a} Å is not a positive number; pass the binned pixel size"
        ));
    }
    Ok(())
}

/// [`forward_project_cpu`] with precomputed [`VoxelCoeffs`] (one per tilt).
///
/// Separable geometry (see [`crate::recon::backproject::backproject_cpu_coeffs`]) runs the
/// gather-form streaming kernel (the adjoint of the separable back-projector), any other the
/// general splatting kernel; both are the adjoint of the back-projector to f32 rounding.
pub fn forward_project_cpu_coeffs(
    vol: ArrayView3<f32>,
    coeffs: &[VoxelCoeffs],
    image_shape: (usize, usize),
) -> Array3<f32> {
    let (iny, inx) = image_shape;
    assert!(
        inx >= 2 && iny >= 2,
        "forward_project: images must be at least 2×2"
    );
    // a contiguous copy only when the view is not already one
    let owned;
    let vol = if vol.is_standard_layout() {
        vol
    } else {
        owned = vol.as_standard_layout().into_owned();
        owned.view()
    };
    let data = vol.as_slice().expect("standard layout");
    let (nz, ny, nx) = vol.dim();
    if let Some(sep) = separable::detect(coeffs, (nz, ny, nx), image_shape) {
        return separable::forward_project(data, (nz, ny, nx), &sep, image_shape, fma_available());
    }
    splat_general(data, (nz, ny, nx), coeffs, image_shape)
}

/// The general (any geometry) splatting kernel: parallel over tilts, each image accumulated
/// by one task in a fixed voxel order (deterministic). The reference for the fast paths.
fn splat_general(
    data: &[f32],
    (nz, ny, nx): (usize, usize, usize),
    coeffs: &[VoxelCoeffs],
    (iny, inx): (usize, usize),
) -> Array3<f32> {
    let mut out = Array3::<f32>::zeros((coeffs.len(), iny, inx));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(coeffs.par_iter())
        .for_each(|(mut img, c)| {
            let img = img.as_slice_mut().expect("fresh array is contiguous");
            project_one(data, (nz, ny, nx), c, img, (inx, iny));
        });
    out
}

/// Lines splatted together: `LANES` volume lines `LINE_STRIDE` apart in y. Consecutive voxels
/// of one line hit overlapping pixels (a read-modify-write chain through memory); lines two
/// apart in y land on disjoint pixels for common geometries, so interleaving them gives the
/// CPU independent chains. The order is fixed, so the result stays deterministic.
const LANES: usize = 4;
const LINE_STRIDE: usize = 2;

/// Splat every voxel of one volume into one image (the adjoint of one tilt's back-projection).
fn project_one(
    vol: &[f32],
    (nz, ny, nx): (usize, usize, usize),
    c: &VoxelCoeffs,
    img: &mut [f32],
    (inx, iny): (usize, usize),
) {
    let block = LANES * LINE_STRIDE;
    for iz in 0..nz {
        let fz = iz as f32;
        // the back-projector's expressions, in its order: u, v of voxel ix = 0 of line iy
        let start = |iy: usize| {
            let fy = iy as f32;
            (c[3] + fy * c[1] + fz * c[2], c[7] + fy * c[5] + fz * c[6])
        };
        let row = |iy: usize| &vol[(iz * ny + iy) * nx..(iz * ny + iy + 1) * nx];
        let mut y0 = 0;
        while y0 + block <= ny {
            for phase in 0..LINE_STRIDE {
                let lines: [usize; LANES] = std::array::from_fn(|j| y0 + phase + j * LINE_STRIDE);
                let st = lines.map(start);
                let rows = lines.map(row);
                for ix in 0..nx {
                    let fx = ix as f32;
                    for (&(ul, vl), r) in st.iter().zip(&rows) {
                        splat(img, (inx, iny), ul + fx * c[0], vl + fx * c[4], r[ix]);
                    }
                }
            }
            y0 += block;
        }
        for iy in y0..ny {
            let (ul, vl) = start(iy);
            for (ix, &val) in row(iy).iter().enumerate() {
                let fx = ix as f32;
                splat(img, (inx, iny), ul + fx * c[0], vl + fx * c[4], val);
            }
        }
    }
}

/// Add `val` into the four pixels bilinear sampling at `(u, v)` reads, with its weights
/// (nothing outside `[0, nx−1] × [0, ny−1]`), exactly as [`crate::recon::backproject::bilinear_f32`]
/// picks cell and weights.
#[inline(always)]
fn splat(img: &mut [f32], (inx, iny): (usize, usize), u: f32, v: f32, val: f32) {
    let umax = (inx - 1) as f32;
    let vmax = (iny - 1) as f32;
    if !(u >= 0.0 && v >= 0.0 && u <= umax && v <= vmax) {
        return;
    }
    // u, v ≥ 0: truncation is floor (as in the back-projector)
    let x0 = (u as usize).min(inx - 2);
    let y0 = (v as usize).min(iny - 2);
    let wx = u - x0 as f32;
    let wy = v - y0 as f32;
    let a = val * (1.0 - wy);
    let b = val * wy;
    let i = y0 * inx + x0;
    debug_assert_eq!(img.len(), inx * iny);
    // SAFETY: x0 ≤ inx − 2 and y0 ≤ iny − 2, so i + inx + 1 ≤ inx·iny − 1 < img.len():
    // `img` is always one `iny × inx` image of the output array ([`project_one`], called
    // only by `forward_project_cpu_coeffs`, is the only caller).
    unsafe {
        *img.get_unchecked_mut(i) += a * (1.0 - wx);
        *img.get_unchecked_mut(i + 1) += a * wx;
        *img.get_unchecked_mut(i + inx) += b * (1.0 - wx);
        *img.get_unchecked_mut(i + inx + 1) += b * wx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::TiltImage;
    use crate::recon::backproject::backproject_cpu;
    use crate::recon::test_support::{lcg, random_projections};

    fn dot(a: &Array3<f32>, b: &Array3<f32>) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    #[test]
    fn is_the_adjoint_of_the_back_projector() {
        let mut s = 5u64;
        // (axis °, image ny, nx, volume nz, ny, nx, shift scale Å, x-tilt °, voxel Å)
        let cases = [
            (85.0, 33, 40, 9, 31, 37, 6.0, 0.0, 3.0),
            (-95.0, 41, 35, 10, 50, 43, 9.0, 3.0, 2.5),
            (0.0, 24, 30, 6, 24, 30, 0.0, 0.0, 3.0),
            // separable (fast path on both sides), with shifts, and image ≠ volume
            (0.0, 37, 44, 8, 53, 40, 12.0, 0.0, 3.0),
            (-90.0, 29, 47, 5, 61, 33, 12.0, 0.0, 3.0),
            (37.0, 30, 50, 12, 33, 19, 15.0, 10.0, 3.4),
        ];
        for &(axis, iny, inx, nz, ny, nx, sh, xt, vox) in &cases {
            let nt = 9;
            let projs = random_projections(nt, 15.0, axis, xt, sh, (inx, iny), &mut s);
            let x = Array3::from_shape_fn((nz, ny, nx), |_| lcg(&mut s) - 0.5);
            let y = Array3::from_shape_fn((nt, iny, inx), |_| lcg(&mut s) - 0.5);
            let ax = forward_project_cpu(x.view(), &projs, (iny, inx), vox);
            let aty = backproject_cpu(y.view(), &projs, (nz, ny, nx), vox);
            let (l, r) = (dot(&ax, &y), dot(&x, &aty));
            // scale of the sums: Σ|terms|
            let scale: f64 = ax.iter().zip(&y).map(|(a, b)| (a * b).abs() as f64).sum();
            let rel = (l - r).abs() / scale;
            assert!(
                rel < 1e-5,
                "axis {axis}: ⟨Ax,y⟩ {l} vs ⟨x,Aᵀy⟩ {r} ({rel:e})"
            );
            assert!(ax.iter().filter(|v| **v != 0.0).count() > ax.len() / 4);
        }
    }

    #[test]
    fn separable_kernel_matches_the_general_splat() {
        let mut s = 21u64;
        // (axis °, image ny, nx, volume nz, ny, nx, shift scale Å): axis 0 streams along
        // image y, −90 along image x; volumes larger and smaller than the images
        let cases = [
            (0.0, 40, 48, 7, 37, 45, 9.0),
            (0.0, 24, 30, 11, 50, 61, 30.0),
            (-90.0, 33, 41, 6, 45, 29, 12.0),
            (-90.0, 70, 35, 9, 20, 40, 0.0),
        ];
        for &(axis, iny, inx, nz, ny, nx, sh) in &cases {
            let nt = 9;
            let projs = random_projections(nt, 15.0, axis, 0.0, sh, (inx, iny), &mut s);
            let coeffs = voxel_to_pixel_coeffs(&projs, (nz, ny, nx), 3.0);
            let sep = separable::detect(&coeffs, (nz, ny, nx), (iny, inx))
                .unwrap_or_else(|| panic!("axis {axis}° should be separable"));
            let x = Array3::from_shape_fn((nz, ny, nx), |_| lcg(&mut s) - 0.5);
            let want = splat_general(x.as_slice().unwrap(), (nz, ny, nx), &coeffs, (iny, inx));
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for simd in [false, fma_available()] {
                let got = separable::forward_project(
                    x.as_slice().unwrap(),
                    (nz, ny, nx),
                    &sep,
                    (iny, inx),
                    simd,
                );
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    err < 1e-5 * scale,
                    "axis {axis}°, simd {simd}: max error {err} (scale {scale})"
                );
            }
            assert!(want.iter().filter(|v| **v != 0.0).count() > want.len() / 4);
        }
    }

    #[test]
    fn forward_project_dispatch_validates_inputs() {
        let vol = Array3::<f32>::ones((3, 4, 5));
        let p = [TiltImage::nominal(0.0, 0.0).projection(2.0, 5, 4)];
        let e = forward_project(&Device::Cpu, vol.view(), &p, (1, 5), 2.0).unwrap_err();
        assert!(e.to_string().contains("2×2"), "{e}");
        let e = forward_project(&Device::Cpu, vol.view(), &p, (4, 5), 0.0).unwrap_err();
        assert!(e.to_string().contains("voxel size"), "{e}");
        let a = forward_project(&Device::Cpu, vol.view(), &p, (4, 5), 2.0).unwrap();
        assert_eq!(a, forward_project_cpu(vol.view(), &p, (4, 5), 2.0));
    }

    #[test]
    fn a_single_voxel_lands_where_projection_predicts() {
        let (nz, ny, nx) = (11, 27, 31);
        let vox = 4.0;
        let (iny, inx) = (30, 34);
        let mut s = 9u64;
        let projs: Vec<_> = (0..7)
            .map(|i| {
                let mut t = TiltImage::nominal(-57.0 + 19.0 * i as f64, 85.0);
                t.shift_x_a = 20.0 * (lcg(&mut s) as f64 - 0.5);
                t.shift_y_a = 20.0 * (lcg(&mut s) as f64 - 0.5);
                t.projection(vox, inx, iny)
            })
            .collect();
        for &(z, y, x) in &[(5usize, 13usize, 15usize), (2, 20, 9), (9, 4, 25)] {
            let mut vol = Array3::<f32>::zeros((nz, ny, nx));
            vol[[z, y, x]] = 1.0;
            let img = forward_project_cpu(vol.view(), &projs, (iny, inx), vox);
            let p = [
                (x as f64 - (nx / 2) as f64) * vox,
                (y as f64 - (ny / 2) as f64) * vox,
                (z as f64 - (nz / 2) as f64) * vox,
            ];
            for (t, pr) in projs.iter().enumerate() {
                let uv = pr.project(p);
                let im = img.index_axis(Axis(0), t);
                let (mut w, mut cu, mut cv) = (0.0f64, 0.0f64, 0.0f64);
                for ((yy, xx), &val) in im.indexed_iter() {
                    w += val as f64;
                    cu += val as f64 * xx as f64;
                    cv += val as f64 * yy as f64;
                }
                // total weight 1, centroid of the bilinear splat = the projected point
                assert!((w - 1.0).abs() < 1e-5, "tilt {t}: weight {w}");
                let err = (cu / w - uv[0]).hypot(cv / w - uv[1]);
                assert!(err < 1e-4, "tilt {t}: centroid off by {err} px");
                assert!(im.iter().filter(|v| **v != 0.0).count() <= 4);
            }
        }
    }

    #[test]
    fn non_contiguous_input_and_determinism() {
        let mut s = 1u64;
        let vol = Array3::from_shape_fn((8, 20, 16), |_| lcg(&mut s));
        let projs: Vec<_> = (0..5)
            .map(|i| TiltImage::nominal(-40.0 + 20.0 * i as f64, 85.0).projection(2.0, 16, 20))
            .collect();
        let a = forward_project_cpu(vol.view(), &projs, (20, 16), 2.0);
        let b = forward_project_cpu(vol.view(), &projs, (20, 16), 2.0);
        assert_eq!(a, b);
        // a transposed-layout copy of the same volume gives the same images
        let mut t = Array3::<f32>::zeros((16, 20, 8));
        t.assign(&vol.view().reversed_axes());
        let c = forward_project_cpu(t.view().reversed_axes(), &projs, (20, 16), 2.0);
        assert_eq!(a, c);
    }
}
