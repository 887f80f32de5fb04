//! Gold-standard FSC of two half maps: unmasked, masked, phase-randomisation corrected
//! (Chen et al. 2013), the resolution at a threshold, low-pass filtering of references, and
//! the FSC plot.
//!
//! Curves use the shells of [`crate::recon::fsc::fsc`] (width `1/n`, reported at their
//! centre in 1/Å). Phase randomisation: beyond the first shell where the unmasked FSC drops
//! below 0.8, the phases of both half maps are replaced by random ones (a fixed seed, so
//! every rank and run get the same curve), the masked FSC of those is `FSC_n`, and
//! `FSC_true = (FSC_t − FSC_n)/(1 − FSC_n)` beyond that shell (`FSC_t` below it).

use ndarray::{Array3, ArrayView3};
use num_complex::Complex32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::core::fft3::{half_grid_radius, Fft3};
use crate::error::Result;
use crate::recon::fsc::fsc;
use crate::report::plot::{write_chart_png, Chart, Series, Style, PALETTE};

/// The FSC curves of one pair of half maps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoldStandard {
    /// Shell centres, 1/Å.
    pub s_per_a: Vec<f64>,
    /// FSC without a mask.
    pub unmasked: Vec<f64>,
    /// FSC of the masked half maps.
    pub masked: Vec<f64>,
    /// Masked FSC of the phase-randomised half maps.
    pub randomised: Vec<f64>,
    /// Phase-randomisation corrected masked FSC (the one to quote).
    pub corrected: Vec<f64>,
    /// Resolution at 0.143 of `corrected`, Å.
    pub resolution_a: f64,
    /// Voxel size, Å.
    pub voxel_a: f64,
}

