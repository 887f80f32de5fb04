//! Fourier-space reconstruction of a 3D map from 2D particle images with known poses
//! (direct Fourier insertion, "backprojection" in RELION's terms), with CTF and dose weights.
//!
//! # Model and frames
//!
//! Each 2D image `I` (`n × n` pixels, pixel `p` Å, `[y, x]`) is a projection of the reference
//! map `V` (`n³`, `[z, y, x]`, centre at voxel `n/2`) seen through a transfer `t(s)`:
//! by the central-slice theorem its Fourier transform is a plane through the origin of `V̂`,
//!
//! `Î(k₂) = t(k₂) · V̂(M · (k_x, k_y, 0))`,
//!
//! with `k₂ = (k_x, k_y)` in cycles/pixel of the image and `M` ([`Slice::to_reference`]) the
//! 3×3 rotation from the image (beam) frame to the reference frame. For a particle with pose
//! `A` (`particle(x) = reference(Aᵀ·x)`, [`crate::core::geometry::euler_zyz_to_matrix`]) in
//! a tilt with specimen rotation `R` (specimen → beam, [`crate::core::geometry::TiltImage::rotation`],
//! or the 3×3 part of a RELION-5 projection matrix), `M = (R·A)ᵀ = Aᵀ·Rᵀ`; see
//! [`crate::sta::particles2d`] for the frame RELION-5 uses for 2D stacks.
//!
//! The image centre (the projected particle centre) is at pixel [`Slice::centre_px`]
//! (`(x, y)`, `n/2` for a centred particle, plus any sub-pixel offset); it is moved to the
//! origin by a Fourier phase shift, so no real-space interpolation happens.
//!
//! # Accumulation
//!
//! On a padded half grid of `N = pad·n` (`(N, N, N/2 + 1)`, DC at index 0,
//! [`crate::core::fft3`] layout) the reconstructor sums, over all images,
//!
//! - data   `B(k) = Σ h(k − M·k₂·N) · a(k₂) · Î_pad(k₂)`,
//! - weight `W(k) = Σ h(k − M·k₂·N) · w(k₂)`,
//!
//! where `Î_pad` is the 2D FFT of the image zero-padded to `N × N` (same pixel size, finer
//! frequency sampling `1/N`), `k₂` runs over its samples inside Nyquist (`|k₂| ≤ ½`
//! cycles/pixel), and `h` is the trilinear (tent) kernel `Π (1 − |dᵢ|)₊` on the padded grid
//! (splatting to the 8 neighbours). With `c = scale · CTF(k₂ / p)` (the tilt's CTF,
//! [`crate::ctf::model::Ctf::value`], times its scale factor) and `D` the exposure filter
//! ([`crate::ctf::model::dose_filter`] at the image's exposure):
//!
//! - images not CTF-multiplied: `a = c·D`, `w = (c·D)²`;
//! - CTF-premultiplied images (RELION `rlnCtfDataAreCtfPremultiplied 1`, already `c·I`):
//!   `a = D`, `w = (c·D)²`;
//! - no CTF: `c = 1`.
//!
//! Samples with `k_x < 0` after rotation are stored at `−k` with the conjugate value (the
//! half grid holds `k_x ≥ 0`). The twins of samples near the `k_x = 0` plane are added in
//! [`Reconstructor::finish`] by Hermitian symmetrisation of that plane, so the raw buffers
//! stay plain sums that add up over ranks ([`Reconstructor::add`], or an MPI allreduce of
//! [`Reconstructor::data_mut`] and [`Reconstructor::weight_mut`]).
//!
//! # Finishing
//!
//! `V̂(k) = B(k) / (W(k) + λ·W̄)` (Wiener-like; `W̄` the mean of the non-zero weights, `λ` the
//! `wiener` argument, e.g. 0.01), inverse 3D FFT (divides by `N³`), crop of the central
//! `n³` (voxel `n/2` of the crop is the origin), and gridding correction: division by the
//! Fourier transform of the tent kernel, `Π sinc²(dᵢ / N)` over the three axes (`dᵢ` the
//! distance from the centre in voxels, `sinc(x) = sin(πx)/(πx)`). The result has the units of
//! the images (a projection of it along z equals an image, for unit transfer).

