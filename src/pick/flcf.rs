//! Fast local normalised cross-correlation (Roseman 2003) of a tomogram with rotated
//! copies of a template, on the tomogram's full FFT grid.
//!
//! Model. The tomogram `f` (`[z, y, x]`, `N` voxels, normalised to mean 0 and σ 1) is
//! correlated with a template `t` of pose `A` (`t_A(x) = t(Aᵀ·x)`, weighted per tomogram,
//! [`crate::pick::template::tomogram_weight`]) under a spherical mask `m` (`P = Σ m`):
//!
//! `t̃ = m·(t_A − μ_m(t_A))`, scaled so `Σ t̃² = P` (mean 0 and σ 1 under the mask),
//!
//! `cc(x) = Σ_d t̃(d)·f(x + d) / (P·σ(x))`, `σ(x)² = Σ_d m(d)·f(x+d)²/P − (Σ_d m(d)·f(x+d)/P)²`
//!
//! with `d` the offset from the template's centre (voxel `n/2`) and `x` the particle centre
//! in the tomogram. The local `σ(x)` needs two correlations with the mask, computed once
//! per tomogram (the mask is spherical, so the same for every rotation); each rotation then
//! costs one rotation and two FFTs of the `n³` box (the weight) and one forward and one
//! inverse FFT of the tomogram grid. Correlations are circular (the tomogram wraps at its
//! faces); `cc` lies in `[−1, 1]` for a binary mask.
//!
//! All FFT plans and buffers are made once in [`Matcher::new`] and reused.

use ndarray::{Array3, ArrayView3, Zip};
use num_complex::Complex32;

use super::template::{apply_weight, Template};
use crate::comm::Comm;
use crate::core::fft3::Fft3;
use crate::core::geometry::Mat3;
use crate::core::interp::rotate_volume;
use crate::device::Device;
use crate::{Error, Result};

/// The tomogram side of the correlation and the buffers of one search.
pub struct Matcher {
    fft: Fft3,
    box_fft: Fft3,
    n: usize,
    template: Array3<f32>,
    mask: Array3<f32>,
    mask_sum: f64,
    weight: Array3<f32>,
    tomo_ft: Array3<Complex32>,
    inv_norm: Array3<f32>,
    /// Box positions `(box linear index, tomogram linear index)` of the wrapped placement.
    place: Vec<(usize, usize)>,
    padded: Array3<f32>,
    spec: Array3<Complex32>,
    box_spec: Array3<Complex32>,
    /// The score of the last rotation, `[z, y, x]` of the tomogram.
    pub scores: Array3<f32>,
}

/// Where the best rotation of every voxel is: `scores` (FLCF, the maximum over the
/// searched rotations) and `index` (the rotation that gave it, into the searched list;
/// −1 where none was searched), both `[z, y, x]` of the tomogram.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreMaps {
    /// Best score per voxel.
    pub scores: Array3<f32>,
    /// Index of the best rotation per voxel.
    pub index: Array3<i32>,
}

/// Index along an axis of length `len` of box voxel `k` (box of `n`) placed with its centre
/// `n/2` at index 0 (wrapped), so that a correlation scores the particle centre.
fn wrapped(k: usize, n: usize, len: usize) -> usize {
    (k as isize - (n / 2) as isize).rem_euclid(len as isize) as usize
}

