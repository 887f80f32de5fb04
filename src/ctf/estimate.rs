//! Per-image CTF estimation (defocus U/V and astigmatism angle), CTFFIND4-like.
//!
//! 1. [`tile_periodogram`]: averaged power spectrum of overlapping tapered tiles.
//! 2. [`subtract_background`]: amplitude spectrum minus a smooth radial background through the
//!    Thon-ring minima, normalised ring by ring.
//! 3. 1D exhaustive search of the mean defocus: Pearson correlation of the radial average with
//!    `|CTF|` (no astigmatism) over the fitting band, a step that moves the phase at the band's
//!    high end by at most π/4.
//! 4. 2D refinement around the three best 1D peaks: parameters `(mean, a_x, a_y)` with
//!    `½(U − V)·(cos 2θ, sin 2θ) = (a_x, a_y)` (smooth in the angle, no wrap); a coarse grid
//!    (mean ± 2 steps, `(a_x, a_y)` spaced half a step inside `|a| ≤ max_astig/2`), then
//!    Nelder–Mead from the four best grid points, maximising the Pearson correlation of
//!    `|CTF|` (the amplitude spectrum is `∝ |CTF|`; same zeros as `CTF²`) with the 2D
//!    background-subtracted spectrum over the band.
//! 5. Fit resolution: equiphase average of data and model, moving-window correlation; the
//!    resolution is where it first drops below [`FIT_RES_THRESHOLD`].
//!
//! Sign convention: [`Ctf`] (RELION / torch-ctf), underfocus positive, `U ≥ V`, angle of `U`
//! from +x in `[0°, 180°)`, frequencies `(sx, sy)` of image `[y, x]` (`sx` along x).

use crate::core::fourier::{fftfreq, rfftfreq};
use crate::ctf::model::{electron_wavelength_a, Ctf};
use crate::ctf::periodogram::{band_radii, subtract_background, tile_periodogram};
use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2};
use std::f64::consts::PI;

/// Correlation threshold of the moving-window fit-quality curve that defines the fit resolution.
pub const FIT_RES_THRESHOLD: f64 = 0.5;

/// Search settings. Lengths in Å, voltage kV, Cs mm.
#[derive(Clone, Debug, PartialEq)]
pub struct CtfSearch {
    /// Pixel size of the image, Å.
    pub pixel_a: f64,
    /// Acceleration voltage, kV.
    pub voltage_kv: f64,
    /// Spherical aberration, mm.
    pub cs_mm: f64,
    /// Amplitude contrast fraction (0–1).
    pub amplitude_contrast: f64,
    /// Lowest mean defocus searched, Å (underfocus positive).
    pub defocus_min_a: f64,
    /// Highest mean defocus searched, Å.
    pub defocus_max_a: f64,
    /// Largest `U − V` allowed, Å (0 fits no astigmatism).
    pub max_astigmatism_a: f64,
    /// Fitting band `(low, high)` resolution, Å (e.g. `(30, 8)`); `high` is clamped to
    /// `2.2·pixel_a`.
    pub resolution_band_a: (f64, f64),
    /// Periodogram tile size, pixels (even, ≥ 32; e.g. 256 or 512).
    pub tile: usize,
}

impl CtfSearch {
    /// Usual settings for optics `(pixel, kV, Cs, A)`: defocus 0.5–7 µm, astigmatism ≤ 2000 Å,
    /// band (30, 8) Å, tile 256.
    pub fn new(pixel_a: f64, voltage_kv: f64, cs_mm: f64, amplitude_contrast: f64) -> Self {
        CtfSearch {
            pixel_a,
            voltage_kv,
            cs_mm,
            amplitude_contrast,
            defocus_min_a: 5000.0,
            defocus_max_a: 70000.0,
            max_astigmatism_a: 2000.0,
            resolution_band_a: (30.0, 8.0),
            tile: 256,
        }
    }

