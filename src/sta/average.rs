//! Fourier-space averaging of aligned particles per gold-standard half and class.
//!
//! Each particle box `p` with pose `A` and offset `t` (voxels, from the box centre) is brought
//! into the reference frame, `q(y) = p(A·y + t)` (`core::interp::rotate_volume` with `Aᵀ`,
//! `−Aᵀ·t`), transformed (`Q`), and its transfer in the reference frame
//! `c_ref(k) = c(A·k)` is evaluated exactly ([`crate::sta::weight`] with frame `A`). The sums
//!
//! `N(k) = Σ c_ref(k)·Q(k)`, `D(k) = Σ c_ref(k)²`
//!
//! are kept per (class, half) in one flat `f64` buffer so that a single
//! `Comm::allreduce_sum_f64` combines the ranks (f64 so the result does not depend on the
//! order of the sums, i.e. on the number of ranks, beyond ~1e-12). The map of a half is the
//! Wiener-like ratio `N / (D + λ(|k|))` with `λ = D̄(|k|)/SNR(|k|)` (`D̄` the shell mean of
//! `D`, `SNR` from the FSC of the previous iteration, [`shell_regulariser`]), transformed back.

use ndarray::{Array3, ArrayView3};
use num_complex::Complex32;

use crate::core::fft3::{half_grid_radius, Fft3};
use crate::core::geometry::{apply, transpose, Mat3};
use crate::core::interp::rotate_volume;

/// Bring a particle box `n³` with pose `a` and offset `shift_px` (x, y, z voxels from the
/// centre `n/2`) into the reference frame: `q(y) = p(A·y + t)`.
pub fn to_reference_frame(p: ArrayView3<f32>, a: &Mat3, shift_px: [f64; 3]) -> Array3<f32> {
    let at = transpose(a);
    let s = apply(&at, shift_px);
    rotate_volume(p, &at, [-s[0], -s[1], -s[2]])
}

/// Sums `N` and `D` of every (class, half) for `n³` boxes (module docs). Layout of the flat
/// buffer: for each class, for each half (0, 1): `Re N`, `Im N`, `D`, each `n·n·(n/2+1)`
/// values in half-grid order `[z, y, kx]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sums {
    n: usize,
    classes: usize,
    data: Vec<f64>,
}

impl Sums {
    /// Zero sums for `classes` classes of `n³` boxes.
    pub fn new(n: usize, classes: usize) -> Self {
        let len = 6 * classes * n * n * (n / 2 + 1);
        Sums {
            n,
            classes,
            data: vec![0.0; len],
        }
    }

