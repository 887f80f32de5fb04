//! The template of a template-matching search: a reference density at the tomogram's
//! pixel, boxed, with the contrast of the tomogram, its spherical mask and the per-tomogram
//! Fourier weight (CTF, dose, missing wedge).
//!
//! Frames: the template box is `n³` voxels `[z, y, x]`, the structure's centre at voxel
//! `n/2`, dense matter positive (the potential as the simulator renders it). A particle of
//! pose `A` is `reference(Aᵀ·x)` ([`crate::core::interp::rotate_volume`]).

use std::path::Path;

use ndarray::{s, Array3};

use crate::core::fft3::{half_grid_freqs, Fft3};
use crate::core::geometry::TiltSeriesGeometry;
use crate::core::so3::identity;
use crate::sim::potential::{resample_map, RenderedMap};
use crate::sim::Structure;
use crate::sta::weight::{CtfMode, SubtomoTransfer};
use crate::{Error, Result};

/// The sign of dense matter in the tomogram being searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Contrast {
    /// Dense matter bright (lamella's default reconstruction, `invert_contrast = true`).
    Bright,
    /// Dense matter dark (raw electron-count sign, `--no-invert`).
    Dark,
}

impl std::str::FromStr for Contrast {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bright" => Ok(Contrast::Bright),
            "dark" => Ok(Contrast::Dark),
            _ => Err(Error::Config(format!(
                "contrast {s:?}: use \"bright\" (dense matter bright, lamella's default \
                 reconstruction) or \"dark\" (raw electron counts, --no-invert)"
            ))),
        }
    }
}

/// A boxed reference: `volume` `n³` at `pixel_a` Å, dense positive, centre voxel `n/2`;
/// `radius_a` is the radius of the sphere holding the structure.
#[derive(Clone, Debug)]
pub struct Template {
    /// Voxels `[z, y, x]`, `n³`.
    pub volume: Array3<f32>,
    /// Voxel size, Å.
    pub pixel_a: f64,
    /// Radius of the structure about the box centre, Å.
    pub radius_a: f64,
}

impl Template {
    /// The template of `structure` (an atomic model rendered as the simulator does, or a
    /// density map resampled) at `pixel_a` Å, in a cubic box of `box_px` voxels (`None`:
    /// the smallest even box holding the structure's sphere plus 2 voxels a side).
    pub fn from_structure(
        structure: &Structure,
        pixel_a: f64,
        box_px: Option<usize>,
    ) -> Result<Template> {
        let m = structure.render(pixel_a)?;
        Ok(Self::from_rendered(&m, box_px))
    }

    /// The template of a density map (`[z, y, x]`, voxel `map_pixel_a` Å, centre voxel
    /// `n/2`, dense positive) resampled to `pixel_a` Å; box as [`Template::from_structure`].
    pub fn from_map(
        map: &Array3<f32>,
        map_pixel_a: f64,
        pixel_a: f64,
        box_px: Option<usize>,
    ) -> Template {
        Self::from_rendered(&resample_map(map, map_pixel_a, pixel_a), box_px)
    }

    /// Read a template file: `.pdb`/`.cif`/`.ent` (atomic model) or `.mrc`/`.map` (density,
    /// its pixel from the header; `dark = true` flips a map whose dense matter is negative).
    pub fn read(
        path: &Path,
        pixel_a: f64,
        box_px: Option<usize>,
        dark_map: bool,
    ) -> Result<Template> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "pdb" | "cif" | "ent" | "mmcif" => {
                Self::from_structure(&Structure::Pdb(path.to_path_buf()), pixel_a, box_px)
            }
            "mrc" | "map" | "rec" | "st" => {
                let d = crate::io::mrc::read(path)?;
                let mp = d.header.pixel_size_a()[0] as f64;
                if !(mp.is_finite() && mp > 0.0) {
                    return Err(Error::bad_input(
                        path,
                        "header pixel size",
                        "the map has no pixel size; set it (e.g. `alterheader -del`) or use a PDB",
                    ));
                }
                let mut data = d.data;
                if dark_map {
                    data.mapv_inplace(|v| -v);
                }
                Ok(Self::from_map(&data, mp, pixel_a, box_px))
            }
            _ => Err(Error::bad_input(
                path,
                "template",
                "unknown template type: give a .pdb/.cif atomic model or a .mrc/.map density",
            )),
        }
    }

    fn from_rendered(m: &RenderedMap, box_px: Option<usize>) -> Template {
        let need = 2 * ((m.radius_a / m.pixel_a).ceil() as usize + 2);
        let n = box_px.unwrap_or(need).max(4);
        let n = n + n % 2;
        Template {
            volume: recentre_box(&m.potential, n),
            pixel_a: m.pixel_a,
            radius_a: m.radius_a,
        }
    }

    /// Box size `n`.
    pub fn size(&self) -> usize {
        self.volume.dim().0
    }

    /// The same template in an `n³` box (zero-padded or cropped about the centre voxel;
    /// `n` rounded up to even).
    pub fn reboxed(&self, n: usize) -> Template {
        let n = n + n % 2;
        Template {
            volume: recentre_box(&self.volume, n),
            pixel_a: self.pixel_a,
            radius_a: self.radius_a,
        }
    }
}

