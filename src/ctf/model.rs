//! The CTF model, electron wavelength, interaction constant and the dose (exposure) filter.
//!
//! Sign convention (RELION, torch-ctf): `CTF(s) = sqrt(1 − A²)·sin γ + A·cos γ` with
//! `γ(s) = π·λ·Δf(θ)·s² − (π/2)·Cs·λ³·s⁴ + φ` (φ the phase-plate shift), defocus
//! `Δf` positive for underfocus, `Δf(θ) = ½(U + V) + ½(U − V)·cos 2(θ − θ_ast)` with `θ` the
//! azimuth of the spatial frequency `(sx, sy)` measured from +x. `CTF(0) = +A`; at low
//! frequency the CTF is positive, so in the weak-phase image `I = 1 − 2·CTF ⊗ φ_proj` dense
//! matter is dark.

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Electron rest energy, keV.
const M0C2_KEV: f64 = 510.998_95;
/// hc in keV·Å.
const HC_KEV_A: f64 = 12.398_419_84;

/// Relativistic electron wavelength (Å) for an acceleration voltage in kV.
///
/// `λ = hc / sqrt(E·(E + 2·m0c²))` with `E = e·V` (keV); 300 kV gives 0.019688 Å.
pub fn electron_wavelength_a(voltage_kv: f64) -> f64 {
    HC_KEV_A / (voltage_kv * (voltage_kv + 2.0 * M0C2_KEV)).sqrt()
}

/// Relativistic interaction constant σ (rad per V·Å): the phase an electron picks up per unit
/// projected potential, `σ = (2π / (λ·V))·(m0c² + eV) / (2m0c² + eV)`.
/// 300 kV: 6.53e-4 rad/(V·Å).
pub fn interaction_constant(voltage_kv: f64) -> f64 {
    let lambda = electron_wavelength_a(voltage_kv);
    let v = voltage_kv * 1000.0;
    2.0 * PI / (lambda * v) * (M0C2_KEV + voltage_kv) / (2.0 * M0C2_KEV + voltage_kv)
}

/// Exposure (dose) filter of Grant & Grigorieff (2015): the amplitude attenuation
/// `exp(−N / (2·Ne(s)))` of spatial frequency `s_per_a` (1/Å) after an accumulated exposure
/// `dose_e_a2` (e/Å²), with the critical exposure `Ne(s) = a·s^b + c`, `a = 0.245`,
/// `b = −1.665`, `c = 2.81` e/Å² at 300 kV. At other voltages `Ne` is scaled by a factor that
/// is 1 at ≥ 300 kV, 0.8 at ≤ 200 kV and linear in between. Returns 1 at `s = 0`.
pub fn dose_filter(s_per_a: f64, dose_e_a2: f64, voltage_kv: f64) -> f64 {
    if dose_e_a2 <= 0.0 {
        return 1.0;
    }
    (-dose_e_a2 / (2.0 * critical_exposure(s_per_a, voltage_kv))).exp()
}

/// The critical exposure `Ne(s)` (e/Å²) of [`dose_filter`] at `s_per_a` (1/Å); infinite at
/// `s = 0` (no attenuation).
pub fn critical_exposure(s_per_a: f64, voltage_kv: f64) -> f64 {
    let s = s_per_a.abs();
    if s == 0.0 {
        return f64::INFINITY;
    }
    let scale = (0.8 + 0.2 * (voltage_kv - 200.0) / 100.0).clamp(0.8, 1.0);
    scale * (0.245 * s.powf(-1.665) + 2.81)
}

/// Parameters of one CTF. Lengths in Å (except `cs_mm`), angles in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ctf {
    /// Acceleration voltage, kV.
    pub voltage_kv: f64,
    /// Spherical aberration, mm.
    pub cs_mm: f64,
    /// Amplitude contrast fraction A (0–1).
    pub amplitude_contrast: f64,
    /// Defocus along the astigmatism angle, Å (underfocus positive).
    pub defocus_u_a: f64,
    /// Defocus perpendicular to the astigmatism angle, Å.
    pub defocus_v_a: f64,
    /// Astigmatism angle, degrees from +x.
    pub astig_angle_deg: f64,
    /// Additional phase shift (phase plate), degrees.
    pub phase_shift_deg: f64,
}

impl Ctf {
    /// Defocus (Å) along the azimuth of the frequency `(sx, sy)`.
    pub fn defocus_at(&self, sx: f64, sy: f64) -> f64 {
        let mean = 0.5 * (self.defocus_u_a + self.defocus_v_a);
        if sx == 0.0 && sy == 0.0 {
            return mean;
        }
        let theta = sy.atan2(sx);
        let d = theta - self.astig_angle_deg.to_radians();
        mean + 0.5 * (self.defocus_u_a - self.defocus_v_a) * (2.0 * d).cos()
    }