impl Matcher {
    /// Prepare the search of `tomogram` (`[z, y, x]`, any scale; normalised here) for
    /// `template` (`n³`) under `mask` (`n³`, spherical about `n/2`, values in `[0, 1]`)
    /// with the half-grid Fourier `weight` `(n, n, n/2+1)` of this tomogram.
    ///
    /// Errors ([`Error::Config`]) when the box is larger than the tomogram on an axis or
    /// the shapes disagree.
    pub fn new(
        tomogram: ArrayView3<f32>,
        template: &Template,
        mask: &Array3<f32>,
        weight: Array3<f32>,
    ) -> Result<Matcher> {
        let n = template.size();
        let (nz, ny, nx) = tomogram.dim();
        if n > nz || n > ny || n > nx {
            return Err(Error::Config(format!(
                "template box {n}³ is larger than the tomogram {nx}×{ny}×{nz} (x×y×z): use a \
                 smaller box (--box) or a larger/less binned tomogram"
            )));
        }
        if mask.dim() != (n, n, n) || weight.dim() != (n, n, n / 2 + 1) {
            return Err(Error::Config(format!(
                "mask {:?} / weight {:?} do not match the template box {n}³",
                mask.dim(),
                weight.dim()
            )));
        }
        let fft = Fft3::new(nz, ny, nx);
        let count = (nz * ny * nx) as f64;
        let mean = tomogram.iter().map(|&v| v as f64).sum::<f64>() / count;
        let var = tomogram
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / count;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        let f = tomogram.mapv(|v| ((v as f64 - mean) / sd) as f32);
        let tomo_ft = fft.forward(f.view());
        let f2 = f.mapv(|v| v * v);
        let f2_ft = fft.forward(f2.view());
        drop(f2);
        drop(f);

        // wrapped placement of the mask support
        let mut place = Vec::new();
        let mut padded = Array3::<f32>::zeros((nz, ny, nx));
        for ((z, y, x), &mv) in mask.indexed_iter() {
            if mv > 0.0 {
                let t = (wrapped(z, n, nz) * ny + wrapped(y, n, ny)) * nx + wrapped(x, n, nx);
                place.push(((z * n + y) * n + x, t));
            }
        }
        let mask_sum: f64 = mask.iter().map(|&v| v as f64).sum();
        if mask_sum <= 0.0 {
            return Err(Error::Config(
                "the template mask is empty: give a radius > 0".into(),
            ));
        }
        {
            let pm = padded.as_slice_mut().expect("contiguous");
            let ms = mask.as_slice().expect("contiguous mask");
            for &(b, t) in &place {
                pm[t] = ms[b];
            }
        }
        let mask_ft = fft.forward(padded.view());
        let mut spec = fft.spectrum_zeros();
        let mut mean_map = Array3::<f32>::zeros((nz, ny, nx));
        Zip::from(&mut spec)
            .and(&mask_ft)
            .and(&tomo_ft)
            .par_for_each(|s, m, t| *s = m.conj() * t);
        fft.inverse_into(&mut spec, &mut mean_map);
        let mut inv_norm = Array3::<f32>::zeros((nz, ny, nx));
        Zip::from(&mut spec)
            .and(&mask_ft)
            .and(&f2_ft)
            .par_for_each(|s, m, t| *s = m.conj() * t);
        fft.inverse_into(&mut spec, &mut inv_norm);
        let p = mask_sum as f32;
        // σ below 1 % of the tomogram's σ (flat or empty regions) scores 0
        Zip::from(&mut inv_norm)
            .and(&mean_map)
            .par_for_each(|e2, &s1| {
                let mu = s1 / p;
                let v = *e2 / p - mu * mu;
                *e2 = if v > 1e-4 { 1.0 / (p * v.sqrt()) } else { 0.0 };
            });
        for &(_, t) in &place {
            padded.as_slice_mut().expect("contiguous")[t] = 0.0;
        }
        let box_fft = Fft3::new(n, n, n);
        Ok(Matcher {
            box_spec: box_fft.spectrum_zeros(),
            box_fft,
            n,
            template: template.volume.clone(),
            mask: mask.clone(),
            mask_sum,
            weight,
            tomo_ft,
            inv_norm,
            place,
            padded,
            spec,
            scores: Array3::zeros((nz, ny, nx)),
            fft,
        })
    }

    /// Tomogram shape `(nz, ny, nx)`.
    pub fn shape(&self) -> (usize, usize, usize) {
        self.fft.shape()
    }

    /// The masked, weighted, normalised template `t̃` of pose `a` (module docs), `n³`.
    pub fn prepared_template(&mut self, a: &Mat3) -> Array3<f32> {
        let mut t = rotate_volume(self.template.view(), a, [0.0; 3]);
        apply_weight(&mut t, &self.weight, &self.box_fft, &mut self.box_spec);
        let p = self.mask_sum;
        let mean = Zip::from(&t)
            .and(&self.mask)
            .fold(0.0f64, |acc, &v, &m| acc + (v * m) as f64)
            / p;
        Zip::from(&mut t)
            .and(&self.mask)
            .for_each(|v, &m| *v = (*v - mean as f32) * m);
        let ss: f64 = t.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = if ss > 0.0 {
            (p / ss).sqrt() as f32
        } else {
            0.0
        };
        t.mapv_inplace(|v| v * scale);
        t
    }

    /// Score every voxel for the template in pose `a` into [`Matcher::scores`].
    pub fn score_rotation(&mut self, a: &Mat3) {
        let t = self.prepared_template(a);
        let ts = t.as_slice().expect("contiguous template");
        {
            let pm = self.padded.as_slice_mut().expect("contiguous");
            for &(b, i) in &self.place {
                pm[i] = ts[b];
            }
        }
        self.fft.forward_into(self.padded.view(), &mut self.spec);
        Zip::from(&mut self.spec)
            .and(&self.tomo_ft)
            .par_for_each(|s, f| *s = s.conj() * f);
        self.fft.inverse_into(&mut self.spec, &mut self.scores);
        Zip::from(&mut self.scores)
            .and(&self.inv_norm)
            .par_for_each(|s, &w| *s *= w);
    }

