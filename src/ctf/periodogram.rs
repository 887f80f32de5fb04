//! Power spectra for CTF estimation: the averaged periodogram of overlapping tiles and the
//! CTFFIND-style background subtraction / normalisation of its amplitude.
//!
//! Spectra are half spectra `(tile, tile/2 + 1)` in FFT order (`[ky, kx]`, DC at `[0, 0]`,
//! `ky` wrapped as in [`fftfreq`], `kx` as in [`rfftfreq`]), the layout of
//! [`Fft2`](crate::core::fourier::Fft2).

use crate::core::fourier::{fftfreq, rfftfreq, Fft2};
use ndarray::{s, Array2, ArrayView2};
use num_complex::Complex32;

/// Fraction of the tile (per side) covered by the cosine edge taper.
const TAPER_FRACTION: f64 = 0.1;

/// Start offsets of tiles of length `tile` with 50 % overlap covering an axis of length `n`;
/// the last tile is flush with the far edge. One tile at 0 when `n <= tile`.
fn tile_starts(n: usize, tile: usize) -> Vec<usize> {
    if n <= tile {
        return vec![0];
    }
    let step = (tile / 2).max(1);
    let mut v: Vec<usize> = (0..=(n - tile)).step_by(step).collect();
    if *v.last().unwrap_or(&0) != n - tile {
        v.push(n - tile);
    }
    v
}

/// Separable Tukey window of length `n`: 1 in the middle, a raised-cosine ramp over
/// `TAPER_FRACTION·n` pixels at each end.
fn taper_1d(n: usize) -> Vec<f32> {
    let w = ((n as f64 * TAPER_FRACTION).round() as usize).max(1);
    (0..n)
        .map(|i| {
            let d = i.min(n - 1 - i);
            if d >= w {
                1.0
            } else {
                (0.5 - 0.5 * (std::f64::consts::PI * (d as f64 + 0.5) / w as f64).cos()) as f32
            }
        })
        .collect()
}

/// Visit the power spectrum `|F|²` of every overlapping square tile of an image `[y, x]`.
///
/// Tiles are `tile × tile` pixels with 50 % overlap (the last row/column of tiles is flush with
/// the image edge); each tile is mean-subtracted and multiplied by a separable cosine edge
/// taper (10 % of the tile per side) before its FFT. An image smaller than `tile` along an axis
/// is zero-padded there. `visit((y0, x0), ps)` gets the tile's top-left pixel and its half
/// power spectrum `(tile, tile/2 + 1)`, FFT order (DC at `[0, 0]`), unnormalised forward FFT
/// (units: image units² · pixels²). `tile` must be ≥ 2. One FFT plan and scratch serve all
/// tiles. Returns the number of tiles.
pub fn for_each_tile_spectrum<F: FnMut((usize, usize), &Array2<f32>)>(
    img: ArrayView2<f32>,
    tile: usize,
    mut visit: F,
) -> usize {
    let tile = tile.max(2);
    let (ny, nx) = img.dim();

    let mut plan = Fft2::new(tile, tile);
    let win = taper_1d(tile);
    let mut buf = Array2::<f32>::zeros((tile, tile));
    let mut spec = Array2::<Complex32>::zeros((tile, tile / 2 + 1));
    let mut ps = Array2::<f32>::zeros((tile, tile / 2 + 1));
    let mut count = 0usize;
    for &y0 in &tile_starts(ny, tile) {
        for &x0 in &tile_starts(nx, tile) {
            let (hy, hx) = ((ny - y0).min(tile), (nx - x0).min(tile));
            let src = img.slice(s![y0..y0 + hy, x0..x0 + hx]);
            let mean = if hy * hx > 0 {
                src.iter().map(|&v| v as f64).sum::<f64>() / (hy * hx) as f64
            } else {
                0.0
            };
            buf.fill(0.0);
            for y in 0..hy {
                for x in 0..hx {
                    buf[[y, x]] = (src[[y, x]] as f64 - mean) as f32 * win[y] * win[x];
                }
            }
            plan.forward_into(buf.view(), &mut spec);
            for (p, c) in ps.iter_mut().zip(spec.iter()) {
                *p = c.norm_sqr();
            }
            visit((y0, x0), &ps);
            count += 1;
        }
    }
    count
}

/// Averaged power spectrum `|F|²` of overlapping square tiles of an image `[y, x]`: the mean
/// over the tiles of [`for_each_tile_spectrum`], shape `(tile, tile/2 + 1)`, FFT order.
pub fn tile_periodogram(img: ArrayView2<f32>, tile: usize) -> Array2<f32> {
    let tile = tile.max(2);
    let mut acc = Array2::<f64>::zeros((tile, tile / 2 + 1));
    let count = for_each_tile_spectrum(img, tile, |_, ps| {
        for (a, &p) in acc.iter_mut().zip(ps.iter()) {
            *a += p as f64;
        }
    });
    let inv = 1.0 / count.max(1) as f64;
    acc.mapv(|v| (v * inv) as f32)
}

