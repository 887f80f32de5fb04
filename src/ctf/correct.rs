//! CTF correction of tilt images: phase flipping and Wiener filtering, with the defocus
//! gradient across a tilted image handled as IMOD's `ctfphaseflip` does (strips parallel to
//! the tilt axis, each corrected with its own defocus), and at any specimen height (the
//! depth-dependent correction of `recon::ctf3d` corrects each tilt once per Z slab).
//!
//! Defocus across an image: the specimen plane `z = z_a` (Å, about the tomogram centre) seen
//! in tilt `i` has, at image pixel `(u, v)`, the defocus of the point of that plane that
//! projects to `(u, v)` ([`defocus_plane`], from `TiltSeriesGeometry::defocus_at`). It is an
//! affine function of `(u, v)`, constant along lines parallel to the projected tilt axis
//! (for any axis angle), so "strips parallel to the axis" are the level sets of this
//! function. Strips are made seamless by correcting the whole image at defocus values
//! `d_0 < d_1 < …` spaced by at most the tolerance ([`defocus_tolerance_a`]) and giving each
//! pixel the linear blend of the two values that bracket its own defocus (a pixel whose
//! defocus equals `d_k` takes exactly correction `k`; no seam between strips).
//!
//! Filters (per frequency `s`, `c(s)` the CTF of [`Ctf::value`] at the strip's defocus):
//! - phase flip: `sign(c)` (`+1` where `c = 0`);
//! - Wiener: `c·D / (c²·D² + 1/snr)` with `D` the exposure filter of the tilt's
//!   mid-exposure (pre-exposure + half its dose; `D = 1` without dose), normalised so that
//!   the gain is 1 where `|c·D| = 1` when `snr → ∞`.

use crate::core::fourier::{fftfreq, rfftfreq, Fft2};
use crate::core::geometry::{apply, transpose, TiltSeriesGeometry};
use crate::ctf::model::{dose_filter, electron_wavelength_a, Ctf};
use ndarray::{Array2, ArrayViewMut2};
use num_complex::Complex32;
use std::f64::consts::PI;

/// Largest CTF phase error (radians) at the highest corrected frequency tolerated between a
/// pixel's defocus and the defocus it is corrected with (before blending).
pub const PHASE_TOLERANCE_RAD: f64 = PI / 4.0;

/// How one image is corrected.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Filter {
    /// Multiply by the sign of the CTF.
    PhaseFlip,
    /// Wiener filter `c·D/(c²·D² + 1/snr)` with a constant `snr` (> 0).
    Wiener { snr: f64 },
}

/// The defocus across one tilt image for one specimen plane: `defocus(u, v) = centre_a +
/// grad_u·(u − cu) + grad_v·(v − cv)` Å (mean of U and V; U and V are offset by the same
/// amount), `(u, v)` image pixels, `(cu, cv)` the pixel where the tomogram centre projects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DefocusPlane {
    /// Defocus at `(cu, cv)`, Å.
    pub centre_a: f64,
    /// Å per pixel along image x.
    pub grad_u: f64,
    /// Å per pixel along image y.
    pub grad_v: f64,
    pub cu: f64,
    pub cv: f64,
}

impl DefocusPlane {
    /// Defocus (Å) at image pixel `(u, v)`.
    pub fn at(&self, u: f64, v: f64) -> f64 {
        self.centre_a + self.grad_u * (u - self.cu) + self.grad_v * (v - self.cv)
    }

    /// Smallest and largest defocus over an `nx × ny` image (at its corner pixels), Å.
    pub fn range(&self, nx: usize, ny: usize) -> (f64, f64) {
        let (xm, ym) = ((nx.max(1) - 1) as f64, (ny.max(1) - 1) as f64);
        let c = [
            self.at(0.0, 0.0),
            self.at(xm, 0.0),
            self.at(0.0, ym),
            self.at(xm, ym),
        ];
        c.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &d| {
                (a.min(d), b.max(d))
            })
    }
}

