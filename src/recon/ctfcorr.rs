//! CTF correction in reconstruction: per-tilt phase flipping or Wiener filtering of the
//! prepared images (2D, strips along the tilt axis: [`crate::ctf::correct`]), or the
//! depth-dependent (3D) correction of novaCTF / AreTomo3 for WBP: the tomogram is cut into a
//! few Z slabs, every tilt is phase-flipped with the defocus of the slab's mid-plane (and the
//! in-plane gradient of that plane across the tilted image), and each corrected stack is
//! back-projected only into its slab. The correction runs on the 2D images, so the
//! back-projectors (CPU and CUDA) are reused unchanged.
//!
//! Slab count: a ray through the tomogram of thickness `T` in a tilt with `Rᵀ·e_z` of z
//! component `c` (`cos tilt·cos x_tilt`) spans `T/|c|` Å of defocus; with the tolerance
//! `Δ = (π/4)/(π·λ·s_N²)` at the binned Nyquist `s_N` ([`crate::ctf::correct::defocus_tolerance_a`])
//! the slab count is `⌈max_tilts T/|c| / Δ⌉` (at most `nz`), so no voxel is corrected with a
//! defocus more than `Δ/2` from its own.

use crate::core::geometry::{Projection, TiltSeriesGeometry};
use crate::ctf::correct::{
    defocus_plane, defocus_tolerance_a, plane_ctf, Corrector, Filter, PHASE_TOLERANCE_RAD,
};
use crate::device::Device;
use crate::recon::wbp::backproject_mean;
use crate::{Error, Result};
use ndarray::{s, Array3, ArrayView3, Axis};
use rayon::prelude::*;

/// `[reconstruct] ctf_correction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtfCorrection {
    /// No correction (default).
    #[default]
    None,
    /// Phase flip per tilt, strips along the tilt axis.
    Phaseflip,
    /// Wiener filter per tilt (constant SNR `wiener_snr`, dose-aware), strips along the axis.
    Wiener,
    /// Depth-dependent phase flip per Z slab (WBP only).
    #[serde(rename = "3d")]
    ThreeD,
}

impl std::str::FromStr for CtfCorrection {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(CtfCorrection::None),
            "phaseflip" | "phase-flip" | "flip" => Ok(CtfCorrection::Phaseflip),
            "wiener" => Ok(CtfCorrection::Wiener),
            "3d" => Ok(CtfCorrection::ThreeD),
            _ => Err(Error::Config(format!(
                "ctf_correction = {s:?}: use \"none\", \"phaseflip\", \"wiener\" or \"3d\""
            ))),
        }
    }
}

/// Refuse a correction when a tilt has no defocus (`≤ 0`): the geometry must carry it.
pub fn check_defocus(geom: &TiltSeriesGeometry) -> Result<()> {
    if let Some((i, t)) = geom
        .tilts
        .iter()
        .enumerate()
        .find(|(_, t)| !(t.defocus_mean_a() > 0.0 && t.defocus_mean_a().is_finite()))
    {
        return Err(Error::bad_input(
            "<tilt series>",
            format!("tilt {i} defocus"),
            format!(
                "mean defocus {} Å: CTF correction needs the defocus of every tilt (run the \
                 CTF stage, give an IMOD .defocus file, or set ctf_correction = \"none\")",
                t.defocus_mean_a()
            ),
        ));
    }
    Ok(())
}

/// The defocus tolerance (Å) for images binned by `bin`: the step that moves the CTF phase by
/// π/4 at the binned Nyquist.
pub fn tolerance_a(geom: &TiltSeriesGeometry, bin: usize) -> f64 {
    let px = geom.pixel_a * bin.max(1) as f64;
    defocus_tolerance_a(geom.optics.voltage_kv, 0.5 / px, PHASE_TOLERANCE_RAD)
}