    /// Box size `n` of the template.
    pub fn box_size(&self) -> usize {
        self.n
    }
}

/// What the CUDA twin ([`crate::pick::cuda`]) sends to the device.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Matcher {
    /// Tomogram linear indices (`[z, y, x]` row-major) of the wrapped placement of the mask
    /// support: box voxel `d` goes to the index of `−d` relative to the centre `n/2`, wrapped.
    /// The order is that of [`Matcher::support_values`].
    pub(crate) fn support_targets(&self) -> impl Iterator<Item = usize> + '_ {
        self.place.iter().map(|&(_, t)| t)
    }

    /// Write the prepared template `t̃` of pose `a` ([`Matcher::prepared_template`]) at the
    /// mask support into `out`, in the order of [`Matcher::support_targets`] (`out` must
    /// hold one value per support voxel).
    pub(crate) fn support_values(&mut self, a: &Mat3, out: &mut [f32]) {
        let t = self.prepared_template(a);
        let ts = t.as_slice().expect("contiguous template");
        assert_eq!(out.len(), self.place.len(), "support_values: output length");
        for (o, &(b, _)) in out.iter_mut().zip(&self.place) {
            *o = ts[b];
        }
    }

    /// Number of voxels of the mask support (`m > 0`).
    pub(crate) fn support_len(&self) -> usize {
        self.place.len()
    }

    /// The tomogram's half spectrum `(nz, ny, nx/2+1)` (normalised tomogram, unnormalised
    /// forward FFT, [`crate::core::fft3`] layout).
    pub(crate) fn tomogram_spectrum(&self) -> &Array3<Complex32> {
        &self.tomo_ft
    }

    /// `1 / (P·σ(x))` per voxel (0 where σ is too small), `[z, y, x]` of the tomogram.
    pub(crate) fn inverse_local_norm(&self) -> &Array3<f32> {
        &self.inv_norm
    }
}

/// The rotations `[lo, hi)` that rank `rank` of `size` searches out of `count`: contiguous
/// chunks, the first `count % size` ranks one more.
pub fn rotation_chunk(count: usize, size: usize, rank: usize) -> (usize, usize) {
    let base = count / size;
    let extra = count % size;
    let lo = rank * base + rank.min(extra);
    let hi = lo + base + usize::from(rank < extra);
    (lo, hi)
}

/// Search `rotations` with `matcher`, this rank taking its [`rotation_chunk`], and combine
/// the ranks with a max-reduction: the best score per voxel, then the lowest rotation index
/// among the ranks that hold it (so the result is the same for any number of ranks: a
/// serial search keeps the first rotation of equal score). Collective over `comm`;
/// `progress(done, total)` is called after every rotation of this rank.
pub fn search(
    matcher: &mut Matcher,
    rotations: &[Mat3],
    comm: &dyn Comm,
    mut progress: impl FnMut(usize, usize),
) -> ScoreMaps {
    let shape = matcher.shape();
    let (lo, hi) = rotation_chunk(rotations.len(), comm.size(), comm.rank());
    let mut best = Array3::<f32>::from_elem(shape, f32::NEG_INFINITY);
    let mut index = Array3::<i32>::from_elem(shape, -1);
    for (k, r) in (lo..hi).enumerate() {
        matcher.score_rotation(&rotations[r]);
        let ri = r as i32;
        Zip::from(&mut best)
            .and(&mut index)
            .and(&matcher.scores)
            .par_for_each(|b, i, &s| {
                if s > *b {
                    *b = s;
                    *i = ri;
                }
            });
        progress(k + 1, hi - lo);
    }
    combine_ranks(best, index, comm)
}

