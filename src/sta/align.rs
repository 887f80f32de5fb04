//! Alignment of a particle to references: wedge- and CTF-constrained normalised cross-
//! correlation in Fourier space over a set of rotations, all translations at once.
//!
//! Model: the particle box `p` (`n³`, the particle near the centre voxel `n/2`) is
//! `p(x) = ref(Aᵀ·(x − t)) ⊛ transfer + noise`, `A` the pose (reference → particle, RELION
//! Euler matrix) and `t` its offset from the box centre (voxels, x y z). For a candidate
//! rotation `R` the reference is rotated into the particle frame (`core::interp::rotate_volume`),
//! masked, transformed, multiplied by the particle's transfer `c(k)`
//! ([`crate::sta::weight`], frame = tomogram, computed once per particle) and compared with
//! the particle spectrum `P` over the band `lo ≤ |k| < hi` where `c ≠ 0`:
//!
//! `score(R, t) = Σ_k Re[P(k)·conj(c(k)·G_R(k))·e^{2πi k·t}] / sqrt(Σ|P|²·Σ|c·G_R|²)`,
//!
//! one inverse FFT giving every `t`; the best `t` within `max_shift` is refined to sub-voxel
//! precision by a parabola per axis. The work is done on a Fourier-cropped box `m³`
//! (`m ≤ n`, just above twice the band limit), so coarse searches are cheap.

use ndarray::{Array3, ArrayView3, Zip};
use num_complex::Complex32;

use crate::core::fft3::{
    crop_half_grid, fourier_crop, half_grid_radius, half_grid_x_weights, Fft3,
};
use crate::core::geometry::Mat3;
use crate::core::interp::rotate_volume;
use crate::sta::mask::soft_sphere;

/// The smallest even working box `m ≤ n` that holds frequencies up to `hi` cycles/voxel of
/// the `n` box (`m ≥ 2·hi·n + 2`, at least 8).
pub fn working_box(n: usize, hi: f64) -> usize {
    let m = (2.0 * hi.clamp(0.0, 0.5) * n as f64).ceil() as usize + 2;
    let m = m.max(8).min(n);
    if m % 2 == 1 && m < n {
        m + 1
    } else {
        m
    }
}

/// Search settings of one alignment pass.
#[derive(Clone, Debug)]
pub struct SearchBand {
    /// Full box size `n`, voxels.
    pub n: usize,
    /// Lowest frequency compared, cycles/voxel of the full box.
    pub lo: f64,
    /// Highest frequency compared (exclusive), cycles/voxel of the full box (≤ 0.5).
    pub hi: f64,
    /// Radius of the soft spherical mask, full-box voxels.
    pub mask_radius_px: f64,
    /// Largest offset searched from the box centre, full-box voxels.
    pub max_shift_px: f64,
}

/// One particle prepared for alignment in a [`SearchBand`] (its cropped spectrum and
/// transfer, the band mask and its norm).
pub struct PreparedParticle {
    spec: Array3<Complex32>,
    transfer: Array3<f32>,
    norm_p: f64,
    /// Independent real measurements compared: full-grid Fourier samples in the band where
    /// the transfer is non-zero, times the mask's volume fraction.
    dof: f64,
}

/// The best match of a particle over a set of rotations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Match {
    /// Index into the rotation list searched.
    pub rotation: usize,
    /// Index of the reference (class).
    pub reference: usize,
    /// Offset of the particle from the box centre, full-box voxels (x, y, z).
    pub shift_px: [f64; 3],
    /// Normalised cross-correlation (−1…1).
    pub score: f64,
}

/// A plan for aligning particles of one box size in one band: FFT plan of the working box,
/// masks and band filter, reused for every particle and rotation.
pub struct Aligner {
    band: SearchBand,
    m: usize,
    plan: Fft3,
    mask_m: Array3<f32>,
    mask_n: Array3<f32>,
    band_w: Array3<f32>,
    plan_n: Fft3,
    /// `Σ mask² / n³` of the full-box mask: the fraction of Fourier samples that stay
    /// independent after masking.
    mask_fraction: f64,
}