/// Correct every tilt of `images` `[tilt, ny/bin, nx/bin]` (binned by `bin` from `geom`'s
/// stack) in place with `filter`, for the specimen plane `z = z_a` Å (0: the mid-plane),
/// strips along the tilt axis at the tolerance of [`tolerance_a`]. Parallel over tilts, one
/// [`Corrector`] (FFT plan and buffers) per thread. Returns the largest strip count.
pub fn correct_stack(
    images: &mut Array3<f32>,
    geom: &TiltSeriesGeometry,
    bin: usize,
    filter: Filter,
    z_a: f64,
) -> usize {
    let (_, ny, nx) = images.dim();
    let px = geom.pixel_a * bin.max(1) as f64;
    let tol = tolerance_a(geom, bin);
    let base = Corrector::new(ny, nx, px);
    images
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .map_init(
            || base.clone(),
            |c, (i, img)| {
                let plane = defocus_plane(geom, i, bin, z_a);
                let ctf = plane_ctf(geom, i, &plane);
                let t = &geom.tilts[i];
                let exposure = t.pre_exposure_e_a2 + 0.5 * t.dose_e_a2;
                c.correct(img, &ctf, &plane, filter, exposure, tol)
            },
        )
        .max()
        .unwrap_or(0)
}

/// Z slabs `[z0, z1)` of a tomogram of `nz` planes of `voxel_a` Å for the 3D correction of
/// `geom` binned by `bin` (module docs).
pub fn z_slabs(
    geom: &TiltSeriesGeometry,
    bin: usize,
    nz: usize,
    voxel_a: f64,
) -> Vec<(usize, usize)> {
    let thick = nz as f64 * voxel_a;
    let span = geom
        .tilts
        .iter()
        .map(|t| {
            let c = t.tilt_deg.to_radians().cos() * t.x_tilt_deg.to_radians().cos();
            thick / c.abs().max(0.1)
        })
        .fold(thick, f64::max);
    let n = ((span / tolerance_a(geom, bin)).ceil() as usize).clamp(1, nz.max(1));
    (0..n)
        .map(|k| (k * nz / n, (k + 1) * nz / n))
        .filter(|(a, b)| b > a)
        .collect()
}

/// The projections of planes `[z0, z0 + h)` of a volume of `nz` planes of `voxel_a` Å, for
/// a slab volume `(h, ·, ·)` centred on its own plane `h/2`: every projection translated by
/// `dz = (z0 + h/2 − nz/2)·voxel_a` Å along specimen Z. Returns them and `dz`.
pub fn z_slab_projections(
    projections: &[Projection],
    nz: usize,
    z0: usize,
    h: usize,
    voxel_a: f64,
) -> (Vec<Projection>, f64) {
    let dz = (z0 as f64 + (h / 2) as f64 - (nz / 2) as f64) * voxel_a;
    let p = projections
        .iter()
        .map(|p| p.translated([0.0, 0.0, dz]))
        .collect();
    (p, dz)
}