/// [`search`] on `device`: the CPU search, or its CUDA twin
/// ([`crate::pick::cuda::search_cuda`]: same chunking over ranks, same max-reduction, scores
/// equal to rounding of the FFTs). Collective over `comm`.
///
/// Errors ([`Error::Runtime`]) only on the CUDA path: cuFFT missing, device memory too small
/// for the tomogram grid, or a failed CUDA call.
pub fn search_on(
    device: &Device,
    matcher: &mut Matcher,
    rotations: &[Mat3],
    comm: &dyn Comm,
    progress: impl FnMut(usize, usize),
) -> Result<ScoreMaps> {
    match device {
        Device::Cpu => Ok(search(matcher, rotations, comm, progress)),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            // once per process: the GPU search must agree with the CPU on a small case
            static CHECK: std::sync::OnceLock<std::result::Result<(), String>> =
                std::sync::OnceLock::new();
            match CHECK.get_or_init(|| super::cuda::self_check(d)) {
                Ok(()) => super::cuda::search_cuda(d, matcher, rotations, comm, progress),
                Err(why) => {
                    tracing::warn!(
                        "template matching on the CPU: the GPU self-check failed ({why}); \
                         report it with `lamella info`"
                    );
                    Ok(search(matcher, rotations, comm, progress))
                }
            }
        }
    }
}

