//! The 3D transfer of a subtomogram: which Fourier samples its tilts measured (the missing
//! wedge from the actual tilt angles), the CTF at the particle's depth and the exposure
//! (dose) attenuation, on the half-spectrum grid of a cubic box ([`crate::core::fft3`]).
//!
//! Model. Tilt `i` with specimen rotation `Rᵢ` ([`TiltImage::rotation`], specimen → beam
//! frame) measures, by the central-slice theorem, the specimen frequencies `k` with
//! `(Rᵢ·k)_z = 0`; its image frequency is `(Rᵢ·k)_{x,y}`. A box frequency `k` (cycles/voxel,
//! `n³` box) is taken by tilt `i` with the tent weight `sᵢ(k) = max(0, 1 − n·|(Rᵢ·F·k)_z|)`
//! (`F` the frame of the box: identity for a box cut from the tomogram, the pose `A` for a
//! box in the reference frame, since `k_specimen = A·k_reference`). The transfer is
//!
//! `c(k) = Σᵢ sᵢ(k)·tᵢ(k) / max(1, Σᵢ sᵢ(k))`, `tᵢ = ctfᵢ(k)·Dᵢ(|k|)`,
//!
//! the average over overlapping slices at low frequency and the sampled fraction between
//! slices at high frequency; 0 in the missing wedge. `ctfᵢ` is the CTF of tilt `i` with its
//! defocus at the particle's depth (`TiltSeriesGeometry::defocus_at`), signed for a tomogram
//! reconstructed without CTF correction, `|ctf|` after phase flipping, or 1
//! ([`CtfMode`]); `Dᵢ` is the exposure filter at the tilt's mid-exposure
//! (`pre_exposure + dose/2`, [`crate::ctf::model::dose_filter`]).

use ndarray::parallel::prelude::*;
use ndarray::{Array3, Axis};

use crate::core::fft3::half_grid_freqs;
use crate::core::geometry::{matmul, Mat3, TiltSeriesGeometry};
use crate::ctf::correct::tilt_ctf;
use crate::ctf::model::{dose_filter, Ctf};

/// How the CTF enters the transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtfMode {
    /// The tomogram was reconstructed without CTF correction: the signed CTF.
    Signed,
    /// The tomogram was phase-flipped: `|CTF|`.
    Flipped,
    /// No CTF (wedge and dose only; e.g. Wiener-corrected tomograms or CTF-free tests).
    None,
}

impl std::str::FromStr for CtfMode {
    type Err = crate::Error;
    /// `signed`, `flipped` or `none` (any case).
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "signed" => Ok(CtfMode::Signed),
            "flipped" => Ok(CtfMode::Flipped),
            "none" => Ok(CtfMode::None),
            _ => Err(crate::Error::Config(format!(
                "CTF mode {s:?}: use signed (tomogram not CTF-corrected), flipped \
                 (phase-flipped) or none"
            ))),
        }
    }
}

/// One tilt's contribution.
#[derive(Clone, Debug)]
struct TiltTransfer {
    rot: Mat3,
    ctf: Ctf,
    exposure_e_a2: f64,
}

/// The transfer model of one subtomogram (module docs): its tilts with the CTF at its depth.
#[derive(Clone, Debug)]
pub struct SubtomoTransfer {
    tilts: Vec<TiltTransfer>,
    mode: CtfMode,
    dose: bool,
    voltage_kv: f64,
}

impl SubtomoTransfer {
    /// The transfer of a particle at `position_a` (Å about the tomogram centre, `(x, y, z)`)
    /// in a tomogram reconstructed from `geom`; `dose` switches the exposure filter on.
    pub fn at_particle(
        geom: &TiltSeriesGeometry,
        position_a: [f64; 3],
        mode: CtfMode,
        dose: bool,
    ) -> Self {
        let tilts = (0..geom.len())
            .map(|i| {
                let t = &geom.tilts[i];
                let mut ctf = tilt_ctf(geom, i);
                let off = geom.defocus_at(i, position_a) - t.defocus_mean_a();
                ctf.defocus_u_a += off;
                ctf.defocus_v_a += off;
                TiltTransfer {
                    rot: t.rotation(),
                    ctf,
                    exposure_e_a2: t.pre_exposure_e_a2 + 0.5 * t.dose_e_a2,
                }
            })
            .collect();
        SubtomoTransfer {
            tilts,
            mode,
            dose,
            voltage_kv: geom.optics.voltage_kv,
        }
    }

    /// The transfer `c(k)` on the half grid `(n, n, n/2 + 1)` of an `n³` box of `pixel_a` Å,
    /// for a box whose frame is `frame` (module docs: identity for a box cut from the
    /// tomogram, the particle pose for a box in the reference frame).
    pub fn grid(&self, n: usize, pixel_a: f64, frame: &Mat3) -> Array3<f32> {
        self.evaluate(n, pixel_a, frame, self.mode)
    }

    /// The sampling `min(1, Σᵢ sᵢ(k))` alone (the missing-wedge mask with its partial
    /// sampling between slices), same grid as [`SubtomoTransfer::grid`].
    pub fn sampling(&self, n: usize, frame: &Mat3) -> Array3<f32> {
        let no_dose = SubtomoTransfer {
            dose: false,
            ..self.clone()
        };
        no_dose.evaluate(n, 1.0, frame, CtfMode::None)
    }

