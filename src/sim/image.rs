//! Image formation for one tilt: weak-phase contrast with a defocus gradient across the
//! tilted image, the exposure filter, electron counts, Poisson noise and movie frames.
//!
//! `φ = σ·P` (rad) with `P` the projected excess potential (V·Å) and `σ` the interaction
//! constant; the weak-phase image is `I/I0 = 1 − 2·(CTF ⊗ φ)`, with the CTF of
//! [`crate::ctf::Ctf`] (positive at low frequency, so dense matter is dark), multiplied by the
//! dose filter at the tilt's mid-exposure (pre-exposure + half its own dose).

use crate::core::fourier::{fftfreq, fourier_shift_2d, rfftfreq, Fft2};
use crate::core::geometry::{apply, transpose, TiltImage, TiltSeriesGeometry};
use crate::ctf::{dose_filter, electron_wavelength_a, interaction_constant, Ctf};
use ndarray::{Array2, Array3, Axis};
use num_complex::Complex32;
use rand::Rng;
use rand_distr::{Distribution, Normal, Poisson};

/// Largest CTF phase change (radians) at Nyquist between neighbouring defocus buckets.
const BUCKET_PHASE_RAD: f64 = std::f64::consts::PI / 8.0;

/// Defocus offset (Å, added to U and V) of every pixel of tilt `i`: the defocus at the point
/// of the specimen mid-plane (z = 0) that projects to the pixel, minus the tilt's defocus.
pub fn defocus_offset_map(geom: &TiltSeriesGeometry, i: usize) -> Array2<f64> {
    Array2::from_shape_fn((geom.ny, geom.nx), |(v, u)| {
        geom.defocus_offset_at(i, u as f64, v as f64)
    })
}

/// Expected electron counts per pixel (`[y, x]`) of tilt `i` from its projected excess
/// potential `proj` (V·Å, `[y, x]`, same size as the images). `plan` must be for `(ny, nx)`.
///
/// The defocus gradient is handled with defocus buckets spaced so that the CTF phase at
/// Nyquist changes by at most π/8 between neighbours; each pixel blends its two nearest
/// buckets linearly. Counts are `dose·px²·exp(−contrast)` (= `dose·px²·(1 − contrast)` to
/// first order in the weak-phase contrast, and never negative).
pub fn expected_counts(
    proj: &Array2<f32>,
    geom: &TiltSeriesGeometry,
    i: usize,
    plan: &mut Fft2,
) -> Array2<f32> {
    counts_from_contrast(weak_phase_contrast(proj, geom, i, plan, 0.0), geom, i)
}

/// Expected counts of tilt `i` of a specimen cut into depth layers: `layers` holds per layer
/// its projected excess potential (V·Å, `[y, x]`) and the height `z_a` (Å, specimen frame,
/// +z towards the source for `hand = +1`) of its centre. Each layer is imaged with the
/// defocus at its height — a point at height `z` on a pixel's ray is `hand·z / (Rᵀe_z)_z`
/// closer to the source than the mid-plane point — and the contrasts of the layers add
/// (`I = N·exp(−Σ_k c_k)`), so a thick specimen shows the depth dependence of the CTF that
/// 3D CTF correction undoes. One layer at `z = 0` is exactly [`expected_counts`].
pub fn layered_counts(
    layers: &[(Array2<f32>, f64)],
    geom: &TiltSeriesGeometry,
    i: usize,
    plan: &mut Fft2,
) -> Array2<f32> {
    let cos_beam = transpose(&geom.tilts[i].rotation())[2][2];
    let mut total = Array2::<f32>::zeros((geom.ny, geom.nx));
    for (proj, z) in layers {
        let closer = geom.hand * z / cos_beam;
        total += &weak_phase_contrast(proj, geom, i, plan, -closer);
    }
    counts_from_contrast(total, geom, i)
}

/// `dose·px²·exp(−contrast)` of tilt `i`: equal to the weak-phase `N·(1 − c)` to first
/// order, and positive where the linear model breaks down (gold beads: φ ≈ 1.7 rad).
fn counts_from_contrast(
    mut contrast: Array2<f32>,
    geom: &TiltSeriesGeometry,
    i: usize,
) -> Array2<f32> {
    let px = geom.pixel_a;
    let n_e = (geom.tilts[i].dose_e_a2 * px * px) as f32;
    contrast.mapv_inplace(|c| n_e * (-c).exp());
    contrast
}

