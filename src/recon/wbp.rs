//! Weighted back-projection (WBP) of an aligned tilt series into a tomogram.
//!
//! Steps (per tilt, in parallel): Fourier-bin, normalise to contrast, taper the edges; then
//! the Fourier weighting of [`crate::recon::filter`] and the back-projection of
//! [`crate::recon::backproject`] on the chosen device, divided by the tilt count.

use crate::core::geometry::TiltSeriesGeometry;
use crate::device::Device;
use crate::recon::backproject::backproject;
use crate::recon::filter::{weight_tilts, Filter};
use crate::recon::multibin::MultiBinner;
use crate::{Error, Result};
use ndarray::{Array2, Array3, ArrayView3, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Parameters of a WBP reconstruction.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WbpParams {
    /// Binning factor of the output relative to the stack (≥ 1; Fourier cropping).
    pub bin: usize,
    /// Output thickness `nz`, in binned voxels.
    pub thickness_px: usize,
    /// Radial filter.
    pub filter: Filter,
    /// Optional cosine low-pass, fraction of the binned Nyquist, in (0, 1].
    pub lowpass: Option<f64>,
    /// Negate the contrast so that dense matter (dark in cryo-EM images) becomes positive.
    pub invert_contrast: bool,
}

/// Where the tilt series came from, for error messages (the stage has no file).
const SRC: &str = "<tilt series>";

/// Fraction of each image side tapered to zero at the edges.
const TAPER_FRACTION: f64 = 0.04;

/// Reconstruct `stack` `[tilt, y, x]` (pixel `geom.pixel_a` Å, one image per
/// `geom.tilts` entry, already aligned in the sense that `geom` holds the shifts) into a
/// volume `[z, y, x]` of shape `(thickness_px, ny/bin, nx/bin)` with voxel
/// `geom.pixel_a·bin` Å, centred on the tomogram centre of `core::geometry`.
///
/// 1. validate (tilt count equals the stack depth, image size equals the geometry's, finite
///    values, sane parameters);
/// 2. per tilt: Fourier-bin by `bin`; normalise `(I − mean)/mean` (negated when
///    `invert_contrast`; a tilt whose mean is not positive, e.g. already-normalised data, is
///    divided by its standard deviation instead); taper the edges with a cosine over 4 % of
///    each side;
/// 3. [`weight_tilts`] with `filter` and `lowpass`;
/// 4. back-project on `device` with `geom.projections(bin)`, divide by the tilt count.
///
/// Errors: [`Error::BadInput`] for inconsistent or non-finite data, [`Error::Config`] for bad
/// parameters, [`Error::Runtime`] for device failures.
pub fn wbp(
    stack: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    params: &WbpParams,
    device: &Device,
) -> Result<Array3<f32>> {
    validate_params(stack.dim(), params)?;
    let bin = params.bin;
    let mut images = preprocess(stack, geom, bin, params.invert_contrast)?;

    // 3. Fourier weighting
    weight(&mut images, geom, params.filter, params.lowpass);

    // 4. back-project and average
    let (_, by, bx) = images.dim();
    backproject_mean(
        device,
        images.view(),
        &geom.projections(bin),
        (params.thickness_px, by, bx),
        geom.pixel_a * bin as f64,
    )
}

/// Step 3 of [`wbp`]: the Fourier weighting of prepared images `[tilt, y, x]` with `geom`'s
/// per-tilt axis and tilt angles ([`weight_tilts`]).
pub(crate) fn weight(
    images: &mut Array3<f32>,
    geom: &TiltSeriesGeometry,
    filter: Filter,
    lowpass: Option<f64>,
) {
    let axes: Vec<f64> = geom.tilts.iter().map(|t| t.axis_deg).collect();
    let tilts: Vec<f64> = geom.tilts.iter().map(|t| t.tilt_deg).collect();
    weight_tilts(images, &axes, &tilts, filter, lowpass);
}

/// Step 4 of [`wbp`]: back-project weighted images `[tilt, y, x]` (pixel `voxel_a` Å) into a
/// volume `vol_shape` of `voxel_a` Å with `projections` on `device`, divided by the tilt
/// count.
pub(crate) fn backproject_mean(
    device: &Device,
    images: ArrayView3<f32>,
    projections: &[crate::core::geometry::Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
) -> Result<Array3<f32>> {
    let mut vol = backproject(device, images, projections, vol_shape, voxel_a)?;
    let inv = 1.0 / images.dim().0.max(1) as f32;
    vol.par_mapv_inplace(|v| v * inv);
    Ok(vol)
}

/// Stack/geometry consistency shared by every reconstruction: tilt count, image size, pixel
/// size, finite geometry and finite pixel values.
pub(crate) fn validate_stack(stack: &ArrayView3<f32>, geom: &TiltSeriesGeometry) -> Result<()> {
    let (nt, ny, nx) = stack.dim();
    if nt == 0 {
        return Err(Error::bad_input(
            SRC,
            "tilt count",
            "the stack has no image",
        ));
    }
    if nt != geom.len() {
        return Err(Error::bad_input(
            SRC,
            "tilt count",
            format!(
                "the stack has {nt} images but the geometry {} tilts: give one tilt angle per \
                 image (check the .tlt/.mdoc against the stack, and excluded views)",
                geom.len()
            ),
        ));
    }
    if (ny, nx) != (geom.ny, geom.nx) {
        return Err(Error::bad_input(
            SRC,
            "image size",
            format!(
                "the stack images are {nx}×{ny} but the geometry says {}×{}: use the geometry \
                 made for this stack",
                geom.nx, geom.ny
            ),
        ));
    }
    if !(geom.pixel_a.is_finite() && geom.pixel_a > 0.0) {
        return Err(Error::bad_input(
            SRC,
            "pixel size",
            format!(
                "{} Å is not a positive number: set the pixel size",
                geom.pixel_a
            ),
        ));
    }
    for (i, t) in geom.tilts.iter().enumerate() {
        let vals = [
            t.tilt_deg,
            t.axis_deg,
            t.x_tilt_deg,
            t.shift_x_a,
            t.shift_y_a,
        ];
        if vals.iter().any(|v| !v.is_finite()) {
            return Err(Error::bad_input(
                SRC,
                format!("tilt {i} geometry"),
                "angle or shift is not finite: fix the alignment".to_string(),
            ));
        }
    }
    if let Some((i, v)) = stack.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let (t, r) = (i / (ny * nx), i % (ny * nx));
        return Err(Error::bad_input(
            SRC,
            format!("tilt {t} pixel (x {}, y {})", r % nx, r / nx),
            format!("value {v} is not finite: fix or exclude this tilt"),
        ));
    }
    Ok(())
}

/// Parameter checks of [`wbp`] for a stack of `(tilts, ny, nx)`.
fn validate_params((_, ny, nx): (usize, usize, usize), p: &WbpParams) -> Result<()> {
    if p.bin == 0 || nx / p.bin.max(1) < 2 || ny / p.bin.max(1) < 2 {
        return Err(Error::Config(format!(
            "wbp: bin = {} for {nx}×{ny} images: bin must be ≥ 1 and leave at least 2×2 pixels",
            p.bin
        )));
    }
    if p.thickness_px == 0 {
        return Err(Error::Config(
            "wbp: thickness_px = 0: give the tomogram thickness in binned voxels (e.g. 300)".into(),
        ));
    }
    if let Some(l) = p.lowpass {
        if !(l > 0.0 && l <= 1.0) {
            return Err(Error::Config(format!(
                "wbp: lowpass = {l}: give a fraction of Nyquist in (0, 1], or none"
            )));
        }
    }
    if let Filter::SirtLike { iterations: 0 } = p.filter {
        return Err(Error::Config(
            "wbp: SIRT-like filter with 0 iterations: use ≥ 1 (typically 5–30)".into(),
        ));
    }
    Ok(())
}

/// The pre-processing shared by WBP and SIRT for one binning: [`preprocess_multi`] with
/// `bins = [bin]`. Returns `[tilt, ny/bin, nx/bin]`.
pub(crate) fn preprocess(
    stack: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    bin: usize,
    invert_contrast: bool,
) -> Result<Array3<f32>> {
    let mut v = preprocess_multi(stack, geom, &[bin], invert_contrast)?;
    Ok(v.pop().expect("one binning in, one stack out"))
}

/// The pre-processing shared by WBP and SIRT, for several binnings at once: validate the
/// stack against the geometry, then per tilt (in parallel, FFT plans once per thread) one
/// forward FFT Fourier-cropped to every factor of `bins`
/// ([`crate::recon::multibin::MultiBinner`]: no aliasing), and for each binned image:
/// normalise `(I − mean)/mean` (negated when `invert_contrast`; a tilt whose mean is not
/// positive is divided by its standard deviation, with one warning), and taper the edges
/// with a cosine over 4 % of each side. Returns one `[tilt, ny/b, nx/b]` per factor `b`, in
/// the order of `bins` (each factor ≥ 1 and leaving ≥ 2×2 pixels: checked by the callers).
pub(crate) fn preprocess_multi(
    stack: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    bins: &[usize],
    invert_contrast: bool,
) -> Result<Vec<Array3<f32>>> {
    validate_stack(&stack, geom)?;
    let (nt, ny, nx) = stack.dim();
    let sign = if invert_contrast { -1.0 } else { 1.0 };
    let tapers: Vec<(Vec<f32>, Vec<f32>)> = bins
        .iter()
        .map(|&b| (taper_1d(ny / b), taper_1d(nx / b)))
        .collect();
    let binner = MultiBinner::new(ny, nx, bins);
    let binned: Vec<(Vec<Array2<f32>>, bool)> = stack
        .axis_iter(Axis(0))
        .into_par_iter()
        .map_init(
            || binner.clone(),
            |binner, img| {
                let mut used_std = false;
                let mut all = binner.bin_all(img);
                for (b, (ty, tx)) in all.iter_mut().zip(&tapers) {
                    used_std |= normalise(b.view_mut(), sign);
                    apply_taper(b.view_mut(), ty, tx);
                }
                (all, used_std)
            },
        )
        .collect();
    let n_std = binned.iter().filter(|(_, s)| *s).count();
    if n_std > 0 {
        tracing::warn!(
            "{n_std} of {nt} tilts have a mean intensity ≤ 0 (already normalised data?); \
             they were divided by their standard deviation instead of their mean"
        );
    }
    Ok(bins
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let mut images = Array3::<f32>::zeros((nt, ny / b, nx / b));
            for (mut dst, (src, _)) in images.axis_iter_mut(Axis(0)).zip(binned.iter()) {
                dst.assign(&src[i]);
            }
            images
        })
        .collect())
}

