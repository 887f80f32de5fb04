//! SIRT: the simultaneous iterative reconstruction technique, as ASTRA's `SIRT` / `SIRT_CUDA`.
//!
//! With `A` the forward projector ([`crate::recon::project::forward_project`]) and `Aᵀ`
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
//! An optional support mask `m` ([`SupportMask`]) restricts the unknowns as ASTRA's
//! reconstruction mask does: `R = 1/(A·m)`, `C = m/(Aᵀ·1)`, and voxels outside stay 0.
//!
//! [`sirt_iterate`] is the resumable form: it starts from any saved `x_k` and calls a hook
//! after every iteration (to checkpoint, or to stop on a signal); `recon::plan` builds the
//! checkpoints, slabs and binnings around it.
//!
//! Output scale: like WBP, the reconstruction of line-integral projections (voxel units) has
//! the amplitude of the object's density.

use crate::core::geometry::{Projection, TiltSeriesGeometry};
use crate::device::Device;
use crate::recon::backproject::backproject;
use crate::recon::project::forward_project;
use crate::recon::wbp::preprocess;
use crate::{Error, Result};
use ndarray::{Array2, Array3, ArrayView3, Axis, Zip};
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
    /// Support mask: voxels outside are 0 and never updated.
    #[serde(default)]
    pub mask: SupportMask,
}

/// Support of the reconstruction, in the frame of the full tomogram (centre voxel
/// `(nx/2, ny/2, nz/2)`, Å). Neither shape depends on Y, so slabs along Y see the same mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SupportMask {
    /// Every voxel is free.
    #[default]
    None,
    /// `|z| ≤ thickness_a / 2`: a slab of the given thickness about the tomogram centre.
    Slab { thickness_a: f64 },
    /// `x² + z² ≤ radius_a²`: a cylinder about the tilt axis (specimen Y), the region every
    /// tilt of a wide series sees.
    Cylinder { radius_a: f64 },
}

impl SupportMask {
    /// The mask on the `(z, x)` plane of a volume `(nz, ·, nx)` of `voxel_a` Å, `[z, x]`,
    /// 1 inside and 0 outside; `None` for [`SupportMask::None`].
    pub fn plane(&self, nz: usize, nx: usize, voxel_a: f64) -> Option<Array2<f32>> {
        let inside = |z: usize, x: usize| {
            let za = (z as f64 - (nz / 2) as f64) * voxel_a;
            let xa = (x as f64 - (nx / 2) as f64) * voxel_a;
            match *self {
                SupportMask::None => true,
                SupportMask::Slab { thickness_a } => za.abs() <= 0.5 * thickness_a,
                SupportMask::Cylinder { radius_a } => xa * xa + za * za <= radius_a * radius_a,
            }
        };
        match self {
            SupportMask::None => None,
            _ => Some(Array2::from_shape_fn((nz, nx), |(z, x)| {
                f32::from(u8::from(inside(z, x)))
            })),
        }
    }

    /// Check the parameters: positive, finite sizes.
    pub fn validate(&self) -> Result<()> {
        let (name, v) = match *self {
            SupportMask::None => return Ok(()),
            SupportMask::Slab { thickness_a } => ("slab thickness_a", thickness_a),
            SupportMask::Cylinder { radius_a } => ("cylinder radius_a", radius_a),
        };
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "sirt: mask {name} = {v}: give a positive size in Å (or no mask)"
            )))
        }
    }
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
            mask: SupportMask::None,
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
    /// Completed iterations: `params.iterations`, or fewer when the hook asked to stop.
    pub iterations_done: u32,
}

/// Where a SIRT run starts: `x_0 = 0` or a saved iterate.
#[derive(Clone, Debug, Default)]
pub struct SirtStart {
    /// `x_k` (`None`: zeros) and its `k`.
    pub volume: Option<Array3<f32>>,
    pub iteration: u32,
    /// Residual history of the iterations before `k` (kept in the output).
    pub residuals: Vec<f64>,
    pub weighted_residuals: Vec<f64>,
}

/// What the per-iteration hook of [`sirt_iterate`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SirtControl {
    Continue,
    Stop,
}

/// The state handed to the hook after each completed iteration.
pub struct SirtProgress<'a> {
    /// Completed iterations `k` (the volume is `x_k`).
    pub iteration: u32,
    pub volume: &'a Array3<f32>,
    pub residuals: &'a [f64],
    pub weighted_residuals: &'a [f64],
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
/// `params.iterations`, `params.relaxation`, `params.positivity` and `params.mask` are used
/// (`bin`, `thickness_px` and `invert_contrast` are ignored). See the module docs for the
/// update. Same as [`sirt_iterate`] from `x_0 = 0` without a hook.
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
    sirt_iterate(
        b,
        projections,
        vol_shape,
        voxel_a,
        params,
        device,
        SirtStart::default(),
        &mut |_| Ok(SirtControl::Continue),
    )
}

