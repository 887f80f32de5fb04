//! Files an alignment leaves for the user and for other programs: IMOD `.xf` and refined
//! `.tlt`, a translation-aligned (IMOD "preali") stack MRC, and PNG charts of the per-tilt
//! residuals and shifts.

use crate::align::AlignReport;
use crate::core::fourier::{fourier_shift_2d, Fft2};
use crate::core::geometry::TiltSeriesGeometry;
use crate::io::imod::{write_tlt, write_xf, XfRow};
use crate::io::mrc::{self, MrcKind};
use crate::report::plot::{write_chart_png, Chart, Series, Style, PALETTE};
use crate::{Error, Result};
use ndarray::{Array3, ArrayView3, Axis};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Paths written by [`write_outputs`].
#[derive(Clone, Debug, PartialEq)]
pub struct AlignFiles {
    /// IMOD transforms, one row per tilt (stack order).
    pub xf: PathBuf,
    /// Refined tilt angles, degrees (stack order).
    pub tlt: PathBuf,
    /// Translation-aligned stack (`[tilt, y, x]`, same size and pixel as the input).
    pub preali: PathBuf,
    /// Residual per tilt chart.
    pub residuals_png: PathBuf,
    /// Shifts per tilt chart.
    pub shifts_png: PathBuf,
}

/// IMOD `.xf` rows of a report: `A = Rz(−axis)/mag`, `d = −A·shift/px` per tilt (stack
/// order), so that IMOD's `newstack -xform` puts the tilt axis on +Y and the tomogram centre
/// on the image centre.
pub fn xf_rows(report: &AlignReport) -> Vec<XfRow> {
    let g = &report.geometry;
    g.tilts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mag = report
                .tilts
                .get(i)
                .map(|r| r.magnification)
                .filter(|m| m.is_finite() && *m > 0.0)
                .unwrap_or(1.0);
            let r = XfRow::from_axis_shift(t.axis_deg, t.shift_x_a, t.shift_y_a, g.pixel_a);
            XfRow {
                a: r.a.map(|row| row.map(|v| v / mag)),
                d: r.d.map(|v| v / mag),
            }
        })
        .collect()
}

/// The stack `[tilt, y, x]` with each image translated by `−shift/px` (Fourier shift,
/// periodic), so that the tomogram centre projects to the image centre `(nx/2, ny/2)` in
/// every tilt; no rotation (the tilt axis keeps its angle). Pixel size unchanged.
///
/// Errors: [`Error::Config`] when the stack and the geometry disagree in size.
pub fn prealigned_stack(stack: ArrayView3<f32>, geom: &TiltSeriesGeometry) -> Result<Array3<f32>> {
    let (nt, ny, nx) = stack.dim();
    if nt != geom.len() || nx != geom.nx || ny != geom.ny {
        return Err(Error::Config(format!(
            "prealigned_stack: stack [{nt}, {ny}, {nx}] but geometry of {} tilts of {}×{}: \
             pass the stack the geometry describes",
            geom.len(),
            geom.nx,
            geom.ny
        )));
    }
    let mut out = Array3::<f32>::zeros((nt, ny, nx));
    let plan = Fft2::new(ny, nx);
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(stack.axis_iter(Axis(0)).into_par_iter())
        .zip(geom.tilts.par_iter())
        .for_each_init(
            || plan.clone(),
            |p, ((mut o, img), t)| {
                let dx = -t.shift_x_a / geom.pixel_a;
                let dy = -t.shift_y_a / geom.pixel_a;
                o.assign(&fourier_shift_2d(img, dy, dx, p));
            },
        );
    Ok(out)
}

/// Chart of the per-tilt RMS residual against the refined tilt angle.
pub fn residual_chart(name: &str, report: &AlignReport) -> Chart {
    let mut c = Chart::new(
        &format!(
            "{name}: {} residuals",
            report.method.name().replace('_', "-")
        ),
        "tilt (deg)",
        "residual (px)",
    );
    c.series.push(Series {
        label: format!("rms {:.2} px", report.rms_residual_px),
        points: report
            .tilts
            .iter()
            .map(|t| (t.tilt_deg, t.residual_px))
            .collect(),
        color: PALETTE[3],
        style: Style::LineMarkers,
    });
    c
}

/// Chart of the refined shifts x and y (unbinned px) against the refined tilt angle.
pub fn shift_chart(name: &str, report: &AlignReport) -> Chart {
    let mut c = Chart::new(&format!("{name}: shifts"), "tilt (deg)", "shift (px)");
    for (k, (label, f)) in [
        (
            "x",
            (|t: &crate::align::TiltResidual| t.shift_x_px) as fn(&_) -> f64,
        ),
        ("y", |t| t.shift_y_px),
    ]
    .into_iter()
    .enumerate()
    {
        c.series.push(Series {
            label: label.into(),
            points: report.tilts.iter().map(|t| (t.tilt_deg, f(t))).collect(),
            color: PALETTE[k],
            style: Style::LineMarkers,
        });
    }
    c
}

