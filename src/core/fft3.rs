//! Planned real-to-complex 3D FFT on volumes `[z, y, x]`, and Fourier-space helpers on its
//! half spectrum.
//!
//! Layout (DESIGN §2): the forward transform of a real volume `(nz, ny, nx)` is the half
//! spectrum `(nz, ny, nx/2 + 1)` (real-to-complex along x), DC at index 0, unnormalised;
//! the inverse divides by `nz·ny·nx`. Index `k` along z or y is frequency
//! `fftfreq(n)[k]` cycles/voxel, index `kx` along x is `kx / nx`.
//!
//! A plan is made once per shape ([`Fft3::new`]) and reused: it holds the 1D plans; each
//! call takes per-thread scratch from rayon's `for_each_init`, so nothing is planned in a
//! hot loop. The three passes run in parallel over rows, planes and lanes.

use ndarray::parallel::prelude::*;
use ndarray::{Array3, ArrayView3, Axis};
use num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

use super::fourier::fftfreq;

/// A real-to-complex 3D FFT plan for one volume shape (module docs for the layout).
#[derive(Clone)]
pub struct Fft3 {
    nz: usize,
    ny: usize,
    nx: usize,
    r2c: Arc<dyn RealToComplex<f32>>,
    c2r: Arc<dyn ComplexToReal<f32>>,
    fy: Arc<dyn Fft<f32>>,
    iy: Arc<dyn Fft<f32>>,
    fz: Arc<dyn Fft<f32>>,
    iz: Arc<dyn Fft<f32>>,
}

impl Fft3 {
    /// Plan for volumes of `(nz, ny, nx)` voxels (each ≥ 1).
    pub fn new(nz: usize, ny: usize, nx: usize) -> Self {
        assert!(nz > 0 && ny > 0 && nx > 0, "Fft3: empty shape");
        let mut rp = RealFftPlanner::<f32>::new();
        let mut cp = FftPlanner::<f32>::new();
        Fft3 {
            nz,
            ny,
            nx,
            r2c: rp.plan_fft_forward(nx),
            c2r: rp.plan_fft_inverse(nx),
            fy: cp.plan_fft_forward(ny),
            iy: cp.plan_fft_inverse(ny),
            fz: cp.plan_fft_forward(nz),
            iz: cp.plan_fft_inverse(nz),
        }
    }