    /// Phase aberration γ (radians) at spatial frequency `(sx, sy)` in 1/Å (the phase shift
    /// included, the amplitude-contrast phase not).
    pub fn gamma(&self, sx: f64, sy: f64) -> f64 {
        let lambda = electron_wavelength_a(self.voltage_kv);
        let cs_a = self.cs_mm * 1e7;
        let s2 = sx * sx + sy * sy;
        PI * lambda * self.defocus_at(sx, sy) * s2 - 0.5 * PI * cs_a * lambda.powi(3) * s2 * s2
            + self.phase_shift_deg.to_radians()
    }

    /// CTF value `sqrt(1 − A²)·sin γ + A·cos γ` at spatial frequency `(sx, sy)` (1/Å).
    pub fn value(&self, sx: f64, sy: f64) -> f64 {
        let g = self.gamma(sx, sy);
        let a = self.amplitude_contrast;
        (1.0 - a * a).sqrt() * g.sin() + a * g.cos()
    }
}

/// A 300 kV, Cs 2.7 mm, 7 % amplitude-contrast CTF at defocus `df` Å, no astigmatism (tests).
#[cfg(test)]
pub(crate) fn test_ctf(df: f64) -> Ctf {
    Ctf {
        voltage_kv: 300.0,
        cs_mm: 2.7,
        amplitude_contrast: 0.07,
        defocus_u_a: df,
        defocus_v_a: df,
        astig_angle_deg: 0.0,
        phase_shift_deg: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctf(df: f64) -> Ctf {
        test_ctf(df)
    }

    #[test]
    fn wavelength_and_sigma() {
        assert!((electron_wavelength_a(300.0) - 0.019688).abs() < 2e-6);
        assert!((electron_wavelength_a(200.0) - 0.025079).abs() < 2e-6);
        assert!((interaction_constant(300.0) - 6.526e-4).abs() < 3e-6);
    }

    #[test]
    fn ctf_zero_frequency_is_amplitude_contrast() {
        let c = ctf(25000.0);
        assert!((c.value(0.0, 0.0) - 0.07).abs() < 1e-12);
        // positive at low frequency (underfocus)
        assert!(c.value(0.01, 0.0) > 0.07);
    }

    #[test]
    fn first_zero_at_analytic_position() {
        // γ(s0) = π − arcsin(A) is the first zero of sin(γ + arcsin A).
        let c = ctf(20000.0);
        let lambda = electron_wavelength_a(300.0);
        let cs = 2.7e7;
        let target = PI - 0.07f64.asin();
        // solve (π/2)Cs λ³ s⁴ − π λ Δf s² + target = 0 for the smaller root in s²
        let (qa, qb, qc) = (
            0.5 * PI * cs * lambda.powi(3),
            -PI * lambda * 20000.0,
            target,
        );
        let s2 = (-qb - (qb * qb - 4.0 * qa * qc).sqrt()) / (2.0 * qa);
        let s0 = s2.sqrt();
        assert!(c.value(s0, 0.0).abs() < 1e-9);
        // and it is the first sign change: scan
        let mut first = None;
        let mut prev = c.value(0.0, 0.0);
        for i in 1..100_000 {
            let s = i as f64 * 1e-6;
            let v = c.value(s, 0.0);
            if v.signum() != prev.signum() {
                first = Some(s);
                break;
            }
            prev = v;
        }
        assert!((first.unwrap() - s0).abs() < 2e-6, "{first:?} vs {s0}");
    }

    #[test]
    fn astigmatism_follows_angle() {
        let mut c = ctf(20000.0);
        c.defocus_u_a = 22000.0;
        c.defocus_v_a = 18000.0;
        c.astig_angle_deg = 30.0;
        let a = 30f64.to_radians();
        assert!((c.defocus_at(a.cos(), a.sin()) - 22000.0).abs() < 1e-9);
        let b = a + PI / 2.0;
        assert!((c.defocus_at(b.cos(), b.sin()) - 18000.0).abs() < 1e-9);
    }

    #[test]
    fn dose_filter_values() {
        // s = 0.1/Å: Ne = 0.245·0.1^-1.665 + 2.81
        let ne = 0.245 * 0.1f64.powf(-1.665) + 2.81;
        let want = (-20.0 / (2.0 * ne)).exp();
        assert!((dose_filter(0.1, 20.0, 300.0) - want).abs() < 1e-12);
        assert!((ne - 14.138).abs() < 1e-2, "{ne}");
        assert_eq!(dose_filter(0.0, 50.0, 300.0), 1.0);
        assert_eq!(dose_filter(0.2, 0.0, 300.0), 1.0);
        // 200 kV: critical exposure scaled by 0.8 -> stronger attenuation
        let want200 = (-20.0 / (2.0 * 0.8 * ne)).exp();
        assert!((dose_filter(0.1, 20.0, 200.0) - want200).abs() < 1e-12);
        // monotone in s
        assert!(dose_filter(0.2, 20.0, 300.0) < dose_filter(0.1, 20.0, 300.0));
    }
}