/// Defocus of the specimen plane `z = z_a` (Å about the tomogram centre) across tilt `i` of
/// `geom` for images binned by `bin` (pixel `geom.pixel_a·bin`, size `n/bin`): at pixel
/// `(u, v)` the defocus ([`TiltSeriesGeometry::defocus_at`]) of the point of the plane whose
/// projection is `(u, v)`. A tilt of 90° (rays inside the plane) gives the centre defocus
/// everywhere.
pub fn defocus_plane(geom: &TiltSeriesGeometry, i: usize, bin: usize, z_a: f64) -> DefocusPlane {
    let t = &geom.tilts[i];
    let b = bin.max(1);
    let px = geom.pixel_a * b as f64;
    let (cu, cv) = (
        (geom.nx / b / 2) as f64 + t.shift_x_a / px,
        (geom.ny / b / 2) as f64 + t.shift_y_a / px,
    );
    let rt = transpose(&t.rotation());
    let dz = rt[2][2]; // z component of the beam direction Rᵀ·e_z
                       // the point of the plane on the ray through image offset (a, b) Å
    let point = |a: f64, bb: f64| {
        let p0 = apply(&rt, [a, bb, 0.0]);
        let w = if dz.abs() > 1e-9 {
            (z_a - p0[2]) / dz
        } else {
            0.0
        };
        [
            p0[0] + w * rt[0][2],
            p0[1] + w * rt[1][2],
            p0[2] + w * rt[2][2],
        ]
    };
    let d0 = geom.defocus_at(i, point(0.0, 0.0));
    let du = geom.defocus_at(i, point(px, 0.0)) - d0;
    let dv = geom.defocus_at(i, point(0.0, px)) - d0;
    DefocusPlane {
        centre_a: d0,
        grad_u: du,
        grad_v: dv,
        cu,
        cv,
    }
}

/// The defocus step (Å) that changes the CTF phase by `phase_rad` at spatial frequency
/// `s_per_a` (1/Å): `phase / (π·λ·s²)`.
pub fn defocus_tolerance_a(voltage_kv: f64, s_per_a: f64, phase_rad: f64) -> f64 {
    phase_rad / (PI * electron_wavelength_a(voltage_kv) * s_per_a * s_per_a)
}

/// A CTF corrector for `(ny, nx)` images of `pixel_a` Å: the FFT plan, the frequency grids
/// and every buffer are made once and reused for every image (clone one per thread).
#[derive(Clone)]
pub struct Corrector {
    ny: usize,
    nx: usize,
    plan: Fft2,
    /// `s²` per frequency, 1/Å².
    s2: Array2<f64>,
    /// Frequency azimuth from +x, radians.
    theta: Array2<f64>,
    /// Per image: the CTF phase at the plane's centre defocus plus `asin A`.
    g0: Array2<f64>,
    /// Per image: the exposure filter (Wiener) or 1.
    dose: Array2<f64>,
    spec: Array2<Complex32>,
    work: Array2<Complex32>,
    out: Array2<f32>,
    acc: Array2<f32>,
}

impl Corrector {
    /// Plan for `(ny, nx)` images of `pixel_a` Å.
    pub fn new(ny: usize, nx: usize, pixel_a: f64) -> Self {
        let fy = fftfreq(ny);
        let fx = rfftfreq(nx);
        let h = (ny, nx / 2 + 1);
        let s2 = Array2::from_shape_fn(h, |(y, x)| {
            let (sy, sx) = (fy[y] as f64 / pixel_a, fx[x] as f64 / pixel_a);
            sx * sx + sy * sy
        });
        let theta = Array2::from_shape_fn(h, |(y, x)| (fy[y] as f64).atan2(fx[x] as f64));
        Corrector {
            ny,
            nx,
            plan: Fft2::new(ny, nx),
            s2,
            theta,
            g0: Array2::zeros(h),
            dose: Array2::zeros(h),
            spec: Array2::zeros(h),
            work: Array2::zeros(h),
            out: Array2::zeros((ny, nx)),
            acc: Array2::zeros((ny, nx)),
        }
    }

