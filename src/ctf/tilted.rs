//! Tilt-aware CTF estimation of a tilt series (ctfplotter / CTFFIND5 style).
//!
//! In a tilted image the defocus changes across the field: the tile whose centre sees the
//! specimen mid-plane at offset `δ` (Å, [`TiltSeriesGeometry::defocus_offset_at`], from the
//! known tilt angle, axis, shifts and handedness) has defocus `Δf₀ + δ`, with `Δf₀` the
//! defocus on the tilt axis (what [`TiltImage::defocus_u_a`] etc. hold). Each tile's power
//! spectrum is rescaled radially so its Thon rings sit where they would at `Δf₀`
//! (`γ(Δf₀ + δ, s) = γ(Δf₀, s′)`, exact with Cs), the rescaled spectra are averaged and the
//! per-image fit ([`estimate_from_spectrum`]) is run on the average. `Δf₀` comes from a first
//! fit on the plain average and is refined twice.
//!
//! Series level ([`estimate_series`]):
//! - **handedness**: every tilt beyond [`HAND_MIN_TILT_DEG`] is fitted with the offsets as
//!   given and mirrored (`δ → −δ`); the summed score difference decides the sign (the defocus
//!   gradient of the wrong hand smears the rings of off-axis tiles);
//! - **consistency**: a tilt whose mean defocus lies more than `max(4·MAD, 2000 Å)` from the
//!   series median is refitted with the search range restricted to the median
//!   `± max(3·MAD, 2000 Å)` (fits that locked onto a wrong ring order at high tilt).
//!
//! Not done: a shared astigmatism prior (the simulator draws the astigmatism angle per tilt,
//! real microscopes keep it per session) and a smoothness prior in acquisition order.

use crate::core::fourier::{fftfreq, rfftfreq};
use crate::core::geometry::TiltSeriesGeometry;
use crate::core::stats::median;
use crate::ctf::estimate::{estimate_from_spectrum, CtfFit, CtfSearch, Optics};
use crate::ctf::periodogram::for_each_tile_spectrum;
use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

/// Tilts with `|tilt|` below this (degrees) carry too little defocus gradient to tell the
/// handedness and are left out of its vote.
pub const HAND_MIN_TILT_DEG: f64 = 20.0;

/// Tile spectra of one tilt image grouped by the defocus offset of their centres.
pub struct TiltedSpectra {
    tile: usize,
    /// `(mean offset Å, mean power spectrum, tiles)` per offset bin.
    bins: Vec<(f64, Array2<f32>, usize)>,
}

impl TiltedSpectra {
    /// Tile power spectra ([`for_each_tile_spectrum`], tile `s.tile`) of image `img` (`[y, x]`,
    /// the size `geom.ny × geom.nx`) of tilt `i` of `geom`, binned by the defocus offset of each
    /// tile centre in steps that move the CTF phase at Nyquist by at most π/16.
    pub fn new(
        img: ArrayView2<f32>,
        geom: &TiltSeriesGeometry,
        i: usize,
        s: &CtfSearch,
    ) -> Result<Self> {
        if img.dim() != (geom.ny, geom.nx) || i >= geom.len() {
            return Err(Error::Runtime(format!(
                "tilt-aware CTF: image {:?} / tilt {i} do not match the geometry ({}, {}) of {} tilts; \
                 pass the stack the geometry describes",
                img.dim(),
                geom.ny,
                geom.nx,
                geom.len()
            )));
        }
        let tile = s.tile;
        let o = Optics::new(s);
        let s_nyq2 = (0.5 / s.pixel_a).powi(2);
        // k1·step·s² = π/16 at Nyquist (k1 = π·λ)
        let step = std::f64::consts::PI / 16.0 / (o.k1 * s_nyq2);
        let mut map: std::collections::BTreeMap<i64, (f64, Array2<f64>, usize)> =
            Default::default();
        let h = (tile / 2) as f64;
        for_each_tile_spectrum(img, tile, |(y0, x0), ps| {
            let d = geom.defocus_offset_at(i, x0 as f64 + h, y0 as f64 + h);
            let e = map
                .entry((d / step).round() as i64)
                .or_insert_with(|| (0.0, Array2::zeros(ps.dim()), 0));
            e.0 += d;
            e.1.zip_mut_with(ps, |a, &p| *a += p as f64);
            e.2 += 1;
        });
        let bins = map
            .into_values()
            .map(|(d, acc, n)| {
                let inv = 1.0 / n as f64;
                (d * inv, acc.mapv(|v| (v * inv) as f32), n)
            })
            .collect();
        Ok(TiltedSpectra { tile, bins })
    }