    fn evaluate(&self, n: usize, pixel_a: f64, frame: &Mat3, mode: CtfMode) -> Array3<f32> {
        let (fz, fy, fx) = half_grid_freqs(n, n, n);
        let rots: Vec<Mat3> = self.tilts.iter().map(|t| matmul(&t.rot, frame)).collect();
        let nf = n as f64;
        let inv_px = 1.0 / pixel_a;
        let mut out = Array3::<f32>::zeros((n, n, n / 2 + 1));
        out.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(iz, mut plane)| {
                for (iy, mut row) in plane.outer_iter_mut().enumerate() {
                    for (ix, v) in row.iter_mut().enumerate() {
                        let k = [fx[ix] as f64, fy[iy] as f64, fz[iz] as f64];
                        let s_abs = (k[0] * k[0] + k[1] * k[1] + k[2] * k[2]).sqrt() * inv_px;
                        let (mut num, mut den) = (0.0f64, 0.0f64);
                        for (t, r) in self.tilts.iter().zip(&rots) {
                            let kz = r[2][0] * k[0] + r[2][1] * k[1] + r[2][2] * k[2];
                            let s = 1.0 - nf * kz.abs();
                            if s <= 0.0 {
                                continue;
                            }
                            let mut w = 1.0;
                            if mode != CtfMode::None {
                                let kx =
                                    (r[0][0] * k[0] + r[0][1] * k[1] + r[0][2] * k[2]) * inv_px;
                                let ky =
                                    (r[1][0] * k[0] + r[1][1] * k[1] + r[1][2] * k[2]) * inv_px;
                                let c = t.ctf.value(kx, ky);
                                w = if mode == CtfMode::Flipped { c.abs() } else { c };
                            }
                            if self.dose {
                                w *= dose_filter(s_abs, t.exposure_e_a2, self.voltage_kv);
                            }
                            num += s * w;
                            den += s;
                        }
                        *v = (num / den.max(1.0)) as f32;
                    }
                }
            });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::euler_zyz_to_matrix;
    use crate::core::so3::identity;

    fn series(max_tilt: f64) -> TiltSeriesGeometry {
        let angles: Vec<f64> = (0..=20)
            .map(|i| -max_tilt + i as f64 * max_tilt / 10.0)
            .collect();
        let mut g = TiltSeriesGeometry::from_angles(64, 64, 10.0, &angles, 0.0);
        for (i, t) in g.tilts.iter_mut().enumerate() {
            t.defocus_u_a = 30000.0;
            t.defocus_v_a = 30000.0;
            t.dose_e_a2 = 3.0;
            t.pre_exposure_e_a2 = 3.0 * i as f64;
        }
        g
    }

    #[test]
    fn wedge_is_empty_along_the_beam_at_high_tilt_angles() {
        // Tilts about y up to ±60°: the specimen frequencies along z (kx = ky = 0) are never
        // measured; those along x and y are.
        let n = 32;
        let w = SubtomoTransfer::at_particle(&series(60.0), [0.0; 3], CtfMode::None, false)
            .sampling(n, &identity());
        assert!((w[[0, 0, 8]] - 1.0).abs() < 1e-6, "x axis measured");
        assert!((w[[0, 8, 0]] - 1.0).abs() < 1e-6, "y axis measured");
        assert_eq!(w[[8, 0, 0]], 0.0, "z axis in the wedge");
        // A direction 20° from z (inside the 30° half-wedge) is missing, 50° from z is sampled.
        let at = |deg: f64| {
            let r = 8.0;
            let (z, x) = (r * deg.to_radians().cos(), r * deg.to_radians().sin());
            w[[(z.round() as usize) % n, 0, x.round() as usize]]
        };
        assert_eq!(at(20.0), 0.0);
        assert!(at(50.0) > 0.5);
        // The pose rotates the wedge: with a 90° rotation about y, z of the box is x of the
        // tomogram (measured) and x of the box is −z of the tomogram (missing).
        let f = euler_zyz_to_matrix(0.0, 90.0, 0.0);
        let wr = SubtomoTransfer::at_particle(&series(60.0), [0.0; 3], CtfMode::None, false)
            .sampling(n, &f);
        assert!((wr[[8, 0, 0]] - 1.0).abs() < 1e-6);
        assert_eq!(wr[[0, 0, 8]], 0.0);
    }

    #[test]
    fn ctf_and_dose_enter_the_transfer() {
        let n = 32;
        let g = series(60.0);
        let signed = SubtomoTransfer::at_particle(&g, [0.0; 3], CtfMode::Signed, true).grid(
            n,
            10.0,
            &identity(),
        );
        let flipped = SubtomoTransfer::at_particle(&g, [0.0; 3], CtfMode::Flipped, true).grid(
            n,
            10.0,
            &identity(),
        );
        let plain = SubtomoTransfer::at_particle(&g, [0.0; 3], CtfMode::None, true).grid(
            n,
            10.0,
            &identity(),
        );
        // Along y (the tilt axis, the same 2D frequency in every tilt): the CTF of 3 µm at
        // 10 Å/px, times the dose filter.
        let ctf = g.tilts[0].defocus_u_a;
        let c = crate::ctf::model::Ctf {
            voltage_kv: 300.0,
            cs_mm: g.optics.cs_mm,
            amplitude_contrast: g.optics.amplitude_contrast,
            defocus_u_a: ctf,
            defocus_v_a: ctf,
            astig_angle_deg: 0.0,
            phase_shift_deg: 0.0,
        };
        for k in 1..16 {
            let s = k as f64 / (n as f64 * 10.0);
            let expect = c.value(0.0, s);
            let ratio = signed[[0, k, 0]] as f64 / plain[[0, k, 0]] as f64;
            assert!((ratio - expect).abs() < 1e-3, "k {k}: {ratio} vs {expect}");
            assert!((flipped[[0, k, 0]] - signed[[0, k, 0]].abs()).abs() < 1e-6);
        }
        // Dose: attenuation grows with frequency.
        assert!(plain[[0, 2, 0]] > plain[[0, 12, 0]]);
        assert!(plain[[0, 12, 0]] > 0.0 && plain[[0, 12, 0]] < 1.0);
    }
}
