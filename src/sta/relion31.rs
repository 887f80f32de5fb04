//! Export of extracted subtomograms for RELION 3.1's subtomogram averaging (`relion_refine
//! --ctf` on 3D particles with 3D CTF volumes, the pre-RELION-4 tomography workflow).
//!
//! What RELION 3.1 reads, and what this module writes:
//! - one MRC volume per particle, `n³` voxels `[z, y, x]` of the tomogram's voxel size (Å),
//!   the box [`particle_box`] cuts for lamella's own refinement (nearest whole voxel, values ×
//!   −1 when `invert`, background outside the mask at mean 0 and sd 1: RELION stops on
//!   unnormalised particles);
//! - one MRC volume per particle, `n³`, with its 3D transfer `c(k)` (signed CTF at the
//!   particle's depth × missing wedge from the actual tilt angles × exposure filter,
//!   [`crate::sta::weight::SubtomoTransfer`] in the box's own frame, i.e. the tomogram's) in
//!   RELION's cubic `rlnCtfImage` layout ([`cubic_ctf_volume`]): the zero frequency at voxel
//!   `(n/2, n/2, n/2)`, frequency `k` (cycles/box, `−n/2 ≤ k < n/2` per axis) stored at voxel
//!   `n/2 − k`. RELION reads it as `Fctf(k) = Ictf(−k)` about the Xmipp origin `n/2`
//!   (`ml_optimiser.cpp`, "origin half a pixel to the right"); the transfer of a real volume is
//!   centrosymmetric, so `n/2 + k` holds the same value, and this is also the
//!   `ifftshift`-ed full grid of numpy (the convention of `shared/peers/make_synthetic.py`);
//! - a STAR file (RELION 3.1 layout, `# version 30001`): `data_optics` with one group
//!   (`rlnImagePixelSize` Å, `rlnImageSize` = n, `rlnImageDimensionality` 3, voltage kV, Cs mm,
//!   amplitude contrast) and `data_particles` with `rlnImageName`, `rlnCtfImage` (paths
//!   relative to the STAR's folder), `rlnMicrographName` (the tomogram), `rlnCoordinateX/Y/Z`
//!   (the box centre, voxels of the tomogram from voxel 0), `rlnOriginX/Y/ZAngst` (Å),
//!   `rlnAngleRot/Tilt/Psi` (degrees), `rlnRandomSubset` (lamella's half + 1, so RELION's
//!   `--split_random_halves` keeps the same halves) and `rlnOpticsGroup`.
//!
//! Frames. RELION's pose `A = Euler(rot, tilt, psi)` and origin `o` (Å) say
//! `particle(x) = reference(Aᵀ·(x + o))` about the box centre `n/2`, i.e. the particle sits at
//! box voxel `n/2 − o/voxel`: lamella's pose convention (docs/conventions.md) with
//! `o = −residual·voxel`, the residual of [`crate::sta::extract::ParticleBox`].

use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3};

use crate::core::so3::identity;
use crate::error::{Error, Result};
use crate::io::mrc::{self, MrcKind};
use crate::io::star::{StarBlock, StarFile, StarTable};
use crate::sta::mask::soft_sphere;
use crate::sta::refine::{particle_box, Particle, RefineParams, Tomogram};

/// RELION 3.1's cubic CTF volume `[z, y, x]`, `n³`, from a transfer on the half grid
/// `(n, n, n/2 + 1)` of an `n³` box ([`crate::core::fft3`] layout: DC at index 0, frequency
/// index `i < n/2` is `i`, `i ≥ n/2` is `i − n`; real-to-complex along x). The voxel
/// `n/2 + l` (per axis, `−n/2 ≤ l < n/2`) holds the value at frequency `−l` (module docs);
/// frequencies with negative x come from the Hermitian partner `c(−k) = c(k)` of the half
/// grid. Panics when `half` is not `(n, n, n/2 + 1)` or `n` is odd.
pub fn cubic_ctf_volume(half: ArrayView3<f32>, n: usize) -> Array3<f32> {
    assert!(
        n % 2 == 0,
        "box {n}: RELION's cubic CTF layout needs an even box"
    );
    assert_eq!(half.dim(), (n, n, n / 2 + 1), "half grid of an {n}³ box");
    let h = (n / 2) as i64;
    let ni = n as i64;
    let wrap = |k: i64| k.rem_euclid(ni) as usize;
    Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        // The frequency stored at this voxel.
        let k = [h - x as i64, h - y as i64, h - z as i64];
        if k[0] >= 0 {
            half[[wrap(k[2]), wrap(k[1]), k[0] as usize]]
        } else {
            half[[wrap(-k[2]), wrap(-k[1]), (-k[0]) as usize]]
        }
    })
}

