//! SIRT: the simultaneous iterative reconstruction technique, as ASTRA's `SIRT` / `SIRT_CUDA`.
//!
//! With `A` the forward projector ([`crate::recon::project::forward_project_cpu`]) and `Aᵀ`
//! the back-projector ([`crate::recon::backproject::backproject`]), exact adjoints of each
//! other, SIRT is the row/column-sum preconditioned Landweber iteration
//!
//! `x_{k+1} = x_k + λ·C·Aᵀ·R·(b − A·x_k)`, `x_0 = 0`,
//!
//! with `R = diag(1 / A·1)` (one over each pixel's ray length through the volume, in voxels)
//! and `C = diag(1 / Aᵀ·1)` (one over the number of tilts — weighted by bilinear coverage —
//! that see each voxel). Sums below `1e-6` give a weight 0 (pixels that miss the volume,
//! voxels no tilt sees), as in ASTRA. For `0 < λ < 2` the iteration converges to the
//! minimiser of `‖b − A·x‖²_R` and decreases that weighted residual monotonically; the
//! optional positivity constraint clamps `x` to `≥ 0` after each update (a projection onto
//! the constraint set in the `C⁻¹` metric, so the descent property is kept).
//!
//! Output scale: like WBP, the reconstruction of line-integral projections (voxel units) has
//! the amplitude of the object's density.

use crate::core::geometry::{Projection, TiltSeriesGeometry};
use crate::device::Device;
use crate::recon::backproject::backproject;
use crate::recon::project::forward_project_cpu;
use crate::recon::wbp::preprocess;
use crate::{Error, Result};
use ndarray::{Array3, ArrayView3, Zip};
use rayon::prelude::*;

/// Parameters of a SIRT reconstruction.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SirtParams {
    /// Number of iterations (≥ 1; typically 10–50).
    pub iterations: u32,
    /// Relaxation `λ` in (0, 2); 1 is ASTRA's default.
    pub relaxation: f32,
    /// Clamp the volume to `≥ 0` after every iteration.
    pub positivity: bool,
    /// Binning factor of the output relative to the stack (≥ 1; Fourier cropping).
    pub bin: usize,
    /// Output thickness `nz`, in binned voxels.
    pub thickness_px: usize,
    /// Negate the contrast so that dense matter (dark in cryo-EM images) becomes positive.
    pub invert_contrast: bool,
}

impl Default for SirtParams {
    fn default() -> Self {
        SirtParams {
            iterations: 20,
            relaxation: 1.0,
            positivity: false,
            bin: 1,
            thickness_px: 300,
            invert_contrast: true,
        }
    }
}

/// A SIRT result: the volume and the residual history.
#[derive(Clone, Debug)]
pub struct SirtOutput {
    /// The reconstruction `[z, y, x]`.
    pub volume: Array3<f32>,
    /// `‖b − A·x_k‖₂` for `k = 0 .. iterations−1` (before each update; `k = 0` is `‖b‖`).
    pub residuals: Vec<f64>,
    /// `‖R^{1/2}·(b − A·x_k)‖₂`, the norm SIRT decreases monotonically, same indices.
    pub weighted_residuals: Vec<f64>,
}

/// Row and column sums below this give a zero weight (ASTRA's threshold).
const MIN_SUM: f32 = 1e-6;

/// Reconstruct `stack` `[tilt, y, x]` (pixel `geom.pixel_a` Å, one image per `geom.tilts`
/// entry, aligned in the sense that `geom` holds the shifts) with SIRT into a volume
/// `[z, y, x]` of shape `(thickness_px, ny/bin, nx/bin)` and voxel `geom.pixel_a·bin` Å,
/// centred on the tomogram centre of `core::geometry`.
///
/// Pre-processing as [`crate::recon::wbp::wbp`] (Fourier binning, `(I − mean)/mean`
/// normalisation with optional contrast inversion, 4 % cosine edge taper), then
/// [`sirt_solve`] with `geom.projections(bin)`. Back-projections run on `device`, forward
/// projections on the CPU.
///
/// Errors: [`Error::BadInput`] for inconsistent or non-finite data, [`Error::Config`] for bad
/// parameters, [`Error::Runtime`] for device failures.
pub fn sirt(
    stack: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    params: &SirtParams,
    device: &Device,
) -> Result<Array3<f32>> {
    validate_params(params, stack.dim())?;
    let b = preprocess(stack, geom, params.bin, params.invert_contrast)?;
    let (_, by, bx) = b.dim();
    let out = sirt_solve(
        b.view(),
        &geom.projections(params.bin),
        (params.thickness_px, by, bx),
        geom.pixel_a * params.bin as f64,
        params,
        device,
    )?;
    Ok(out.volume)
}