use ndarray::{Array2, Array3, ArrayView2, Axis};
use num_complex::Complex32;
use rayon::prelude::*;

use crate::core::fft3::Fft3;
use crate::core::fourier::{fftfreq, shift_spectrum, Fft2};
use crate::core::geometry::Mat3;
use crate::ctf::model::{dose_filter, Ctf};

/// How the CTF enters one image's insertion (module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CtfWeight {
    /// No CTF (`c = 1`).
    None,
    /// The image is not CTF-multiplied: data × `c·D`, weight `(c·D)²`.
    Multiply(Ctf),
    /// The image is already multiplied by its CTF: data × `D`, weight `(c·D)²`.
    Premultiplied(Ctf),
}

/// Everything needed to insert one 2D image (module docs for the frames).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slice {
    /// `M`: image-frame frequency `(k_x, k_y, 0)` → reference-frame frequency.
    pub to_reference: Mat3,
    /// Pixel `(x, y)` of the image that holds the particle centre (`n/2` when centred).
    pub centre_px: [f64; 2],
    /// Image pixel size, Å (for the CTF and the dose filter).
    pub pixel_a: f64,
    /// CTF handling.
    pub ctf: CtfWeight,
    /// Scale factor on the CTF (RELION `rlnCtfScalefactor`; 1 for none).
    pub ctf_scale: f64,
    /// Exposure before the middle of this image, e/Å² (`None`: no dose filter).
    pub exposure_e_a2: Option<f64>,
    /// Acceleration voltage for the dose filter, kV.
    pub voltage_kv: f64,
}

/// Per-thread work space for [`Reconstructor::insert`]: the padded `N × N` 2D FFT plan and
/// buffers, and the image frequencies. Make one per thread (cheap to clone).
#[derive(Clone)]
pub struct Inserter {
    n: usize,
    np: usize,
    fft: Fft2,
    padded: Array2<f32>,
    spec: Array2<Complex32>,
    fy: Vec<f32>,
}

impl Inserter {
    /// Work space for `n × n` images padded `pad` times.
    pub fn new(n: usize, pad: usize) -> Self {
        let np = n * pad.max(1);
        Inserter {
            n,
            np,
            fft: Fft2::new(np, np),
            padded: Array2::zeros((np, np)),
            spec: Array2::zeros((np, np / 2 + 1)),
            fy: fftfreq(np),
        }
    }
}

/// Accumulates Fourier data and weights of 2D slices on a padded half grid (module docs).
#[derive(Clone, Debug)]
pub struct Reconstructor {
    n: usize,
    pad: usize,
    np: usize,
    /// `B`, `(N, N, N/2 + 1)` row-major.
    data: Vec<Complex32>,
    /// `W`, same layout.
    weight: Vec<f32>,
}

impl Reconstructor {
    /// An empty reconstructor for `n³` maps (`n` even, ≥ 2) on a grid padded `pad` times
    /// (`pad ≥ 1`; 2 is RELION's default).
    pub fn new(n: usize, pad: usize) -> Self {
        assert!(
            n >= 2 && n % 2 == 0,
            "Reconstructor: box must be even, got {n}"
        );
        let pad = pad.max(1);
        let np = n * pad;
        let len = np * np * (np / 2 + 1);
        Reconstructor {
            n,
            pad,
            np,
            data: vec![Complex32::new(0.0, 0.0); len],
            weight: vec![0.0; len],
        }
    }

    /// Box size `n` of the map.
    pub fn box_size(&self) -> usize {
        self.n
    }

    /// Padding factor.
    pub fn pad(&self) -> usize {
        self.pad
    }