    /// The fitting band with the high end clamped to `2.2·pixel_a`, Å.
    pub fn band(&self) -> (f64, f64) {
        (
            self.resolution_band_a.0,
            self.resolution_band_a.1.max(2.2 * self.pixel_a),
        )
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: &str| {
            Err(Error::Config(format!(
                "CTF search: {field}: {msg}; fix the CTF estimation settings"
            )))
        };
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(self.pixel_a) {
            return bad("pixel_a", "pixel size must be a positive number of Å");
        }
        if !pos(self.voltage_kv) {
            return bad("voltage_kv", "voltage must be positive (kV)");
        }
        if !self.cs_mm.is_finite() || self.cs_mm < 0.0 {
            return bad("cs_mm", "spherical aberration must be ≥ 0 mm");
        }
        if !(0.0..1.0).contains(&self.amplitude_contrast) {
            return bad("amplitude_contrast", "must be in [0, 1)");
        }
        if !pos(self.defocus_min_a) || !pos(self.defocus_max_a) {
            return bad(
                "defocus_min_a/defocus_max_a",
                "defocus range must be positive Å (underfocus)",
            );
        }
        if self.defocus_min_a >= self.defocus_max_a {
            return bad("defocus_min_a", "must be below defocus_max_a");
        }
        if !self.max_astigmatism_a.is_finite() || self.max_astigmatism_a < 0.0 {
            return bad("max_astigmatism_a", "must be ≥ 0 Å");
        }
        if self.tile < 32 || self.tile % 2 != 0 {
            return bad("tile", "tile size must be even and ≥ 32 pixels");
        }
        let (lo, hi) = self.band();
        if !pos(lo) || lo <= hi {
            return bad(
                "resolution_band_a",
                &format!("low end {lo} Å must exceed the high end {hi} Å (clamped to 2.2·pixel)"),
            );
        }
        let (r_lo, r_hi) = band_radii(self.tile, self.pixel_a, (lo, hi));
        if r_hi < r_lo + 4 {
            return bad(
                "resolution_band_a",
                "the band spans fewer than 4 Fourier pixels of the tile; widen it or use a larger tile",
            );
        }
        Ok(())
    }
}

/// Result of [`estimate`]. Lengths in Å, angle in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CtfFit {
    /// Defocus along the astigmatism angle, Å (`U ≥ V`, underfocus positive).
    pub defocus_u_a: f64,
    /// Defocus perpendicular to it, Å.
    pub defocus_v_a: f64,
    /// Angle of `U` from +x, degrees in `[0, 180)`.
    pub astig_angle_deg: f64,
    /// Pearson correlation of the fitted `|CTF|` with the background-subtracted spectrum over
    /// the fitting band (−1..1).
    pub score: f64,
    /// Resolution (Å) where the equiphase-averaged fit quality first drops below
    /// [`FIT_RES_THRESHOLD`]; `2·pixel` when it never does.
    pub fit_resolution_a: f64,
}

/// Band pixels of the half spectrum: `s²` (1/Å²), `cos 2φ`, `sin 2φ`, data value.
struct BandPixels {
    s2: Vec<f64>,
    c2: Vec<f64>,
    s2phi: Vec<f64>,
    data: Vec<f64>,
}

/// The optics constants of `γ(s) = k1·Δf·s² − k2·s⁴` and the amplitude-contrast phase.
#[derive(Clone, Copy)]
pub(crate) struct Optics {
    pub(crate) k1: f64,
    pub(crate) k2: f64,
    pub(crate) alpha: f64,
}

impl Optics {
    pub(crate) fn new(s: &CtfSearch) -> Self {
        let lambda = electron_wavelength_a(s.voltage_kv);
        Optics {
            k1: PI * lambda,
            k2: 0.5 * PI * s.cs_mm * 1e7 * lambda.powi(3),
            alpha: s.amplitude_contrast.asin(),
        }
    }

    /// `|CTF| = |sin(γ + asin A)|` (the modulus of [`Ctf::value`]).
    #[inline]
    pub(crate) fn ctf_abs(&self, defocus: f64, s2: f64) -> f64 {
        let g = self.k1 * defocus * s2 - self.k2 * s2 * s2 + self.alpha;
        let v = g.sin();
        v.abs()
    }
}

/// Pearson correlation of two equally long sequences given as an iterator of pairs.
fn pearson(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
    let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (x, y) in pairs {
        n += 1.0;
        sx += x;
        sy += y;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
    }
    if n < 2.0 {
        return 0.0;
    }
    let vx = sxx - sx * sx / n;
    let vy = syy - sy * sy / n;
    if vx <= 0.0 || vy <= 0.0 {
        return 0.0;
    }
    (sxy - sx * sy / n) / (vx * vy).sqrt()
}