/// The SIRT iterations on prepared images `b` `[tilt, y, x]` (pixel `voxel_a` Å; no
/// pre-processing is applied here) for a volume `vol_shape = (nz, ny, nx)` of `voxel_a` Å:
/// `params.iterations`, `params.relaxation` and `params.positivity` are used (`bin`,
/// `thickness_px` and `invert_contrast` are ignored). See the module docs for the update.
///
/// Errors: [`Error::Config`] for bad parameters or a projection count that differs from the
/// image count, [`Error::Runtime`] for device failures.
pub fn sirt_solve(
    b: ArrayView3<f32>,
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
    params: &SirtParams,
    device: &Device,
) -> Result<SirtOutput> {
    let (nt, iny, inx) = b.dim();
    if nt != projections.len() || inx < 2 || iny < 2 {
        return Err(Error::Config(format!(
            "sirt: {nt} images of {inx}×{iny} for {} projections: give one projection per \
             image and images of at least 2×2",
            projections.len()
        )));
    }
    validate_solver(params)?;
    let lambda = params.relaxation;
    let image_shape = (iny, inx);

    // R = 1 / A·1 and C = 1 / Aᵀ·1
    let inv = |v: f32| if v > MIN_SUM { 1.0 / v } else { 0.0 };
    let ones = Array3::<f32>::ones(vol_shape);
    let mut r = forward_project_cpu(ones.view(), projections, image_shape, voxel_a);
    r.par_mapv_inplace(inv);
    drop(ones);
    let ones = Array3::<f32>::ones((nt, iny, inx));
    let mut c = backproject(device, ones.view(), projections, vol_shape, voxel_a)?;
    c.par_mapv_inplace(|v| lambda * inv(v));
    drop(ones);

    let mut x = Array3::<f32>::zeros(vol_shape);
    let mut residuals = Vec::with_capacity(params.iterations as usize);
    let mut weighted = Vec::with_capacity(params.iterations as usize);
    for k in 0..params.iterations {
        // residual b − A·x (A·0 = 0)
        let mut res = if k == 0 {
            b.to_owned()
        } else {
            let mut ax = forward_project_cpu(x.view(), projections, image_shape, voxel_a);
            Zip::from(&mut ax)
                .and(&b)
                .par_for_each(|a, &bv| *a = bv - *a);
            ax
        };
        let (n2, w2) = res
            .as_slice()
            .expect("fresh array is contiguous")
            .par_iter()
            .zip(r.as_slice().expect("fresh array is contiguous"))
            .map(|(&e, &w)| {
                let e = e as f64;
                (e * e, e * e * w as f64)
            })
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        residuals.push(n2.sqrt());
        weighted.push(w2.sqrt());
        tracing::debug!(
            "sirt: iteration {k}: ‖b − Ax‖ = {:.6e}, weighted {:.6e}",
            n2.sqrt(),
            w2.sqrt()
        );
        Zip::from(&mut res).and(&r).par_for_each(|e, &w| *e *= w);
        let g = backproject(device, res.view(), projections, vol_shape, voxel_a)?;
        let pos = params.positivity;
        Zip::from(&mut x)
            .and(&c)
            .and(&g)
            .par_for_each(|xv, &cv, &gv| {
                let v = *xv + cv * gv;
                *xv = if pos { v.max(0.0) } else { v };
            });
    }
    Ok(SirtOutput {
        volume: x,
        residuals,
        weighted_residuals: weighted,
    })
}

/// The parameters [`sirt_solve`] uses: iterations and relaxation.
fn validate_solver(p: &SirtParams) -> Result<()> {
    if p.iterations == 0 {
        return Err(Error::Config(
            "sirt: iterations = 0: use ≥ 1 (typically 10–50)".into(),
        ));
    }
    if !(p.relaxation > 0.0 && p.relaxation < 2.0) {
        return Err(Error::Config(format!(
            "sirt: relaxation = {}: SIRT converges only for 0 < relaxation < 2; use 1",
            p.relaxation
        )));
    }
    Ok(())
}