    /// Real shape `(nz, ny, nx)`.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.nz, self.ny, self.nx)
    }

    /// Half-spectrum shape `(nz, ny, nx/2 + 1)`.
    pub fn half_shape(&self) -> (usize, usize, usize) {
        (self.nz, self.ny, self.nx / 2 + 1)
    }

    /// A zeroed half spectrum of this plan's shape.
    pub fn spectrum_zeros(&self) -> Array3<Complex32> {
        Array3::zeros(self.half_shape())
    }

    /// Forward transform of `vol` `(nz, ny, nx)` into `out` `(nz, ny, nx/2 + 1)`.
    ///
    /// Panics when the shapes do not match the plan.
    pub fn forward_into(&self, vol: ArrayView3<f32>, out: &mut Array3<Complex32>) {
        assert_eq!(vol.dim(), self.shape(), "Fft3::forward_into: volume shape");
        assert_eq!(
            out.dim(),
            self.half_shape(),
            "Fft3::forward_into: spectrum shape"
        );
        let nh = self.nx / 2 + 1;
        // x: real-to-complex along every row.
        let r2c = &self.r2c;
        out.outer_iter_mut()
            .into_par_iter()
            .zip(vol.outer_iter().into_par_iter())
            .for_each_init(
                || (r2c.make_input_vec(), r2c.make_scratch_vec()),
                |(inp, scratch), (mut oplane, iplane)| {
                    for (mut orow, irow) in oplane.outer_iter_mut().zip(iplane.outer_iter()) {
                        for (d, s) in inp.iter_mut().zip(irow.iter()) {
                            *d = *s;
                        }
                        let o = orow.as_slice_mut().expect("contiguous spectrum row");
                        debug_assert_eq!(o.len(), nh);
                        // Lengths match the plan, so this cannot fail.
                        let _ = r2c.process_with_scratch(inp, o, scratch);
                    }
                },
            );
        self.complex_pass(out, Axis(1), &self.fy);
        self.complex_pass(out, Axis(0), &self.fz);
    }

    /// Forward transform of `vol` into a new half spectrum.
    pub fn forward(&self, vol: ArrayView3<f32>) -> Array3<Complex32> {
        let mut out = self.spectrum_zeros();
        self.forward_into(vol, &mut out);
        out
    }

    /// Inverse transform of the half spectrum `spec` into `out` `(nz, ny, nx)`, divided by
    /// `nz·ny·nx`. `spec` is used as work space (its content is destroyed). The imaginary
    /// parts of the `kx = 0` and Nyquist planes that a real volume cannot have are dropped.
    pub fn inverse_into(&self, spec: &mut Array3<Complex32>, out: &mut Array3<f32>) {
        assert_eq!(
            spec.dim(),
            self.half_shape(),
            "Fft3::inverse_into: spectrum shape"
        );
        assert_eq!(out.dim(), self.shape(), "Fft3::inverse_into: volume shape");
        self.complex_pass(spec, Axis(0), &self.iz);
        self.complex_pass(spec, Axis(1), &self.iy);
        let c2r = &self.c2r;
        let nx = self.nx;
        let scale = 1.0 / (self.nz * self.ny * self.nx) as f32;
        out.outer_iter_mut()
            .into_par_iter()
            .zip(spec.outer_iter_mut().into_par_iter())
            .for_each_init(
                || (c2r.make_input_vec(), c2r.make_scratch_vec()),
                |(inp, scratch), (mut oplane, splane)| {
                    for (mut orow, srow) in oplane.outer_iter_mut().zip(splane.outer_iter()) {
                        for (d, s) in inp.iter_mut().zip(srow.iter()) {
                            *d = *s;
                        }
                        inp[0].im = 0.0;
                        if nx % 2 == 0 {
                            if let Some(last) = inp.last_mut() {
                                last.im = 0.0;
                            }
                        }
                        let o = orow.as_slice_mut().expect("contiguous volume row");
                        let _ = c2r.process_with_scratch(inp, o, scratch);
                        o.iter_mut().for_each(|v| *v *= scale);
                    }
                },
            );
    }

    /// Inverse transform of `spec` into a new volume (see [`Fft3::inverse_into`]).
    pub fn inverse(&self, mut spec: Array3<Complex32>) -> Array3<f32> {
        let mut out = Array3::zeros(self.shape());
        self.inverse_into(&mut spec, &mut out);
        out
    }

    /// In-place complex FFT along `axis` (0 = z, 1 = y) of the half spectrum.
    fn complex_pass(&self, spec: &mut Array3<Complex32>, axis: Axis, fft: &Arc<dyn Fft<f32>>) {
        let n = spec.len_of(axis);
        if n == 1 {
            return;
        }
        // Lanes along z are visited per y index, lanes along y per z index: the outer
        // parallel axis is the other one of the two.
        let outer = if axis == Axis(0) { Axis(1) } else { Axis(0) };
        spec.axis_iter_mut(outer).into_par_iter().for_each_init(
            || {
                (
                    vec![Complex32::new(0.0, 0.0); n],
                    vec![Complex32::new(0.0, 0.0); fft.get_inplace_scratch_len()],
                )
            },
            |(buf, scratch), mut plane| {
                // `plane` is 2D (lane axis, kx): transform every column.
                for mut lane in plane.lanes_mut(Axis(0)) {
                    for (b, v) in buf.iter_mut().zip(lane.iter()) {
                        *b = *v;
                    }
                    fft.process_with_scratch(buf, scratch);
                    for (v, b) in lane.iter_mut().zip(buf.iter()) {
                        *v = *b;
                    }
                }
            },
        );
    }
}