/// Write the alignment files of series `name` into `dir`: `<name>.xf`, `<name>.tlt`,
/// `<name>_preali.mrc`, `<name>_residuals.png`, `<name>_shifts.png` (all atomically).
///
/// Errors: I/O errors name the file; [`Error::Config`] when `stack` does not match the
/// report's geometry.
pub fn write_outputs(
    dir: &Path,
    name: &str,
    stack: ArrayView3<f32>,
    report: &AlignReport,
) -> Result<AlignFiles> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let files = AlignFiles {
        xf: dir.join(format!("{name}.xf")),
        tlt: dir.join(format!("{name}.tlt")),
        preali: dir.join(format!("{name}_preali.mrc")),
        residuals_png: dir.join(format!("{name}_residuals.png")),
        shifts_png: dir.join(format!("{name}_shifts.png")),
    };
    let g = &report.geometry;
    write_xf(&files.xf, &xf_rows(report))?;
    let tilts: Vec<f64> = g.tilts.iter().map(|t| t.tilt_deg).collect();
    write_tlt(&files.tlt, &tilts)?;
    let pre = prealigned_stack(stack, g)?;
    mrc::write(
        &files.preali,
        pre.view(),
        g.pixel_a as f32,
        MrcKind::ImageStack,
    )?;
    write_chart_png(&files.residuals_png, &residual_chart(name, report))?;
    write_chart_png(&files.shifts_png, &shift_chart(name, report))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::{AlignMethod, TiltResidual};
    use crate::io::imod::read_xf;

    fn report() -> AlignReport {
        let mut g = TiltSeriesGeometry::from_angles(32, 24, 2.0, &[-3.0, 0.0, 3.0], 85.0);
        for (i, t) in g.tilts.iter_mut().enumerate() {
            t.shift_x_a = 2.0 * (3.0 - i as f64); // 6, 4, 2 Å = 3, 2, 1 px
            t.shift_y_a = -2.0;
        }
        AlignReport {
            method: AlignMethod::FiducialFree,
            tilts: g
                .tilts
                .iter()
                .enumerate()
                .map(|(i, t)| TiltResidual {
                    index: i,
                    tilt_deg: t.tilt_deg,
                    shift_x_px: t.shift_x_a / 2.0,
                    shift_y_px: t.shift_y_a / 2.0,
                    magnification: 1.0,
                    residual_px: 0.1,
                    n_obs: 1,
                })
                .collect(),
            geometry: g,
            beads: vec![],
            rms_residual_px: 0.1,
            thickness_a: None,
            pitch_deg: None,
            z_offset_a: None,
            log: vec![],
        }
    }

    #[test]
    fn preali_moves_a_point_to_the_image_centre() {
        let r = report();
        let g = &r.geometry;
        // a bright pixel where the tomogram centre projects: centre + shift/px
        let mut stack = Array3::<f32>::zeros((3, 24, 32));
        for (i, t) in g.tilts.iter().enumerate() {
            let x = 16 + (t.shift_x_a / 2.0) as usize;
            stack[[i, 11, x]] = 1.0; // y = 12 − 1
        }
        let pre = prealigned_stack(stack.view(), g).unwrap();
        for i in 0..3 {
            let v = pre[[i, 12, 16]];
            assert!((v - 1.0).abs() < 1e-4, "tilt {i}: {v}");
        }
    }

    #[test]
    fn outputs_are_written_and_xf_round_trips_to_the_geometry() {
        let r = report();
        let d = tempfile::tempdir().unwrap();
        let stack = Array3::<f32>::ones((3, 24, 32));
        let f = write_outputs(d.path(), "ts", stack.view(), &r).unwrap();
        for p in [&f.xf, &f.tlt, &f.preali, &f.residuals_png, &f.shifts_png] {
            assert!(p.exists(), "{}", p.display());
        }
        let rows = read_xf(&f.xf).unwrap();
        for (row, t) in rows.iter().zip(&r.geometry.tilts) {
            let (axis, sx, sy) = row.to_axis_shift(2.0);
            assert!((axis - t.axis_deg).abs() < 1e-3, "{axis}");
            assert!((sx - t.shift_x_a).abs() < 1e-3 && (sy - t.shift_y_a).abs() < 1e-3);
        }
    }
}
