//! Gold-bead detection in one tilt image.
//!
//! 1. Fourier-bin the image (`core::fourier::FourierBinner`, no aliasing) so a bead is a few
//!    binned pixels across.
//! 2. Matched filter: correlate the negated binned image with the zero-mean projection of a
//!    sphere of the bead radius (`sqrt(r² − d²)` inside `r`, minus its mean over a disk of
//!    radius `2r`): dark disks of the bead size give strong positive peaks, flat background
//!    and slow gradients give zero.
//! 3. Score = (filtered − median) / robust σ (1.4826·MAD) of the filtered image; local maxima
//!    within a bead radius above `threshold_sigma` are candidates.
//! 4. Coarse sub-pixel position: parabola through the peak and its neighbours on the binned
//!    grid, mapped to unbinned pixels (binned sample `k` is unbinned position `k·n/m`).
//!    `super::centre` refines it on the unbinned image.
//!
//! Positions are image pixel indices `(x, y)` of the unbinned image (x = column, y = row).

use crate::core::fourier::{Fft2, FourierBinner};
use ndarray::{Array2, ArrayView2};
use num_complex::Complex32;

/// One bead candidate in one tilt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Column (x) of the bead centre, unbinned pixels (pixel-index units).
    pub x: f64,
    /// Row (y) of the bead centre, unbinned pixels.
    pub y: f64,
    /// Matched-filter peak in robust σ of the filtered image.
    pub score: f64,
}

/// A planned detector for images of one size: binning plan, FFT plan of the binned size and
/// the matched filter's spectrum, made once; clone one per thread.
#[derive(Clone)]
pub struct Detector {
    binner: FourierBinner,
    fft: Fft2,
    filter: Array2<Complex32>,
    spec: Array2<Complex32>,
    /// Unbinned pixels per binned pixel (x, y).
    scale: [f64; 2],
    /// Bead radius, binned pixels.
    radius_b: f64,
    threshold_sigma: f64,
}

impl Detector {
    /// Plan for `(ny, nx)` images binned by `bin`, beads of `diameter_px` unbinned pixels,
    /// candidates above `threshold_sigma` robust σ of the filtered image.
    pub fn new(ny: usize, nx: usize, bin: usize, diameter_px: f64, threshold_sigma: f64) -> Self {
        let bin = bin.max(1);
        let (my, mx) = (ny / bin, nx / bin);
        let scale = [nx as f64 / mx as f64, ny as f64 / my as f64];
        let radius_b = 0.5 * diameter_px / scale[0];
        let mut fft = Fft2::new(my, mx);
        let template = sphere_template(my, mx, radius_b);
        let filter = fft.forward(template.view());
        Detector {
            binner: FourierBinner::new(ny, nx, bin),
            spec: Array2::zeros((my, mx / 2 + 1)),
            fft,
            filter,
            scale,
            radius_b,
            threshold_sigma,
        }
    }

    /// Matched-filter score map of `img` `(ny, nx)` on the binned grid, in robust σ.
    pub fn score_map(&mut self, img: ArrayView2<f32>) -> Array2<f32> {
        let binned = self.binner.bin(img);
        let neg = binned.mapv(|v| -v);
        self.fft.forward_into(neg.view(), &mut self.spec);
        // the template is real and even about the origin, so correlation = convolution
        for (s, f) in self.spec.iter_mut().zip(self.filter.iter()) {
            *s *= f.re;
        }
        let mut out = Array2::zeros(binned.dim());
        self.fft.inverse_into(&mut self.spec, &mut out);
        let mut vals: Vec<f32> = out.iter().copied().collect();
        let med = median(&mut vals);
        let mut dev: Vec<f32> = vals.iter().map(|v| (v - med).abs()).collect();
        let sigma = (1.4826 * median(&mut dev)).max(1e-12);
        out.mapv_inplace(|v| (v - med) / sigma);
        out
    }

    /// Bead candidates of `img` `(ny, nx)`, strongest first, at most `max_count`.
    pub fn detect(&mut self, img: ArrayView2<f32>, max_count: usize) -> Vec<Candidate> {
        let score = self.score_map(img);
        let (my, mx) = score.dim();
        let w = self.radius_b.ceil().max(1.0) as isize;
        let border = w;
        let mut peaks = Vec::new();
        for y in border..my as isize - border {
            for x in border..mx as isize - border {
                let v = score[[y as usize, x as usize]];
                if (v as f64) < self.threshold_sigma {
                    continue;
                }
                let mut is_max = true;
                'n: for dy in -w..=w {
                    for dx in -w..=w {
                        if (dx, dy) == (0, 0) || dx * dx + dy * dy > w * w {
                            continue;
                        }
                        let u = score[[(y + dy) as usize, (x + dx) as usize]];
                        // ties: the first in raster order wins
                        if u > v || (u == v && (dy < 0 || (dy == 0 && dx < 0))) {
                            is_max = false;
                            break 'n;
                        }
                    }
                }
                if is_max {
                    peaks.push((x as usize, y as usize, v as f64));
                }
            }
        }
        peaks.sort_by(|a, b| b.2.total_cmp(&a.2));
        peaks.truncate(max_count);
        peaks
            .into_iter()
            .map(|(x, y, s)| {
                // parabolic sub-pixel peak on the binned grid
                let px = parabolic(
                    score[[y, x - 1]] as f64,
                    score[[y, x]] as f64,
                    score[[y, x + 1]] as f64,
                );
                let py = parabolic(
                    score[[y - 1, x]] as f64,
                    score[[y, x]] as f64,
                    score[[y + 1, x]] as f64,
                );
                Candidate {
                    x: (x as f64 + px) * self.scale[0],
                    y: (y as f64 + py) * self.scale[1],
                    score: s,
                }
            })
            .collect()
    }
}