/// Resolution (Å) where `curve` first falls below `threshold`, interpolated linearly
/// between shell centres `s_per_a`; Nyquist (the last shell's edge) when it never does.
/// Shell 0 (DC) is skipped.
pub fn resolution_at(s_per_a: &[f64], curve: &[f64], threshold: f64) -> f64 {
    for i in 1..curve.len() {
        if curve[i] < threshold {
            let (s0, s1) = (s_per_a[i - 1], s_per_a[i]);
            let (f0, f1) = (curve[i - 1], curve[i]);
            let t = if f0 > f1 {
                ((f0 - threshold) / (f0 - f1)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            return 1.0 / (s0 + t * (s1 - s0));
        }
    }
    let last = s_per_a.last().copied().unwrap_or(0.0);
    let width = if s_per_a.len() > 1 {
        s_per_a[1] - s_per_a[0]
    } else {
        last * 2.0
    };
    1.0 / (last + 0.5 * width)
}

/// Replace the phases of `vol`'s Fourier samples with `|k|·n ≥ shell` by random ones
/// (seeded), keeping the amplitudes. Cubic volumes.
pub fn randomise_phases_beyond(vol: ArrayView3<f32>, shell: f64, seed: u64) -> Array3<f32> {
    let n = vol.dim().0;
    let plan = Fft3::new(n, n, n);
    let mut spec = plan.forward(vol);
    let rad = half_grid_radius(n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (v, k) in spec.iter_mut().zip(rad.iter()) {
        let phase: f32 = rng.random::<f32>() * std::f32::consts::TAU;
        if (*k as f64) >= shell {
            *v = Complex32::from_polar(v.norm(), phase);
        }
    }
    plan.inverse(spec)
}

/// Low-pass `vol` (cubic, `voxel_a` Å) at `resolution_a` with a raised-cosine edge
/// `edge_shells` wide (in Fourier voxels) centred on the cut.
pub fn lowpass(
    vol: ArrayView3<f32>,
    voxel_a: f64,
    resolution_a: f64,
    edge_shells: f64,
) -> Array3<f32> {
    filter_shells(vol, voxel_a, resolution_a, edge_shells, None)
}

/// The reference filter of an iteration (RELION's): each shell of `vol` weighted by
/// `√(2·FSC/(1+FSC))` (the expected correlation of the map with the truth, `FSC` =
/// `g.corrected` clamped to [0, 1]) and low-passed at `resolution_a` as [`lowpass`]. Shells
/// near the cut, where the map is mostly noise, then steer the alignment less than the
/// well-measured low frequencies.
pub fn fsc_weighted_lowpass(
    vol: ArrayView3<f32>,
    g: &GoldStandard,
    resolution_a: f64,
    edge_shells: f64,
) -> Array3<f32> {
    let w: Vec<f64> = g
        .corrected
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f.clamp(0.0, 1.0);
            if i == 0 {
                1.0
            } else {
                (2.0 * f / (1.0 + f)).sqrt()
            }
        })
        .collect();
    filter_shells(vol, g.voxel_a, resolution_a, edge_shells, Some(&w))
}

/// [`lowpass`] with optional per-shell weights (shell `k` = Fourier radius in `[k, k+1)`
/// voxels, the shells of [`crate::recon::fsc::fsc`]; radii beyond the last shell get 0).
fn filter_shells(
    vol: ArrayView3<f32>,
    voxel_a: f64,
    resolution_a: f64,
    edge_shells: f64,
    shell_weight: Option<&[f64]>,
) -> Array3<f32> {
    let n = vol.dim().0;
    let plan = Fft3::new(n, n, n);
    let mut spec = plan.forward(vol);
    let rad = half_grid_radius(n);
    let cut = n as f64 * voxel_a / resolution_a.max(2.0 * voxel_a);
    let half = 0.5 * edge_shells.max(0.0);
    for (v, k) in spec.iter_mut().zip(rad.iter()) {
        let k = *k as f64;
        let mut w = if k <= cut - half {
            1.0
        } else if k >= cut + half {
            0.0
        } else {
            0.5 + 0.5 * (std::f64::consts::PI * (k - (cut - half)) / (2.0 * half)).cos()
        };
        if let Some(sw) = shell_weight {
            w *= sw.get(k as usize).copied().unwrap_or(0.0);
        }
        *v *= w as f32;
    }
    plan.inverse(spec)
}

/// The gold-standard FSC curves of `half1` and `half2` (cubic, `voxel_a` Å) with `mask`
/// (module docs); `seed` drives the phase randomisation.
pub fn gold_standard(
    half1: ArrayView3<f32>,
    half2: ArrayView3<f32>,
    mask: ArrayView3<f32>,
    voxel_a: f64,
    seed: u64,
) -> GoldStandard {
    let un = fsc(half1, half2, voxel_a);
    let m1 = &half1 * &mask;
    let m2 = &half2 * &mask;
    let masked = fsc(m1.view(), m2.view(), voxel_a);
    // First shell below 0.8 (unmasked): where the randomisation starts.
    let start = un
        .fsc
        .iter()
        .skip(1)
        .position(|f| *f < 0.8)
        .map(|i| i + 1)
        .unwrap_or(un.fsc.len());
    let (randomised, corrected) = if start < un.fsc.len() {
        let r1 = randomise_phases_beyond(half1, start as f64, seed) * mask;
        let r2 = randomise_phases_beyond(half2, start as f64, seed ^ 0x9e37_79b9) * mask;
        let rnd = fsc(r1.view(), r2.view(), voxel_a).fsc;
        let cor = masked
            .fsc
            .iter()
            .zip(&rnd)
            .enumerate()
            .map(|(i, (t, n))| {
                if i < start || *n >= 1.0 {
                    *t
                } else {
                    (t - n) / (1.0 - n)
                }
            })
            .collect();
        (rnd, cor)
    } else {
        (vec![0.0; masked.fsc.len()], masked.fsc.clone())
    };
    let resolution_a = resolution_at(&masked.s_per_a, &corrected, 0.143);
    GoldStandard {
        s_per_a: masked.s_per_a.clone(),
        unmasked: un.fsc,
        masked: masked.fsc,
        randomised,
        corrected,
        resolution_a,
        voxel_a,
    }
}

/// Write the FSC plot of `g` (and optionally an FSC against a known truth) to `path` (PNG).
pub fn write_fsc_png(
    path: &Path,
    title: &str,
    g: &GoldStandard,
    truth: Option<&[f64]>,
) -> Result<()> {
    let mut chart = Chart::new(title, "spatial frequency (1/A)", "FSC");
    chart.y_range = Some((-0.1, 1.05));
    chart.hlines = vec![(0.143, [120, 120, 120]), (0.5, [180, 180, 180])];
    let mut add = |label: &str, v: &[f64], c: usize| {
        chart.series.push(Series {
            label: label.into(),
            points: g.s_per_a.iter().copied().zip(v.iter().copied()).collect(),
            color: PALETTE[c % PALETTE.len()],
            style: Style::Line,
        });
    };
    add("unmasked", &g.unmasked, 0);
    add("masked", &g.masked, 1);
    add("phase-randomised", &g.randomised, 4);
    add("corrected", &g.corrected, 2);
    if let Some(t) = truth {
        add("vs truth", t, 3);
    }
    write_chart_png(path, &chart)
}

/// Write the corrected (masked, phase-randomisation corrected) FSC of every iteration in
/// one chart to `path` (PNG): `curves` are `(iteration, FSC)`, drawn in order with the 0.143
/// line, so the convergence of a refinement shows at a glance.
pub fn write_fsc_iterations_png(
    path: &Path,
    title: &str,
    curves: &[(usize, &GoldStandard)],
) -> Result<()> {
    let mut chart = Chart::new(title, "spatial frequency (1/A)", "FSC");
    chart.y_range = Some((-0.1, 1.05));
    chart.hlines = vec![(0.143, [120, 120, 120])];
    for (k, (it, g)) in curves.iter().enumerate() {
        chart.series.push(Series {
            label: format!("it {it}: {:.1} A", g.resolution_a),
            points: g
                .s_per_a
                .iter()
                .copied()
                .zip(g.corrected.iter().copied())
                .collect(),
            color: PALETTE[k % PALETTE.len()],
            style: Style::Line,
        });
    }
    write_chart_png(path, &chart)
}

/// Write the gold-standard resolution (Å) per iteration to `path` (PNG): `per_class[c]` are
/// the `(iteration, resolution)` points of class `c`.
pub fn write_resolution_png(path: &Path, title: &str, per_class: &[Vec<(f64, f64)>]) -> Result<()> {
    let mut chart = Chart::new(title, "iteration", "resolution (A)");
    for (c, points) in per_class.iter().enumerate() {
        chart.series.push(Series {
            label: format!("class {}", c + 1),
            points: points.clone(),
            color: PALETTE[c % PALETTE.len()],
            style: Style::LineMarkers,
        });
    }
    write_chart_png(path, &chart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sta::align::tests::blob;
    use crate::sta::mask::soft_sphere;
    use rand_distr::{Distribution, Normal};

    fn noisy(v: &Array3<f32>, sd: f32, seed: u64) -> Array3<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = Normal::new(0.0f32, sd).unwrap();
        v.mapv(|x| x + d.sample(&mut rng))
    }

    #[test]
    fn resolution_interpolates_the_crossing() {
        let s = [0.0, 0.1, 0.2, 0.3];
        let f = [1.0, 0.5, 0.1, 0.0];
        let r = resolution_at(&s, &f, 0.143);
        assert!((1.0 / r - (0.1 + 0.1 * (0.5 - 0.143) / 0.4)).abs() < 1e-9);
        assert!((resolution_at(&s, &[1.0; 4], 0.143) - 1.0 / 0.35).abs() < 1e-9);
    }

    #[test]
    fn noisier_halves_give_lower_resolution_and_the_correction_is_bounded() {
        let n = 32;
        let v = lowpass(blob(n).view(), 4.0, 10.0, 2.0);
        let mask = soft_sphere(n, 12.0, 3.0);
        let low = gold_standard(
            noisy(&v, 0.02, 1).view(),
            noisy(&v, 0.02, 2).view(),
            mask.view(),
            4.0,
            7,
        );
        let high = gold_standard(
            noisy(&v, 0.2, 3).view(),
            noisy(&v, 0.2, 4).view(),
            mask.view(),
            4.0,
            7,
        );
        assert!(
            low.resolution_a < high.resolution_a,
            "{} vs {}",
            low.resolution_a,
            high.resolution_a
        );
        // Nothing beyond the 10 Å low-pass: neither can claim much better than 10 Å.
        assert!(low.resolution_a > 8.5, "{}", low.resolution_a);
        assert!(low
            .corrected
            .iter()
            .all(|f| f.is_finite() && *f <= 1.0 + 1e-6));
        // Low-pass: the band above the cut is gone.
        let lp = lowpass(v.view(), 4.0, 20.0, 0.0);
        let g = gold_standard(lp.view(), lp.view(), mask.view(), 4.0, 1);
        assert!(g.unmasked.iter().all(|f| f.is_finite()));
    }
}