/// Frequencies of the half-spectrum grid of a `(nz, ny, nx)` volume, cycles/voxel:
/// `(fz, fy, fx)` with `fz = fftfreq(nz)`, `fy = fftfreq(ny)`, `fx[k] = k / nx` for
/// `k ≤ nx/2`.
pub fn half_grid_freqs(nz: usize, ny: usize, nx: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let fx = (0..nx / 2 + 1).map(|k| k as f32 / nx as f32).collect();
    (fftfreq(nz), fftfreq(ny), fx)
}

/// Multiply the half spectrum `spec` of a `(nz, ny, nx)` volume by the phase ramp that
/// translates the volume content by `(dz, dy, dx)` voxels (positive = towards higher index):
/// `F(k) · exp(−2πi (k·d))`.
pub fn shift_spectrum_3d(spec: &mut Array3<Complex32>, nx: usize, d: [f64; 3]) {
    let (nz, ny, _) = spec.dim();
    let (fz, fy, fx) = half_grid_freqs(nz, ny, nx);
    let tau = -2.0 * std::f64::consts::PI;
    let px: Vec<Complex32> = fx
        .iter()
        .map(|f| Complex32::from_polar(1.0, (tau * *f as f64 * d[2]) as f32))
        .collect();
    spec.outer_iter_mut()
        .into_par_iter()
        .enumerate()
        .for_each(|(iz, mut plane)| {
            for (iy, mut row) in plane.outer_iter_mut().enumerate() {
                let pzy = Complex32::from_polar(
                    1.0,
                    (tau * (fz[iz] as f64 * d[0] + fy[iy] as f64 * d[1])) as f32,
                );
                for (v, p) in row.iter_mut().zip(&px) {
                    *v *= pzy * p;
                }
            }
        });
}

/// Radius of every half-spectrum sample of a cubic `n³` volume in Fourier voxels
/// (`|k|·n`, so shell `s` holds radii in `[s, s + 1)`), shape `(n, n, n/2 + 1)`.
pub fn half_grid_radius(n: usize) -> Array3<f32> {
    let (fz, fy, fx) = half_grid_freqs(n, n, n);
    let nf = n as f32;
    Array3::from_shape_fn((n, n, n / 2 + 1), |(z, y, x)| {
        (fz[z] * fz[z] + fy[y] * fy[y] + fx[x] * fx[x]).sqrt() * nf
    })
}

/// Source index in an `n`-long FFT axis of index `j` of an `m`-long one (same frequency in
/// Fourier voxels: `fftfreq(m)[j]·m`), for `m ≤ n`.
fn crop_index(j: usize, m: usize, n: usize) -> usize {
    if j < m.div_ceil(2) {
        j
    } else {
        n - (m - j)
    }
}

/// Fourier crop of a half-grid array of an `n³` volume to the half grid of an `m³` one
/// (`m ≤ n`): the samples of the `m` grid's frequencies (in Fourier voxels), nothing
/// rescaled. Use [`fourier_crop`] for volumes.
pub fn crop_half_grid<T: Copy + Default>(a: &Array3<T>, n: usize, m: usize) -> Array3<T> {
    assert!(m <= n, "crop_half_grid: {m} > {n}");
    assert_eq!(a.dim(), (n, n, n / 2 + 1), "crop_half_grid: shape");
    Array3::from_shape_fn((m, m, m / 2 + 1), |(z, y, x)| {
        a[[crop_index(z, m, n), crop_index(y, m, n), x]]
    })
}

/// Fourier crop of a real `n³` volume to `m³` (binning by `n/m` without aliasing): the
/// spectrum's samples up to the new Nyquist, scaled by `m³/n³` so that real-space values
/// keep their scale.
pub fn fourier_crop(vol: ArrayView3<f32>, m: usize) -> Array3<f32> {
    let n = vol.dim().0;
    assert_eq!(vol.dim(), (n, n, n), "fourier_crop: cubic volumes only");
    if m == n {
        return vol.to_owned();
    }
    let spec = Fft3::new(n, n, n).forward(vol);
    let scale = (m as f32 / n as f32).powi(3);
    let c = crop_half_grid(&spec, n, m).mapv(|v| v * scale);
    Fft3::new(m, m, m).inverse(c)
}

