//! Fourier helpers: frequency grids, planned 2D real FFTs with reusable scratch, Fourier
//! cropping (binning without aliasing) and Fourier-space shifts.
//!
//! Conventions (DESIGN §2): real-to-complex along x (the fastest axis); DC at index 0;
//! frequencies in cycles per pixel in `[-0.5, 0.5)`; forward transforms unnormalised, inverse
//! transforms divide by N.

use ndarray::{Array2, ArrayView2, Axis};
use num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// Frequencies (cycles/pixel) of a full FFT of length `n`: `0, 1/n, …, -1/n` (numpy `fftfreq`).
pub fn fftfreq(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let k = if i < n.div_ceil(2) {
                i as f32
            } else {
                i as f32 - n as f32
            };
            k / n as f32
        })
        .collect()
}

/// Frequencies (cycles/pixel) of a real FFT of length `n`: `0 .. n/2` over `n`
/// (numpy `rfftfreq`), `n/2 + 1` values.
pub fn rfftfreq(n: usize) -> Vec<f32> {
    (0..=n / 2).map(|i| i as f32 / n as f32).collect()
}

/// A planned 2D real FFT for images of shape `(ny, nx)`, `[y, x]`.
///
/// The half-spectrum has shape `(ny, nx/2 + 1)`, index `[ky, kx]` with `ky` in FFT order.
/// Plans are shared (`Arc`); scratch buffers belong to each value, so clone one per thread.
#[derive(Clone)]
pub struct Fft2 {
    ny: usize,
    nx: usize,
    r2c: Arc<dyn RealToComplex<f32>>,
    c2r: Arc<dyn ComplexToReal<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
    row_in: Vec<f32>,
    row_out: Vec<Complex32>,
    col: Vec<Complex32>,
    scratch: Vec<Complex32>,
}

impl Fft2 {
    /// Plan transforms for `(ny, nx)` images.
    pub fn new(ny: usize, nx: usize) -> Self {
        let mut rp = RealFftPlanner::<f32>::new();
        let r2c = rp.plan_fft_forward(nx);
        let c2r = rp.plan_fft_inverse(nx);
        let mut cp = FftPlanner::<f32>::new();
        let col_fwd = cp.plan_fft_forward(ny);
        let col_inv = cp.plan_fft_inverse(ny);
        let scratch_len = r2c
            .get_scratch_len()
            .max(c2r.get_scratch_len())
            .max(col_fwd.get_inplace_scratch_len())
            .max(col_inv.get_inplace_scratch_len());
        Fft2 {
            ny,
            nx,
            row_in: vec![0.0; nx],
            row_out: r2c.make_output_vec(),
            col: vec![Complex32::new(0.0, 0.0); ny],
            scratch: vec![Complex32::new(0.0, 0.0); scratch_len],
            r2c,
            c2r,
            col_fwd,
            col_inv,
        }
    }

    /// Image shape `(ny, nx)` this plan is for.
    pub fn shape(&self) -> (usize, usize) {
        (self.ny, self.nx)
    }

    /// Forward transform of `img` `(ny, nx)` into `out` `(ny, nx/2+1)`, unnormalised.
    pub fn forward_into(&mut self, img: ArrayView2<f32>, out: &mut Array2<Complex32>) {
        assert_eq!(img.dim(), (self.ny, self.nx), "Fft2::forward: image shape");
        assert_eq!(
            out.dim(),
            (self.ny, self.nx / 2 + 1),
            "Fft2::forward: output shape"
        );
        for (y, row) in img.axis_iter(Axis(0)).enumerate() {
            for (d, s) in self.row_in.iter_mut().zip(row.iter()) {
                *d = *s;
            }
            self.r2c
                .process_with_scratch(&mut self.row_in, &mut self.row_out, &mut self.scratch)
                .expect("r2c lengths");
            for (x, v) in self.row_out.iter().enumerate() {
                out[[y, x]] = *v;
            }
        }
        for x in 0..self.nx / 2 + 1 {
            for y in 0..self.ny {
                self.col[y] = out[[y, x]];
            }
            self.col_fwd
                .process_with_scratch(&mut self.col, &mut self.scratch);
            for y in 0..self.ny {
                out[[y, x]] = self.col[y];
            }
        }
    }

    /// Forward transform, allocating the output.
    pub fn forward(&mut self, img: ArrayView2<f32>) -> Array2<Complex32> {
        let mut out = Array2::zeros((self.ny, self.nx / 2 + 1));
        self.forward_into(img, &mut out);
        out
    }