/// The weak-phase contrast `2σ·(CTF·dose filter) ⊗ P` of tilt `i` (module docs) with every
/// defocus increased by `extra_defocus_a` Å.
fn weak_phase_contrast(
    proj: &Array2<f32>,
    geom: &TiltSeriesGeometry,
    i: usize,
    plan: &mut Fft2,
    extra_defocus_a: f64,
) -> Array2<f32> {
    let t = &geom.tilts[i];
    let (ny, nx) = (geom.ny, geom.nx);
    let px = geom.pixel_a;
    let o = &geom.optics;
    let sigma = interaction_constant(o.voltage_kv);
    let lambda = electron_wavelength_a(o.voltage_kv);
    let spec = plan.forward(proj.view());
    let offsets = defocus_offset_map(geom, i);
    let (dmin, dmax) = offsets
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &d| {
            (a.min(d), b.max(d))
        });
    let s_nyq = 0.5 / px;
    let max_step = BUCKET_PHASE_RAD / (std::f64::consts::PI * lambda * s_nyq * s_nyq);
    let nb = ((dmax - dmin) / max_step).ceil() as usize + 1;
    let step = if nb > 1 {
        (dmax - dmin) / (nb - 1) as f64
    } else {
        1.0
    };
    let fy = fftfreq(ny);
    let fx = rfftfreq(nx);
    let exposure = t.pre_exposure_e_a2 + 0.5 * t.dose_e_a2;
    // per-frequency dose filter × 2σ (the weak-phase factor)
    let dfilt = Array2::from_shape_fn(spec.dim(), |(y, x)| {
        let (sy, sx) = (fy[y] as f64 / px, fx[x] as f64 / px);
        2.0 * sigma * dose_filter((sx * sx + sy * sy).sqrt(), exposure, o.voltage_kv)
    });
    let mut contrast = Array2::<f32>::zeros((ny, nx));
    let mut work = spec.clone();
    let mut img = Array2::<f32>::zeros((ny, nx));
    for k in 0..nb {
        let d = dmin + k as f64 * step;
        let ctf = Ctf {
            voltage_kv: o.voltage_kv,
            cs_mm: o.cs_mm,
            amplitude_contrast: o.amplitude_contrast,
            defocus_u_a: t.defocus_u_a + d + extra_defocus_a,
            defocus_v_a: t.defocus_v_a + d + extra_defocus_a,
            astig_angle_deg: t.astig_angle_deg,
            phase_shift_deg: 0.0,
        };
        for (((y, x), w), s) in work.indexed_iter_mut().zip(spec.iter()) {
            let (sy, sx) = (fy[y] as f64 / px, fx[x] as f64 / px);
            let f = ctf.value(sx, sy) * dfilt[[y, x]];
            *w = *s * Complex32::new(f as f32, 0.0);
        }
        plan.inverse_into(&mut work, &mut img);
        for ((c, &v), &off) in contrast.iter_mut().zip(img.iter()).zip(offsets.iter()) {
            let wgt = if nb == 1 {
                1.0
            } else {
                (1.0 - ((off - dmin) / step - k as f64).abs()).max(0.0)
            };
            if wgt > 0.0 {
                *c += (wgt as f32) * v;
            }
        }
    }
    contrast
}

/// Number density of water molecules in vitreous ice (0.92 g/cm³), molecules per Å³.
pub const ICE_MOLECULES_PER_A3: f64 = 0.0307;