/// Radius (Fourier pixels, i.e. `|s|·tile·pixel`) of every element of a half spectrum
/// `(tile, tile/2 + 1)`.
pub fn radius_map(tile: usize) -> Array2<f64> {
    let fy = fftfreq(tile);
    let fx = rfftfreq(tile);
    Array2::from_shape_fn((tile, tile / 2 + 1), |(y, x)| {
        ((fy[y] as f64).powi(2) + (fx[x] as f64).powi(2)).sqrt() * tile as f64
    })
}

/// Mean of `values` in integer radius bins `round(r)` for `r < nbins`; empty bins are 0.
pub fn radial_average(values: &Array2<f32>, radius: &Array2<f64>, nbins: usize) -> Vec<f64> {
    let mut sum = vec![0.0f64; nbins];
    let mut cnt = vec![0usize; nbins];
    for (&v, &r) in values.iter().zip(radius.iter()) {
        let b = r.round() as usize;
        if b < nbins {
            sum[b] += v as f64;
            cnt[b] += 1;
        }
    }
    sum.iter()
        .zip(&cnt)
        .map(|(s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
        .collect()
}

/// Box average of `p` over `[i − h, i + h]` restricted to `[lo, hi]`.
fn box_smooth(p: &[f64], h: usize, lo: usize, hi: usize) -> Vec<f64> {
    let mut out = p.to_vec();
    for (i, o) in out.iter_mut().enumerate().take(hi + 1).skip(lo) {
        let a = i.saturating_sub(h).max(lo);
        let b = (i + h).min(hi);
        *o = p[a..=b].iter().sum::<f64>() / (b - a + 1) as f64;
    }
    out
}

/// Piecewise-linear interpolation through the points `(x_k, y_k)` (ascending `x`), constant
/// beyond the ends, evaluated at `0..n`.
fn interp_knots(knots: &[(usize, f64)], n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let k = knots.partition_point(|&(x, _)| x <= i);
            if k == 0 {
                knots[0].1
            } else if k == knots.len() {
                knots[k - 1].1
            } else {
                let (x0, y0) = knots[k - 1];
                let (x1, y1) = knots[k];
                y0 + (y1 - y0) * (i - x0) as f64 / (x1 - x0) as f64
            }
        })
        .collect()
}

/// Background-subtracted, normalised amplitude spectrum, the CTFFIND way.
///
/// `ps` is a power spectrum `(tile, tile/2 + 1)` in FFT order (e.g. from
/// [`tile_periodogram`]), `pixel_a` the pixel size (Å), `band_a = (low, high)` resolutions in
/// Å (`low > high`) of the region to prepare; `high` is clamped to Nyquist (`2·pixel_a`).
///
/// Method: the amplitude `sqrt(ps)` is radially averaged in 1-pixel rings; the smooth
/// background is the piecewise-linear curve through the local minima of the lightly smoothed
/// radial profile (at the Thon-ring zeros the spectrum is pure background, so the curve
/// follows the background whatever the defocus); it is subtracted from the 2D amplitude, and
/// the result divided by the running RMS of its radial profile (a box of ±tile/16 pixels), so
/// every ring weighs the same in a correlation. Returns an array of the shape of `ps` with
/// zeros outside the band (and at radii without a background estimate).
pub fn subtract_background(
    ps: &Array2<f32>,
    tile: usize,
    pixel_a: f64,
    band_a: (f64, f64),
) -> Array2<f32> {
    let radius = radius_map(tile);
    let nbins = tile / 2 + 1;
    let (r_lo, r_hi) = band_radii(tile, pixel_a, band_a);
    let amp = ps.mapv(|v| v.max(0.0).sqrt());
    let prof = radial_average(&amp, &radius, nbins);
    // minima of the smoothed profile over a margin-extended band
    let lo = r_lo.saturating_sub(2).max(1);
    let hi = (r_hi + 2).min(nbins - 1);
    let mut out = Array2::<f32>::zeros(ps.dim());
    if hi <= lo + 2 {
        return out;
    }
    let sm = box_smooth(&prof, 1, lo, hi);
    let mut knots: Vec<(usize, f64)> = vec![(lo, sm[lo])];
    for i in lo + 1..hi {
        if sm[i] <= sm[i - 1] && sm[i] < sm[i + 1] {
            knots.push((i, sm[i]));
        }
    }
    knots.push((hi, sm[hi]));
    // end points: take the lower of the end value and the nearest minimum, so a profile
    // that starts on a ring maximum does not lift the background there
    if knots.len() > 2 {
        knots[0].1 = knots[0].1.min(knots[1].1);
        let n = knots.len();
        knots[n - 1].1 = knots[n - 1].1.min(knots[n - 2].1);
    }
    let bg = interp_knots(&knots, nbins);
    // radial RMS of the subtracted amplitude for normalisation
    let sub_prof: Vec<f64> = prof.iter().zip(&bg).map(|(p, b)| (p - b).powi(2)).collect();
    let h = (tile / 16).max(2);
    let ms = box_smooth(&sub_prof, h, lo, hi);
    for ((o, &a), &r) in out.iter_mut().zip(amp.iter()).zip(radius.iter()) {
        let rf = r.floor() as usize;
        if r < r_lo as f64 || r > r_hi as f64 || rf + 1 >= nbins {
            continue;
        }
        let t = r - rf as f64;
        let b = bg[rf] * (1.0 - t) + bg[rf + 1] * t;
        let m = (ms[rf] * (1.0 - t) + ms[rf + 1] * t).sqrt();
        if m > 0.0 {
            *o = ((a as f64 - b) / m) as f32;
        }
    }
    out
}