/// Astigmatic CTF parameters `(mean, a_x, a_y)` -> `(U, V, angle°)` with `U ≥ V`,
/// angle in `[0, 180)`.
fn to_uva(p: [f64; 3]) -> (f64, f64, f64) {
    let a = p[1].hypot(p[2]);
    let ang = (0.5 * p[2].atan2(p[1]).to_degrees()).rem_euclid(180.0);
    (p[0] + a, p[0] - a, ang)
}

/// Correlation of the 2D model with the band data.
fn score_2d(px: &BandPixels, o: &Optics, p: [f64; 3]) -> f64 {
    pearson((0..px.s2.len()).map(|i| {
        let d = p[0] + p[1] * px.c2[i] + p[2] * px.s2phi[i];
        (o.ctf_abs(d, px.s2[i]), px.data[i])
    }))
}

/// Minimise `f` with Nelder–Mead from `x0` with initial steps `step`; stops after `max_eval`
/// evaluations or when the simplex values agree to `ftol`. Returns `(x, f(x))`.
fn nelder_mead<F: FnMut([f64; 3]) -> f64>(
    mut f: F,
    x0: [f64; 3],
    step: [f64; 3],
    max_eval: usize,
    ftol: f64,
) -> ([f64; 3], f64) {
    let mut simplex: Vec<([f64; 3], f64)> = Vec::with_capacity(4);
    simplex.push((x0, f(x0)));
    for k in 0..3 {
        let mut x = x0;
        x[k] += step[k];
        simplex.push((x, f(x)));
    }
    let mut evals = 4;
    let lerp = |a: &[f64; 3], b: &[f64; 3], t: f64| -> [f64; 3] {
        [
            a[0] + t * (b[0] - a[0]),
            a[1] + t * (b[1] - a[1]),
            a[2] + t * (b[2] - a[2]),
        ]
    };
    while evals < max_eval {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (simplex[3].1 - simplex[0].1).abs() < ftol {
            break;
        }
        let mut c = [0.0; 3];
        for v in simplex.iter().take(3) {
            for (ck, vk) in c.iter_mut().zip(v.0.iter()) {
                *ck += vk / 3.0;
            }
        }
        let worst = simplex[3];
        let xr = lerp(&c, &worst.0, -1.0);
        let fr = f(xr);
        evals += 1;
        if fr < simplex[0].1 {
            let xe = lerp(&c, &worst.0, -2.0);
            let fe = f(xe);
            evals += 1;
            simplex[3] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[2].1 {
            simplex[3] = (xr, fr);
        } else {
            let (xc, fc) = if fr < worst.1 {
                let x = lerp(&c, &xr, 0.5);
                (x, f(x))
            } else {
                let x = lerp(&c, &worst.0, 0.5);
                (x, f(x))
            };
            evals += 1;
            if fc < worst.1.min(fr) {
                simplex[3] = (xc, fc);
            } else {
                let best = simplex[0].0;
                for v in simplex.iter_mut().skip(1) {
                    v.0 = lerp(&best, &v.0, 0.5);
                    v.1 = f(v.0);
                    evals += 1;
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex[0]
}

/// Estimate the defocus and astigmatism of one image `[y, x]` (any units; electron counts
/// from the detector or the simulator) with the settings `s`.
///
/// Returns `U ≥ V` (Å, underfocus positive), the angle of `U` from +x (degrees, `[0, 180)`),
/// the correlation score over the band and the fit resolution (see the module doc).
/// Errors: bad settings ([`Error::Config`]), an image with non-finite values or no variance
/// ([`Error::Runtime`]).
pub fn estimate(img: ArrayView2<f32>, s: &CtfSearch) -> Result<CtfFit> {
    s.validate()?;
    if img.iter().any(|v| !v.is_finite()) {
        return Err(Error::Runtime(
            "CTF estimation: the image contains NaN/Inf; fix or mask the input image".into(),
        ));
    }
    let ps = tile_periodogram(img, s.tile);
    estimate_from_spectrum(&ps, s)
}

/// [`estimate`] from an averaged tile power spectrum `ps` (`(tile, tile/2 + 1)`, FFT order, as
/// [`tile_periodogram`] makes; `tile = s.tile`), e.g. one whose tiles were rescaled to a common
/// defocus ([`crate::ctf::tilted`]). Same results and errors as [`estimate`].
pub fn estimate_from_spectrum(ps: &Array2<f32>, s: &CtfSearch) -> Result<CtfFit> {
    s.validate()?;
    let tile = s.tile;
    if ps.dim() != (tile, tile / 2 + 1) {
        return Err(Error::Runtime(format!(
            "CTF estimation: spectrum of shape {:?}, expected ({tile}, {}) for tile {tile}",
            ps.dim(),
            tile / 2 + 1
        )));
    }
    if ps.iter().all(|&v| v == 0.0) {
        return Err(Error::Runtime(
            "CTF estimation: the image is constant (no power spectrum); check the input image"
                .into(),
        ));
    }
    let band = s.band();
    // prepare to Nyquist so the fit resolution can be measured beyond the band
    let data = subtract_background(ps, tile, s.pixel_a, (band.0, 2.0 * s.pixel_a));
    let (r_lo, r_hi) = band_radii(tile, s.pixel_a, band);
    let optics = Optics::new(s);
    let all = band_pixels(&data, tile, s.pixel_a, r_lo as f64, (tile / 2) as f64);
    let fit_px = band_pixels(&data, tile, s.pixel_a, r_lo as f64, r_hi as f64);

    // 1D exhaustive search on the radial average
    let ds = 1.0 / (tile as f64 * s.pixel_a);
    let radial: Vec<(f64, f64)> = {
        let prof = crate::ctf::periodogram::radial_average(
            &data,
            &crate::ctf::periodogram::radius_map(tile),
            tile / 2 + 1,
        );
        (r_lo..=r_hi)
            .map(|r| ((r as f64 * ds).powi(2), prof[r]))
            .collect()
    };
    let s_max2 = (r_hi as f64 * ds).powi(2);
    let coarse = 0.25 / (optics.k1 / PI * s_max2); // π/4 of phase at the band's high end
    let n_steps = ((s.defocus_max_a - s.defocus_min_a) / coarse).ceil() as usize + 1;
    let curve: Vec<(f64, f64)> = (0..n_steps)
        .map(|k| {
            let d = (s.defocus_min_a + k as f64 * coarse).min(s.defocus_max_a);
            let c = pearson(radial.iter().map(|&(s2, v)| (optics.ctf_abs(d, s2), v)));
            (d, c)
        })
        .collect();
    let mut peaks: Vec<(f64, f64)> = (0..curve.len())
        .filter(|&k| {
            (k == 0 || curve[k].1 >= curve[k - 1].1)
                && (k + 1 == curve.len() || curve[k].1 >= curve[k + 1].1)
        })
        .map(|k| curve[k])
        .collect();
    peaks.sort_by(|a, b| b.1.total_cmp(&a.1));
    peaks.truncate(3);

    // 2D refinement
    let a_max = 0.5 * s.max_astigmatism_a;
    let objective = |p: [f64; 3]| -> f64 {
        let a = p[1].hypot(p[2]);
        let mut pen = 0.0;
        if a > a_max {
            pen += (a - a_max) / 1000.0 + 1.0;
        }
        let lo = s.defocus_min_a - coarse;
        let hi = s.defocus_max_a + coarse;
        if p[0] < lo || p[0] > hi {
            pen += 1.0 + (p[0] - p[0].clamp(lo, hi)).abs() / 1000.0;
        }
        -score_2d(&fit_px, &optics, p) + pen
    };
    // coarse 2D grid around each 1D candidate: mean ± 2·coarse (astigmatism biases the 1D
    // peak), (a_x, a_y) on a Cartesian
    // grid of spacing coarse/2 inside |a| ≤ a_max (the phase at the band's high end moves by
    // ≤ π/8 between neighbours), then Nelder–Mead from the best grid points
    let g = 0.5 * coarse;
    let na = (a_max / g).floor() as i64;
    let mut grid: Vec<([f64; 3], f64)> = Vec::new();
    for &(d0, _) in &peaks {
        for dm in (-4..=4).map(|k| k as f64 * g) {
            for ix in -na..=na {
                for iy in -na..=na {
                    let (ax, ay) = (ix as f64 * g, iy as f64 * g);
                    if ax.hypot(ay) <= a_max {
                        let p = [d0 + dm, ax, ay];
                        grid.push((p, objective(p)));
                    }
                }
            }
        }
    }
    grid.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut best = ([0.0; 3], f64::INFINITY);
    for &(start, _) in grid.iter().take(4) {
        let step = [0.5 * g, 0.5 * g, 0.5 * g];
        let mut r = nelder_mead(objective, start, step, 400, 1e-9);
        r = nelder_mead(objective, r.0, [0.1 * g; 3], 300, 1e-10);
        if r.1 < best.1 {
            best = r;
        }
    }
    if !best.1.is_finite() {
        return Err(Error::Runtime(
            "CTF estimation: no defocus candidate found; check the defocus range and band".into(),
        ));
    }
    let p = if a_max == 0.0 {
        [best.0[0], 0.0, 0.0]
    } else {
        best.0
    };
    let (u, v, ang) = to_uva(p);
    let score = score_2d(&fit_px, &optics, p);
    let fit_res = fit_resolution(&all, &optics, p, tile, s.pixel_a, r_lo);
    Ok(CtfFit {
        defocus_u_a: u,
        defocus_v_a: v,
        astig_angle_deg: ang,
        score,
        fit_resolution_a: fit_res,
    })
}

/// Pixels of the half spectrum `data` with radius (Fourier pixels) in `[r_lo, r_hi]`; the
/// redundant half of the `kx = 0` column is skipped.
fn band_pixels(data: &Array2<f32>, tile: usize, pixel_a: f64, r_lo: f64, r_hi: f64) -> BandPixels {
    let fy = fftfreq(tile);
    let fx = rfftfreq(tile);
    let mut out = BandPixels {
        s2: vec![],
        c2: vec![],
        s2phi: vec![],
        data: vec![],
    };
    for ((y, x), &v) in data.indexed_iter() {
        if x == 0 && fy[y] < 0.0 {
            continue;
        }
        let (sy, sx) = (fy[y] as f64 / pixel_a, fx[x] as f64 / pixel_a);
        let r = (sx * sx + sy * sy).sqrt() * tile as f64 * pixel_a;
        if r < r_lo || r > r_hi {
            continue;
        }
        let phi = sy.atan2(sx);
        out.s2.push(sx * sx + sy * sy);
        out.c2.push((2.0 * phi).cos());
        out.s2phi.push((2.0 * phi).sin());
        out.data.push(v as f64);
    }
    out
}

/// Fit resolution (Å): equiphase average of data and model (each pixel binned at the radius
/// whose isotropic phase at the mean defocus equals its own), then the correlation in a window
/// of ±1 ring period (at least ±3 bins) moving outward from the band's low end; the first
/// radius where it falls below [`FIT_RES_THRESHOLD`] (Nyquist when it never does).
fn fit_resolution(
    px: &BandPixels,
    o: &Optics,
    p: [f64; 3],
    tile: usize,
    pixel_a: f64,
    r_lo: usize,
) -> f64 {
    let nb = tile / 2 + 1;
    let ds = 1.0 / (tile as f64 * pixel_a);
    let mean = p[0];
    let mut sum_d = vec![0.0; nb];
    let mut sum_m = vec![0.0; nb];
    let mut cnt = vec![0.0; nb];
    for i in 0..px.s2.len() {
        let d = p[0] + p[1] * px.c2[i] + p[2] * px.s2phi[i];
        let s2 = px.s2[i];
        let g = o.k1 * d * s2 - o.k2 * s2 * s2;
        // isotropic radius with the same phase: k2 x² − k1·mean·x + g = 0, smaller root
        let (qa, qb) = (o.k2, o.k1 * mean);
        let x = if qa > 0.0 {
            let disc = qb * qb - 4.0 * qa * g;
            if disc < 0.0 {
                s2
            } else {
                (qb - disc.sqrt()) / (2.0 * qa)
            }
        } else {
            g / qb
        };
        let b = (x.max(0.0).sqrt() / ds).round() as usize;
        if b < nb {
            sum_d[b] += px.data[i];
            sum_m[b] += o.ctf_abs(d, s2);
            cnt[b] += 1.0;
        }
    }
    let avg = |s: &[f64]| -> Vec<f64> {
        s.iter()
            .zip(&cnt)
            .map(|(v, &c)| if c > 0.0 { v / c } else { 0.0 })
            .collect()
    };
    let (dd, mm) = (avg(&sum_d), avg(&sum_m));
    let last = tile / 2;
    for r in r_lo..=last {
        let sr = (r as f64 * ds).max(ds);
        // ring period in s at this radius (|CTF| has period π in γ): 1/(2 λ Δf s), in bins
        let period = 1.0 / (2.0 * (o.k1 / PI) * mean.max(1.0) * sr) / ds;
        let h = (period.round() as usize).max(3);
        let a = r.saturating_sub(h).max(r_lo);
        let b = (r + h).min(last);
        if b < a + 4 {
            continue;
        }
        let c = pearson((a..=b).filter(|&k| cnt[k] > 0.0).map(|k| (mm[k], dd[k])));
        if c < FIT_RES_THRESHOLD {
            return 1.0 / sr;
        }
    }
    2.0 * pixel_a
}

/// The fitted CTF as a [`Ctf`] for the optics of `s` (no phase shift).
pub fn fit_to_ctf(fit: &CtfFit, s: &CtfSearch) -> Ctf {
    Ctf {
        voltage_kv: s.voltage_kv,
        cs_mm: s.cs_mm,
        amplitude_contrast: s.amplitude_contrast,
        defocus_u_a: fit.defocus_u_a,
        defocus_v_a: fit.defocus_v_a,
        astig_angle_deg: fit.astig_angle_deg,
        phase_shift_deg: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_abs_ctf_matches_model() {
        let s = CtfSearch::new(1.0, 300.0, 2.7, 0.07);
        let o = Optics::new(&s);
        let c = Ctf {
            voltage_kv: 300.0,
            cs_mm: 2.7,
            amplitude_contrast: 0.07,
            defocus_u_a: 21000.0,
            defocus_v_a: 21000.0,
            astig_angle_deg: 0.0,
            phase_shift_deg: 0.0,
        };
        for k in 0..50 {
            let sx = k as f64 * 0.005;
            let want = c.value(sx, 0.0).abs();
            assert!((o.ctf_abs(21000.0, sx * sx) - want).abs() < 1e-9);
        }
    }

    #[test]
    fn astig_parametrisation_round_trips() {
        let (u, v, ang) = to_uva([
            20000.0,
            300.0 * (70f64).to_radians().cos(),
            300.0 * (70f64).to_radians().sin(),
        ]);
        assert!((u - 20300.0).abs() < 1e-6 && (v - 19700.0).abs() < 1e-6);
        assert!((ang - 35.0).abs() < 1e-9);
        // angle wraps into [0, 180)
        let (_, _, ang) = to_uva([
            0.0,
            100.0 * (-60f64).to_radians().cos(),
            100.0 * (-60f64).to_radians().sin(),
        ]);
        assert!((ang - 150.0).abs() < 1e-9, "{ang}");
    }

    #[test]
    fn nelder_mead_finds_quadratic_minimum() {
        let (x, f) = nelder_mead(
            |p| (p[0] - 3.0).powi(2) + 2.0 * (p[1] + 1.0).powi(2) + (p[2] - 0.5).powi(2) + 1.0,
            [0.0; 3],
            [1.0; 3],
            2000,
            1e-14,
        );
        assert!((f - 1.0).abs() < 1e-8);
        assert!(
            (x[0] - 3.0).abs() < 1e-3 && (x[1] + 1.0).abs() < 1e-3 && (x[2] - 0.5).abs() < 1e-3
        );
    }

    #[test]
    fn bad_settings_are_reported() {
        let img = Array2::<f32>::zeros((64, 64));
        let mut s = CtfSearch::new(2.0, 300.0, 2.7, 0.07);
        s.tile = 64;
        s.defocus_min_a = 50000.0;
        s.defocus_max_a = 10000.0;
        let e = estimate(img.view(), &s).unwrap_err().to_string();
        assert!(e.contains("defocus_min_a"), "{e}");
        s.defocus_max_a = 60000.0;
        let e = estimate(img.view(), &s).unwrap_err().to_string();
        assert!(e.contains("constant"), "{e}");
    }
}