/// Weights of the half-grid samples of an `nx`-wide volume in sums over the full spectrum:
/// 1 for `kx = 0` (and `kx = nx/2` when `nx` is even), 2 for the others (their Hermitian
/// partners are not stored).
pub fn half_grid_x_weights(nx: usize) -> Vec<f32> {
    (0..nx / 2 + 1)
        .map(|k| {
            if k == 0 || (nx % 2 == 0 && k == nx / 2) {
                1.0
            } else {
                2.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recon::fsc::fft3;

    fn ramp_volume(nz: usize, ny: usize, nx: usize) -> Array3<f32> {
        Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
            ((z * 7 + y * 3 + x) as f32 * 0.37).sin() + 0.1 * x as f32
        })
    }

    #[test]
    fn forward_matches_the_full_complex_dft_and_inverse_round_trips() {
        for &(nz, ny, nx) in &[(6, 5, 8), (7, 8, 9), (1, 4, 6), (16, 16, 16)] {
            let v = ramp_volume(nz, ny, nx);
            let plan = Fft3::new(nz, ny, nx);
            let half = plan.forward(v.view());
            let full = fft3(v.view());
            for ((z, y, x), c) in half.indexed_iter() {
                let d = (*c - full[[z, y, x]]).norm();
                assert!(
                    d < 1e-3 * (1.0 + full[[z, y, x]].norm()),
                    "{nz}x{ny}x{nx} at {z},{y},{x}"
                );
            }
            let back = plan.inverse(half);
            for (a, b) in back.iter().zip(v.iter()) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "round trip {nz}x{ny}x{nx}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn integer_shift_moves_a_point() {
        let n = 12;
        let mut v = Array3::<f32>::zeros((n, n, n));
        v[[6, 6, 6]] = 1.0;
        let plan = Fft3::new(n, n, n);
        let mut s = plan.forward(v.view());
        shift_spectrum_3d(&mut s, n, [2.0, -1.0, 3.0]);
        let w = plan.inverse(s);
        assert!((w[[8, 5, 9]] - 1.0).abs() < 1e-4);
        assert!(w.iter().map(|x| x.abs()).sum::<f32>() < 1.0 + 1e-3);
    }

    #[test]
    fn fourier_crop_keeps_smooth_volumes_and_weights_sum_parseval() {
        let n = 16;
        let v = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            let t = std::f32::consts::TAU / n as f32;
            (t * x as f32).cos() + 0.5 * (t * 2.0 * y as f32).sin() + (t * z as f32).cos()
        });
        let c = fourier_crop(v.view(), 8);
        // Low frequencies survive unchanged at the coarser sampling.
        for z in 0..8 {
            for y in 0..8 {
                for x in 0..8 {
                    assert!((c[[z, y, x]] - v[[2 * z, 2 * y, 2 * x]]).abs() < 1e-4);
                }
            }
        }
        let spec = Fft3::new(n, n, n).forward(v.view());
        let w = half_grid_x_weights(n);
        let e: f32 = spec
            .indexed_iter()
            .map(|((_, _, x), s)| w[x] * s.norm_sqr())
            .sum();
        let r: f32 = v.iter().map(|a| a * a).sum::<f32>() * (n * n * n) as f32;
        assert!((e - r).abs() < 1e-3 * r);
    }

    #[test]
    fn radius_grid_counts_shells() {
        let r = half_grid_radius(8);
        assert_eq!(r.dim(), (8, 8, 5));
        assert_eq!(r[[0, 0, 0]], 0.0);
        assert!((r[[0, 0, 4]] - 4.0).abs() < 1e-6);
        assert!((r[[7, 0, 0]] - 1.0).abs() < 1e-6);
    }
}