/// 3D-CTF-corrected WBP: `weighted` `[tilt, y, x]` are the WBP-weighted images of binning
/// `bin` (not CTF-corrected), `projections` those of the volume `shape` `(nz, ny, nx)` of
/// `voxel_a` Å (a Y slab's, possibly). Per Z slab of [`z_slabs`]: phase-flip a copy of the
/// images for the slab's mid-plane, back-project it into the slab only (on `device`), divided
/// by the tilt count. Returns the volume `shape`.
#[allow(clippy::too_many_arguments)]
pub fn wbp_3d(
    device: &Device,
    weighted: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    bin: usize,
    projections: &[Projection],
    shape: (usize, usize, usize),
    voxel_a: f64,
) -> Result<Array3<f32>> {
    let (nz, ny, nx) = shape;
    let slabs = z_slabs(geom, bin, nz, voxel_a);
    let mut vol = Array3::<f32>::zeros(shape);
    let mut copy = weighted.to_owned();
    for (k, &(z0, z1)) in slabs.iter().enumerate() {
        let h = z1 - z0;
        let (projs, dz) = z_slab_projections(projections, nz, z0, h, voxel_a);
        copy.assign(&weighted);
        let strips = correct_stack(&mut copy, geom, bin, Filter::PhaseFlip, dz);
        tracing::debug!(
            "3D CTF: Z slab {} of {}: planes {z0}..{z1} at z = {dz:.0} Å, up to {strips} strips",
            k + 1,
            slabs.len()
        );
        let part = backproject_mean(device, copy.view(), &projs, (h, ny, nx), voxel_a)?;
        vol.slice_mut(s![z0..z1, .., ..]).assign(&part);
    }
    Ok(vol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_count_follows_tolerance_and_parses() {
        let mut g = TiltSeriesGeometry::from_angles(128, 128, 4.0, &[-60.0, 0.0, 60.0], 0.0);
        for t in g.tilts.iter_mut() {
            t.defocus_u_a = 30000.0;
            t.defocus_v_a = 30000.0;
        }
        let tol = tolerance_a(&g, 1);
        // 4 Å: s_N = 0.125/Å, tolerance ≈ 816 Å; 400 planes × 4 Å at ±60° span 3200 Å
        assert!((tol - 816.0).abs() < 5.0, "{tol}");
        let sl = z_slabs(&g, 1, 400, 4.0);
        assert_eq!(sl.len(), (3200.0 / tol).ceil() as usize);
        assert_eq!(sl[0].0, 0);
        assert_eq!(sl.last().unwrap().1, 400);
        // coarser binning: fewer slabs
        assert!(z_slabs(&g, 4, 100, 16.0).len() < sl.len());
        assert_eq!(
            "3d".parse::<CtfCorrection>().unwrap(),
            CtfCorrection::ThreeD
        );
        assert!("flipp".parse::<CtfCorrection>().is_err());
        check_defocus(&g).unwrap();
        g.tilts[1].defocus_u_a = 0.0;
        g.tilts[1].defocus_v_a = 0.0;
        let e = check_defocus(&g).unwrap_err();
        assert!(e.to_string().contains("tilt 1 defocus"), "{e}");
    }

    #[test]
    fn spec_option_parses_and_3d_needs_wbp() {
        use crate::recon::plan::{Method, ReconstructSpec};
        let t = "binnings = [1]\nthickness_a = 100.0\nctf_correction = \"3d\"\n[method]\nkind = \"wbp\"\nfilter = \"ramp\"\n";
        let s: ReconstructSpec = toml::from_str(t).unwrap();
        assert_eq!(s.ctf_correction, CtfCorrection::ThreeD);
        assert_eq!(s.wiener_snr, crate::recon::plan::DEFAULT_WIENER_SNR);
        let s2: ReconstructSpec = toml::from_str(&t.replace("\"3d\"", "\"wiener\"")).unwrap();
        assert_eq!(s2.ctf_correction, CtfCorrection::Wiener);
        assert!(toml::from_str::<ReconstructSpec>(&t.replace("\"3d\"", "\"2d\"")).is_err());
        // 3d with SIRT is refused before any work, naming the fix
        let mut sirt = s.clone();
        sirt.method = Method::Sirt {
            iterations: 2,
            relaxation: 1.0,
            positivity: false,
            mask: Default::default(),
        };
        let mut g = TiltSeriesGeometry::from_angles(16, 16, 4.0, &[0.0], 0.0);
        g.tilts[0].defocus_u_a = 20000.0;
        g.tilts[0].defocus_v_a = 20000.0;
        let stack = Array3::<f32>::ones((1, 16, 16));
        let out = std::env::temp_dir().join("lamella_ctfcorr_refused.mrc");
        let e = crate::recon::plan::reconstruct(stack.view(), &g, &sirt, &Device::Cpu, &[out])
            .unwrap_err();
        assert!(e.to_string().contains("needs method wbp"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn z_slab_projections_match_the_full_volume() {
        let g = TiltSeriesGeometry::from_angles(64, 64, 4.0, &[40.0], 80.0);
        let p = g.projections(1);
        let (ps, dz) = z_slab_projections(&p, 50, 10, 15, 4.0);
        assert!((dz - (10.0 + 7.0 - 25.0) * 4.0).abs() < 1e-12);
        // a point at slab-local z maps where the full-volume point z + dz maps
        let q = [12.0, -8.0, 6.0];
        let a = ps[0].project(q);
        let b = p[0].project([q[0], q[1], q[2] + dz]);
        assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
    }
}