/// What [`write_relion31_subtomograms`] wrote.
#[derive(Clone, Debug)]
pub struct Relion31Export {
    /// The particle STAR (input of `relion_refine --i`).
    pub star: PathBuf,
    /// Number of particles written.
    pub particles: usize,
    /// Box edge, voxels; voxel size, Å.
    pub box_px: usize,
    /// Voxel size, Å.
    pub voxel_a: f64,
}

/// Write `particles` of `tomos` for RELION 3.1 into `dir` (module docs): `dir/Subtomograms/
/// p<NNNNN>.mrc` (particle `i`, 1-based, in input order), `dir/Subtomograms/p<NNNNN>_ctf.mrc`
/// and `dir/particles.star`. Extraction and transfer follow `params` exactly as lamella's
/// refinement does (`box_px`, `mask_radius_a` for the background normalisation, `ctf_mode`,
/// `dose_weighting`, `invert`). Positions: `Particle::position_a`, Å about the tomogram
/// centre (x, y, z); angles: `Particle::euler_deg` (RELION's rot, tilt, psi, degrees). All
/// tomograms must share one voxel size (one optics group); the optics (voltage, Cs, amplitude
/// contrast) are those of the first tomogram's geometry. Files are written atomically.
pub fn write_relion31_subtomograms(
    dir: &Path,
    tomos: &[Tomogram],
    particles: &[Particle],
    params: &RefineParams,
) -> Result<Relion31Export> {
    let n = params.box_px;
    if n < 8 || n % 2 == 1 {
        return Err(Error::Config(format!(
            "box {n}: RELION 3.1 export needs an even box of at least 8 voxels"
        )));
    }
    let first = tomos
        .first()
        .ok_or_else(|| Error::Config("RELION 3.1 export: no tomogram given".into()))?;
    let voxel_a = first.voxel_a;
    if let Some(t) = tomos
        .iter()
        .find(|t| (t.voxel_a - voxel_a).abs() > 1e-3 * voxel_a)
    {
        return Err(Error::Config(format!(
            "RELION 3.1 export: tomogram {} has voxel {} Å, {} has {voxel_a} Å; export one binning at a time",
            t.name, t.voxel_a, first.name
        )));
    }
    let sub = dir.join("Subtomograms");
    std::fs::create_dir_all(&sub).map_err(|e| Error::io(&sub, e))?;
    let mask = soft_sphere(n, params.mask_radius_a / voxel_a, 3.0);
    let mut table = StarTable::new(&[
        "rlnImageName",
        "rlnCtfImage",
        "rlnMicrographName",
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnCoordinateZ",
        "rlnOriginXAngst",
        "rlnOriginYAngst",
        "rlnOriginZAngst",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnRandomSubset",
        "rlnOpticsGroup",
    ]);
    for (i, p) in particles.iter().enumerate() {
        let t = tomos.get(p.tomo).ok_or_else(|| {
            Error::Config(format!(
                "particle {}: tomogram index {} out of range ({} tomograms)",
                i + 1,
                p.tomo,
                tomos.len()
            ))
        })?;
        let (b, tr, res) = particle_box(t, p, params, &mask);
        let ctf = cubic_ctf_volume(tr.grid(n, voxel_a, &identity()).view(), n);
        let img = format!("Subtomograms/p{:05}.mrc", i + 1);
        let ctf_name = format!("Subtomograms/p{:05}_ctf.mrc", i + 1);
        mrc::write(&dir.join(&img), b.view(), voxel_a as f32, MrcKind::Volume)?;
        mrc::write(
            &dir.join(&ctf_name),
            ctf.view(),
            voxel_a as f32,
            MrcKind::Volume,
        )?;
        // The box centre in tomogram voxels (from voxel 0): the particle's voxel minus its
        // residual (extract.rs).
        let (nz, ny, nx) = t.volume.dim();
        let dims = [nx, ny, nz];
        let centre: Vec<f64> = (0..3)
            .map(|a| (dims[a] / 2) as f64 + p.position_a[a] / voxel_a - res[a])
            .collect();
        let e = p.euler_deg;
        table.push_row(vec![
            img,
            ctf_name,
            t.name.clone(),
            format!("{:.3}", centre[0]),
            format!("{:.3}", centre[1]),
            format!("{:.3}", centre[2]),
            format!("{:.4}", -res[0] * voxel_a),
            format!("{:.4}", -res[1] * voxel_a),
            format!("{:.4}", -res[2] * voxel_a),
            format!("{:.4}", e[0]),
            format!("{:.4}", e[1]),
            format!("{:.4}", e[2]),
            (p.half + 1).to_string(),
            "1".into(),
        ]);
    }
    let o = &first.geometry.optics;
    let mut optics = StarTable::new(&[
        "rlnOpticsGroupName",
        "rlnOpticsGroup",
        "rlnImagePixelSize",
        "rlnImageSize",
        "rlnImageDimensionality",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
    ]);
    optics.push_row(vec![
        "opticsGroup1".into(),
        "1".into(),
        format!("{voxel_a:.6}"),
        n.to_string(),
        "3".into(),
        format!("{:.6}", o.voltage_kv),
        format!("{:.6}", o.cs_mm),
        format!("{:.6}", o.amplitude_contrast),
    ]);
    let file = StarFile {
        blocks: vec![
            StarBlock {
                name: "optics".into(),
                pairs: vec![],
                table: Some(optics),
            },
            StarBlock {
                name: "particles".into(),
                pairs: vec![],
                table: Some(table),
            },
        ],
    };
    // RELION 3.1 labels its files `# version 30001`; it accepts any comment there, but say
    // what the file is.
    let text = file.to_text().replace("# version 50001", "# version 30001");
    let star = dir.join("particles.star");
    crate::io::atomic::write_bytes_atomic(&star, text.as_bytes())?;
    Ok(Relion31Export {
        star,
        particles: particles.len(),
        box_px: n,
        voxel_a,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fft3::Fft3;

    #[test]
    fn cubic_layout_is_the_centred_full_spectrum() {
        // A real, non-centrosymmetric volume: |F|² is centrosymmetric (like a transfer) but
        // varies along every axis, so a misplaced voxel shows.
        let n = 8;
        let v = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            ((x * 3 + y * 5 + z * 7) % 11) as f32 + if x == 1 && y == 2 { 4.0 } else { 0.0 }
        });
        let spec = Fft3::new(n, n, n).forward(v.view());
        let power = spec.mapv(|c| c.norm_sqr());
        let cubic = cubic_ctf_volume(power.view(), n);
        // Direct full DFT power at frequency k = (kx, ky, kz).
        let dft = |k: [i64; 3]| {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for ((z, y, x), val) in v.indexed_iter() {
                let ph = -2.0
                    * std::f64::consts::PI
                    * (k[0] * x as i64 + k[1] * y as i64 + k[2] * z as i64) as f64
                    / n as f64;
                re += *val as f64 * ph.cos();
                im += *val as f64 * ph.sin();
            }
            re * re + im * im
        };
        let h = (n / 2) as i64;
        for (z, y, x) in [
            (0, 0, 0),
            (4, 4, 4),
            (1, 6, 2),
            (7, 3, 0),
            (2, 5, 7),
            (4, 0, 3),
        ] {
            let k = [h - x as i64, h - y as i64, h - z as i64];
            let want = dft(k);
            let got = cubic[[z, y, x]] as f64;
            assert!(
                (got - want).abs() <= 1e-3 * want.max(1.0),
                "voxel {z},{y},{x} (k {k:?}): {got} vs {want}"
            );
            // Centrosymmetric: the voxel n/2 + k holds the same value.
            let m = |i: usize| ((2 * h - i as i64).rem_euclid(n as i64)) as usize;
            assert!((cubic[[m(z), m(y), m(x)]] as f64 - want).abs() <= 1e-3 * want.max(1.0));
        }
        // DC at the centre voxel.
        assert!((cubic[[4, 4, 4]] - power[[0, 0, 0]]).abs() < 1e-3 * power[[0, 0, 0]]);
    }
}