impl Aligner {
    /// Plan for `band`.
    pub fn new(band: SearchBand) -> Self {
        let n = band.n;
        let m = working_box(n, band.hi);
        let scale = m as f64 / n as f64;
        let r = half_grid_radius(m);
        let xw = half_grid_x_weights(m);
        // Band in Fourier voxels of the full box = radius in the cropped grid (same voxels).
        let (lo, hi) = (band.lo * n as f64, band.hi * n as f64);
        let band_w = Array3::from_shape_fn(r.dim(), |(z, y, x)| {
            let k = r[[z, y, x]] as f64;
            if k >= lo && k < hi {
                xw[x]
            } else {
                0.0
            }
        });
        let mask_n = soft_sphere(n, band.mask_radius_px, 3.0);
        let mask_fraction =
            mask_n.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / mask_n.len() as f64;
        Aligner {
            mask_m: soft_sphere(m, band.mask_radius_px * scale, 3.0 * scale),
            mask_n,
            mask_fraction,
            plan: Fft3::new(m, m, m),
            plan_n: Fft3::new(n, n, n),
            band_w,
            m,
            band,
        }
    }

    /// The working box size `m`.
    pub fn working_box(&self) -> usize {
        self.m
    }

    /// The band of this plan.
    pub fn band(&self) -> &SearchBand {
        &self.band
    }

    /// A reference `n³` (reference frame, centre `n/2`) Fourier-cropped to the working box.
    pub fn prepare_reference(&self, reference: ArrayView3<f32>) -> Array3<f32> {
        fourier_crop(reference, self.m)
    }

    /// Prepare a particle box `n³` (normalised) with its transfer `transfer_n` (half grid of
    /// the `n` box, tomogram frame): masked, transformed, cropped.
    pub fn prepare_particle(
        &self,
        data: ArrayView3<f32>,
        transfer_n: &Array3<f32>,
    ) -> PreparedParticle {
        let n = self.band.n;
        let masked = &data * &self.mask_n;
        let full = self.plan_n.forward(masked.view());
        let mut spec = crop_half_grid(&full, n, self.m);
        let transfer = crop_half_grid(transfer_n, n, self.m);
        let mut norm_p = 0.0f64;
        let mut samples = 0.0f64;
        Zip::from(&mut spec)
            .and(&transfer)
            .and(&self.band_w)
            .for_each(|p, c, b| {
                if *b == 0.0 || *c == 0.0 {
                    *p = Complex32::new(0.0, 0.0);
                } else {
                    norm_p += (*b * p.norm_sqr()) as f64;
                    samples += *b as f64;
                }
            });
        PreparedParticle {
            spec,
            transfer,
            norm_p,
            dof: samples * self.mask_fraction,
        }
    }

    /// Log-likelihood (nats, up to a constant) of a normalised cross-correlation `score` of
    /// `particle`: with Gaussian noise and the reference's scale and the noise level profiled
    /// out, `−(M/2)·ln(1 − score²)` for `M` independent real measurements
    /// ([`PreparedParticle`]'s count). Used to weigh a pose prior against the data.
    pub fn log_likelihood(&self, particle: &PreparedParticle, score: f64) -> f64 {
        let s = score.clamp(0.0, 0.999);
        -0.5 * particle.dof * (1.0 - s * s).ln()
    }

    /// Best rotation (of `rotations`), reference (of `references`, each from
    /// [`Aligner::prepare_reference`]) and offset for `particle`.
    pub fn search(
        &self,
        particle: &PreparedParticle,
        references: &[Array3<f32>],
        rotations: &[Mat3],
    ) -> Match {
        self.search_by(particle, references, rotations, |_, s| s)
    }

    /// The maximum a-posteriori match: [`Aligner::search`] maximising
    /// [`Aligner::log_likelihood`] `+ log_prior[k]` for rotation `k` (e.g. a Gaussian in the
    /// angle from the current pose, as RELION's local searches). Where the data do not
    /// determine the pose (a flat score, a featureless reference) the prior keeps it.
    pub fn search_with_prior(
        &self,
        particle: &PreparedParticle,
        references: &[Array3<f32>],
        rotations: &[Mat3],
        log_prior: &[f64],
    ) -> Match {
        assert_eq!(log_prior.len(), rotations.len(), "one prior per rotation");
        self.search_by(particle, references, rotations, |k, s| {
            self.log_likelihood(particle, s) + log_prior[k]
        })
    }