/// Standard deviation (V·Å) per pixel of the amorphous-ice texture of tilt `t`: the projected
/// potential of `N` water molecules in a pixel column of area `px²` and length
/// `L = thickness / cos(beam, slab normal)` fluctuates with `var N = S·⟨N⟩` (`S` the effective
/// structure factor; `S = 1` for independent molecules), each molecule carrying the volume
/// integral `V_ice / n` of the mean ice potential. Hence `σ = V_ice·sqrt(S·L / (n·px²))`.
pub fn ice_texture_sigma(t: &TiltImage, thickness_a: f64, pixel_a: f64, s_eff: f64) -> f64 {
    let dz = apply(&transpose(&t.rotation()), [0.0, 0.0, 1.0])[2]
        .abs()
        .max(0.05);
    let path = thickness_a / dz;
    crate::sim::phantom::ICE_POTENTIAL_V
        * (s_eff.max(0.0) * path / (ICE_MOLECULES_PER_A3 * pixel_a * pixel_a)).sqrt()
}

/// Add a white Gaussian field of standard deviation `sigma` (V·Å) to the projected excess
/// potential `proj` (`[y, x]`), in row-major order from `rng` (the amorphous-ice texture).
pub fn add_ice_texture<R: Rng>(proj: &mut Array2<f32>, sigma: f64, rng: &mut R) {
    if let Ok(n) = Normal::new(0.0, sigma.max(0.0)) {
        proj.mapv_inplace(|v| v + n.sample(rng) as f32);
    }
}

/// Poisson sample of every pixel of `mean` (counts) with `rng`, in row-major order.
pub fn poisson_image<R: Rng>(mean: &Array2<f32>, rng: &mut R) -> Array2<f32> {
    mean.mapv(|m| {
        if m <= 0.0 {
            0.0
        } else {
            Poisson::new(m as f64)
                .map(|p| p.sample(rng) as f32)
                .unwrap_or(m)
        }
    })
}

/// A smooth drift trajectory (Å, `[dx, dy]` per frame, frame 0 at the origin): constant speed
/// `a_per_frame`, the direction starting uniformly at random and turning by N(0, 0.3 rad)
/// per frame.
pub fn drift_trajectory<R: Rng>(frames: usize, a_per_frame: f64, rng: &mut R) -> Vec<[f64; 2]> {
    let turn = Normal::new(0.0, 0.3).expect("sigma");
    let mut theta = rng.random::<f64>() * std::f64::consts::TAU;
    let mut pos = [0.0, 0.0];
    let mut out = Vec::with_capacity(frames);
    for f in 0..frames {
        if f > 0 {
            pos[0] += a_per_frame * theta.cos();
            pos[1] += a_per_frame * theta.sin();
            theta += turn.sample(rng);
        }
        out.push(pos);
    }
    out
}

/// A smooth local (beam-induced) deformation of one movie, on top of the global drift: the
/// content at image position `(x, y)` (pixels of the cropped image, `[0, nx) × [0, ny)`) of
/// frame `f` is displaced by [`Self::shift_a`] Å, zero at frame 0 and growing fast at first
/// and then slower (`T(τ) = 2τ − τ²`, `τ = f / (F − 1)`), with a spatial pattern of
/// wavelength ≈ two image widths: `dx = A·T·cos(π(a·u + b·v) + φx)`,
/// `dy = A·T·sin(π(c·u + d·v) + φy)`, `u = x/nx − ½`, `v = y/ny − ½` (so `|d| ≤ A`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalDeformation {
    /// Largest displacement at the last frame, Å.
    pub amplitude_a: f64,
    /// Image width, pixels.
    pub nx: usize,
    /// Image height, pixels.
    pub ny: usize,
    /// Frames of the movie.
    pub frames: usize,
    /// Spatial frequencies `[a, b, c, d]` (half-cycles per image) and phases `[φx, φy]`, rad.
    pub pattern: [f64; 6],
}

impl LocalDeformation {
    /// A random deformation of amplitude `amplitude_a` Å (pattern drawn from `rng`).
    pub fn random<R: Rng>(
        amplitude_a: f64,
        nx: usize,
        ny: usize,
        frames: usize,
        rng: &mut R,
    ) -> Self {
        let mut pattern = [0.0; 6];
        for (k, v) in pattern.iter_mut().enumerate() {
            *v = if k < 4 {
                0.5 + rng.random::<f64>() * 0.5
            } else {
                rng.random::<f64>() * std::f64::consts::TAU
            };
        }
        LocalDeformation {
            amplitude_a,
            nx,
            ny,
            frames,
            pattern,
        }
    }

