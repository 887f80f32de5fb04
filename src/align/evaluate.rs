//! Compare an alignment with the true geometry, up to the freedom every alignment has: a
//! 3D translation of the specimen.
//!
//! Specimen point `p` (Å about the tomogram centre) appears in tilt `i` at
//! `n/2 + ([R_i·p]_xy + s_i)/px`. Translating the specimen by `t` gives the same images with
//! shifts `s_i − [R_i·t]_xy`, so the shift error of an estimate is measured after the
//! least-squares `t` that best maps estimated onto true image positions of the tomogram
//! centre.

use crate::core::geometry::{apply, TiltSeriesGeometry};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Errors of an estimated geometry against the truth. Pixels are unbinned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlignmentError {
    /// RMS over tilts of the image-position error of the tomogram centre after removing the
    /// best 3D specimen translation, pixels.
    pub rms_shift_px: f64,
    /// Largest of those per-tilt errors, pixels.
    pub max_shift_px: f64,
    /// Mean (estimated − true) tilt-axis angle, degrees, wrapped to (−90°, 90°].
    pub axis_error_deg: f64,
    /// Mean (estimated − true) tilt angle, degrees: a global tilt offset.
    pub tilt_offset_deg: f64,
    /// RMS of the per-tilt tilt-angle error after removing the offset, degrees.
    pub rms_tilt_error_deg: f64,
    /// RMS reprojection error over a grid of points filling the specimen box
    /// (`nx × ny × thickness_a`) after removing the best 3D translation, pixels: the error a
    /// reconstruction would see, angles included.
    pub rms_reprojection_px: f64,
    /// The removed specimen translation, Å `(x, y, z)`.
    pub translation_a: [f64; 3],
}