    /// Range `(min, max)` of the tile defocus offsets, Å.
    pub fn offset_range(&self) -> (f64, f64) {
        self.bins
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(x.0), b.max(x.0))
            })
    }

    /// The tile-weighted average spectrum with every bin rescaled from defocus
    /// `d_ref + hand·offset` to `d_ref` (Å); `hand = 0` gives the plain periodogram.
    pub fn stretched(&self, s: &CtfSearch, d_ref: f64, hand: f64) -> Array2<f32> {
        let tile = self.tile;
        let o = Optics::new(s);
        let fy = fftfreq(tile);
        let fx = rfftfreq(tile);
        let ds = 1.0 / (tile as f64 * s.pixel_a);
        let mut acc = Array2::<f64>::zeros((tile, tile / 2 + 1));
        let total: usize = self.bins.iter().map(|b| b.2).sum();
        for (off, ps, n) in &self.bins {
            let w = *n as f64 / total.max(1) as f64;
            let d_tile = d_ref + hand * off;
            if (d_tile - d_ref).abs() < 1e-6 || d_tile <= 0.0 {
                acc.zip_mut_with(ps, |a, &p| *a += w * p as f64);
                continue;
            }
            for ((y, x), a) in acc.indexed_iter_mut() {
                let (ky, kx) = (fy[y] as f64 * tile as f64, fx[x] as f64 * tile as f64);
                let r2 = ky * ky + kx * kx;
                let scale = if r2 == 0.0 {
                    1.0
                } else {
                    let x_ref = r2 * ds * ds;
                    let g = o.k1 * d_ref * x_ref - o.k2 * x_ref * x_ref;
                    // k2·x² − k1·d_tile·x + g = 0, the root near x_ref
                    let b = o.k1 * d_tile;
                    let x_src = if o.k2 > 0.0 {
                        let disc = b * b - 4.0 * o.k2 * g;
                        if disc < 0.0 {
                            x_ref
                        } else {
                            (b - disc.sqrt()) / (2.0 * o.k2)
                        }
                    } else {
                        g / b
                    };
                    (x_src.max(0.0) / x_ref).sqrt()
                };
                *a += w * sample_half(ps, ky * scale, kx * scale) as f64;
            }
        }
        acc.mapv(|v| v as f32)
    }
}

/// Bilinear sample of a half spectrum `(tile, tile/2 + 1)` (FFT order) at signed Fourier pixel
/// `(ky, kx)`, `kx ≥ 0`; `ky` wraps, `kx` is clamped to the last column.
fn sample_half(ps: &Array2<f32>, ky: f64, kx: f64) -> f32 {
    let (n, m) = ps.dim();
    let kx = kx.clamp(0.0, (m - 1) as f64);
    let (y0, x0) = (ky.floor(), kx.floor());
    let (ty, tx) = ((ky - y0) as f32, (kx - x0) as f32);
    let yi = |k: f64| (k as i64).rem_euclid(n as i64) as usize;
    let (ya, yb) = (yi(y0), yi(y0 + 1.0));
    let xa = x0 as usize;
    let xb = (xa + 1).min(m - 1);
    let top = ps[[ya, xa]] * (1.0 - tx) + ps[[ya, xb]] * tx;
    let bot = ps[[yb, xa]] * (1.0 - tx) + ps[[yb, xb]] * tx;
    top * (1.0 - ty) + bot * ty
}

/// Tilt-aware fit of one tilt from its binned spectra: a first fit on the plain average, then
/// two fits on the average rescaled to the current axis defocus with handedness sign `hand`
/// (±1, multiplies the geometry's offsets). Returns the fit at the tilt axis.
pub fn estimate_tilt(spectra: &TiltedSpectra, s: &CtfSearch, hand: f64) -> Result<CtfFit> {
    let mut fit = estimate_from_spectrum(&spectra.stretched(s, 0.0, 0.0), s)?;
    let (lo, hi) = spectra.offset_range();
    if hi - lo < 1.0 {
        return Ok(fit);
    }
    for _ in 0..2 {
        let d_ref = 0.5 * (fit.defocus_u_a + fit.defocus_v_a);
        fit = estimate_from_spectrum(&spectra.stretched(s, d_ref, hand), s)?;
    }
    Ok(fit)
}

/// Result of [`estimate_series`].
#[derive(Clone, Debug)]
pub struct SeriesCtfFit {
    /// Per tilt (stack order), the fit at the tilt axis.
    pub fits: Vec<CtfFit>,
    /// Defocus handedness found: `geom.hand` when the offsets as modelled fit better, its
    /// negative when the mirrored ones do (RELION `rlnTomoHand` convention of
    /// [`TiltSeriesGeometry::hand`]).
    pub hand: f64,
    /// Sum over the tilts beyond [`HAND_MIN_TILT_DEG`] of score(modelled) − score(mirrored);
    /// its sign decides `hand`, its size is the evidence (0 when no tilt qualifies).
    pub hand_evidence: f64,
    /// Tilts used in the handedness vote.
    pub hand_tilts: usize,
    /// Per tilt, whether the consistency check refitted it.
    pub refitted: Vec<bool>,
}