/// Zero-mean projected-sphere template of radius `r` binned pixels, centred at the origin of
/// a `(ny, nx)` periodic grid: `sqrt(r² − d²)` for `d < r`, minus the mean over `d < 2r`,
/// zero beyond `2r`; scaled to unit L2 norm.
fn sphere_template(ny: usize, nx: usize, r: f64) -> Array2<f32> {
    let outer = 2.0 * r.max(0.5);
    let d_of = |i: usize, n: usize| {
        if i < n.div_ceil(2) {
            i as f64
        } else {
            i as f64 - n as f64
        }
    };
    let mut t = Array2::<f64>::zeros((ny, nx));
    let (mut sum, mut count) = (0.0, 0usize);
    for ((y, x), v) in t.indexed_iter_mut() {
        let (dy, dx) = (d_of(y, ny), d_of(x, nx));
        let d = (dx * dx + dy * dy).sqrt();
        if d < outer {
            *v = (r * r - d * d).max(0.0).sqrt();
            sum += *v;
            count += 1;
        }
    }
    let mean = sum / count.max(1) as f64;
    let mut norm = 0.0;
    for ((y, x), v) in t.indexed_iter_mut() {
        let (dy, dx) = (d_of(y, ny), d_of(x, nx));
        if (dx * dx + dy * dy).sqrt() < outer {
            *v -= mean;
            norm += *v * *v;
        }
    }
    let norm = norm.sqrt().max(1e-300);
    t.mapv(|v| (v / norm) as f32)
}

/// Offset of the vertex of the parabola through `(−1, a)`, `(0, b)`, `(1, c)`, clamped to
/// ±0.5.
fn parabolic(a: f64, b: f64, c: f64) -> f64 {
    let den = a - 2.0 * b + c;
    if den.abs() < 1e-12 {
        0.0
    } else {
        (0.5 * (a - c) / den).clamp(-0.5, 0.5)
    }
}

/// Median of `v` (reorders it); 0 for an empty slice.
pub fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let k = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    /// Dark projected spheres of radius `r` at `centres` on a noisy flat background.
    fn synthetic(n: usize, r: f64, centres: &[[f64; 2]], sigma: f32, seed: u64) -> Array2<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Normal::new(0.0f32, sigma).unwrap();
        Array2::from_shape_fn((n, n), |(y, x)| {
            let mut v = 100.0f32;
            for c in centres {
                // 4×4 supersampled sphere thickness
                let mut t = 0.0;
                for sy in 0..4 {
                    for sx in 0..4 {
                        let dx = x as f64 + (sx as f64 + 0.5) / 4.0 - 0.5 - c[0];
                        let dy = y as f64 + (sy as f64 + 0.5) / 4.0 - 0.5 - c[1];
                        t += (r * r - dx * dx - dy * dy).max(0.0).sqrt() / 16.0;
                    }
                }
                v -= (30.0 * t / r) as f32;
            }
            v + noise.sample(&mut rng)
        })
    }

    #[test]
    fn finds_beads_within_a_binned_pixel() {
        let centres = [[40.3, 50.7], [150.6, 60.2], [90.0, 170.45], [200.25, 200.8]];
        let img = synthetic(256, 6.0, &centres, 5.0, 1);
        for bin in [1, 2] {
            let mut det = Detector::new(256, 256, bin, 12.0, 6.0);
            let c = det.detect(img.view(), 20);
            assert!(c.len() >= 4, "bin {bin}: {c:?}");
            for t in &centres {
                let best = c
                    .iter()
                    .map(|k| (k.x - t[0]).hypot(k.y - t[1]))
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    best < 0.5 * bin as f64 + 0.3,
                    "bin {bin}: bead {t:?} found {best} px away; {c:?}"
                );
            }
            // the four beads are the four strongest candidates
            for k in &c[..4] {
                assert!(k.score > 15.0, "{c:?}");
            }
            for k in &c[4..] {
                assert!(k.score < 0.5 * c[3].score, "{c:?}");
            }
        }
    }

    #[test]
    fn pure_noise_has_no_strong_candidate() {
        let img = synthetic(256, 6.0, &[], 5.0, 2);
        let mut det = Detector::new(256, 256, 2, 12.0, 6.0);
        assert!(det.detect(img.view(), 20).is_empty());
    }
}