    /// Correct `img` `(ny, nx)` in place with `filter`, for the CTF `ctf` whose U and V are
    /// those at the plane's centre (`ctf.defocus_u/v_a` are offset by `plane.at(u, v) −
    /// plane.centre_a` at every pixel; astigmatism angle, voltage, Cs and amplitude contrast
    /// as given), `exposure_e_a2` the exposure for the Wiener dose filter (0: none).
    /// The defocus range over the image is covered by `n` corrections `d_0..d_{n−1}`
    /// spaced by at most `tolerance_a` Å, blended linearly per pixel (module docs).
    /// Returns the number of corrections (strips) used.
    pub fn correct(
        &mut self,
        mut img: ArrayViewMut2<f32>,
        ctf: &Ctf,
        plane: &DefocusPlane,
        filter: Filter,
        exposure_e_a2: f64,
        tolerance_a: f64,
    ) -> usize {
        assert_eq!(
            img.dim(),
            (self.ny, self.nx),
            "Corrector::correct: image shape"
        );
        let lambda = electron_wavelength_a(ctf.voltage_kv);
        let cs_a = ctf.cs_mm * 1e7;
        let amp = ctf.amplitude_contrast.clamp(0.0, 1.0).asin();
        let (dmin, dmax) = plane.range(self.nx, self.ny);
        let tol = if tolerance_a.is_finite() && tolerance_a > 0.0 {
            tolerance_a
        } else {
            f64::INFINITY
        };
        let n = if (dmax - dmin) <= tol {
            1
        } else {
            ((dmax - dmin) / tol).ceil() as usize + 1
        };
        let step = if n > 1 {
            (dmax - dmin) / (n - 1) as f64
        } else {
            0.0
        };
        // a single correction uses the image's mid defocus
        let first = if n == 1 { 0.5 * (dmin + dmax) } else { dmin };
        self.plan.forward_into(img.view(), &mut self.spec);
        self.acc.fill(0.0);
        let mean = 0.5 * (ctf.defocus_u_a + ctf.defocus_v_a);
        let half_astig = 0.5 * (ctf.defocus_u_a - ctf.defocus_v_a);
        let ast = ctf.astig_angle_deg.to_radians();
        let phase = ctf.phase_shift_deg.to_radians();
        // per frequency, once per image: the phase at the plane's centre defocus (plus the
        // amplitude-contrast phase) and, for Wiener, the exposure filter
        let pl = PI * lambda;
        for (((g0, dw), &s2), &th) in self
            .g0
            .iter_mut()
            .zip(self.dose.iter_mut())
            .zip(self.s2.iter())
            .zip(self.theta.iter())
        {
            let df = mean + half_astig * (2.0 * (th - ast)).cos();
            *g0 = pl * df * s2 - 0.5 * PI * cs_a * lambda.powi(3) * s2 * s2 + phase + amp;
            *dw = match filter {
                Filter::Wiener { .. } if exposure_e_a2 > 0.0 => {
                    dose_filter(s2.sqrt(), exposure_e_a2, ctf.voltage_kv)
                }
                _ => 1.0,
            };
        }
        for k in 0..n {
            let d = first + k as f64 * step;
            let off = d - plane.centre_a;
            for ((((w, s), &s2), &g0), &dw) in self
                .work
                .iter_mut()
                .zip(self.spec.iter())
                .zip(self.s2.iter())
                .zip(self.g0.iter())
                .zip(self.dose.iter())
            {
                let c = (g0 + pl * off * s2).sin();
                let f = match filter {
                    Filter::PhaseFlip => {
                        if c < 0.0 {
                            -1.0
                        } else {
                            1.0
                        }
                    }
                    Filter::Wiener { snr } => {
                        let cd = c * dw;
                        cd * (1.0 + 1.0 / snr) / (cd * cd + 1.0 / snr)
                    }
                };
                *w = *s * f as f32;
            }
            self.plan.inverse_into(&mut self.work, &mut self.out);
            if n == 1 {
                self.acc.assign(&self.out);
                break;
            }
            // blend weight of correction k at each pixel
            let lo = d - step;
            let hi = d + step;
            for (v, (mut arow, orow)) in self
                .acc
                .rows_mut()
                .into_iter()
                .zip(self.out.rows())
                .enumerate()
            {
                let row0 = plane.at(0.0, v as f64);
                for (u, (a, &o)) in arow.iter_mut().zip(orow.iter()).enumerate() {
                    let dp = row0 + plane.grad_u * u as f64;
                    if dp > lo && dp < hi {
                        let wgt = 1.0 - (dp - d).abs() / step;
                        *a += wgt as f32 * o;
                    }
                }
            }
        }
        img.assign(&self.acc);
        n
    }
}

/// The CTF of tilt `i` of `geom` at its centre (U, V, angle from the tilt; optics from the
/// series; no phase shift).
pub fn tilt_ctf(geom: &TiltSeriesGeometry, i: usize) -> Ctf {
    let t = &geom.tilts[i];
    Ctf {
        voltage_kv: geom.optics.voltage_kv,
        cs_mm: geom.optics.cs_mm,
        amplitude_contrast: geom.optics.amplitude_contrast,
        defocus_u_a: t.defocus_u_a,
        defocus_v_a: t.defocus_v_a,
        astig_angle_deg: t.astig_angle_deg,
        phase_shift_deg: 0.0,
    }
}

