//! Fourier weighting of tilt images before back-projection (the "W" of WBP).
//!
//! # Ramp
//! Back-projecting `N` projections of an object samples its 3D Fourier transform on `N`
//! central slices; around the tilt axis the sample density falls like `1/(|f⊥|·Δθ)`, where
//! `f⊥` is the frequency component perpendicular to the tilt axis (in the image plane) and
//! `Δθ` the angular spacing. The exact inverse of the (continuous) Radon transform therefore
//! weights each projection by `Δθ_i · |f⊥|`:
//! `f(x) = Σ_i Δθ_i · BP_i[ IFFT( |f⊥| · FFT(P_i) ) ]` (frequencies in cycles/pixel).
//! For an axis at angle `a` counter-clockwise from +Y the axis direction in the image is
//! `(−sin a, cos a)` and `n⊥ = (cos a, sin a)`, so `f⊥ = fx·cos a + fy·sin a`.
//! Because [`crate::recon::wbp::wbp`] divides the back-projection by the tilt count `N`, the
//! weight applied here is `N·Δθ_i·|f⊥|` (`Δθ_i` in radians, half the distance between the
//! neighbouring tilts in angle order; the outermost tilts use their one-sided spacing).
//! With this scale a reconstruction of line-integral projections (pixel units) has the
//! amplitude of the object's density wherever the Fourier space is measured.
//!
//! # SIRT-like (IMOD's `FakeSIRTiterations`)
//! SIRT / Landweber with relaxation `α` and `x₀ = 0` is `x_{k+1} = x_k + α·Aᵀ(b − A·x_k)`, so
//! `x_k = [1 − (1 − α·AᵀA)^k]·(AᵀA)⁻¹·Aᵀb`. For parallel single-axis tomography `AᵀA` is
//! (nearly) a Fourier multiplier `λ(f) ∝ 1/|f⊥|`, and `(AᵀA)⁻¹Aᵀb` is the ramp-filtered
//! back-projection. Hence `k` iterations equal WBP with the filter
//! `w_sirt(f) = w_ramp(f)·[1 − (1 − a/|f⊥|)^k]`, `a = α·λ(f)·|f⊥|`.
//! The largest stable relaxation is `α = 1/λ_max`; `λ` peaks at the lowest non-zero frequency
//! `1/n` (`n` = the larger image side), so `a = 1/n`. Below `a` one step is already exact and
//! the factor is 1. At high frequency the factor tends to `k·a/|f⊥|`, i.e. the filter
//! flattens to `k/n·N·Δθ` instead of growing: SIRT's low-pass, with the knee near `k/n`
//! cycles/pixel. (IMOD additionally rescales the iteration number to match its SIRT on
//! thick volumes; we use `k` as given.)
//!
//! # Low-pass
//! Optional radial cosine edge: cutoff `fc = lowpass·0.5` cycles/pixel (fraction of Nyquist),
//! weight 1 below `fc − w/2`, `½(1 + cos(π·(f − fc + w/2)/w))` across, 0 above `fc + w/2`,
//! with `w = 0.05` cycles/pixel (10 % of Nyquist).

use crate::core::fourier::{fftfreq, rfftfreq, Fft2};
use ndarray::{Array2, Array3, Axis};
use num_complex::Complex32;
use rayon::prelude::*;

/// Radial weighting applied to every tilt image.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filter {
    /// Exact-inverse ramp `|f⊥|`, scaled for the angular spacing.
    Ramp,
    /// Ramp modified to mimic `iterations` SIRT iterations (IMOD's FakeSIRTiterations).
    SirtLike {
        /// Number of SIRT iterations mimicked (≥ 1).
        iterations: u32,
    },
}

/// Width of the cosine edge of the low-pass, cycles/pixel.
const LOWPASS_EDGE: f32 = 0.05;

/// Angular spacing `Δθ_i` (radians) of each tilt: half the angle between its neighbours in
/// angle order; the first and last tilt use the spacing to their only neighbour; a single
/// tilt gets π.
pub fn angular_spacing(tilt_deg: &[f64]) -> Vec<f64> {
    let n = tilt_deg.len();
    if n < 2 {
        return vec![std::f64::consts::PI; n];
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| tilt_deg[a].total_cmp(&tilt_deg[b]));
    let t = |k: usize| tilt_deg[order[k]].to_radians();
    let mut out = vec![0.0; n];
    for k in 0..n {
        out[order[k]] = if k == 0 {
            t(1) - t(0)
        } else if k == n - 1 {
            t(n - 1) - t(n - 2)
        } else {
            0.5 * (t(k + 1) - t(k - 1))
        };
    }
    out
}

