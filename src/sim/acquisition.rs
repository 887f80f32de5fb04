//! Tilt-series acquisition: nominal tilt list, acquisition order, dose bookkeeping and the
//! per-tilt random errors (angle, shift, defocus, astigmatism) that make the TRUE geometry.

use super::{SeriesParams, TiltScheme};
use crate::core::geometry::{Optics, TiltImage, TiltSeriesGeometry};
use crate::error::{Error, Result};
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Nominal tilt angles (degrees, ascending) from `min` to `max` in steps of `step`.
pub fn nominal_tilts(min_deg: f64, max_deg: f64, step_deg: f64) -> Result<Vec<f64>> {
    let ok = step_deg > 0.0 && max_deg >= min_deg && min_deg.is_finite() && max_deg.is_finite();
    if !ok {
        return Err(Error::Config(format!(
            "tilt range {min_deg}..{max_deg} step {step_deg}: need tilt_min <= tilt_max and tilt_step > 0"
        )));
    }
    let n = ((max_deg - min_deg) / step_deg + 1e-6).floor() as usize + 1;
    Ok((0..n).map(|k| min_deg + k as f64 * step_deg).collect())
}

/// Acquisition order: `order[k]` is the index (into the ascending nominal list) of the k-th
/// tilt acquired.
///
/// - Dose-symmetric (Hagen 2017): start at the tilt nearest 0°, then `+s, −s, −2s, +2s,
///   +3s, −3s, …` (pairs alternate the side they start on); tilts missing on one side (an
///   asymmetric range) are skipped.
/// - Bidirectional: from the tilt nearest `start_deg` up to the maximum, then from the one
///   below the start down to the minimum.
pub fn acquisition_order(nominal: &[f64], scheme: &TiltScheme) -> Vec<usize> {
    let n = nominal.len();
    let nearest = |a: f64| {
        (0..n)
            .min_by(|&i, &j| (nominal[i] - a).abs().total_cmp(&(nominal[j] - a).abs()))
            .unwrap_or(0)
    };
    match scheme {
        TiltScheme::DoseSymmetric => {
            let k0 = nearest(0.0) as isize;
            let mut order = vec![k0 as usize];
            let mut j = 1isize;
            while order.len() < n {
                let pair = if j % 2 == 1 { [j, -j] } else { [-j, j] };
                for d in pair {
                    let k = k0 + d;
                    if k >= 0 && (k as usize) < n {
                        order.push(k as usize);
                    }
                }
                j += 1;
            }
            order
        }
        TiltScheme::Bidirectional { start_deg } => {
            let k0 = nearest(*start_deg);
            (k0..n).chain((0..k0).rev()).collect()
        }
    }
}

/// Build the TRUE geometry of a series (stack order = ascending nominal tilt) and return it
/// with the nominal angles. Random draws happen in acquisition order from `rng`:
/// per tilt the angle error `N(0, angle_error_sigma)`, shifts `N(0, shift_sigma)` (Å) in x
/// and y, defocus `defocus + N(0, defocus_sigma)` and an astigmatism angle uniform in
/// [0°, 180°) (`U = Δf + astig/2`, `V = Δf − astig/2`). The total dose is split evenly; the
/// pre-exposure of a tilt is the dose of the tilts acquired before it.
pub fn true_geometry<R: Rng>(
    p: &SeriesParams,
    rng: &mut R,
) -> Result<(TiltSeriesGeometry, Vec<f64>)> {
    let nominal = nominal_tilts(p.tilt_min_deg, p.tilt_max_deg, p.tilt_step_deg)?;
    let order = acquisition_order(&nominal, &p.scheme);
    let n = nominal.len();
    let dose = p.total_dose_e_a2 / n as f64;
    let normal = |sd: f64| Normal::new(0.0, sd.max(0.0)).expect("finite sigma");
    let (na, ns, nd) = (
        normal(p.angle_error_sigma_deg),
        normal(p.shift_sigma_a),
        normal(p.defocus_sigma_a),
    );
    let mut tilts = vec![TiltImage::nominal(0.0, p.axis_deg); n];
    for (acq, &k) in order.iter().enumerate() {
        let t = &mut tilts[k];
        t.tilt_deg = nominal[k] + na.sample(rng);
        t.shift_x_a = ns.sample(rng);
        t.shift_y_a = ns.sample(rng);
        let df = p.defocus_a + nd.sample(rng);
        t.defocus_u_a = df + 0.5 * p.astigmatism_a;
        t.defocus_v_a = df - 0.5 * p.astigmatism_a;
        t.astig_angle_deg = rng.random::<f64>() * 180.0;
        t.dose_e_a2 = dose;
        t.pre_exposure_e_a2 = acq as f64 * dose;
        t.acquisition_index = acq;
    }
    let geom = TiltSeriesGeometry {
        nx: p.nx,
        ny: p.ny,
        pixel_a: p.pixel_a,
        hand: 1.0,
        optics: Optics {
            voltage_kv: p.voltage_kv,
            cs_mm: p.cs_mm,
            amplitude_contrast: p.amplitude_contrast,
        },
        tilts,
    };
    Ok((geom, nominal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilt_list() {
        let t = nominal_tilts(-60.0, 60.0, 3.0).unwrap();
        assert_eq!(t.len(), 41);
        assert_eq!(t[20], 0.0);
        assert!(nominal_tilts(0.0, 10.0, 0.0).is_err());
    }

    #[test]
    fn dose_symmetric_order_is_hagen() {
        let t = nominal_tilts(-9.0, 9.0, 3.0).unwrap(); // -9 -6 -3 0 3 6 9
        let o = acquisition_order(&t, &TiltScheme::DoseSymmetric);
        let angles: Vec<f64> = o.iter().map(|&k| t[k]).collect();
        assert_eq!(angles, vec![0.0, 3.0, -3.0, -6.0, 6.0, 9.0, -9.0]);
        // asymmetric range
        let t = nominal_tilts(-6.0, 12.0, 3.0).unwrap();
        let o = acquisition_order(&t, &TiltScheme::DoseSymmetric);
        let mut s = o.clone();
        s.sort();
        assert_eq!(s, (0..t.len()).collect::<Vec<_>>());
    }

    #[test]
    fn bidirectional_order() {
        let t = nominal_tilts(-6.0, 6.0, 3.0).unwrap();
        let o = acquisition_order(&t, &TiltScheme::Bidirectional { start_deg: 0.0 });
        let angles: Vec<f64> = o.iter().map(|&k| t[k]).collect();
        assert_eq!(angles, vec![0.0, 3.0, 6.0, -3.0, -6.0]);
    }
}