    /// The local displacement `[dx, dy]` (Å) of the content at pixel `(x, y)` of frame `frame`
    /// (type docs; fractional frames allowed).
    pub fn shift_a(&self, x: f64, y: f64, frame: f64) -> [f64; 2] {
        let tau = frame / (self.frames.max(2) - 1) as f64;
        let t = self.amplitude_a * (2.0 * tau - tau * tau);
        let u = x / self.nx.max(1) as f64 - 0.5;
        let v = y / self.ny.max(1) as f64 - 0.5;
        let [a, b, c, d, px, py] = self.pattern;
        let pi = std::f64::consts::PI;
        [
            t * (pi * (a * u + b * v) + px).cos(),
            t * (pi * (c * u + d * v) + py).sin(),
        ]
    }
}

/// Movie frames of one tilt (`[frame, y, x]`) and their ideal motion-corrected sum.
///
/// Frame `f` holds `mean/F` shifted by `drift[f]` (Å; content moves by +drift, Fourier shift,
/// periodic), Poisson-sampled when `noise`. The sum undoes each frame's drift exactly (the
/// truth) before adding, so it is on the grid of the stack image; the sum is clipped at 0.
pub fn movie_frames<R: Rng>(
    mean: &Array2<f32>,
    drift_a: &[[f64; 2]],
    pixel_a: f64,
    noise: bool,
    plan: &mut Fft2,
    rng: &mut R,
) -> (Array3<f32>, Array2<f32>) {
    movie_frames_local(mean, drift_a, None, pixel_a, noise, plan, rng)
}

