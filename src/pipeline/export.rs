//! RELION-5 exports of a run, for subtomogram averaging here (`lamella sta`) or in RELION /
//! WarpTools: `relion/tomograms.star` with `relion/tilt_series/<name>.star` (the geometry
//! the tomograms were reconstructed with, projection matrices included) and, for simulated
//! runs, `relion/particles_truth.star` (every simulated particle at its true position and
//! pose; gold-standard halves alternate, class = structure index + 1).
//!
//! Each series writes `relion/<name>.tomogram.json` on its own rank after reconstruction;
//! rank 0 collects them into the STAR files at the end of the run (so a resumed run exports
//! every finished series).

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::core::geometry::TiltSeriesGeometry;
use crate::error::{Error, Result};
use crate::io::relion::{
    write_particles_star, write_tomograms_star, ParticleRecord, TomogramEntry,
};

/// What one series contributes to `tomograms.star`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TomogramExport {
    /// Series name.
    pub name: String,
    /// Geometry used for the reconstruction.
    pub geometry: TiltSeriesGeometry,
    /// Binning of the exported tomogram.
    pub binning: usize,
    /// Tomogram shape `[x, y, z]`, voxels of the exported binning.
    pub shape_xyz: [usize; 3],
    /// Tomogram MRC, relative to the output directory.
    pub tomogram: String,
    /// Tilt stack, relative to the output directory ("" when there is no file).
    pub stack: String,
}

/// Write `out/relion/<name>.tomogram.json`.
pub fn write_series_export(out: &Path, e: &TomogramExport) -> Result<()> {
    let dir = out.join("relion");
    std::fs::create_dir_all(&dir).map_err(|err| Error::io(&dir, err))?;
    super::simio::write_json(&dir.join(format!("{}.tomogram.json", e.name)), e)
}

/// A path relative to the output directory as seen from `out/relion` (absolute ones as is).
fn up(p: &str) -> String {
    if p.is_empty() || Path::new(p).is_absolute() {
        p.to_string()
    } else {
        format!("../{p}")
    }
}

/// Rank 0 at the end of a run: `relion/tomograms.star` (+ tilt-series STARs) from the series
/// exports of `names` that exist, and `relion/particles_truth.star` from `sim/<name>_truth.json`
/// when the run is simulated. Paths in the STAR files are relative to `out/relion`.
pub fn write_relion_exports(out: &Path, names: &[String], simulated: bool) -> Result<()> {
    let dir = out.join("relion");
    let mut entries = Vec::new();
    for n in names {
        let p = dir.join(format!("{n}.tomogram.json"));
        if !p.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let e: TomogramExport = serde_json::from_str(&text).map_err(|err| {
            Error::bad_input(
                &p,
                "json",
                format!("{err}; delete it and rerun with --resume"),
            )
        })?;
        let b = e.binning as f64;
        entries.push(TomogramEntry {
            name: e.name.clone(),
            tomo_size_px: [
                (e.shape_xyz[0] as f64 * b) as usize,
                (e.shape_xyz[1] as f64 * b) as usize,
                (e.shape_xyz[2] as f64 * b) as usize,
            ],
            geometry: e.geometry,
            binning: b,
            tilt_series_stack: up(&e.stack),
            reconstructed: Some(up(&e.tomogram)),
        });
    }
    if entries.is_empty() {
        return Ok(());
    }
    write_tomograms_star(&dir, &entries)?;
    if simulated {
        let mut particles = Vec::new();
        let mut pixel = 0.0;
        for e in &entries {
            let p = out.join("sim").join(format!("{}_truth.json", e.name));
            let t = super::simio::read_truth(&p)?;
            pixel = t.pixel_a;
            for q in &t.particles {
                particles.push(ParticleRecord {
                    tomo_name: e.name.clone(),
                    centered_coordinate_a: q.position_a,
                    euler_deg: [q.rot_deg, q.tilt_deg, q.psi_deg],
                    optics_group: 1,
                    random_subset: 1 + particles.len() % 2,
                    class: q.structure_index + 1,
                });
            }
        }
        write_particles_star(&dir.join("particles_truth.star"), pixel, 0, &particles)?;
    }
    Ok(())
}