/// Combine the per-rank maps of a [`search`] (`best` score, `−∞` where this rank searched
/// nothing, and rotation `index`, `−1` there; `[z, y, x]` of the tomogram): the maximum
/// score per voxel over the ranks, then the lowest rotation index among the ranks that hold
/// it; scores no rank set become 0. Collective over `comm`.
pub(crate) fn combine_ranks(
    mut best: Array3<f32>,
    mut index: Array3<i32>,
    comm: &dyn Comm,
) -> ScoreMaps {
    if comm.size() > 1 {
        let mut s: Vec<f64> = best.iter().map(|&v| v as f64).collect();
        comm.allreduce_max_f64(&mut s);
        // lowest index among the holders of the maximum: max of −index
        let mut neg: Vec<f64> = best
            .iter()
            .zip(index.iter())
            .zip(&s)
            .map(|((&b, &i), &g)| {
                if b as f64 == g && i >= 0 {
                    -(i as f64)
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        comm.allreduce_max_f64(&mut neg);
        for (b, v) in best.iter_mut().zip(&s) {
            *b = *v as f32;
        }
        for (i, v) in index.iter_mut().zip(&neg) {
            *i = if v.is_finite() { -(*v) as i32 } else { -1 };
        }
    }
    best.mapv_inplace(|v| if v.is_finite() { v } else { 0.0 });
    ScoreMaps {
        scores: best,
        index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::LocalComm;
    use crate::core::geometry::euler_zyz_to_matrix;
    use crate::core::so3::identity;
    use crate::sta::mask::soft_sphere as spherical_mask;

    /// An asymmetric blob template (three Gaussians), dense positive.
    fn blob(n: usize) -> Array3<f32> {
        let c = (n / 2) as f64;
        let g = |p: [f64; 3], s: f64, x: f64, y: f64, z: f64| {
            (-((x - c - p[0]).powi(2) + (y - c - p[1]).powi(2) + (z - c - p[2]).powi(2))
                / (2.0 * s * s))
                .exp()
        };
        Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            let (x, y, z) = (x as f64, y as f64, z as f64);
            (g([0.0, 0.0, 0.0], 1.6, x, y, z)
                + 0.8 * g([3.0, 0.0, 0.0], 1.2, x, y, z)
                + 0.6 * g([0.0, 2.5, 1.5], 1.0, x, y, z)) as f32
        })
    }

    /// The data flow of the CUDA search, on the CPU: the support values scattered to the
    /// support targets, the spectrum product written as `kernels/pick.cu` writes it, the
    /// inverse and the local norm give [`Matcher::score_rotation`]'s scores bit for bit.
    #[test]
    fn support_placement_reproduces_score_rotation() {
        let n = 12;
        let tpl = Template {
            volume: blob(n),
            pixel_a: 10.0,
            radius_a: 40.0,
        };
        let (nz, ny, nx) = (20, 22, 19);
        let tomo = Array3::<f32>::from_shape_fn((nz, ny, nx), |(z, y, x)| {
            ((z * 7 + y * 13 + x * 3) % 17) as f32 / 17.0 - 0.5
        });
        let mask = spherical_mask(n, 4.0, 1.5);
        let weight = Array3::from_shape_fn((n, n, n / 2 + 1), |(z, y, x)| {
            0.3 + ((z + 2 * y + 3 * x) % 5) as f32 / 6.0
        });
        let mut m = Matcher::new(tomo.view(), &tpl, &mask, weight).unwrap();
        let a = euler_zyz_to_matrix(40.0, 70.0, -110.0);
        m.score_rotation(&a);
        let want = m.scores.clone();
        let mut values = vec![0.0f32; m.support_len()];
        m.support_values(&a, &mut values);
        let mut padded = Array3::<f32>::zeros((nz, ny, nx));
        let ps = padded.as_slice_mut().unwrap();
        for (t, &v) in m.support_targets().zip(&values) {
            ps[t] = v;
        }
        let fft = Fft3::new(nz, ny, nx);
        let mut spec = fft.forward(padded.view());
        Zip::from(&mut spec)
            .and(m.tomogram_spectrum())
            .for_each(|s, f| {
                let (a, b) = (s.re, -s.im);
                *s = Complex32::new(a * f.re - b * f.im, a * f.im + b * f.re);
            });
        let mut got = fft.inverse(spec);
        Zip::from(&mut got)
            .and(m.inverse_local_norm())
            .for_each(|s, &w| *s *= w);
        assert_eq!(got, want);
    }

    #[test]
    fn chunks_cover_every_rotation_once() {
        for (count, size) in [(10, 3), (2, 3), (7, 1), (0, 2)] {
            let mut next = 0;
            for r in 0..size {
                let (lo, hi) = rotation_chunk(count, size, r);
                assert_eq!(lo, next);
                next = hi;
            }
            assert_eq!(next, count);
        }
    }

    /// A template pasted at a known voxel with a known pose scores ≈ 1 there, at its pose,
    /// and the peak of a rotation far from it is lower.
    #[test]
    fn flcf_finds_the_pasted_template_and_its_pose() {
        let n = 16;
        let tpl = Template {
            volume: blob(n),
            pixel_a: 10.0,
            radius_a: 60.0,
        };
        let a = euler_zyz_to_matrix(30.0, 50.0, -20.0);
        let posed = rotate_volume(tpl.volume.view(), &a, [0.0; 3]);
        let (nz, ny, nx) = (24, 40, 36);
        let mut tomo = Array3::<f32>::from_shape_fn((nz, ny, nx), |(z, y, x)| {
            // deterministic texture
            (((z * 7 + y * 13 + x * 3) % 17) as f32 / 17.0 - 0.5) * 0.05
        });
        let at = (10usize, 25usize, 11usize); // (z, y, x) centre
        for ((z, y, x), v) in posed.indexed_iter() {
            tomo[[at.0 + z - n / 2, at.1 + y - n / 2, at.2 + x - n / 2]] += 3.0 * v;
        }
        let mask = spherical_mask(n, 6.0, 0.0);
        let weight = Array3::<f32>::ones((n, n, n / 2 + 1));
        let mut m = Matcher::new(tomo.view(), &tpl, &mask, weight).unwrap();
        let rots = vec![identity(), a, euler_zyz_to_matrix(120.0, 90.0, 45.0)];
        let maps = search(&mut m, &rots, &LocalComm, |_, _| {});
        let (mut bi, mut bv) = ((0, 0, 0), f32::MIN);
        for ((z, y, x), &v) in maps.scores.indexed_iter() {
            if v > bv {
                bv = v;
                bi = (z, y, x);
            }
        }
        assert_eq!(bi, at, "peak at {bi:?}, score {bv}");
        assert!(bv > 0.95 && bv <= 1.001, "peak score {bv}");
        assert_eq!(maps.index[[at.0, at.1, at.2]], 1);
        // direct check of one voxel against the definition
        m.score_rotation(&rots[2]);
        let t = m.prepared_template(&rots[2]);
        let p: f64 = mask.iter().map(|&v| v as f64).sum();
        let (z0, y0, x0) = (5usize, 9usize, 30usize);
        let mean = tomo.iter().map(|&v| v as f64).sum::<f64>() / tomo.len() as f64;
        let sd = (tomo.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / tomo.len() as f64)
            .sqrt();
        let f = |z: isize, y: isize, x: isize| {
            let v = tomo[[
                z.rem_euclid(nz as isize) as usize,
                y.rem_euclid(ny as isize) as usize,
                x.rem_euclid(nx as isize) as usize,
            ]] as f64;
            (v - mean) / sd
        };
        let (mut num, mut s1, mut s2) = (0.0, 0.0, 0.0);
        for ((z, y, x), &tv) in t.indexed_iter() {
            let d = |k: usize, c: usize| k as isize - (n / 2) as isize + c as isize;
            let fv = f(d(z, z0), d(y, y0), d(x, x0));
            num += tv as f64 * fv;
            let mv = mask[[z, y, x]] as f64;
            s1 += mv * fv;
            s2 += mv * fv * fv;
        }
        let sig = (s2 / p - (s1 / p).powi(2)).sqrt();
        let want = num / (p * sig);
        let got = m.scores[[z0, y0, x0]] as f64;
        assert!((got - want).abs() < 1e-3, "FLCF {got} vs direct {want}");
    }
}