    /// The match maximising `objective(rotation index, score)`.
    fn search_by(
        &self,
        particle: &PreparedParticle,
        references: &[Array3<f32>],
        rotations: &[Mat3],
        objective: impl Fn(usize, f64) -> f64,
    ) -> Match {
        let mut best = Match {
            rotation: 0,
            reference: 0,
            shift_px: [0.0; 3],
            score: f64::NEG_INFINITY,
        };
        let mut best_obj = f64::NEG_INFINITY;
        let mut spec = self.plan.spectrum_zeros();
        let mut cc = Array3::<f32>::zeros((self.m, self.m, self.m));
        for (ri, reference) in references.iter().enumerate() {
            for (k, r) in rotations.iter().enumerate() {
                let (score, shift) = self.score(particle, reference, r, &mut spec, &mut cc);
                let obj = objective(k, score);
                if obj > best_obj {
                    best_obj = obj;
                    best = Match {
                        rotation: k,
                        reference: ri,
                        shift_px: shift,
                        score,
                    };
                }
            }
        }
        best
    }

    /// Score and best offset (full-box voxels) of one rotation of one prepared reference.
    fn score(
        &self,
        particle: &PreparedParticle,
        reference: &Array3<f32>,
        rotation: &Mat3,
        spec: &mut Array3<Complex32>,
        cc: &mut Array3<f32>,
    ) -> (f64, [f64; 3]) {
        let mut rotated = rotate_volume(reference.view(), rotation, [0.0; 3]);
        rotated *= &self.mask_m;
        self.plan.forward_into(rotated.view(), spec);
        let mut norm_g = 0.0f64;
        Zip::from(&mut *spec)
            .and(&particle.spec)
            .and(&particle.transfer)
            .and(&self.band_w)
            .for_each(|g, p, c, b| {
                if *b == 0.0 || *c == 0.0 {
                    *g = Complex32::new(0.0, 0.0);
                    return;
                }
                let cg = *g * *c;
                norm_g += (*b * cg.norm_sqr()) as f64;
                *g = *p * cg.conj();
            });
        let denom = (particle.norm_p * norm_g).sqrt();
        if denom <= 0.0 {
            return (0.0, [0.0; 3]);
        }
        self.plan.inverse_into(spec, cc);
        let scale = self.m as f64 / self.band.n as f64;
        let (peak, value) = peak_within(cc, self.band.max_shift_px * scale);
        let total = (self.m * self.m * self.m) as f64;
        (
            value * total / denom,
            [peak[0] / scale, peak[1] / scale, peak[2] / scale],
        )
    }
}