/// All parameters of [`sirt`], for a stack of `(tilts, ny, nx)`.
fn validate_params(p: &SirtParams, (_, ny, nx): (usize, usize, usize)) -> Result<()> {
    validate_solver(p)?;
    if p.bin == 0 || nx / p.bin.max(1) < 2 || ny / p.bin.max(1) < 2 {
        return Err(Error::Config(format!(
            "sirt: bin = {} for {nx}×{ny} images: bin must be ≥ 1 and leave at least 2×2 pixels",
            p.bin
        )));
    }
    if p.thickness_px == 0 {
        return Err(Error::Config(
            "sirt: thickness_px = 0: give the tomogram thickness in binned voxels (e.g. 300)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::TiltImage;

    fn geom_projs(nt: usize, n: usize, vox: f64) -> Vec<Projection> {
        (0..nt)
            .map(|i| {
                let mut t = TiltImage::nominal(-60.0 + 120.0 * i as f64 / (nt - 1) as f64, 85.0);
                t.shift_x_a = 3.0 * (i as f64).sin();
                t.shift_y_a = -2.0 * (i as f64).cos();
                t.projection(vox, n, n)
            })
            .collect()
    }

    /// A phantom that is exactly representable: SIRT on consistent data `b = A·x*` drives
    /// the residual down monotonically, and positivity keeps the volume ≥ 0.
    #[test]
    fn residual_decreases_monotonically_and_positivity_holds() {
        let (nz, n, nt, vox) = (12, 32, 15, 4.0);
        let truth = Array3::from_shape_fn((nz, n, n), |(z, y, x)| {
            let d2 = (x as f32 - 13.3).powi(2) + (y as f32 - 18.1).powi(2);
            let dz = (z as f32 - 7.2).powi(2);
            (-(d2 + dz) / 18.0).exp() + 0.5 * (-((x as f32 - 22.0).powi(2) + dz) / 8.0).exp()
        });
        let projs = geom_projs(nt, n, vox);
        let b = forward_project_cpu(truth.view(), &projs, (n, n), vox);
        for pos in [false, true] {
            let p = SirtParams {
                iterations: 15,
                positivity: pos,
                ..SirtParams::default()
            };
            let out = sirt_solve(b.view(), &projs, (nz, n, n), vox, &p, &Device::Cpu).unwrap();
            for w in out.weighted_residuals.windows(2) {
                assert!(w[1] < w[0], "pos {pos}: {:?}", out.weighted_residuals);
            }
            for w in out.residuals.windows(2) {
                assert!(w[1] < w[0], "pos {pos}: {:?}", out.residuals);
            }
            let (r0, rn) = (out.residuals[0], *out.residuals.last().unwrap());
            assert!(rn < 0.1 * r0, "pos {pos}: residual {r0} → {rn}");
            if pos {
                assert!(out.volume.iter().all(|&v| v >= 0.0));
            }
        }
    }

    #[test]
    fn rejects_bad_parameters_with_a_fix() {
        let geom = TiltSeriesGeometry::from_angles(16, 16, 2.0, &[-3.0, 0.0, 3.0], 85.0);
        let stack = Array3::<f32>::ones((3, 16, 16));
        let run = |p: SirtParams| sirt(stack.view(), &geom, &p, &Device::Cpu).unwrap_err();
        let base = SirtParams {
            thickness_px: 4,
            ..SirtParams::default()
        };
        let e = run(SirtParams {
            iterations: 0,
            ..base.clone()
        });
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("iterations = 0"), "{e}");
        let e = run(SirtParams {
            relaxation: 2.5,
            ..base.clone()
        });
        assert!(e.to_string().contains("0 < relaxation < 2"), "{e}");
        let e = run(SirtParams {
            bin: 0,
            ..base.clone()
        });
        assert_eq!(e.exit_code(), 2);
        let short = Array3::<f32>::ones((2, 16, 16));
        let e = sirt(short.view(), &geom, &base, &Device::Cpu).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(
            e.to_string().contains("2 images but the geometry 3 tilts"),
            "{e}"
        );
    }

    #[test]
    fn output_shape_follows_bin_and_thickness() {
        let geom = TiltSeriesGeometry::from_angles(20, 12, 2.0, &[-30.0, 0.0, 30.0], 85.0);
        let stack = Array3::from_shape_fn((3, 12, 20), |(t, y, x)| {
            1.0 + 0.01 * ((t + y + x) % 3) as f32
        });
        let p = SirtParams {
            bin: 2,
            thickness_px: 5,
            iterations: 3,
            ..SirtParams::default()
        };
        let v = sirt(stack.view(), &geom, &p, &Device::Cpu).unwrap();
        assert_eq!(v.dim(), (5, 6, 10));
        assert!(v.iter().all(|x| x.is_finite()));
    }
}