/// The band `(low Å, high Å)` as Fourier-pixel radii `(r_lo, r_hi)` of a tile (high end clamped
/// to Nyquist, `tile/2`).
pub fn band_radii(tile: usize, pixel_a: f64, band_a: (f64, f64)) -> (usize, usize) {
    let to_r = |res: f64| tile as f64 * pixel_a / res.max(2.0 * pixel_a);
    let r_lo = to_r(band_a.0).ceil() as usize;
    let r_hi = (to_r(band_a.1).floor() as usize).min(tile / 2);
    (r_lo.max(1), r_hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn tiles_cover_the_image() {
        assert_eq!(tile_starts(256, 128), vec![0, 64, 128]);
        assert_eq!(tile_starts(300, 128), vec![0, 64, 128, 172]);
        assert_eq!(tile_starts(100, 128), vec![0]);
    }

    #[test]
    fn periodogram_of_white_noise_is_flat_and_of_a_cosine_peaks() {
        // deterministic pseudo-random white noise
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
        };
        let img = Array2::from_shape_fn((256, 256), |_| next());
        let ps = tile_periodogram(img.view(), 64);
        assert_eq!(ps.dim(), (64, 33));
        let radius = radius_map(64);
        let prof = radial_average(&ps, &radius, 33);
        let mid: Vec<f64> = prof[5..30].to_vec();
        let mean = mid.iter().sum::<f64>() / mid.len() as f64;
        for v in &mid {
            assert!((v / mean - 1.0).abs() < 0.15, "{v} vs {mean}");
        }
        // a cosine at 8 cycles per 64 px along x
        let cosimg = Array2::from_shape_fn((128, 128), |(_, x)| {
            (2.0 * std::f32::consts::PI * x as f32 / 8.0).cos()
        });
        let ps = tile_periodogram(cosimg.view(), 64);
        let (mut best, mut at) = (0.0, (0, 0));
        for ((y, x), &v) in ps.indexed_iter() {
            if v > best {
                best = v;
                at = (y, x);
            }
        }
        assert_eq!(at, (0, 8));
    }

    #[test]
    fn background_subtraction_removes_smooth_falloff() {
        // power = (background + envelope·sin²(k r²))²: amplitude has a smooth falloff plus rings
        let tile = 128;
        let radius = radius_map(tile);
        let ps = radius.mapv(|r| {
            let bg = 10.0 * (-r / 40.0).exp() + 1.0;
            let ring = (0.005 * r * r).sin().powi(2);
            ((bg + 0.5 * ring) as f32).powi(2)
        });
        let out = subtract_background(&ps, tile, 2.0, (40.0, 4.0));
        let (r_lo, r_hi) = band_radii(tile, 2.0, (40.0, 4.0));
        assert_eq!((r_lo, r_hi), (7, 64));
        // correlation of the output with the ring pattern: high beyond the first zero
        // (r = 25), lower over the whole band (no minimum bounds the background before it)
        let cc_from = |r0: f64| {
            let (mut sxy, mut sxx, mut syy, mut sx, mut sy, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
            for (&o, &r) in out.iter().zip(radius.iter()) {
                if r >= r0 && r <= r_hi as f64 {
                    let m = (0.005 * r * r).sin().powi(2);
                    let o = o as f64;
                    sxy += o * m;
                    sxx += o * o;
                    syy += m * m;
                    sx += o;
                    sy += m;
                    n += 1.0;
                }
            }
            (sxy - sx * sy / n) / ((sxx - sx * sx / n) * (syy - sy * sy / n)).sqrt()
        };
        let (all, outer) = (cc_from(r_lo as f64), cc_from(26.0));
        assert!(all > 0.8, "cc {all} {outer}");
        assert!(outer > 0.9, "cc {all} {outer}");
    }
}