/// Compare `est` with `truth` (same tilts in the same order, same image size and pixel).
/// `thickness_a` sets the z extent of the reprojection grid.
///
/// Errors: [`Error::Config`] when the two geometries do not describe the same series.
pub fn alignment_error(
    est: &TiltSeriesGeometry,
    truth: &TiltSeriesGeometry,
    thickness_a: f64,
) -> Result<AlignmentError> {
    if est.len() != truth.len() || est.nx != truth.nx || est.ny != truth.ny || est.is_empty() {
        return Err(Error::Config(format!(
            "alignment_error: estimate has {} tilts of {}×{}, truth {} of {}×{}: compare the \
             same series",
            est.len(),
            est.nx,
            est.ny,
            truth.len(),
            truth.nx,
            truth.ny
        )));
    }
    let px = truth.pixel_a;
    let half = [
        0.5 * truth.nx as f64 * px,
        0.5 * truth.ny as f64 * px,
        0.5 * thickness_a,
    ];
    // grid of specimen points; the centre first
    let mut points = vec![[0.0; 3]];
    for k in [-0.8, 0.0, 0.8] {
        for j in [-0.8, 0.0, 0.8] {
            for i in [-0.8, 0.0, 0.8] {
                if i != 0.0 || j != 0.0 || k != 0.0 {
                    points.push([i * half[0], j * half[1], k * half[2]]);
                }
            }
        }
    }
    let image = |g: &TiltSeriesGeometry, ti: usize, p: [f64; 3]| {
        let t = &g.tilts[ti];
        let q = apply(&t.rotation(), p);
        [(q[0] + t.shift_x_a) / px, (q[1] + t.shift_y_a) / px]
    };
    // least squares for t: est(p + t) ≈ truth(p), linear in t: J_i t = truth(p) − est(p)
    let fit = |pts: &[[f64; 3]]| -> [f64; 3] {
        let mut ata = [[0.0f64; 3]; 3];
        let mut atb = [0.0f64; 3];
        for ti in 0..est.len() {
            let r = est.tilts[ti].rotation();
            for &p in pts {
                let e = image(est, ti, p);
                let g = image(truth, ti, p);
                for row in 0..2 {
                    let j = [r[row][0] / px, r[row][1] / px, r[row][2] / px];
                    let b = g[row] - e[row];
                    for a in 0..3 {
                        atb[a] += j[a] * b;
                        for c in 0..3 {
                            ata[a][c] += j[a] * j[c];
                        }
                    }
                }
            }
        }
        solve3(ata, atb)
    };
    let rms_after = |pts: &[[f64; 3]], t: [f64; 3]| -> (f64, f64) {
        let (mut s2, mut mx, mut n) = (0.0f64, 0.0f64, 0usize);
        for ti in 0..est.len() {
            for &p in pts {
                let e = image(est, ti, [p[0] + t[0], p[1] + t[1], p[2] + t[2]]);
                let g = image(truth, ti, p);
                let d2 = (e[0] - g[0]).powi(2) + (e[1] - g[1]).powi(2);
                s2 += d2;
                mx = mx.max(d2.sqrt());
                n += 1;
            }
        }
        ((s2 / n as f64).sqrt(), mx)
    };
    let t_centre = fit(&points[..1]);
    let (rms_shift_px, max_shift_px) = rms_after(&points[..1], t_centre);
    let t_all = fit(&points);
    let (rms_reprojection_px, _) = rms_after(&points, t_all);

    let n = est.len() as f64;
    let wrap = |d: f64| {
        let mut d = d.rem_euclid(180.0);
        if d > 90.0 {
            d -= 180.0;
        }
        d
    };
    let axis_error_deg = est
        .tilts
        .iter()
        .zip(&truth.tilts)
        .map(|(a, b)| wrap(a.axis_deg - b.axis_deg))
        .sum::<f64>()
        / n;
    let dt: Vec<f64> = est
        .tilts
        .iter()
        .zip(&truth.tilts)
        .map(|(a, b)| a.tilt_deg - b.tilt_deg)
        .collect();
    let tilt_offset_deg = dt.iter().sum::<f64>() / n;
    let rms_tilt_error_deg = (dt
        .iter()
        .map(|d| (d - tilt_offset_deg).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    Ok(AlignmentError {
        rms_shift_px,
        max_shift_px,
        axis_error_deg,
        tilt_offset_deg,
        rms_tilt_error_deg,
        rms_reprojection_px,
        translation_a: t_centre,
    })
}

/// Solve the 3×3 symmetric system `a·x = b` (Gaussian elimination with partial pivoting);
/// directions with a negligible pivot (not constrained by the data) get 0.
pub(crate) fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> [f64; 3] {
    let scale = a
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-300);
    let mut x = [0.0; 3];
    let mut used = [false; 3];
    for col in 0..3 {
        let piv = (col..3)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        b.swap(col, piv);
        if a[col][col].abs() < 1e-12 * scale {
            continue;
        }
        used[col] = true;
        let pivot_row = a[col];
        let pivot_b = b[col];
        for (row, rb) in a.iter_mut().zip(b.iter_mut()).skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (v, p) in row.iter_mut().zip(pivot_row.iter()).skip(col) {
                *v -= f * p;
            }
            *rb -= f * pivot_b;
        }
    }
    for col in (0..3).rev() {
        if !used[col] {
            continue;
        }
        let s: f64 = (col + 1..3).map(|c| a[col][c] * x[c]).sum();
        x[col] = (b[col] - s) / a[col][col];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::TiltSeriesGeometry;

    fn series() -> TiltSeriesGeometry {
        let angles: Vec<f64> = (-20..=20).map(|k| k as f64 * 3.0).collect();
        TiltSeriesGeometry::from_angles(512, 400, 2.0, &angles, 85.0)
    }

    #[test]
    fn identical_geometries_have_zero_error() {
        let g = series();
        let e = alignment_error(&g, &g, 300.0).unwrap();
        assert!(
            e.rms_shift_px < 1e-9 && e.rms_reprojection_px < 1e-9,
            "{e:?}"
        );
        assert!(e.axis_error_deg.abs() < 1e-12 && e.rms_tilt_error_deg < 1e-12);
    }

    #[test]
    fn a_specimen_translation_is_not_an_error_but_a_per_tilt_shift_is() {
        let truth = series();
        let t = [37.0, -12.0, 55.0];
        let mut est = truth.clone();
        for ti in est.tilts.iter_mut() {
            let q = apply(&ti.rotation(), t);
            ti.shift_x_a -= q[0];
            ti.shift_y_a -= q[1];
        }
        let e = alignment_error(&est, &truth, 300.0).unwrap();
        assert!(e.rms_shift_px < 1e-6, "{e:?}");
        for (a, b) in e.translation_a.iter().zip(t) {
            assert!((a - b).abs() < 1e-6, "{:?} vs {t:?}", e.translation_a);
        }
        // one tilt off by 3 px in x: RMS over 41 tilts ≈ 3/√41, reduced slightly by the fit
        est.tilts[5].shift_x_a += 3.0 * 2.0;
        let e = alignment_error(&est, &truth, 300.0).unwrap();
        let expect = 3.0 / (41f64).sqrt();
        assert!(
            (e.rms_shift_px - expect).abs() < 0.1 * expect,
            "{} vs {expect}",
            e.rms_shift_px
        );
        assert!(e.max_shift_px > 2.5 && e.max_shift_px <= 3.0 + 1e-9);
    }

    #[test]
    fn axis_and_tilt_errors_are_reported() {
        let truth = series();
        let mut est = truth.clone();
        for (k, ti) in est.tilts.iter_mut().enumerate() {
            ti.axis_deg = 85.0 + 0.4 + 180.0;
            ti.tilt_deg += 0.25 + if k % 2 == 0 { 0.1 } else { -0.1 };
        }
        let e = alignment_error(&est, &truth, 300.0).unwrap();
        assert!((e.axis_error_deg - 0.4).abs() < 1e-9, "{e:?}");
        assert!((e.tilt_offset_deg - 0.25).abs() < 0.01, "{e:?}");
        assert!((e.rms_tilt_error_deg - 0.1).abs() < 0.01, "{e:?}");
        // 0.4° of axis at 250 px from the centre ≈ 1.7 px at the box corners
        assert!(e.rms_reprojection_px > 0.5, "{e:?}");
    }

    #[test]
    fn mismatched_series_are_refused() {
        let a = series();
        let mut b = a.clone();
        b.tilts.pop();
        assert!(alignment_error(&a, &b, 100.0).is_err());
    }
}
