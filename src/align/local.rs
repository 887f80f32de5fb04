//! Patch measurements between each tilt and its leave-one-out reprojection: the local shift
//! of each patch, whose scatter is the per-tilt residual of the fiducial-free alignment (and
//! the input a local, beam-induced-deformation model would fit; that model is not done yet).
//!
//! Patches: a `grid × grid` lattice of square patches of side `2·n/(grid+1)` (50 % overlap)
//! over the working image `(ny, nx)`; a patch is used when the footprint weight of the
//! reprojection is ≥ 0.5 over most of it (the slab covers it) and its correlation peak is
//! significant.

use super::xcorr::{edge_window, weighted_zero_mean, Bandpass, Correlator};
use ndarray::{s, Array2, ArrayView2};

/// Local shifts of one tilt.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchShifts {
    /// Per used patch: centre `(x, y)` and shift `(dx, dy)`, working pixels.
    pub patches: Vec<([f64; 2], [f64; 2])>,
    /// RMS distance of the patch shifts from their mean, working pixels (NaN when fewer
    /// than 2 patches were usable).
    pub scatter_px: f64,
}

/// Planned patch correlator for `(ny, nx)` working images.
#[derive(Clone)]
pub struct PatchMeter {
    grid: usize,
    side: usize,
    corr: Correlator,
    window: Array2<f32>,
    min_significance: f64,
}

impl PatchMeter {
    /// Plan for `(ny, nx)` images, a `grid × grid` lattice (≥ 2), band-pass `bp` and a
    /// minimum peak significance for a patch to count.
    pub fn new(ny: usize, nx: usize, grid: usize, bp: Bandpass, min_significance: f64) -> Self {
        let grid = grid.max(2);
        let side = (2 * nx.min(ny) / (grid + 1)).max(8);
        PatchMeter {
            grid,
            side,
            corr: Correlator::new(side, side, bp),
            window: edge_window(side, side, 0.2),
            min_significance,
        }
    }

    /// Measure the patch shifts of `image` against `reference` (both `(ny, nx)`, already
    /// masked and zero-mean), where `weight` is the footprint weight of the reference.
    /// Search radius `max_shift` working pixels.
    pub fn measure(
        &mut self,
        image: ArrayView2<f32>,
        reference: ArrayView2<f32>,
        weight: ArrayView2<f32>,
        max_shift: f64,
    ) -> PatchShifts {
        let (ny, nx) = image.dim();
        let side = self.side;
        let mut patches = Vec::new();
        if ny < side || nx < side {
            return PatchShifts {
                patches,
                scatter_px: f64::NAN,
            };
        }
        for gy in 0..self.grid {
            for gx in 0..self.grid {
                let y0 = gy * (ny - side) / (self.grid - 1);
                let x0 = gx * (nx - side) / (self.grid - 1);
                let sl = s![y0..y0 + side, x0..x0 + side];
                let w = weight.slice(sl);
                let covered = w.iter().filter(|&&v| v >= 0.5).count();
                if covered * 10 < side * side * 8 {
                    continue;
                }
                let mut a = reference.slice(sl).to_owned();
                let mut b = image.slice(sl).to_owned();
                weighted_zero_mean(&mut a, self.window.view());
                weighted_zero_mean(&mut b, self.window.view());
                let p = self.corr.correlate(a.view(), b.view(), max_shift);
                if p.significance >= self.min_significance {
                    let c = [
                        (x0 + side / 2) as f64 - (nx / 2) as f64,
                        (y0 + side / 2) as f64 - (ny / 2) as f64,
                    ];
                    patches.push((c, [p.dx, p.dy]));
                }
            }
        }
        let scatter_px = if patches.len() < 2 {
            f64::NAN
        } else {
            let n = patches.len() as f64;
            let mx = patches.iter().map(|p| p.1[0]).sum::<f64>() / n;
            let my = patches.iter().map(|p| p.1[1]).sum::<f64>() / n;
            (patches
                .iter()
                .map(|p| (p.1[0] - mx).powi(2) + (p.1[1] - my).powi(2))
                .sum::<f64>()
                / n)
                .sqrt()
        };
        PatchShifts {
            patches,
            scatter_px,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fourier::{fourier_shift_2d, Fft2};

    fn texture(n: usize, seed: u64) -> Array2<f32> {
        let mut s = seed;
        let pts: Vec<(f32, f32)> = (0..200)
            .map(|_| {
                let mut r = || {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 40) as f32) / ((1u64 << 24) as f32) * n as f32
                };
                (r(), r())
            })
            .collect();
        Array2::from_shape_fn((n, n), |(y, x)| {
            pts.iter()
                .map(|&(cx, cy)| {
                    let r2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                    (-r2 / 8.0).exp()
                })
                .sum()
        })
    }

    #[test]
    fn uniform_shift_has_no_scatter_and_a_deformation_has_some() {
        let n = 96;
        let a = texture(n, 7);
        let mut plan = Fft2::new(n, n);
        let b = fourier_shift_2d(a.view(), 1.0, -2.0, &mut plan);
        let w = Array2::<f32>::ones((n, n));
        let bp = Bandpass {
            highpass_cycles: 2.0,
            lowpass_nyquist: 0.6,
        };
        let mut m = PatchMeter::new(n, n, 3, bp, 5.0);
        let r = m.measure(b.view(), a.view(), w.view(), 6.0);
        assert_eq!(r.patches.len(), 9);
        assert!(r.scatter_px < 0.1, "{r:?}");
        for p in &r.patches {
            assert!(
                (p.1[0] + 2.0).abs() < 0.3 && (p.1[1] - 1.0).abs() < 0.3,
                "{p:?}"
            );
        }
        // a 3 % magnification: patches 24 px from the centre move by ≈ 0.7 px
        let c = (n / 2) as f64;
        let mag = Array2::from_shape_fn((n, n), |(y, x)| {
            crate::core::interp::bilinear(
                &a.view(),
                c + (y as f64 - c) / 1.03,
                c + (x as f64 - c) / 1.03,
            )
        });
        let r = m.measure(mag.view(), a.view(), w.view(), 6.0);
        assert!(r.scatter_px > 0.5, "{r:?}");
    }
}