    /// Padded grid size `N = pad·n`; the buffers have shape `(N, N, N/2 + 1)`.
    pub fn padded_size(&self) -> usize {
        self.np
    }

    /// A work space matching this reconstructor.
    pub fn inserter(&self) -> Inserter {
        Inserter::new(self.n, self.pad)
    }

    /// The data sums `B` as interleaved `(re, im)` f32 pairs, `2·N·N·(N/2+1)` values (for an
    /// MPI sum-allreduce).
    pub fn data_mut(&mut self) -> &mut [f32] {
        let len = self.data.len() * 2;
        // SAFETY: `Complex<f32>` is `#[repr(C)]` with fields `re, im`, so a slice of `m`
        // complex values is `2m` contiguous f32 with the same alignment.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr() as *mut f32, len) }
    }

    /// The weight sums `W`, `N·N·(N/2+1)` values (for an MPI sum-allreduce).
    pub fn weight_mut(&mut self) -> &mut [f32] {
        &mut self.weight
    }

    /// Read-only views of the data and weight sums (same layouts as the `_mut` accessors).
    pub fn buffers(&self) -> (&[Complex32], &[f32]) {
        (&self.data, &self.weight)
    }

    /// Add another reconstructor's sums (same box and padding; panics otherwise).
    pub fn add(&mut self, other: &Reconstructor) {
        assert_eq!(
            (self.n, self.pad),
            (other.n, other.pad),
            "Reconstructor::add: shapes differ"
        );
        self.data
            .par_iter_mut()
            .zip(other.data.par_iter())
            .for_each(|(a, b)| *a += *b);
        self.weight
            .par_iter_mut()
            .zip(other.weight.par_iter())
            .for_each(|(a, b)| *a += *b);
    }

    /// Insert one `n × n` image `[y, x]` described by `slice` (module docs), using `ws` for
    /// the FFT. Panics when the image is not `n × n`.
    pub fn insert(&mut self, ws: &mut Inserter, image: ArrayView2<f32>, slice: &Slice) {
        let (n, np) = (self.n, self.np);
        assert_eq!(image.dim(), (n, n), "Reconstructor::insert: image shape");
        assert_eq!((ws.n, ws.np), (n, np), "Reconstructor::insert: work space");
        // Zero-pad with the image's pixel (i, j) at (i + o, j + o): the particle centre moves
        // to centre + o and is then phase-shifted to the origin.
        let o = (np - n) / 2;
        ws.padded.fill(0.0);
        ws.padded
            .slice_mut(ndarray::s![o..o + n, o..o + n])
            .assign(&image);
        ws.fft.forward_into(ws.padded.view(), &mut ws.spec);
        let cx = slice.centre_px[0] + o as f64;
        let cy = slice.centre_px[1] + o as f64;
        shift_spectrum(&mut ws.spec, np, -cy, -cx);

        let m = &slice.to_reference;
        let nf = np as f64;
        let nh = np / 2 + 1;
        for (iy, row) in ws.spec.axis_iter(Axis(0)).enumerate() {
            let fy = ws.fy[iy] as f64;
            for (ix, &val) in row.iter().enumerate() {
                let fx = ix as f64 / nf;
                let r2 = fx * fx + fy * fy;
                if r2 > 0.25 {
                    continue;
                }
                let (a, w) = transfer(slice, fx, fy);
                if w == 0.0 && a == 0.0 {
                    continue;
                }
                // Reference-frame position in padded voxels (x, y, z).
                let mut k = [
                    (m[0][0] * fx + m[0][1] * fy) * nf,
                    (m[1][0] * fx + m[1][1] * fy) * nf,
                    (m[2][0] * fx + m[2][1] * fy) * nf,
                ];
                let mut v = val * a as f32;
                if k[0] < 0.0 {
                    k = [-k[0], -k[1], -k[2]];
                    v = v.conj();
                }
                self.splat(k, v, w as f32, nh);
            }
        }
    }