/// Tilt-aware CTF estimation of a whole series: `stack` `[tilt, y, x]` in the geometry `geom`
/// (tilt angles, axis, shifts, handedness; its defocus fields are not read), settings `s`.
/// Tilts run in parallel (rayon). See the module doc for the handedness vote and the
/// consistency refit.
pub fn estimate_series(
    stack: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    s: &CtfSearch,
) -> Result<SeriesCtfFit> {
    if stack.len_of(Axis(0)) != geom.len() {
        return Err(Error::Runtime(format!(
            "tilt-aware CTF: stack of {} images for a geometry of {} tilts",
            stack.len_of(Axis(0)),
            geom.len()
        )));
    }
    type PerTilt = (TiltedSpectra, CtfFit, Option<CtfFit>);
    let per: Vec<Result<PerTilt>> = (0..geom.len())
        .into_par_iter()
        .map(|i| {
            let sp = TiltedSpectra::new(stack.index_axis(Axis(0), i), geom, i, s)?;
            let plus = estimate_tilt(&sp, s, 1.0)?;
            let minus = if geom.tilts[i].tilt_deg.abs() >= HAND_MIN_TILT_DEG {
                Some(estimate_tilt(&sp, s, -1.0)?)
            } else {
                None
            };
            Ok((sp, plus, minus))
        })
        .collect();
    let per: Vec<PerTilt> = per.into_iter().collect::<Result<_>>()?;
    let mut evidence = 0.0;
    let mut n_hand = 0;
    for (_, p, m) in &per {
        if let Some(m) = m {
            evidence += p.score - m.score;
            n_hand += 1;
        }
    }
    let flip = evidence < 0.0;
    let hand_sign = if flip { -1.0 } else { 1.0 };
    let mut fits: Vec<CtfFit> = per
        .iter()
        .map(|(_, p, m)| match (flip, m) {
            (true, Some(m)) => *m,
            _ => *p,
        })
        .collect();
    // consistency: refit outliers of the mean defocus in a range around the series median
    let means: Vec<f64> = fits
        .iter()
        .map(|f| 0.5 * (f.defocus_u_a + f.defocus_v_a))
        .collect();
    let med = median(&means);
    let mad = 1.4826 * median(means.iter().map(|m| (m - med).abs()).collect::<Vec<_>>());
    let (gate, half) = ((4.0 * mad).max(2000.0), (3.0 * mad).max(2000.0));
    let mut refitted = vec![false; fits.len()];
    let mut narrow = s.clone();
    narrow.defocus_min_a = (med - half).max(1000.0);
    narrow.defocus_max_a = med + half;
    let redo: Vec<usize> = (0..fits.len())
        .filter(|&i| (means[i] - med).abs() > gate)
        .collect();
    let again: Vec<(usize, Result<CtfFit>)> = redo
        .par_iter()
        .map(|&i| (i, estimate_tilt(&per[i].0, &narrow, hand_sign)))
        .collect();
    for (i, r) in again {
        fits[i] = r?;
        refitted[i] = true;
    }
    Ok(SeriesCtfFit {
        fits,
        hand: hand_sign * geom.hand,
        hand_evidence: evidence,
        hand_tilts: n_hand,
        refitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_half_spectrum_sampling_wraps_ky() {
        let ps = Array2::from_shape_fn((8, 5), |(y, x)| (10 * y + x) as f32);
        assert_eq!(sample_half(&ps, 2.0, 3.0), 23.0);
        assert!((sample_half(&ps, 2.5, 3.5) - 28.5).abs() < 1e-5);
        // ky = −1 is row 7
        assert_eq!(sample_half(&ps, -1.0, 1.0), 71.0);
        assert_eq!(median([3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn stretch_moves_rings_to_the_reference_defocus() {
        // a spectrum that is exactly |CTF(d_tile)|² rescaled to d_ref must match |CTF(d_ref)|²
        let mut s = CtfSearch::new(5.0, 300.0, 2.7, 0.07);
        s.tile = 128;
        let o = Optics::new(&s);
        let ring = |d: f64, r2: f64| {
            let x = r2 / (128.0f64 * 5.0).powi(2);
            o.ctf_abs(d, x).powi(2) as f32
        };
        let fy = fftfreq(128);
        let fx = rfftfreq(128);
        let r2 = |y: usize, x: usize| ((fy[y] * 128.0).powi(2) + (fx[x] * 128.0).powi(2)) as f64;
        let src = Array2::from_shape_fn((128, 65), |(y, x)| ring(21000.0, r2(y, x)));
        let sp = TiltedSpectra {
            tile: 128,
            bins: vec![(1000.0, src, 1)],
        };
        let err = |out: &Array2<f32>| {
            let (mut e, mut n) = (0.0, 0.0);
            for ((y, x), &v) in out.indexed_iter() {
                if r2(y, x) < 50.0f64.powi(2) {
                    e += (v - ring(20000.0, r2(y, x))).abs() as f64;
                    n += 1.0;
                }
            }
            e / n
        };
        let (plain, fixed) = (
            err(&sp.stretched(&s, 20000.0, 0.0)),
            err(&sp.stretched(&s, 20000.0, 1.0)),
        );
        assert!(
            fixed < 0.01 && plain > 0.1,
            "mean abs error {fixed} (plain {plain})"
        );
    }
}
