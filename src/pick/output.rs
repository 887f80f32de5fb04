//! The files of one picked tomogram (written by rank 0):
//!
//! - `<name>_scores.mrc`: best FLCF score per voxel (`f32`, the tomogram's grid and pixel);
//! - `<name>_angles.mrc`: index of the best rotation per voxel into `<name>_rotations.txt`
//!   (as `f32`; −1 where none);
//! - `<name>_rotations.txt`: one line per searched rotation, `index rot tilt psi` (RELION
//!   ZYZ degrees, `particle(x) = reference(Aᵀ·x)`);
//! - `<name>_particles.star`: RELION-5 particles (`rlnCenteredCoordinateX/Y/ZAngst`,
//!   `rlnAngleRot/Tilt/Psi`, alternating random subsets 1/2), box = the template's;
//! - `<name>_particles.tbl`: the same picks as a Dynamo table ([`crate::io::dynamo`]);
//! - `<name>_pick.json`: counts, threshold, σ, rotations, timing ([`PickSummary`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{PickParams, PickResult};
use crate::core::geometry::matrix_to_euler_zyz;
use crate::io::atomic::write_atomic;
use crate::io::container::{PickRow, PickingRecord};
use crate::io::dynamo::{write_table, DynamoRow};
use crate::io::mrc::{self, MrcKind};
use crate::io::relion::{write_particles_star, ParticleRecord};
use crate::pick::evaluate::PickAccuracy;
use crate::Result;

/// Paths of the files written for one tomogram.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PickFiles {
    /// Score map.
    pub scores: PathBuf,
    /// Rotation-index map.
    pub angles: PathBuf,
    /// Rotation list.
    pub rotations: PathBuf,
    /// RELION-5 particle STAR.
    pub star: PathBuf,
    /// Dynamo table.
    pub tbl: PathBuf,
    /// Summary JSON.
    pub json: PathBuf,
}

/// What a search did, for logs, `summary.json` and `<name>_pick.json`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PickSummary {
    /// Template (file name or structure).
    pub template: String,
    /// Binning of the searched tomogram.
    pub bin: usize,
    /// Tomogram `[x, y, z]` voxels.
    pub tomogram_xyz: [usize; 3],
    /// Template box, voxels.
    pub box_px: usize,
    /// Angular step, degrees.
    pub angular_step_deg: f64,
    /// Rotations searched.
    pub n_rotations: usize,
    /// MPI ranks that shared the rotations.
    pub ranks: usize,
    /// Wall time of the search, seconds.
    pub search_seconds: f64,
    /// Rotations per second (all ranks together).
    pub rotations_per_s: f64,
    /// σ of the score map.
    pub sigma: f64,
    /// Threshold used.
    pub threshold: f64,
    /// Picks.
    pub picked: usize,
    /// Against the truth, when known.
    pub accuracy: Option<PickAccuracy>,
    /// Files written (relative to the output directory where possible).
    pub files: Vec<String>,
}

impl PickSummary {
    /// The summary of `r` (accuracy and files left empty).
    pub fn of(
        r: &PickResult,
        template: &str,
        bin: usize,
        box_px: usize,
        params: &PickParams,
        ranks: usize,
    ) -> PickSummary {
        let (nz, ny, nx) = r.maps.scores.dim();
        PickSummary {
            template: template.to_string(),
            bin,
            tomogram_xyz: [nx, ny, nz],
            box_px,
            angular_step_deg: params.angular_step_deg,
            n_rotations: r.rotations.len(),
            ranks,
            search_seconds: r.search_seconds,
            rotations_per_s: r.rotations.len() as f64 / r.search_seconds.max(1e-9),
            sigma: r.sigma,
            threshold: r.threshold,
            picked: r.picks.len(),
            accuracy: None,
            files: Vec::new(),
        }
    }
}