    /// Trilinear splat of value `v` and weight `w` at padded position `k = (x, y, z)`,
    /// `x ≥ 0`.
    #[inline]
    fn splat(&mut self, k: [f64; 3], v: Complex32, w: f32, nh: usize) {
        let np = self.np as isize;
        let x0 = k[0].floor();
        let y0 = k[1].floor();
        let z0 = k[2].floor();
        let (tx, ty, tz) = ((k[0] - x0) as f32, (k[1] - y0) as f32, (k[2] - z0) as f32);
        let (x0, y0, z0) = (x0 as isize, y0 as isize, z0 as isize);
        for dz in 0..2 {
            let wz = if dz == 0 { 1.0 - tz } else { tz };
            let iz = (z0 + dz).rem_euclid(np) as usize;
            for dy in 0..2 {
                let wy = if dy == 0 { 1.0 - ty } else { ty };
                let iy = (y0 + dy).rem_euclid(np) as usize;
                let base = (iz * self.np + iy) * nh;
                for dx in 0..2 {
                    let ix = (x0 + dx) as usize;
                    if ix >= nh {
                        continue;
                    }
                    let h = wz * wy * if dx == 0 { 1.0 - tx } else { tx };
                    if h == 0.0 {
                        continue;
                    }
                    self.data[base + ix] += v * h;
                    self.weight[base + ix] += w * h;
                }
            }
        }
    }

    /// The map `n³` `[z, y, x]` from the sums (module docs): Hermitian completion of the
    /// `k_x = 0` plane, `B / (W + wiener·W̄)`, inverse FFT, central crop, gridding
    /// correction. `fft` must be a plan for `(N, N, N)` (see [`Reconstructor::plan`]). The
    /// sums are left unchanged.
    pub fn finish_with(&self, fft: &Fft3, wiener: f64) -> Array3<f32> {
        let (n, np) = (self.n, self.np);
        let nh = np / 2 + 1;
        assert_eq!(
            fft.shape(),
            (np, np, np),
            "Reconstructor::finish: plan shape"
        );
        let mut data = Array3::from_shape_vec((np, np, nh), self.data.clone()).expect("shape");
        let mut weight = Array3::from_shape_vec((np, np, nh), self.weight.clone()).expect("shape");
        // Twins of the samples splatted onto the kx = 0 plane: add the conjugate mirror.
        let d0 = data.index_axis(Axis(2), 0).to_owned();
        let w0 = weight.index_axis(Axis(2), 0).to_owned();
        for z in 0..np {
            for y in 0..np {
                let (mz, my) = ((np - z) % np, (np - y) % np);
                data[[z, y, 0]] = d0[[z, y]] + d0[[mz, my]].conj();
                weight[[z, y, 0]] = w0[[z, y]] + w0[[mz, my]];
            }
        }
        let (sum, cnt) = weight
            .iter()
            .filter(|w| **w > 0.0)
            .fold((0.0f64, 0usize), |(s, c), w| (s + *w as f64, c + 1));
        let floor = if cnt > 0 {
            (wiener.max(0.0) * sum / cnt as f64) as f32
        } else {
            0.0
        };
        data.as_slice_mut()
            .expect("contiguous")
            .par_iter_mut()
            .zip(weight.as_slice().expect("contiguous").par_iter())
            .for_each(|(d, w)| {
                let den = *w + floor;
                *d = if den > 0.0 {
                    *d / den
                } else {
                    Complex32::new(0.0, 0.0)
                };
            });
        let mut vol = Array3::<f32>::zeros((np, np, np));
        fft.inverse_into(&mut data, &mut vol);
        // Crop: output voxel i (centre n/2) is padded voxel (i − n/2) mod N; gridding
        // correction per axis.
        let corr: Vec<f32> = (0..n)
            .map(|i| {
                let d = (i as f64 - (n / 2) as f64) / np as f64;
                let s = if d == 0.0 {
                    1.0
                } else {
                    (std::f64::consts::PI * d).sin() / (std::f64::consts::PI * d)
                };
                (1.0 / (s * s)) as f32
            })
            .collect();
        let src = |i: usize| (i as isize - (n / 2) as isize).rem_euclid(np as isize) as usize;
        Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            vol[[src(z), src(y), src(x)]] * corr[z] * corr[y] * corr[x]
        })
    }

    /// A 3D FFT plan for [`Reconstructor::finish_with`].
    pub fn plan(&self) -> Fft3 {
        Fft3::new(self.np, self.np, self.np)
    }

    /// [`Reconstructor::finish_with`] with a plan made here.
    pub fn finish(&self, wiener: f64) -> Array3<f32> {
        self.finish_with(&self.plan(), wiener)
    }
}

