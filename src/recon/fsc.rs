//! Fourier shell correlation of two volumes (validation against a truth, half maps).
//!
//! `FSC(k) = Re Σ F₁·F₂* / sqrt(Σ|F₁|²·Σ|F₂|²)` over the Fourier samples of shell `k`. The
//! volumes `[z, y, x]` may be non-cubic: a sample `(kz, ky, kx)` has the radius
//! `r = sqrt((kz/nz)² + (ky/ny)² + (kx/nx)²)` cycles/voxel, shells are `1/n_min` wide
//! (`n_min` the smallest side), up to Nyquist (`r < 0.5`). Shell `k` covers
//! `[k, k + 1)/n_min` and is reported at its centre, in 1/Å.

use ndarray::{Array3, ArrayView3, Axis};
use num_complex::Complex32;
use rustfft::FftPlanner;

/// An FSC curve.
#[derive(Clone, Debug, PartialEq)]
pub struct Fsc {
    /// Shell centre, 1/Å.
    pub s_per_a: Vec<f64>,
    /// Correlation per shell (0 for an empty shell).
    pub fsc: Vec<f64>,
    /// Fourier samples per shell.
    pub count: Vec<usize>,
}

impl Fsc {
    /// Mean FSC over the shells whose centre lies in `[s_lo, s_hi]` (1/Å); 0 when none does.
    pub fn mean_in(&self, s_lo: f64, s_hi: f64) -> f64 {
        let v: Vec<f64> = self
            .s_per_a
            .iter()
            .zip(&self.fsc)
            .filter(|(s, _)| **s >= s_lo && **s <= s_hi)
            .map(|(_, f)| *f)
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }
}

/// The 3D DFT (unnormalised, DC at index 0) of a real volume `[z, y, x]`.
pub fn fft3(v: ArrayView3<f32>) -> Array3<Complex32> {
    let mut c = v.mapv(|x| Complex32::new(x, 0.0));
    let mut planner = FftPlanner::<f32>::new();
    for ax in 0..3 {
        let n = c.len_of(Axis(ax));
        let fft = planner.plan_fft_forward(n);
        let mut buf = vec![Complex32::new(0.0, 0.0); n];
        let mut scratch = vec![Complex32::new(0.0, 0.0); fft.get_inplace_scratch_len()];
        for mut lane in c.lanes_mut(Axis(ax)) {
            for (b, x) in buf.iter_mut().zip(lane.iter()) {
                *b = *x;
            }
            fft.process_with_scratch(&mut buf, &mut scratch);
            for (x, b) in lane.iter_mut().zip(buf.iter()) {
                *x = *b;
            }
        }
    }
    c
}

/// FSC of two equally shaped volumes `[z, y, x]` of `voxel_a` Å (module docs).
///
/// Panics when the shapes differ.
pub fn fsc(a: ArrayView3<f32>, b: ArrayView3<f32>, voxel_a: f64) -> Fsc {
    assert_eq!(a.dim(), b.dim(), "fsc: shapes differ");
    let (nz, ny, nx) = a.dim();
    let nmin = nz.min(ny).min(nx).max(1);
    let shells = nmin / 2;
    let fa = fft3(a);
    let fb = fft3(b);
    let freq = |k: usize, n: usize| {
        let k = if k < n.div_ceil(2) {
            k as f64
        } else {
            k as f64 - n as f64
        };
        k / n as f64
    };
    let (mut num, mut da, mut db) = (
        vec![0.0f64; shells],
        vec![0.0f64; shells],
        vec![0.0; shells],
    );
    let mut count = vec![0usize; shells];
    for ((z, y, x), p) in fa.indexed_iter() {
        let r = (freq(z, nz).powi(2) + freq(y, ny).powi(2) + freq(x, nx).powi(2)).sqrt();
        let k = (r * nmin as f64) as usize;
        if k >= shells {
            continue;
        }
        let q = fb[[z, y, x]];
        num[k] += (p * q.conj()).re as f64;
        da[k] += p.norm_sqr() as f64;
        db[k] += q.norm_sqr() as f64;
        count[k] += 1;
    }
    let fsc = (0..shells)
        .map(|k| {
            let d = (da[k] * db[k]).sqrt();
            if d > 0.0 {
                num[k] / d
            } else {
                0.0
            }
        })
        .collect();
    let s_per_a = (0..shells)
        .map(|k| (k as f64 + 0.5) / nmin as f64 / voxel_a)
        .collect();
    Fsc {
        s_per_a,
        fsc,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsc_of_identical_and_of_independent_volumes() {
        let mut s = 7u64;
        let mut rnd = || crate::recon::test_support::lcg(&mut s) - 0.5;
        let a = Array3::from_shape_fn((16, 24, 20), |_| rnd());
        let b = Array3::from_shape_fn((16, 24, 20), |_| rnd());
        let f = fsc(a.view(), a.view(), 2.0);
        assert_eq!(f.fsc.len(), 8);
        assert!(f.fsc[1..].iter().all(|&v| (v - 1.0).abs() < 1e-9));
        // a sign flip of b's spectrum gives −1
        let neg = a.mapv(|v| -v);
        assert!(fsc(a.view(), neg.view(), 2.0).fsc[2..]
            .iter()
            .all(|&v| (v + 1.0).abs() < 1e-9));
        // independent noise: |FSC| ~ 1/sqrt(count)
        let g = fsc(a.view(), b.view(), 2.0);
        for (v, n) in g.fsc.iter().zip(&g.count).skip(2) {
            assert!(v.abs() < 4.0 / (*n as f64).sqrt(), "{v} with {n}");
        }
        assert!((g.s_per_a[0] - 0.5 / 16.0 / 2.0).abs() < 1e-12);
        // a + noise: FSC below 1, above the independent case on average
        let c = &a + &b.mapv(|v| 0.5 * v);
        let h = fsc(a.view(), c.view(), 2.0);
        assert!(h.mean_in(0.0, 1.0) > 0.8 && h.mean_in(0.0, 1.0) < 0.99);
    }
}