/// `(I − mean)/mean·sign` in place; `(I − mean)/std·sign` when the mean is not positive.
/// Returns true when the standard deviation was used.
fn normalise(mut img: ArrayViewMut2<f32>, sign: f32) -> bool {
    let n = img.len().max(1) as f64;
    let mean = img.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = img.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    let (denom, used_std) = if mean > 1e-6 * std && mean > 0.0 {
        (mean, false)
    } else {
        (if std > 0.0 { std } else { 1.0 }, true)
    };
    let (m, s) = (mean as f32, sign / denom as f32);
    img.mapv_inplace(|v| (v - m) * s);
    used_std
}

/// Cosine edge weights for an axis of length `n`: 0 → 1 over `max(2, 4 % of n)` samples at
/// each end, 1 inside.
fn taper_1d(n: usize) -> Vec<f32> {
    let m = ((n as f64 * TAPER_FRACTION).round() as usize).max(2);
    crate::core::fourier::cosine_edge_ramp(n, m)
}

fn apply_taper(mut img: ArrayViewMut2<f32>, wy: &[f32], wx: &[f32]) {
    for (mut row, &a) in img.axis_iter_mut(Axis(0)).zip(wy) {
        for (v, &b) in row.iter_mut().zip(wx) {
            *v *= a * b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> WbpParams {
        WbpParams {
            bin: 1,
            thickness_px: 8,
            filter: Filter::Ramp,
            lowpass: None,
            invert_contrast: true,
        }
    }

    #[test]
    fn rejects_inconsistent_input_with_a_fix() {
        let geom = TiltSeriesGeometry::from_angles(16, 16, 2.0, &[-3.0, 0.0, 3.0], 85.0);
        let stack = Array3::<f32>::ones((2, 16, 16));
        let e = wbp(stack.view(), &geom, &params(), &Device::Cpu).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(
            e.to_string().contains("2 images but the geometry 3 tilts"),
            "{e}"
        );
        let mut stack = Array3::<f32>::ones((3, 16, 16));
        stack[[1, 4, 5]] = f32::NAN;
        let e = wbp(stack.view(), &geom, &params(), &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("tilt 1 pixel (x 5, y 4)"), "{e}");
        let stack = Array3::<f32>::ones((3, 16, 16));
        let mut p = params();
        p.bin = 0;
        assert_eq!(
            wbp(stack.view(), &geom, &p, &Device::Cpu)
                .unwrap_err()
                .exit_code(),
            2
        );
        p.bin = 1;
        p.lowpass = Some(1.5);
        assert_eq!(
            wbp(stack.view(), &geom, &p, &Device::Cpu)
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn output_shape_follows_bin_and_thickness() {
        let geom = TiltSeriesGeometry::from_angles(20, 12, 2.0, &[-30.0, 0.0, 30.0], 85.0);
        let stack = Array3::from_shape_fn((3, 12, 20), |(t, y, x)| {
            1.0 + 0.01 * ((t + y + x) % 3) as f32
        });
        let mut p = params();
        p.bin = 2;
        p.thickness_px = 5;
        let v = wbp(stack.view(), &geom, &p, &Device::Cpu).unwrap();
        assert_eq!(v.dim(), (5, 6, 10));
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn normalise_and_taper() {
        let mut a = Array2::from_shape_fn((4, 4), |(y, _)| 2.0 + y as f32);
        assert!(!normalise(a.view_mut(), -1.0));
        // mean 3.5: (2 − 3.5)/3.5 negated
        assert!((a[[0, 0]] - 1.5 / 3.5).abs() < 1e-6);
        let mut z = Array2::from_shape_fn((4, 4), |(y, _)| y as f32 - 1.5);
        assert!(normalise(z.view_mut(), 1.0));
        let t = taper_1d(100);
        assert!(t[0] < 0.1 && t[99] < 0.1 && t[50] == 1.0 && t[4] == 1.0);
        assert!((t[1] - t[98]).abs() < 1e-6);
    }
}