/// The maximum of a cyclic correlation volume `cc` `[z, y, x]` (lag 0 at index 0) over lags
/// within `radius` voxels, refined by a parabola per axis: `(lag (x, y, z), value)`.
pub fn peak_within(cc: &Array3<f32>, radius: f64) -> ([f64; 3], f64) {
    let (nz, ny, nx) = cc.dim();
    let r = radius.max(0.0);
    let ri = r.floor() as i64;
    let wrap = |i: i64, n: usize| i.rem_euclid(n as i64) as usize;
    let mut best = (f32::NEG_INFINITY, [0i64; 3]);
    for dz in -ri..=ri {
        for dy in -ri..=ri {
            for dx in -ri..=ri {
                if ((dz * dz + dy * dy + dx * dx) as f64) > r * r {
                    continue;
                }
                let v = cc[[wrap(dz, nz), wrap(dy, ny), wrap(dx, nx)]];
                if v > best.0 {
                    best = (v, [dx, dy, dz]);
                }
            }
        }
    }
    let [dx, dy, dz] = best.1;
    let at = |x: i64, y: i64, z: i64| cc[[wrap(z, nz), wrap(y, ny), wrap(x, nx)]] as f64;
    let c = at(dx, dy, dz);
    let vertex = |m: f64, p: f64| {
        let d = m - 2.0 * c + p;
        if d < 0.0 {
            (0.5 * (m - p) / d).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let ox = vertex(at(dx - 1, dy, dz), at(dx + 1, dy, dz));
    let oy = vertex(at(dx, dy - 1, dz), at(dx, dy + 1, dz));
    let oz = vertex(at(dx, dy, dz - 1), at(dx, dy, dz + 1));
    (
        [dx as f64 + ox, dy as f64 + oy, dz as f64 + oz],
        best.0 as f64,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::geometry::euler_zyz_to_matrix;
    use crate::core::so3::{angle_between_deg, local_rotations};

    /// An asymmetric blob reference: three Gaussians.
    pub(crate) fn blob(n: usize) -> Array3<f32> {
        let c = (n / 2) as f64;
        let parts = [
            ([7.0, 0.0, 0.0], 1.5),
            ([-4.0, 6.0, 0.0], 1.5),
            ([0.0, -2.0, 8.0], 1.2),
            ([-3.0, -5.0, -4.0], 2.0),
        ];
        Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            let p = [x as f64 - c, y as f64 - c, z as f64 - c];
            parts
                .iter()
                .map(|(q, s)| {
                    let d2 = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2);
                    (-d2 / (2.0 * s * s)).exp()
                })
                .sum::<f64>() as f32
        })
    }

    #[test]
    fn finds_pose_and_shift_of_a_rotated_shifted_copy() {
        let n = 32;
        let reference = blob(n);
        let a = euler_zyz_to_matrix(40.0, 70.0, -30.0);
        let t = [1.6, -2.3, 0.8];
        let particle = rotate_volume(reference.view(), &a, t);
        let ones = Array3::<f32>::ones((n, n, n / 2 + 1));
        let al = Aligner::new(SearchBand {
            n,
            lo: 0.0,
            hi: 0.3,
            mask_radius_px: 12.0,
            max_shift_px: 5.0,
        });
        assert!(al.working_box() < n);
        let p = al.prepare_particle(particle.view(), &ones);
        let rf = vec![al.prepare_reference(reference.view())];
        // Start 8° away and search locally.
        let start =
            crate::core::geometry::matmul(&crate::core::so3::axis_angle([1.0, 1.0, 0.0], 8.0), &a);
        let rots = local_rotations(&start, 12.0, 3.0);
        let m = al.search(&p, &rf, &rots);
        let err = angle_between_deg(&rots[m.rotation], &a);
        assert!(err < 3.5, "angle error {err}");
        for i in 0..3 {
            assert!(
                (m.shift_px[i] - t[i]).abs() < 0.5,
                "shift {:?} vs {t:?}",
                m.shift_px
            );
        }
        assert!(m.score > 0.8, "score {}", m.score);
    }

    #[test]
    fn prior_yields_to_data_with_features() {
        let n = 32;
        let ones = Array3::<f32>::ones((n, n, n / 2 + 1));
        let al = Aligner::new(SearchBand {
            n,
            lo: 0.0,
            hi: 0.3,
            mask_radius_px: 12.0,
            max_shift_px: 5.0,
        });
        let a = euler_zyz_to_matrix(40.0, 70.0, -30.0);
        let start =
            crate::core::geometry::matmul(&crate::core::so3::axis_angle([1.0, 1.0, 0.0], 8.0), &a);
        let rots = local_rotations(&start, 12.0, 3.0);
        let prior: Vec<f64> = rots
            .iter()
            .map(|r| -0.5 * (angle_between_deg(r, &start) / 4.0).powi(2))
            .collect();
        // A structure with features: the data win over a prior centred 8° away.
        let reference = blob(n);
        let particle = rotate_volume(reference.view(), &a, [0.0; 3]);
        let p = al.prepare_particle(particle.view(), &ones);
        let rf = vec![al.prepare_reference(reference.view())];
        let m = al.search_with_prior(&p, &rf, &rots, &prior);
        let err = angle_between_deg(&rots[m.rotation], &a);
        assert!(err < 3.5, "angle error with the prior {err}");
        assert!(al.log_likelihood(&p, 0.5) > al.log_likelihood(&p, 0.4));
    }

    #[test]
    fn peak_is_refined_between_voxels() {
        let mut cc = Array3::<f32>::zeros((16, 16, 16));
        for ((z, y, x), v) in cc.indexed_iter_mut() {
            let w = |i: usize, c: f64| {
                let d = if i > 8 { i as f64 - 16.0 } else { i as f64 };
                (d - c).powi(2)
            };
            *v = (-(w(x, 2.3) + w(y, -1.0) + w(z, 0.4)) / 4.0).exp() as f32;
        }
        let (p, _) = peak_within(&cc, 4.0);
        assert!(
            (p[0] - 2.3).abs() < 0.1 && (p[1] + 1.0).abs() < 0.1 && (p[2] - 0.4).abs() < 0.1,
            "{p:?}"
        );
    }
}