    /// Inverse transform of `spec` `(ny, nx/2+1)` (consumed as scratch) into `img` `(ny, nx)`,
    /// divided by `ny·nx`.
    pub fn inverse_into(&mut self, spec: &mut Array2<Complex32>, img: &mut Array2<f32>) {
        assert_eq!(
            spec.dim(),
            (self.ny, self.nx / 2 + 1),
            "Fft2::inverse: spectrum shape"
        );
        assert_eq!(img.dim(), (self.ny, self.nx), "Fft2::inverse: image shape");
        for x in 0..self.nx / 2 + 1 {
            for y in 0..self.ny {
                self.col[y] = spec[[y, x]];
            }
            self.col_inv
                .process_with_scratch(&mut self.col, &mut self.scratch);
            for y in 0..self.ny {
                spec[[y, x]] = self.col[y];
            }
        }
        let norm = 1.0 / (self.nx * self.ny) as f32;
        let last = self.nx / 2;
        for y in 0..self.ny {
            for x in 0..=last {
                self.row_out[x] = spec[[y, x]];
            }
            // a real signal has real DC and (even n) Nyquist terms
            self.row_out[0].im = 0.0;
            if self.nx % 2 == 0 {
                self.row_out[last].im = 0.0;
            }
            self.c2r
                .process_with_scratch(&mut self.row_out, &mut self.row_in, &mut self.scratch)
                .expect("c2r lengths");
            for x in 0..self.nx {
                img[[y, x]] = self.row_in[x] * norm;
            }
        }
    }

    /// Inverse transform, allocating the output.
    pub fn inverse(&mut self, mut spec: Array2<Complex32>) -> Array2<f32> {
        let mut img = Array2::zeros((self.ny, self.nx));
        self.inverse_into(&mut spec, &mut img);
        img
    }
}

/// Multiply a half-spectrum `(ny, nx/2+1)` of an `(ny, nx)` image by `f(fy, fx)` where
/// `fy, fx` are in cycles/pixel.
pub fn apply_filter_2d<F>(spec: &mut Array2<Complex32>, nx: usize, f: F)
where
    F: Fn(f32, f32) -> f32,
{
    let ny = spec.dim().0;
    let fy = fftfreq(ny);
    let fx = rfftfreq(nx);
    for ((y, x), v) in spec.indexed_iter_mut() {
        *v *= f(fy[y], fx[x]);
    }
}

/// Planned Fourier cropping of `(ny, nx)` images to `(ny/bin, nx/bin)`: keeps frequencies
/// below the new Nyquist, so binning does not alias; the mean is preserved (values are
/// averages, not sums). Plans and buffers are made once; clone one per thread.
#[derive(Clone)]
pub struct FourierBinner {
    bin: usize,
    big: Fft2,
    small: Fft2,
    spec: Array2<Complex32>,
    cropped: Array2<Complex32>,
}

impl FourierBinner {
    /// Plan for images of shape `(ny, nx)` and binning factor `bin` (≥ 1).
    pub fn new(ny: usize, nx: usize, bin: usize) -> Self {
        let bin = bin.max(1);
        let (my, mx) = (ny / bin, nx / bin);
        FourierBinner {
            bin,
            big: Fft2::new(ny, nx),
            small: Fft2::new(my, mx),
            spec: Array2::zeros((ny, nx / 2 + 1)),
            cropped: Array2::zeros((my, mx / 2 + 1)),
        }
    }

    /// Bin one image `(ny, nx)` (the planned shape) to `(ny/bin, nx/bin)`.
    pub fn bin(&mut self, img: ArrayView2<f32>) -> Array2<f32> {
        if self.bin == 1 {
            return img.to_owned();
        }
        let (ny, nx) = self.big.shape();
        let (my, mx) = self.small.shape();
        self.big.forward_into(img, &mut self.spec);
        let scale = (my * mx) as f32 / (ny * nx) as f32;
        for ky in 0..my {
            // signed frequency index in the small grid, mapped into the big grid
            let k = if ky < my.div_ceil(2) {
                ky as isize
            } else {
                ky as isize - my as isize
            };
            let sy = if k >= 0 {
                k as usize
            } else {
                (ny as isize + k) as usize
            };
            for kx in 0..mx / 2 + 1 {
                self.cropped[[ky, kx]] = self.spec[[sy, kx]] * scale;
            }
        }
        let mut out = Array2::zeros((my, mx));
        self.small.inverse_into(&mut self.cropped, &mut out);
        out
    }
}

