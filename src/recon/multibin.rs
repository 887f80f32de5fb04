//! Several binnings from one FFT per image: Fourier cropping of one spectrum to each
//! requested size.
//!
//! Binning by `b` keeps the frequencies `|k| < n/(2b)` of the `n`-point spectrum (the
//! binned image's own frequencies), scaled by `(n/b)²/n²` so that pixel values are averages;
//! everything above the binned Nyquist is dropped, so nothing aliases. For one factor this
//! is exactly [`crate::core::fourier::FourierBinner`]; here the forward transform is shared by
//! all factors (`1 + Σ_b 1/b²` transforms of the full size instead of `2·|bins|`).

use crate::core::fourier::Fft2;
use ndarray::{Array2, ArrayView2};
use num_complex::Complex32;

/// Planned Fourier cropping of `(ny, nx)` images to `(ny/b, nx/b)` for each `b` of a list.
/// Plans and buffers are made once; clone one per thread.
#[derive(Clone)]
pub struct MultiBinner {
    big: Fft2,
    spec: Array2<Complex32>,
    /// Per factor > 1: its plan and cropped-spectrum buffer (None for factor 1).
    small: Vec<Option<(Fft2, Array2<Complex32>)>>,
}

impl MultiBinner {
    /// Plan for images of shape `(ny, nx)` and the factors `bins` (each ≥ 1, `ny/b, nx/b ≥ 1`;
    /// validated by the callers).
    pub fn new(ny: usize, nx: usize, bins: &[usize]) -> Self {
        let small = bins
            .iter()
            .map(|&b| {
                (b > 1).then(|| {
                    let (my, mx) = (ny / b, nx / b);
                    (Fft2::new(my, mx), Array2::zeros((my, mx / 2 + 1)))
                })
            })
            .collect();
        MultiBinner {
            big: Fft2::new(ny, nx),
            spec: Array2::zeros((ny, nx / 2 + 1)),
            small,
        }
    }

    /// Bin one image `(ny, nx)` by every planned factor, in the order given to [`Self::new`]:
    /// factor 1 is a copy; each other factor is the inverse FFT of the cropped spectrum of one
    /// shared forward FFT.
    pub fn bin_all(&mut self, img: ArrayView2<f32>) -> Vec<Array2<f32>> {
        let (ny, nx) = self.big.shape();
        if self.small.iter().any(Option::is_some) {
            self.big.forward_into(img, &mut self.spec);
        }
        let spec = &self.spec;
        self.small
            .iter_mut()
            .map(|s| match s {
                None => img.to_owned(),
                Some((plan, cropped)) => {
                    let (my, mx) = plan.shape();
                    crop_spectrum(spec, (ny, nx), (my, mx), cropped);
                    let mut out = Array2::zeros((my, mx));
                    plan.inverse_into(cropped, &mut out);
                    out
                }
            })
            .collect()
    }
}

/// Copy the frequencies of an `(my, mx)` grid out of the half-spectrum `spec` of an
/// `(ny, nx)` image into `cropped` `(my, mx/2+1)`, scaled by `my·mx/(ny·nx)` (values stay
/// averages). Row `ky` of the small grid is the signed frequency `k` (`ky` below `⌈my/2⌉`,
/// else `ky − my`), found at row `k mod ny` of the big grid; columns are the same `kx`.
fn crop_spectrum(
    spec: &Array2<Complex32>,
    (ny, nx): (usize, usize),
    (my, mx): (usize, usize),
    cropped: &mut Array2<Complex32>,
) {
    let scale = (my * mx) as f32 / (ny * nx) as f32;
    for ky in 0..my {
        let sy = if ky < my.div_ceil(2) {
            ky
        } else {
            ny + ky - my
        };
        for kx in 0..mx / 2 + 1 {
            cropped[[ky, kx]] = spec[[sy, kx]] * scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fourier::FourierBinner;
    use std::f32::consts::PI;

    #[test]
    fn equals_one_binner_per_factor() {
        let (ny, nx) = (48, 60);
        let img = Array2::from_shape_fn((ny, nx), |(y, x)| {
            ((x * 7 + y * 13) % 17) as f32 * 0.1 + (0.3 * x as f32).sin()
        });
        let bins = [1, 2, 3, 4];
        let all = MultiBinner::new(ny, nx, &bins).bin_all(img.view());
        for (b, got) in bins.iter().zip(&all) {
            let want = FourierBinner::new(ny, nx, *b).bin(img.view());
            assert_eq!(got.dim(), want.dim());
            let err = got
                .iter()
                .zip(want.iter())
                .map(|(a, w)| (a - w).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-6, "bin {b}: {err}");
        }
    }

    /// A wave above the binned Nyquist vanishes instead of folding back to a low frequency;
    /// one below it survives with its amplitude.
    #[test]
    fn no_aliasing() {
        let n = 64;
        // 24 cycles per 64 px: above bin 2's Nyquist (16 cycles); a 2×2 average would fold it
        // to 8 cycles with amplitude cos(π·24/64)
        let wave = |k: f32| {
            Array2::from_shape_fn((n, n), |(_, x)| (2.0 * PI * k * x as f32 / n as f32).cos())
        };
        let out = MultiBinner::new(n, n, &[2, 4]).bin_all(wave(24.0).view());
        for o in &out {
            let m = o.iter().map(|v| v.abs()).fold(0.0, f32::max);
            assert!(m < 1e-5, "aliased amplitude {m}");
        }
        let out = MultiBinner::new(n, n, &[2]).bin_all(wave(6.0).view());
        let want =
            Array2::from_shape_fn((32, 32), |(_, x)| (2.0 * PI * 6.0 * x as f32 / 32.0).cos());
        let err = out[0]
            .iter()
            .zip(want.iter())
            .map(|(a, w)| (a - w).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-5, "{err}");
    }
}