/// The CTF of tilt `i` with U and V moved so that their mean is the plane's centre defocus
/// (the plane of `z ≠ 0` has another centre defocus than the tilt's).
pub fn plane_ctf(geom: &TiltSeriesGeometry, i: usize, plane: &DefocusPlane) -> Ctf {
    let mut c = tilt_ctf(geom, i);
    let off = plane.centre_a - geom.tilts[i].defocus_mean_a();
    c.defocus_u_a += off;
    c.defocus_v_a += off;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctf(df: f64) -> Ctf {
        crate::ctf::model::test_ctf(df)
    }

    fn flat(df: f64) -> DefocusPlane {
        DefocusPlane {
            centre_a: df,
            grad_u: 0.0,
            grad_v: 0.0,
            cu: 0.0,
            cv: 0.0,
        }
    }

    /// Apply `ctf` (real, per frequency) to `img` with one FFT.
    fn modulate(img: &Array2<f32>, c: &Ctf, px: f64) -> Array2<f32> {
        let (ny, nx) = img.dim();
        let mut plan = Fft2::new(ny, nx);
        let mut spec = plan.forward(img.view());
        let (fy, fx) = (fftfreq(ny), rfftfreq(nx));
        for ((y, x), v) in spec.indexed_iter_mut() {
            *v *= c.value(fx[x] as f64 / px, fy[y] as f64 / px) as f32;
        }
        plan.inverse(spec)
    }

    #[test]
    fn phase_flip_restores_the_sign_of_a_modulated_signal() {
        // cosines at frequencies on both sides of several CTF zeros
        let (n, px) = (128, 4.0);
        let c = ctf(20000.0);
        let freqs = [(3, 0), (9, 4), (14, 10), (0, 21), (25, 17), (37, 30)];
        let mut img = Array2::<f32>::zeros((n, n));
        for &(kx, ky) in &freqs {
            for ((y, x), v) in img.indexed_iter_mut() {
                let ph = 2.0 * PI * (kx * x + ky * y) as f64 / n as f64;
                *v += ph.cos() as f32;
            }
        }
        let mut m = modulate(&img, &c, px);
        let mut corr = Corrector::new(n, n, px);
        let used = corr.correct(
            m.view_mut(),
            &c,
            &flat(20000.0),
            Filter::PhaseFlip,
            0.0,
            1e9,
        );
        assert_eq!(used, 1);
        // now every component is multiplied by |CTF| >= 0: correlate per component
        let mut plan = Fft2::new(n, n);
        let a = plan.forward(img.view());
        let b = plan.forward(m.view());
        for &(kx, ky) in &freqs {
            let (s, t) = (a[[ky, kx]], b[[ky, kx]]);
            let ratio = (t * s.conj()).re / s.norm_sqr();
            let want = c
                .value(kx as f64 / n as f64 / px, ky as f64 / n as f64 / px)
                .abs();
            assert!(
                (ratio as f64 - want).abs() < 1e-4,
                "({kx},{ky}): {ratio} vs |CTF| {want}"
            );
            assert!(ratio > 0.0);
        }
    }

    #[test]
    fn wiener_inverts_the_ctf_away_from_zeros() {
        let (n, px) = (64, 5.0);
        let c = ctf(15000.0);
        let img = Array2::from_shape_fn((n, n), |(y, x)| {
            ((x * 7 + y * 3) % 11) as f32 - 5.0 + ((x * x + y) % 5) as f32
        });
        let mut m = modulate(&img, &c, px);
        let mut corr = Corrector::new(n, n, px);
        corr.correct(
            m.view_mut(),
            &c,
            &flat(15000.0),
            Filter::Wiener { snr: 1e6 },
            0.0,
            1e9,
        );
        // per frequency: gain c²·(1+ε)/(c² + ε) ≈ 1 where |c| ≫ sqrt(ε)
        let mut plan = Fft2::new(n, n);
        let a = plan.forward(img.view());
        let b = plan.forward(m.view());
        let (fy, fx) = (fftfreq(n), rfftfreq(n));
        let mut checked = 0;
        for ((y, x), s) in a.indexed_iter() {
            let v = c.value(fx[x] as f64 / px, fy[y] as f64 / px);
            if v.abs() > 0.2 && s.norm() > 1e-2 {
                let r = b[[y, x]] / *s;
                assert!((r.re - 1.0).abs() < 1e-3 && r.im.abs() < 1e-3, "{r}");
                checked += 1;
            }
        }
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn strip_defocus_matches_geometry() {
        let mut g = TiltSeriesGeometry::from_angles(96, 80, 5.0, &[-45.0, 30.0, 0.0], 70.0);
        g.tilts[0].defocus_u_a = 31000.0;
        g.tilts[0].defocus_v_a = 29000.0;
        g.tilts[1].defocus_u_a = 20000.0;
        g.tilts[1].defocus_v_a = 20000.0;
        g.tilts[1].x_tilt_deg = 2.0;
        g.tilts[1].shift_x_a = 35.0;
        g.tilts[1].shift_y_a = -20.0;
        for &bin in &[1usize, 2] {
            for i in 0..2 {
                for &z in &[0.0, 150.0, -300.0] {
                    let pl = defocus_plane(&g, i, bin, z);
                    let proj =
                        g.tilts[i].projection(g.pixel_a * bin as f64, g.nx / bin, g.ny / bin);
                    // specimen points on the plane: their projection's defocus is defocus_at
                    for &(x, y) in &[(0.0, 0.0), (120.0, -40.0), (-200.0, 90.0)] {
                        let p = [x, y, z];
                        let uv = proj.project(p);
                        let want = g.defocus_at(i, p);
                        let got = pl.at(uv[0], uv[1]);
                        assert!(
                            (got - want).abs() < 1e-6,
                            "bin {bin} tilt {i} z {z}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        // constant along the projected tilt axis (direction (−sin a, cos a) in the image)
        let pl = defocus_plane(&g, 0, 1, 0.0);
        let a = 70f64.to_radians();
        assert!((pl.grad_u * -a.sin() + pl.grad_v * a.cos()).abs() < 1e-9);
        // the simulator's defocus map (the truth of what is corrected) agrees at every pixel
        let off = crate::sim::image::defocus_offset_map(&g, 0);
        for ((v, u), &o) in off.indexed_iter() {
            let got = pl.at(u as f64, v as f64) - g.tilts[0].defocus_mean_a();
            assert!((got - o).abs() < 1e-6, "({u},{v}) {got} vs {o}");
        }
    }

    #[test]
    fn strips_blend_seamlessly_and_match_local_correction() {
        // a gradient image: the corrected value at a pixel whose defocus equals a strip's
        // defocus is the full-image correction at that defocus
        let (n, px) = (64, 4.0);
        let c = ctf(20000.0);
        let img = Array2::from_shape_fn((n, n), |(y, x)| ((x * 13 + y * 5) % 17) as f32 - 8.0);
        let plane = DefocusPlane {
            centre_a: 20000.0,
            grad_u: 30.0,
            grad_v: 0.0,
            cu: 32.0,
            cv: 32.0,
        };
        let tol = 400.0;
        let mut corr = Corrector::new(n, n, px);
        let mut a = img.clone();
        let used = corr.correct(a.view_mut(), &c, &plane, Filter::PhaseFlip, 0.0, tol);
        let (dmin, dmax) = plane.range(n, n);
        assert_eq!(used, ((dmax - dmin) / tol).ceil() as usize + 1);
        let step = (dmax - dmin) / (used - 1) as f64;
        for k in [0usize, used - 1] {
            let d = dmin + k as f64 * step;
            let mut full = img.clone();
            let mut cc = c;
            cc.defocus_u_a = d;
            cc.defocus_v_a = d;
            corr.correct(full.view_mut(), &cc, &flat(d), Filter::PhaseFlip, 0.0, 1e9);
            // the column where plane.at == d
            let u = ((d - plane.centre_a) / plane.grad_u + plane.cu).round() as usize;
            assert!((plane.at(u as f64, 0.0) - d).abs() < 1e-6);
            for v in 0..n {
                assert!((a[[v, u]] - full[[v, u]]).abs() < 1e-4);
            }
        }
        // seamless: neighbouring columns differ no more than in the flat-corrected image
        let mut flat_c = img.clone();
        corr.correct(
            flat_c.view_mut(),
            &c,
            &flat(20000.0),
            Filter::PhaseFlip,
            0.0,
            1e9,
        );
        let jump = |m: &Array2<f32>| {
            (1..n)
                .map(|u| {
                    (0..n)
                        .map(|v| (m[[v, u]] - m[[v, u - 1]]).abs())
                        .sum::<f32>()
                })
                .fold(0.0f32, f32::max)
        };
        assert!(
            jump(&a) < 1.5 * jump(&flat_c),
            "{} vs {}",
            jump(&a),
            jump(&flat_c)
        );
    }

    #[test]
    fn tolerance_formula() {
        let lam = electron_wavelength_a(300.0);
        let t = defocus_tolerance_a(300.0, 0.1, PI / 4.0);
        assert!((PI * lam * t * 0.01 - PI / 4.0).abs() < 1e-12);
    }
}