/// The container record of `r` (`/tilt_series/<name>/picking`).
pub fn record(
    r: &PickResult,
    template: &str,
    bin: usize,
    pixel_a: f64,
    params: &PickParams,
) -> PickingRecord {
    PickingRecord {
        bin,
        pixel_a,
        template: template.to_string(),
        angular_step_deg: params.angular_step_deg,
        n_false_alarms: params.n_false_alarms,
        radius_a: r.radius_a,
        sigma: r.sigma,
        threshold: r.threshold,
        scores: r.maps.scores.clone(),
        rotation_index: r.maps.index.clone(),
        rotations_zyz_deg: r
            .rotations
            .iter()
            .map(|a| {
                let (x, y, z) = matrix_to_euler_zyz(a);
                [x, y, z]
            })
            .collect(),
        particles: r
            .picks
            .iter()
            .map(|p| PickRow {
                x_a: p.position_a[0],
                y_a: p.position_a[1],
                z_a: p.position_a[2],
                rot_deg: p.euler_deg[0],
                tilt_deg: p.euler_deg[1],
                psi_deg: p.euler_deg[2],
                score: p.score,
            })
            .collect(),
    }
}

/// Write the files of one tomogram `name` into `dir` (module docs): `pixel_a` of the
/// tomogram, `box_px` of the template, `tomo_index` (Dynamo column 20, from 1) and the
/// tilt range (Dynamo columns 14–15), and `summary` as the JSON.
#[allow(clippy::too_many_arguments)]
pub fn write_outputs(
    dir: &Path,
    name: &str,
    r: &PickResult,
    pixel_a: f64,
    box_px: usize,
    tomo_index: usize,
    tilt_range_deg: [f64; 2],
    summary: &PickSummary,
) -> Result<PickFiles> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let f = |s: &str| dir.join(format!("{name}_{s}"));
    let files = PickFiles {
        scores: f("scores.mrc"),
        angles: f("angles.mrc"),
        rotations: f("rotations.txt"),
        star: f("particles.star"),
        tbl: f("particles.tbl"),
        json: f("pick.json"),
    };
    let px = pixel_a as f32;
    mrc::write(&files.scores, r.maps.scores.view(), px, MrcKind::Volume)?;
    let idx = r.maps.index.mapv(|v| v as f32);
    mrc::write(&files.angles, idx.view(), px, MrcKind::Volume)?;
    write_atomic(&files.rotations, |w| {
        writeln!(w, "# index rot tilt psi (RELION ZYZ, degrees)")?;
        for (i, a) in r.rotations.iter().enumerate() {
            let (x, y, z) = matrix_to_euler_zyz(a);
            writeln!(w, "{i} {x:.6} {y:.6} {z:.6}")?;
        }
        Ok(())
    })?;
    let parts: Vec<ParticleRecord> = r
        .picks
        .iter()
        .enumerate()
        .map(|(i, p)| ParticleRecord {
            tomo_name: name.to_string(),
            centered_coordinate_a: p.position_a,
            euler_deg: p.euler_deg,
            optics_group: 1,
            random_subset: i % 2 + 1,
            class: 1,
        })
        .collect();
    write_particles_star(&files.star, pixel_a, box_px, &parts)?;
    let rows: Vec<DynamoRow> = r
        .picks
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let [z, y, x] = p.voxel;
            DynamoRow::new(
                i + 1,
                tomo_index,
                1,
                [x as f64, y as f64, z as f64],
                &p.pose,
                p.score,
                tilt_range_deg,
            )
        })
        .collect();
    write_table(&files.tbl, &rows)?;
    crate::pipeline::simio::write_json(&files.json, summary)?;
    Ok(files)
}

/// The lowest and highest tilt of `geom`, degrees (±60 when unknown).
pub fn tilt_range(geom: Option<&crate::core::geometry::TiltSeriesGeometry>) -> [f64; 2] {
    match geom {
        Some(g) if !g.tilts.is_empty() => [
            g.tilts
                .iter()
                .map(|t| t.tilt_deg)
                .fold(f64::INFINITY, f64::min),
            g.tilts
                .iter()
                .map(|t| t.tilt_deg)
                .fold(f64::NEG_INFINITY, f64::max),
        ],
        _ => [-60.0, 60.0],
    }
}

impl PickFiles {
    /// Every path, in the order of the module docs.
    pub fn all(&self) -> Vec<&Path> {
        vec![
            &self.scores,
            &self.angles,
            &self.rotations,
            &self.star,
            &self.tbl,
            &self.json,
        ]
    }
}