/// [`sirt_solve`] from a given start (`start.volume = x_k` after `start.iteration`
/// iterations, e.g. a checkpoint) up to `params.iterations` in total, calling `hook` after
/// every completed iteration with the new state; the hook may save it and may stop the run
/// ([`SirtControl::Stop`]: the output then has `iterations_done < params.iterations`).
/// Resuming from the `x_k` of an interrupted run gives the same iterates as an uninterrupted
/// run (the same operations in the same order).
///
/// The support mask enters as ASTRA's reconstruction mask: the system matrix keeps only the
/// columns of masked-in voxels, so `R = 1/(A·m)`, `C = m/(Aᵀ·1)` and voxels outside stay 0.
///
/// Errors: as [`sirt_solve`]; a start volume of the wrong shape is [`Error::Config`]; the
/// hook's errors are passed on.
#[allow(clippy::too_many_arguments)]
pub fn sirt_iterate(
    b: ArrayView3<f32>,
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
    params: &SirtParams,
    device: &Device,
    start: SirtStart,
    hook: &mut dyn FnMut(SirtProgress<'_>) -> Result<SirtControl>,
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
    if let Some(x) = &start.volume {
        if x.dim() != vol_shape {
            return Err(Error::Config(format!(
                "sirt: start volume of shape {:?} for a volume of shape {vol_shape:?}: resume \
                 from a checkpoint of this reconstruction (or delete the checkpoint)",
                x.dim()
            )));
        }
    }
    let lambda = params.relaxation;
    let image_shape = (iny, inx);
    let (nz, _, nx) = vol_shape;
    let mask = params.mask.plane(nz, nx, voxel_a);
    // broadcast the [z, x] mask over y
    let apply_mask = |v: &mut Array3<f32>| {
        if let Some(m) = &mask {
            Zip::from(v.lanes_mut(Axis(1)))
                .and(m)
                .par_for_each(|mut lane, &w| lane.mapv_inplace(|a| a * w));
        }
    };

    // R = 1 / A·m and C = m / Aᵀ·1
    let inv = |v: f32| if v > MIN_SUM { 1.0 / v } else { 0.0 };
    let mut support = Array3::<f32>::ones(vol_shape);
    apply_mask(&mut support);
    let mut r = forward_project(device, support.view(), projections, image_shape, voxel_a)?;
    r.par_mapv_inplace(inv);
    drop(support);
    let ones = Array3::<f32>::ones((nt, iny, inx));
    let mut c = backproject(device, ones.view(), projections, vol_shape, voxel_a)?;
    c.par_mapv_inplace(|v| lambda * inv(v));
    apply_mask(&mut c);
    drop(ones);

    let k0 = start.iteration.min(params.iterations);
    let mut x = match start.volume {
        Some(v) => v,
        None => Array3::<f32>::zeros(vol_shape),
    };
    apply_mask(&mut x);
    let mut residuals = start.residuals;
    let mut weighted = start.weighted_residuals;
    residuals.truncate(k0 as usize);
    weighted.truncate(k0 as usize);
    let mut done = k0;
    for k in k0..params.iterations {
        // residual b − A·x (A·0 = 0)
        let mut res = if k == 0 {
            b.to_owned()
        } else {
            let mut ax = forward_project(device, x.view(), projections, image_shape, voxel_a)?;
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
        drop(res);
        let pos = params.positivity;
        Zip::from(&mut x)
            .and(&c)
            .and(&g)
            .par_for_each(|xv, &cv, &gv| {
                let v = *xv + cv * gv;
                *xv = if pos { v.max(0.0) } else { v };
            });
        drop(g);
        done = k + 1;
        let ctl = hook(SirtProgress {
            iteration: done,
            volume: &x,
            residuals: &residuals,
            weighted_residuals: &weighted,
        })?;
        if ctl == SirtControl::Stop && done < params.iterations {
            break;
        }
    }
    Ok(SirtOutput {
        volume: x,
        residuals,
        weighted_residuals: weighted,
        iterations_done: done,
    })
}

/// A fingerprint of the solver parameters that change the iterates (for checkpoint hashes):
/// relaxation, positivity and mask, not the iteration count.
pub fn solver_fingerprint(p: &SirtParams) -> String {
    format!(
        "relaxation {:e} positivity {} mask {:?}",
        p.relaxation, p.positivity, p.mask
    )
}

/// The parameters [`sirt_solve`] uses: iterations, relaxation and mask.
pub(crate) fn validate_solver(p: &SirtParams) -> Result<()> {
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
    p.mask.validate()
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
    use crate::recon::project::forward_project_cpu;

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