/// SIRT-like attenuation `1 − (1 − a/f)^k` of the ramp at `|f⊥| = f` (1 for `f ≤ a`).
pub fn sirt_factor(f: f32, a: f32, iterations: u32) -> f32 {
    if f <= a {
        1.0
    } else {
        1.0 - (1.0 - a / f).powi(iterations.max(1) as i32)
    }
}

/// Cosine low-pass weight at radial frequency `f` (cycles/pixel) for `lowpass` (fraction of
/// Nyquist); see the module docs.
pub fn lowpass_weight(f: f32, lowpass: f64) -> f32 {
    let fc = (0.5 * lowpass) as f32;
    let lo = fc - 0.5 * LOWPASS_EDGE;
    if f <= lo {
        1.0
    } else if f >= fc + 0.5 * LOWPASS_EDGE {
        0.0
    } else {
        0.5 * (1.0 + (std::f32::consts::PI * (f - lo) / LOWPASS_EDGE).cos())
    }
}

/// Weight every tilt image of `images` `[tilt, y, x]` in 2D Fourier space, in place:
/// `N·Δθ_i·|f⊥|` (ramp perpendicular to tilt `i`'s axis `geom_axis_deg[i]`, degrees CCW from
/// +Y; `Δθ_i` from `tilt_deg`), times the SIRT-like factor for [`Filter::SirtLike`], times
/// the optional cosine low-pass at `lowpass` (fraction of Nyquist, clamped to (0, 1]).
/// Frequencies are in cycles per pixel of these images. Runs one FFT plan per rayon worker.
///
/// Panics when `geom_axis_deg` or `tilt_deg` do not have one entry per tilt (a programming
/// error; [`crate::recon::wbp::wbp`] validates its inputs).
pub fn weight_tilts(
    images: &mut Array3<f32>,
    geom_axis_deg: &[f64],
    tilt_deg: &[f64],
    filter: Filter,
    lowpass: Option<f64>,
) {
    let (nt, ny, nx) = images.dim();
    assert_eq!(
        geom_axis_deg.len(),
        nt,
        "weight_tilts: one axis angle per tilt"
    );
    assert_eq!(tilt_deg.len(), nt, "weight_tilts: one tilt angle per tilt");
    if nt == 0 || nx == 0 || ny == 0 {
        return;
    }
    let spacing = angular_spacing(tilt_deg);
    let fy = fftfreq(ny);
    let fx = rfftfreq(nx);
    let a = 1.0 / nx.max(ny) as f32;
    let lowpass = lowpass.map(|l| l.clamp(1e-6, 1.0));
    let plan = Fft2::new(ny, nx);
    images
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || {
                (
                    plan.clone(),
                    Array2::<Complex32>::zeros((ny, nx / 2 + 1)),
                    Array2::<f32>::zeros((ny, nx)),
                )
            },
            |(plan, spec, out), (i, mut img)| {
                plan.forward_into(img.view(), spec);
                let (s, c) = (
                    geom_axis_deg[i].to_radians().sin() as f32,
                    geom_axis_deg[i].to_radians().cos() as f32,
                );
                let scale = (nt as f64 * spacing[i]) as f32;
                for ((y, x), v) in spec.indexed_iter_mut() {
                    let (fyv, fxv) = (fy[y], fx[x]);
                    let fp = (fxv * c + fyv * s).abs();
                    let mut w = scale * fp;
                    if let Filter::SirtLike { iterations } = filter {
                        w *= sirt_factor(fp, a, iterations);
                    }
                    if let Some(l) = lowpass {
                        w *= lowpass_weight((fxv * fxv + fyv * fyv).sqrt(), l);
                    }
                    *v *= w;
                }
                plan.inverse_into(spec, out);
                img.assign(out);
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    /// A plane wave `cos(2π k·r/n)` along direction `(kx, ky)` (integer cycles per image).
    fn wave(ny: usize, nx: usize, kx: f32, ky: f32) -> Array2<f32> {
        Array2::from_shape_fn((ny, nx), |(y, x)| {
            (2.0 * PI * (kx * x as f32 / nx as f32 + ky * y as f32 / ny as f32)).cos()
        })
    }

    fn amp(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
        // least-squares amplitude of b in a
        let ab: f32 = a.iter().zip(b.iter()).map(|(x, y)| x * y).sum();
        let bb: f32 = b.iter().map(|y| y * y).sum();
        ab / bb
    }

    #[test]
    fn spacing_of_uniform_and_unsorted_series() {
        let s = angular_spacing(&[0.0, 3.0, -3.0, 6.0, -6.0]);
        for v in s {
            assert!((v - 3f64.to_radians()).abs() < 1e-12);
        }
        let s = angular_spacing(&[-10.0, 0.0, 30.0]);
        assert!((s[1] - 20f64.to_radians()).abs() < 1e-12);
    }

    #[test]
    fn ramp_scales_waves_by_their_perpendicular_frequency() {
        let (ny, nx) = (64, 64);
        let angles = [-2.0, 0.0, 2.0];
        for &axis in &[0.0f64, 90.0, 30.0] {
            // a wave along n⊥ with 8 cycles (exactly on the grid for axis 0 / 90)
            let (c, s) = (
                axis.to_radians().cos() as f32,
                axis.to_radians().sin() as f32,
            );
            let (kx, ky) = if axis == 30.0 {
                (8.0, 0.0)
            } else {
                (8.0 * c, 8.0 * s)
            };
            let w = wave(ny, nx, kx.round(), ky.round());
            let mut st = Array3::from_shape_fn((3, ny, nx), |(_, y, x)| w[[y, x]]);
            weight_tilts(&mut st, &[axis; 3], &angles, Filter::Ramp, None);
            let fperp = ((kx.round() * c + ky.round() * s) / 64.0).abs();
            let want = 3.0 * 2f32.to_radians() * fperp;
            let got = amp(&st.index_axis(Axis(0), 1).to_owned(), &w);
            assert!(
                (got - want).abs() < 1e-4 * want.max(1e-3),
                "axis {axis}: {got} vs {want}"
            );
        }
        // a wave along the axis (axis 0: along y) is removed
        let w = wave(ny, nx, 0.0, 5.0);
        let mut st = Array3::from_shape_fn((3, ny, nx), |(_, y, x)| w[[y, x]]);
        weight_tilts(&mut st, &[0.0; 3], &angles, Filter::Ramp, None);
        assert!(st.iter().all(|v| v.abs() < 1e-4));
    }

    #[test]
    fn sirt_like_is_below_ramp_and_tends_to_it() {
        let a = 1.0 / 512.0;
        for i in 1..=256 {
            let f = i as f32 / 512.0;
            let s10 = sirt_factor(f, a, 10);
            assert!((0.0..=1.0).contains(&s10));
            assert!(sirt_factor(f, a, 1000) >= s10);
        }
        // knee near k·a: at f = k·a the factor is 1 − (1 − 1/k)^k ≈ 1 − 1/e
        let f = 10.0 * a;
        assert!((sirt_factor(f, a, 10) - (1.0 - 0.9f32.powi(10))).abs() < 1e-6);
        assert!(sirt_factor(0.5, a, 100_000) > 0.999);
    }

    #[test]
    fn lowpass_removes_high_frequencies() {
        assert_eq!(lowpass_weight(0.1, 0.5), 1.0);
        assert_eq!(lowpass_weight(0.3, 0.5), 0.0);
        assert!((lowpass_weight(0.25, 0.5) - 0.5).abs() < 1e-6);
        let (ny, nx) = (32, 32);
        let lo = wave(ny, nx, 3.0, 0.0);
        let hi = wave(ny, nx, 14.0, 0.0);
        let mut st = Array3::from_shape_fn((2, ny, nx), |(_, y, x)| lo[[y, x]] + hi[[y, x]]);
        weight_tilts(&mut st, &[0.0; 2], &[-1.0, 1.0], Filter::Ramp, Some(0.5));
        let img = st.index_axis(Axis(0), 0).to_owned();
        assert!(amp(&img, &hi).abs() < 1e-5);
        assert!(amp(&img, &lo) > 0.0);
    }
}