/// [`movie_frames`] with an optional local deformation `local = (field, pad)`: after the
/// global drift, frame `f` is warped (bilinear) so that the content at pixel `p` moves by
/// `field.shift_a(p − pad, f)` (`pad` = offset of the field's image inside `mean`, pixels).
/// The ideal sum undoes the global drift only (the local deformation stays in it).
pub fn movie_frames_local<R: Rng>(
    mean: &Array2<f32>,
    drift_a: &[[f64; 2]],
    local: Option<(&LocalDeformation, usize)>,
    pixel_a: f64,
    noise: bool,
    plan: &mut Fft2,
    rng: &mut R,
) -> (Array3<f32>, Array2<f32>) {
    let (ny, nx) = mean.dim();
    let nf = drift_a.len().max(1);
    let per = mean.mapv(|v| v / nf as f32);
    let mut frames = Array3::<f32>::zeros((nf, ny, nx));
    let mut sum = Array2::<f32>::zeros((ny, nx));
    for (f, mut fr) in frames.axis_iter_mut(Axis(0)).enumerate() {
        let d = drift_a.get(f).copied().unwrap_or([0.0, 0.0]);
        let mut shifted =
            fourier_shift_2d(per.view(), d[1] / pixel_a, d[0] / pixel_a, plan).mapv(|v| v.max(0.0));
        if let Some((field, pad)) = local {
            let src = shifted.clone();
            let v = src.view();
            let o = pad as f64;
            for ((y, x), out) in shifted.indexed_iter_mut() {
                let l = field.shift_a(x as f64 - o, y as f64 - o, f as f64);
                let (sx, sy) = (x as f64 - l[0] / pixel_a, y as f64 - l[1] / pixel_a);
                *out = crate::core::interp::bilinear(
                    &v,
                    sy.clamp(0.0, (ny - 1) as f64),
                    sx.clamp(0.0, (nx - 1) as f64),
                );
            }
        }
        let frame = if noise {
            poisson_image(&shifted, rng)
        } else {
            shifted
        };
        let back = fourier_shift_2d(frame.view(), -d[1] / pixel_a, -d[0] / pixel_a, plan);
        sum += &back;
        fr.assign(&frame);
    }
    // interpolating Poisson frames can ring below zero next to near-empty (gold) pixels
    sum.mapv_inplace(|v| v.max(0.0));
    (frames, sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::TiltSeriesGeometry;

    fn geom(tilt: f64, axis: f64) -> TiltSeriesGeometry {
        let mut g = TiltSeriesGeometry::from_angles(64, 64, 8.0, &[tilt], axis);
        g.tilts[0].defocus_u_a = 30000.0;
        g.tilts[0].defocus_v_a = 30000.0;
        g.tilts[0].dose_e_a2 = 3.0;
        g
    }

    #[test]
    fn defocus_gradient_follows_geometry() {
        let g = geom(40.0, 0.0);
        let off = defocus_offset_map(&g, 0);
        // axis along +y: x > centre rises towards the source for tilt > 0 -> less defocus
        // depth of (x, 0, 0) is −sin(tilt)·x, defocus = df + sin·x... check against geometry:
        let p = [10.0 * 8.0 / 40f64.to_radians().cos(), 0.0, 0.0];
        let want = g.defocus_at(0, p) - 30000.0;
        assert!(
            (off[[32, 42]] - want).abs() < 1e-6,
            "{} {}",
            off[[32, 42]],
            want
        );
        assert!(off[[32, 32]].abs() < 1e-9);
        // rows along the axis have constant defocus
        assert!((off[[5, 42]] - off[[60, 42]]).abs() < 1e-9);
    }

    #[test]
    fn ice_texture_variance_follows_path_length() {
        let g0 = geom(0.0, 0.0);
        let g60 = geom(60.0, 0.0);
        let s0 = ice_texture_sigma(&g0.tilts[0], 500.0, 10.0, 1.0);
        let s60 = ice_texture_sigma(&g60.tilts[0], 500.0, 10.0, 1.0);
        // variance ∝ thickness / cos(tilt): cos 60° = 0.5 doubles it
        assert!((s60 * s60 / (s0 * s0) - 2.0).abs() < 1e-9);
        // 4.5 V·sqrt(500 Å / (0.0307 Å⁻³ · 100 Å²)) ≈ 57 V·Å
        assert!((s0 - 4.5 * (500.0f64 / 3.07).sqrt()).abs() < 1e-9, "{s0}");
        assert_eq!(ice_texture_sigma(&g0.tilts[0], 500.0, 10.0, 0.0), 0.0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        use rand::SeedableRng;
        let mut p = Array2::<f32>::zeros((128, 128));
        add_ice_texture(&mut p, s0, &mut rng);
        let var = p.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / p.len() as f64;
        assert!((var.sqrt() / s0 - 1.0).abs() < 0.02, "{} {s0}", var.sqrt());
    }

    #[test]
    fn flat_projection_gives_dose_and_dark_blob() {
        let g = geom(0.0, 0.0);
        let mut plan = Fft2::new(64, 64);
        let zero = Array2::<f32>::zeros((64, 64));
        let c = expected_counts(&zero, &g, 0, &mut plan);
        assert!(c.iter().all(|&v| (v - 192.0).abs() < 1e-3));
        // a dense blob is dark at its centre (low-pass CTF ≈ positive)
        let blob = Array2::from_shape_fn((64, 64), |(y, x)| {
            let r2 = ((y as f64 - 32.0).powi(2) + (x as f64 - 32.0).powi(2)) / 9.0;
            (300.0 * (-0.5 * r2).exp()) as f32
        });
        let c = expected_counts(&blob, &g, 0, &mut plan);
        assert!(c[[32, 32]] < 190.0, "{}", c[[32, 32]]);
    }

    #[test]
    fn movie_sum_restores_image_without_noise() {
        let mean = Array2::from_shape_fn((32, 32), |(y, x)| 100.0 + ((x * 7 + y * 3) % 11) as f32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        use rand::SeedableRng;
        let drift = drift_trajectory(5, 3.0, &mut rng);
        assert_eq!(drift[0], [0.0, 0.0]);
        let step = ((drift[1][0]).powi(2) + (drift[1][1]).powi(2)).sqrt();
        assert!((step - 3.0).abs() < 1e-9);
        let mut plan = Fft2::new(32, 32);
        let (frames, sum) = movie_frames(&mean, &drift, 2.0, false, &mut plan, &mut rng);
        assert_eq!(frames.dim(), (5, 32, 32));
        // exact up to the Nyquist terms that a fractional shift of a real image cannot keep
        for (a, b) in sum.iter().zip(mean.iter()) {
            assert!((a - b).abs() < 0.005 * b, "{a} {b}");
        }
    }
}
