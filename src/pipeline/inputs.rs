//! Loading existing tilt series (`[[input]]` or `lamella reconstruct`): MRC stack + IMOD
//! `.tlt`/`.xf`/`.defocus` + SerialEM `.mdoc` -> stack `[tilt, y, x]` and [`TiltSeriesGeometry`].

use super::config::InputSeries;
use crate::core::geometry::{TiltImage, TiltSeriesGeometry};
use crate::io::{imod, mdoc::Mdoc, mrc};
use crate::{Error, Result};
use ndarray::Array3;

/// A tilt series in memory.
pub struct LoadedSeries {
    /// Series name.
    pub name: String,
    /// Stack `[tilt, y, x]` at `geometry.pixel_a`.
    pub stack: Array3<f32>,
    /// Geometry used for reconstruction.
    pub geometry: TiltSeriesGeometry,
    /// Nominal (stage) tilt angles, degrees, stack order.
    pub nominal_tilts_deg: Vec<f64>,
    /// Optional ground-truth volume `[z, y, x]` at the stack pixel size.
    pub truth: Option<Array3<f32>>,
    /// The true geometry (simulated data), to measure the alignment error.
    pub true_geometry: Option<TiltSeriesGeometry>,
}

/// Cost of a series for work distribution: tilts × pixels (from the MRC header only).
pub fn input_cost(s: &InputSeries) -> Result<u64> {
    let h = mrc::read_header(&s.stack)?;
    Ok((h.nx * h.ny * h.nz) as u64)
}

/// Read a series and build its geometry. Angles come from `.tlt`, else the `.mdoc`; the
/// tilt-axis angle and shifts from `.xf`, else `axis_deg`, else the mdoc title; the pixel
/// size from `pixel_a`, else the MRC header, else the mdoc. Every mismatch is an error
/// naming the file and the field.
pub fn load_input(s: &InputSeries) -> Result<LoadedSeries> {
    let m = mrc::read(&s.stack)?;
    let (nz, ny, nx) = m.data.dim();
    let md = match &s.mdoc {
        Some(p) => Some(Mdoc::read(p)?),
        None => None,
    };
    let pixel_a = match s.pixel_a {
        Some(p) => p,
        None => {
            let hp = m.header.pixel_size_a()[0] as f64;
            if hp > 0.0 && (hp - 1.0).abs() > 1e-6 {
                hp
            } else if let Some(p) = md.as_ref().and_then(|d| d.pixel_spacing_a()) {
                p
            } else if hp > 0.0 {
                hp
            } else {
                return Err(Error::bad_input(
                    &s.stack,
                    "pixel size (cella/mx)",
                    "the header has no pixel size: set `pixel_a` (config) or `--pixel` (CLI)",
                ));
            }
        }
    };
    if !(pixel_a.is_finite() && pixel_a > 0.0) {
        return Err(Error::Config(format!(
            "{}: pixel size {pixel_a} Å must be > 0",
            s.stack.display()
        )));
    }
    let angles = match (&s.tlt, &md) {
        (Some(t), _) => imod::read_tlt(t)?,
        (None, Some(d)) => d.tilts().iter().map(|t| t.tilt_deg).collect(),
        (None, None) => {
            return Err(Error::bad_input(
                &s.stack,
                "tilt angles",
                "no .tlt and no .mdoc given: pass `--tlt S.tlt` (or `tlt = ...` in the config)",
            ))
        }
    };
    if angles.len() != nz {
        let src = s.tlt.as_ref().or(s.mdoc.as_ref()).unwrap_or(&s.stack);
        return Err(Error::bad_input(
            src,
            "number of tilt angles",
            format!(
                "{} angles but the stack {} has {nz} images: give one angle per image",
                angles.len(),
                s.stack.display()
            ),
        ));
    }
    let axis = s
        .axis_deg
        .or_else(|| md.as_ref().and_then(|d| d.tilt_axis_angle()))
        .unwrap_or(0.0);
    let mut geom = TiltSeriesGeometry::from_angles(nx, ny, pixel_a, &angles, axis);
    if let Some(d) = &md {
        let tilts = d.tilts();
        if tilts.len() == nz {
            for (g, t) in geom.tilts.iter_mut().zip(&tilts) {
                g.dose_e_a2 = t.dose_e_a2;
            }
        }
    }
    if let Some(xf) = &s.xf {
        let rows = imod::read_xf(xf)?;
        if rows.len() != nz {
            return Err(Error::bad_input(
                xf,
                "number of transforms",
                format!("{} lines but the stack has {nz} images", rows.len()),
            ));
        }
        for (t, r) in geom.tilts.iter_mut().zip(&rows) {
            apply_xf(t, r, pixel_a);
        }
    }
    if let Some(d) = &s.defocus {
        apply_defocus_file(&mut geom, d)?;
    }
    let truth = match &s.truth {
        Some(p) => Some(mrc::read(p)?.data),
        None => None,
    };
    Ok(LoadedSeries {
        name: s.series_name(),
        stack: m.data,
        nominal_tilts_deg: angles,
        geometry: geom,
        truth,
        true_geometry: None,
    })
}

/// Set every tilt's defocus U/V/angle from an IMOD `.defocus` file (one view per image).
pub fn apply_defocus_file(geom: &mut TiltSeriesGeometry, path: &std::path::Path) -> Result<()> {
    let rows = imod::read_defocus(path, geom.len())?;
    for (t, r) in geom.tilts.iter_mut().zip(&rows) {
        t.defocus_u_a = r.defocus_u_a;
        t.defocus_v_a = r.defocus_v_a;
        t.astig_angle_deg = r.astig_angle_deg;
    }
    Ok(())
}

/// Set a tilt's axis angle and shifts from an IMOD transform.
fn apply_xf(t: &mut TiltImage, r: &imod::XfRow, pixel_a: f64) {
    let (axis, sx, sy) = r.to_axis_shift(pixel_a);
    t.axis_deg = axis;
    t.shift_x_a = sx;
    t.shift_y_a = sy;
}