    /// Box size.
    pub fn box_size(&self) -> usize {
        self.n
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    fn block(&self, class: usize, half: usize) -> std::ops::Range<usize> {
        assert!(
            class < self.classes && half < 2,
            "Sums: class {class} half {half}"
        );
        let h = self.n * self.n * (self.n / 2 + 1);
        let start = (class * 2 + half) * 3 * h;
        start..start + 3 * h
    }

    /// Add one particle: `spec` is the half spectrum of its reference-frame box, `transfer`
    /// its reference-frame transfer (both `(n, n, n/2+1)`).
    pub fn add(
        &mut self,
        class: usize,
        half: usize,
        spec: &Array3<Complex32>,
        transfer: &Array3<f32>,
    ) {
        let r = self.block(class, half);
        let h = r.len() / 3;
        let b = &mut self.data[r];
        let (re, rest) = b.split_at_mut(h);
        let (im, den) = rest.split_at_mut(h);
        for (i, (s, c)) in spec.iter().zip(transfer.iter()).enumerate() {
            let c = *c as f64;
            re[i] += c * s.re as f64;
            im[i] += c * s.im as f64;
            den[i] += c * c;
        }
    }

    /// The whole buffer, for a sum over ranks.
    pub fn as_mut_slice(&mut self) -> &mut [f64] {
        &mut self.data
    }

    /// The whole buffer.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// Shell means of `D` of (class, half): index = shell `⌊|k|·n⌋`, up to `n/2`.
    pub fn shell_mean_den(&self, class: usize, half: usize) -> Vec<f64> {
        let r = self.block(class, half);
        let h = r.len() / 3;
        let den = &self.data[r][2 * h..];
        let rad = half_grid_radius(self.n);
        let shells = self.n / 2 + 1;
        let (mut s, mut c) = (vec![0.0; shells], vec![0usize; shells]);
        for (d, k) in den.iter().zip(rad.iter()) {
            let k = *k as usize;
            if k < shells {
                s[k] += d;
                c[k] += 1;
            }
        }
        s.iter()
            .zip(&c)
            .map(|(s, c)| if *c > 0 { s / *c as f64 } else { 0.0 })
            .collect()
    }

    /// The map of (class, half): `N / (D + λ)` with `λ` per shell (`lambda[shell]`, shells
    /// beyond the list use its last value), back in real space `n³`.
    pub fn reconstruct(
        &self,
        class: usize,
        half: usize,
        lambda: &[f64],
        plan: &Fft3,
    ) -> Array3<f32> {
        let n = self.n;
        let r = self.block(class, half);
        let h = r.len() / 3;
        let b = &self.data[r];
        let rad = half_grid_radius(n);
        let last = lambda.last().copied().unwrap_or(0.0);
        let mut spec = Array3::<Complex32>::zeros((n, n, n / 2 + 1));
        for (i, (v, k)) in spec.iter_mut().zip(rad.iter()).enumerate() {
            let shell = *k as usize;
            if shell > n / 2 {
                continue;
            }
            let l = lambda.get(shell).copied().unwrap_or(last);
            let d = b[2 * h + i] + l;
            if d > 0.0 {
                *v = Complex32::new((b[i] / d) as f32, (b[h + i] / d) as f32);
            }
        }
        plan.inverse(spec)
    }
}

/// The regulariser `λ(shell) = D̄(shell) / SNR(shell)` of [`Sums::reconstruct`] from the
/// shell means of `D` and an FSC between half maps per shell (`None`: the first iteration,
/// `SNR = 10` everywhere). `SNR = FSC/(1 − FSC)`, clamped to `[1e-3, 1e3]`.
pub fn shell_regulariser(mean_den: &[f64], fsc: Option<&[f64]>) -> Vec<f64> {
    mean_den
        .iter()
        .enumerate()
        .map(|(s, d)| {
            let snr = match fsc {
                None => 10.0,
                Some(f) => {
                    let v = f
                        .get(s)
                        .copied()
                        .or_else(|| f.last().copied())
                        .unwrap_or(0.0);
                    let v = v.clamp(0.0, 0.999);
                    (v / (1.0 - v)).clamp(1e-3, 1e3)
                }
            };
            d / snr
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::euler_zyz_to_matrix;
    use crate::sta::align::tests::blob;

    #[test]
    fn particles_in_the_reference_frame_average_back_to_the_reference() {
        let n = 32;
        let reference = blob(n);
        let plan = Fft3::new(n, n, n);
        let ones = Array3::<f32>::ones((n, n, n / 2 + 1));
        let mut sums = Sums::new(n, 1);
        for (i, (rot, tilt, psi)) in [
            (10.0, 20.0, 30.0),
            (100.0, 60.0, -40.0),
            (-70.0, 120.0, 5.0),
        ]
        .into_iter()
        .enumerate()
        {
            let a = euler_zyz_to_matrix(rot, tilt, psi);
            let t = [0.7 * i as f64, -1.2, 0.4];
            let p = rotate_volume(reference.view(), &a, t);
            let q = to_reference_frame(p.view(), &a, t);
            sums.add(0, i % 2, &plan.forward(q.view()), &ones);
        }
        let map = sums.reconstruct(0, 0, &[0.0], &plan);
        // Two particles in half 0: their mean, close to the reference (interpolation blur).
        let num: f64 = map
            .iter()
            .zip(reference.iter())
            .map(|(a, b)| (a * b) as f64)
            .sum();
        let na: f64 = map.iter().map(|a| (a * a) as f64).sum();
        let nb: f64 = reference.iter().map(|b| (b * b) as f64).sum();
        let cc = num / (na * nb).sqrt();
        assert!(cc > 0.97, "correlation with the reference {cc}");
        let den = sums.shell_mean_den(0, 1);
        assert!((den[3] - 1.0).abs() < 1e-9, "one particle in half 1");
    }

    #[test]
    fn regulariser_follows_the_fsc() {
        let l = shell_regulariser(&[2.0, 2.0, 2.0], Some(&[0.9, 0.5, 0.0]));
        assert!((l[0] - 2.0 / 9.0).abs() < 1e-9);
        assert!((l[1] - 2.0).abs() < 1e-9);
        assert!(l[2] > 1000.0);
    }
}