/// Fourier-crop one image `(ny, nx)` to `(ny/bin, nx/bin)` (see [`FourierBinner`], which
/// plans once for many images).
pub fn fourier_bin_2d(img: ArrayView2<f32>, bin: usize) -> Array2<f32> {
    let (ny, nx) = img.dim();
    FourierBinner::new(ny, nx, bin).bin(img)
}

/// Shift an image by `(dy, dx)` pixels (content moves to +dx, +dy) with a Fourier phase ramp;
/// periodic boundary.
pub fn fourier_shift_2d(img: ArrayView2<f32>, dy: f64, dx: f64, plan: &mut Fft2) -> Array2<f32> {
    let (_, nx) = img.dim();
    let mut spec = plan.forward(img);
    shift_spectrum(&mut spec, nx, dy, dx);
    plan.inverse(spec)
}

/// Multiply the half-spectrum `(ny, nx/2+1)` of an `(ny, nx)` image by the phase ramp that
/// moves its content by `(dy, dx)` pixels: `exp(−2πi(fy·dy + fx·dx))`, made of one ramp per
/// axis (computed in f64), so the cost is one complex product per coefficient.
pub fn shift_spectrum(spec: &mut Array2<Complex32>, nx: usize, dy: f64, dx: f64) {
    let ny = spec.dim().0;
    let ramp = |f: Vec<f32>, d: f64| -> Vec<Complex32> {
        f.into_iter()
            .map(|v| {
                let (s, c) = (-2.0 * std::f64::consts::PI * v as f64 * d).sin_cos();
                Complex32::new(c as f32, s as f32)
            })
            .collect()
    };
    let (ry, rx) = (ramp(fftfreq(ny), dy), ramp(rfftfreq(nx), dx));
    for (row, &r) in spec.axis_iter_mut(Axis(0)).zip(&ry) {
        for (v, &c) in row.into_iter().zip(&rx) {
            *v *= r * c;
        }
    }
}

/// Cosine edge ramp for an axis of `n` samples: weight `0.5·(1 − cos(π·(d + 0.5)/m))` at
/// distance `d < m` from either end, 1 inside (`m` is clamped to `1..=n/2`). Used for image
/// edge tapers and correlation windows.
pub fn cosine_edge_ramp(n: usize, m: usize) -> Vec<f32> {
    let m = m.clamp(1, (n / 2).max(1));
    (0..n)
        .map(|i| {
            let d = i.min(n - 1 - i);
            if d >= m {
                1.0
            } else {
                let t = (d as f64 + 0.5) / m as f64;
                (0.5 * (1.0 - (std::f64::consts::PI * t).cos())) as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn freq_grids() {
        assert_eq!(fftfreq(4), vec![0.0, 0.25, -0.5, -0.25]);
        assert_eq!(fftfreq(5)[2], 0.4);
        assert_eq!(fftfreq(5)[3], -0.4);
        assert_eq!(rfftfreq(4), vec![0.0, 0.25, 0.5]);
    }

    #[test]
    fn fft2_round_trip() {
        for &(ny, nx) in &[(8usize, 8usize), (7, 10), (16, 9)] {
            let img = Array2::from_shape_fn((ny, nx), |(y, x)| ((y * 31 + x * 7) % 13) as f32);
            let mut p = Fft2::new(ny, nx);
            let spec = p.forward(img.view());
            // DC equals the sum
            let s: f32 = img.sum();
            assert!((spec[[0, 0]].re - s).abs() < 1e-3);
            let back = p.inverse(spec);
            for (a, b) in img.iter().zip(back.iter()) {
                assert!((a - b).abs() < 1e-4, "{ny}x{nx}");
            }
        }
    }

    #[test]
    fn shift_moves_content() {
        let mut img = Array2::<f32>::zeros((16, 16));
        img[[4, 5]] = 1.0;
        let mut p = Fft2::new(16, 16);
        let s = fourier_shift_2d(img.view(), 2.0, 3.0, &mut p);
        assert!((s[[6, 8]] - 1.0).abs() < 1e-4);
    }

    #[test]
    fn binning_keeps_mean_and_low_frequencies() {
        let img = Array2::from_shape_fn((32, 32), |(y, x)| {
            1.0 + (2.0 * std::f32::consts::PI * x as f32 / 32.0).cos() + 0.0 * y as f32
        });
        let b = fourier_bin_2d(img.view(), 2);
        assert_eq!(b.dim(), (16, 16));
        assert!((b.mean().unwrap() - 1.0).abs() < 1e-5);
        assert!((b[[0, 0]] - 2.0).abs() < 1e-4);
    }
}