/// Crop or zero-pad `vol` (`[z, y, x]`, any shape) about its centre voxel (`d/2` per axis)
/// into an `n³` box whose centre voxel is `n/2`.
pub fn recentre_box(vol: &Array3<f32>, n: usize) -> Array3<f32> {
    let (dz, dy, dx) = vol.dim();
    let mut out = Array3::<f32>::zeros((n, n, n));
    // source index i ↔ target i − d/2 + n/2, per axis
    let range = |d: usize| {
        let off = n as isize / 2 - d as isize / 2;
        let lo = off.max(0) as usize;
        let hi = ((d as isize + off).min(n as isize)).max(lo as isize) as usize;
        (
            lo..hi,
            (lo as isize - off) as usize..(hi as isize - off) as usize,
        )
    };
    let ((tz, sz), (ty, sy), (tx, sx)) = (range(dz), range(dy), range(dx));
    out.slice_mut(s![tz, ty, tx])
        .assign(&vol.slice(s![sz, sy, sx]));
    out
}

/// How the template is weighted for one tomogram ([`tomogram_weight`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightSpec {
    /// How the CTF enters ([`CtfMode`]).
    pub ctf: CtfMode,
    /// Exposure (dose) filter on/off.
    pub dose: bool,
    /// Sign of dense matter in the tomogram.
    pub contrast: Contrast,
    /// Low-pass of the template, Å (`None` = to Nyquist).
    pub lowpass_a: Option<f64>,
}

/// The Fourier weight of the template for one tomogram on the half grid `(n, n, n/2+1)`:
/// the transfer of a particle at `position_a` (Å about the tomogram centre; the CTF at its
/// depth) of the tilt series `geom` ([`SubtomoTransfer`], frame = identity since the wedge
/// is fixed in the tomogram), times the sign of the contrast, times a low-pass to
/// `spec.lowpass_a` Å (raised cosine over the last 10 % of the frequency).
pub fn tomogram_weight(
    geom: &TiltSeriesGeometry,
    position_a: [f64; 3],
    spec: &WeightSpec,
    n: usize,
    pixel_a: f64,
) -> Array3<f32> {
    let mut w = SubtomoTransfer::at_particle(geom, position_a, spec.ctf, spec.dose).grid(
        n,
        pixel_a,
        &identity(),
    );
    let sign = match spec.contrast {
        Contrast::Bright => 1.0,
        Contrast::Dark => -1.0,
    };
    let (fz, fy, fx) = half_grid_freqs(n, n, n);
    let cut = spec.lowpass_a.map(|l| pixel_a / l).unwrap_or(f64::INFINITY);
    for ((z, y, x), v) in w.indexed_iter_mut() {
        let f = ((fz[z] * fz[z] + fy[y] * fy[y] + fx[x] * fx[x]) as f64).sqrt();
        let lp = if f <= 0.9 * cut {
            1.0
        } else if f < cut {
            0.5 + 0.5 * (std::f64::consts::PI * (f - 0.9 * cut) / (0.1 * cut)).cos()
        } else {
            0.0
        };
        *v *= (sign * lp) as f32;
    }
    w
}

/// Apply a half-grid weight `w` `(n, n, n/2+1)` to an `n³` volume in place (FFT, multiply,
/// inverse), with the plan `fft` of the box and its spectrum buffer `spec`.
pub fn apply_weight(
    vol: &mut Array3<f32>,
    w: &Array3<f32>,
    fft: &Fft3,
    spec: &mut Array3<num_complex::Complex32>,
) {
    fft.forward_into(vol.view(), spec);
    ndarray::Zip::from(&mut *spec)
        .and(w)
        .for_each(|s, &k| *s *= k);
    fft.inverse_into(spec, vol);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recentre_keeps_the_centre_voxel() {
        let mut v = Array3::<f32>::zeros((9, 9, 9));
        v[[4, 4, 4]] = 1.0;
        v[[4, 4, 5]] = 2.0;
        let b = recentre_box(&v, 14);
        assert_eq!(b[[7, 7, 7]], 1.0);
        assert_eq!(b[[7, 7, 8]], 2.0);
        let c = recentre_box(&b, 6);
        assert_eq!(c[[3, 3, 3]], 1.0);
        assert_eq!(c[[3, 3, 4]], 2.0);
    }

    #[test]
    fn mask_is_one_inside_zero_outside() {
        let m = crate::sta::mask::soft_sphere(16, 4.0, 2.0);
        assert_eq!(m[[8, 8, 8]], 1.0);
        assert_eq!(m[[8, 8, 12]], 1.0);
        assert!(m[[8, 8, 13]] > 0.0 && m[[8, 8, 13]] < 1.0);
        assert_eq!(m[[8, 8, 15]], 0.0);
        assert_eq!(m[[8, 8, 4]], m[[8, 4, 8]]);
    }
}