/// `(a, w)`: the data factor and weight of the image sample at `(fx, fy)` cycles/pixel
/// (module docs); the CTF and the dose filter are evaluated at `(fx, fy) / pixel` 1/Å.
#[inline]
fn transfer(slice: &Slice, fx: f64, fy: f64) -> (f64, f64) {
    let inv = 1.0 / slice.pixel_a;
    let (sx, sy) = (fx * inv, fy * inv);
    let (c, premult) = match &slice.ctf {
        CtfWeight::None => (1.0, false),
        CtfWeight::Multiply(ctf) => (slice.ctf_scale * ctf.value(sx, sy), false),
        CtfWeight::Premultiplied(ctf) => (slice.ctf_scale * ctf.value(sx, sy), true),
    };
    let d = match slice.exposure_e_a2 {
        Some(e) => dose_filter((sx * sx + sy * sy).sqrt(), e, slice.voltage_kv),
        None => 1.0,
    };
    let cd = c * d;
    if premult {
        (d, cd * cd)
    } else {
        (cd, cd * cd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::transpose;
    use crate::core::interp::rotate_volume;
    use crate::core::so3::uniform_rotations;
    use crate::recon::fsc::fsc;

    /// An asymmetric phantom: three Gaussian blobs of different sizes, `n³`.
    fn phantom(n: usize) -> Array3<f32> {
        let blobs = [
            ([0.0, 0.0, 0.0], 3.0, 1.0),
            ([5.0, 2.0, -1.0], 2.0, 0.8),
            ([-2.0, 6.0, 3.0], 1.5, -0.6),
            ([1.0, -4.0, 5.0], 1.8, 0.7),
        ];
        let c = (n / 2) as f64;
        Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            let p = [x as f64 - c, y as f64 - c, z as f64 - c];
            blobs
                .iter()
                .map(|(q, s, a)| {
                    let d2: f64 = (0..3).map(|k| (p[k] - q[k]).powi(2)).sum();
                    a * (-d2 / (2.0 * s * s)).exp()
                })
                .sum::<f64>() as f32
        })
    }

    /// Projection along z of the particle `reference(Aᵀ·x)`, `[y, x]`.
    fn project(vol: &Array3<f32>, a: &Mat3) -> Array2<f32> {
        rotate_volume(vol.view(), a, [0.0; 3]).sum_axis(Axis(0))
    }

    fn slice(a: &Mat3, n: usize) -> Slice {
        Slice {
            to_reference: transpose(a),
            centre_px: [(n / 2) as f64; 2],
            pixel_a: 10.0,
            ctf: CtfWeight::None,
            ctf_scale: 1.0,
            exposure_e_a2: None,
            voltage_kv: 300.0,
        }
    }

    #[test]
    fn reconstructs_a_phantom_from_its_projections_and_not_its_mirror() {
        let n = 24;
        let v = phantom(n);
        let rots = uniform_rotations(15.0);
        assert!(rots.len() > 300, "{}", rots.len());
        let mut rec = Reconstructor::new(n, 2);
        let mut mirrored = Reconstructor::new(n, 2);
        let mut ws = rec.inserter();
        for a in &rots {
            let img = project(&v, a);
            rec.insert(&mut ws, img.view(), &slice(a, n));
            let mut s = slice(a, n);
            s.to_reference[2] = s.to_reference[2].map(|x| -x);
            mirrored.insert(&mut ws, img.view(), &s);
        }
        let map = rec.finish(1e-3);
        let f = fsc(map.view(), v.view(), 1.0);
        println!("FSC vs phantom: {:?}", f.fsc);
        // The phantom's power is below 0.25 cycles/voxel; there the map matches it.
        assert!(f.fsc[1..6].iter().all(|&x| x > 0.98), "{:?}", f.fsc);
        // Amplitude: the map equals the phantom (projection units), not just correlates.
        let ratio = map.iter().zip(v.iter()).map(|(a, b)| a * b).sum::<f32>()
            / v.iter().map(|b| b * b).sum::<f32>();
        assert!((ratio - 1.0).abs() < 0.05, "scale {ratio}");
        let g = fsc(mirrored.finish(1e-3).view(), v.view(), 1.0);
        assert!(g.mean_in(0.1, 0.2) < 0.5, "mirror scores {:?}", g.fsc);
    }

    #[test]
    fn sub_pixel_centres_ctf_and_sums_add_up() {
        let n = 16;
        let v = phantom(n);
        let rots = uniform_rotations(30.0);
        let ctf = Ctf {
            voltage_kv: 300.0,
            cs_mm: 2.7,
            amplitude_contrast: 0.07,
            defocus_u_a: 15000.0,
            defocus_v_a: 14000.0,
            astig_angle_deg: 30.0,
            phase_shift_deg: 0.0,
        };
        let mut plan = Fft2::new(n, n);
        let mut plain = Reconstructor::new(n, 2);
        let mut halves = [Reconstructor::new(n, 2), Reconstructor::new(n, 2)];
        let mut ws = plain.inserter();
        for (i, a) in rots.iter().enumerate() {
            // Content moved by (+0.4, −1.3) px and multiplied by the CTF.
            let mut spec = plan.forward(project(&v, a).view());
            shift_spectrum(&mut spec, n, -1.3, 0.4);
            let fy = fftfreq(n);
            for (iy, mut row) in spec.axis_iter_mut(Axis(0)).enumerate() {
                for (ix, c) in row.iter_mut().enumerate() {
                    *c *= ctf.value(ix as f64 / n as f64 / 10.0, fy[iy] as f64 / 10.0) as f32;
                }
            }
            let img = plan.inverse(spec);
            let mut s = slice(a, n);
            s.centre_px = [n as f64 / 2.0 + 0.4, n as f64 / 2.0 - 1.3];
            s.ctf = CtfWeight::Multiply(ctf);
            plain.insert(&mut ws, img.view(), &s);
            halves[i % 2].insert(&mut ws, img.view(), &s);
        }
        let [mut h1, h2] = halves;
        h1.add(&h2);
        let (d1, w1) = h1.buffers();
        let (d0, w0) = plain.buffers();
        let dd = d1
            .iter()
            .zip(d0)
            .map(|(a, b)| (a - b).norm())
            .fold(0.0, f32::max);
        let dw = w1
            .iter()
            .zip(w0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(dd < 1e-3 && dw < 1e-3, "{dd} {dw}");
        assert_eq!(h1.data_mut().len(), 2 * h1.weight_mut().len());
        let f = fsc(plain.finish(1e-2).view(), v.view(), 10.0);
        println!("FSC (CTF, shifted): {:?}", f.fsc);
        // CTF-multiplied images with sub-pixel centres give the phantom back (the 30° sampling
        // of these few views limits the outer shells).
        assert!(f.fsc[1..4].iter().all(|&x| x > 0.95), "{:?}", f.fsc);
    }
}
