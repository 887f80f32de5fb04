//! The `[pick]` stage of `lamella run`: template matching in one reconstructed tomogram per
//! tilt series (on the rank that owns the series), with the files of `lamella pick` in
//! `pick/`, the container's `picking` group, a picture of the score map and, for simulated
//! series, recall / precision / orientation error against the truth. Rank 0 merges the
//! picks of every series into `relion/particles_picked.star` ([`write_picked_star`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::comm::LocalComm;
use crate::core::geometry::{euler_zyz_to_matrix, TiltSeriesGeometry};
use crate::core::so3::Symmetry;
use crate::device::Device;
use crate::io::container::PickingRecord;
use crate::io::relion::{read_particles_star, write_particles_star, ParticleRecord};
use crate::pick::evaluate::{evaluate, Posed};
use crate::pick::output::{self, PickSummary};
use crate::pick::template::{Contrast, Template, WeightSpec};
use crate::pick::{pick_tomogram, PickParams};
use crate::recon::ctfcorr::CtfCorrection;
use crate::sim::{SeriesTruth, Structure};
use crate::sta::weight::CtfMode;
use crate::{Error, Result};

fn default_step() -> f64 {
    30.0
}
fn default_false_alarms() -> f64 {
    1.0
}
fn default_max_peaks() -> usize {
    1000
}

/// `[pick]`: template matching after reconstruction. Å and degrees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickConfig {
    /// Template: an atomic model (`.pdb`, `.cif`) or a density map (`.mrc`, dense matter
    /// positive, centre at voxel n/2); relative to the config file, else looked up as
    /// `simulate.structures` are. Default: the first simulated structure (simulated series
    /// only).
    #[serde(default)]
    pub template: Option<PathBuf>,
    /// Binning of the searched tomogram, one of `reconstruct.binnings` (default: the largest).
    #[serde(default)]
    pub bin: Option<usize>,
    /// Angular step of the uniform rotation search.
    #[serde(default = "default_step")]
    pub angular_step_deg: f64,
    /// Particle radius: mask and minimum distance between picks (default: the template's).
    #[serde(default)]
    pub radius_a: Option<f64>,
    /// Correlation-mask radius as a multiple of the particle radius (≥ 1; see
    /// [`PickParams::mask_scale`]).
    #[serde(default = "crate::pick::default_mask_scale")]
    pub mask_scale: f64,
    /// Score-gap ratio that drops a separate weak population of picks (≤ 1: off; see
    /// [`PickParams::score_gap_ratio`]).
    #[serde(default = "crate::pick::default_score_gap")]
    pub score_gap_ratio: f64,
    /// Expected false picks per tomogram that set the score threshold.
    #[serde(default = "default_false_alarms")]
    pub n_false_alarms: f64,
    /// At most this many picks per tomogram.
    #[serde(default = "default_max_peaks")]
    pub max_peaks: usize,
    /// Low-pass of the template, Å.
    #[serde(default)]
    pub lowpass_a: Option<f64>,
    /// Symmetry of the structure, for the orientation error against the truth only
    /// (default: `sta.symmetry`, else C1).
    #[serde(default)]
    pub symmetry: Option<String>,
}

impl PickConfig {
    /// Check the values; errors name the key.
    pub fn validate(&self, config: &Path, binnings: &[usize]) -> Result<()> {
        let err = |m: String| Err(Error::Config(format!("{}: {m}", config.display())));
        if !(self.mask_scale.is_finite() && self.mask_scale >= 1.0) {
            return err(format!(
                "pick.mask_scale = {}: give a factor ≥ 1 of the particle radius",
                self.mask_scale
            ));
        }
        if !(self.angular_step_deg.is_finite() && self.angular_step_deg > 0.0) {
            return err(format!(
                "pick.angular_step_deg = {}: give a step > 0 (e.g. 30 for a quick search)",
                self.angular_step_deg
            ));
        }
        if !(self.n_false_alarms.is_finite() && self.n_false_alarms > 0.0) {
            return err(format!(
                "pick.n_false_alarms = {}: give a positive number of expected false picks",
                self.n_false_alarms
            ));
        }
        if let Some(b) = self.bin {
            if !binnings.contains(&b) {
                return err(format!(
                    "pick.bin = {b}: not among reconstruct.binnings {binnings:?}; add it there"
                ));
            }
        }
        if let Some(s) = &self.symmetry {
            s.parse::<Symmetry>()?;
        }
        Ok(())
    }

    /// The binning searched among `binnings` (non-empty).
    pub fn binning(&self, binnings: &[usize]) -> usize {
        self.bin
            .unwrap_or_else(|| binnings.iter().copied().max().unwrap_or(1))
    }
}

/// What the stage leaves for the series' container and summary.
pub struct Picked {
    /// `/tilt_series/<name>/picking`.
    pub record: PickingRecord,
    /// The summary (accuracy against the truth when known; files relative to the output).
    pub summary: PickSummary,
    /// Pictures `(caption, path relative to report/)` of the score map.
    pub pictures: Vec<(String, String)>,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Everything the stage needs from the run about one series.
pub struct PickInput<'a> {
    /// Output directory of the run.
    pub out: &'a Path,
    /// Series name.
    pub name: &'a str,
    /// The searched tomogram `[z, y, x]`, voxel `pixel_a` Å.
    pub tomogram: &'a Array3<f32>,
    /// Its binning and voxel size, Å.
    pub bin: usize,
    /// Voxel size, Å.
    pub pixel_a: f64,
    /// Geometry it was reconstructed with (wedge, defocus, exposure).
    pub geometry: &'a TiltSeriesGeometry,
    /// The template structure (resolved by the caller).
    pub template: &'a Structure,
    /// Template label (file name or structure name).
    pub template_name: &'a str,
    /// Dense matter bright in the tomogram (`reconstruct.invert_contrast`).
    pub bright: bool,
    /// CTF correction of the tomogram.
    pub ctf_correction: CtfCorrection,
    /// The simulator's truth of this series, when simulated.
    pub truth: Option<&'a SeriesTruth>,
    /// Symmetry for the orientation error.
    pub symmetry: Symmetry,
    /// Device of the angular search (the run's `reconstruct.device`).
    pub device: &'a Device,
}

/// The template structure of a series: `cfg.template` (already resolved against the
/// config's folder when it exists there; else looked up in `shared_data`), or the first
/// simulated structure.
pub fn template_structure(
    cfg: &PickConfig,
    shared_data: &Path,
    simulated: Option<&Structure>,
) -> Result<(Structure, String)> {
    match &cfg.template {
        Some(p) => {
            let path = p.clone();
            let label = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((Structure::from_file(&path, shared_data)?, label))
        }
        None => match simulated {
            Some(s) => Ok((s.clone(), s.name())),
            None => Err(Error::Config(
                "[pick] of an [[input]] series needs pick.template (a .pdb/.cif model or an .mrc map)"
                    .into(),
            )),
        },
    }
}

/// Pick one series (see the module docs); files go to `out/pick/<name>_*`.
pub fn pick_series(cfg: &PickConfig, inp: &PickInput) -> Result<Picked> {
    let t = Instant::now();
    let template = Template::from_structure(inp.template, inp.pixel_a, None)?;
    let has_defocus = inp.geometry.tilts.iter().any(|t| t.defocus_u_a > 0.0);
    let ctf = match inp.ctf_correction {
        _ if !has_defocus => CtfMode::None,
        CtfCorrection::None => CtfMode::Signed,
        CtfCorrection::Phaseflip | CtfCorrection::ThreeD => CtfMode::Flipped,
        CtfCorrection::Wiener => CtfMode::None,
    };
    let params = PickParams {
        angular_step_deg: cfg.angular_step_deg,
        radius_a: cfg.radius_a,
        mask_scale: cfg.mask_scale,
        score_gap_ratio: cfg.score_gap_ratio,
        n_false_alarms: cfg.n_false_alarms,
        max_peaks: cfg.max_peaks,
        edge_px: None,
        weight: WeightSpec {
            ctf,
            dose: inp.geometry.tilts.iter().any(|t| t.dose_e_a2 > 0.0),
            contrast: if inp.bright {
                Contrast::Bright
            } else {
                Contrast::Dark
            },
            lowpass_a: cfg.lowpass_a,
        },
    };
    // The series is this rank's own: the rotations are not shared with other ranks.
    let r = pick_tomogram(
        inp.tomogram.view(),
        inp.pixel_a,
        Some(inp.geometry),
        &template,
        &params,
        None,
        &LocalComm,
        inp.device,
    )?;
    let mut summary = PickSummary::of(&r, inp.template_name, inp.bin, template.size(), &params, 1);
    if let Some(truth) = inp.truth {
        let want =
            |q: &&crate::sim::ParticleTruth| cfg.template.is_some() || q.structure_index == 0;
        let truth_posed: Vec<Posed> = truth
            .particles
            .iter()
            .filter(want)
            .map(|q| Posed {
                position_a: q.position_a,
                pose: euler_zyz_to_matrix(q.rot_deg, q.tilt_deg, q.psi_deg),
            })
            .collect();
        let picks: Vec<Posed> = r
            .picks
            .iter()
            .map(|p| Posed {
                position_a: p.position_a,
                pose: p.pose,
            })
            .collect();
        let acc = evaluate(
            &picks,
            &truth_posed,
            0.5 * r.radius_a,
            &inp.symmetry.matrices(),
        );
        tracing::info!(
            recall = acc.recall,
            precision = acc.precision,
            median_angle_deg = acc.median_angle_deg,
            "picking vs truth"
        );
        summary.accuracy = Some(acc);
    }
    let dir = inp.out.join("pick");
    let range = output::tilt_range(Some(inp.geometry));
    let files = output::write_outputs(
        &dir,
        inp.name,
        &r,
        inp.pixel_a,
        template.size(),
        1,
        range,
        &summary,
    )?;
    summary.files = files
        .all()
        .iter()
        .map(|p| {
            p.strip_prefix(inp.out)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    crate::pipeline::simio::write_json(&files.json, &summary)?;
    let pictures = super::pictures::write_volume_pictures(
        inp.out,
        &format!("{}_pick_scores", inp.name),
        &format!("{}: template-matching score (bin {})", inp.name, inp.bin),
        &r.maps.scores,
    )?;
    let record = output::record(&r, inp.template_name, inp.bin, inp.pixel_a, &params);
    Ok(Picked {
        record,
        summary,
        pictures,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Rank 0 at the end of a run: `relion/particles_picked.star`, the picks of `names` (from
/// `pick/<name>_particles.star`, those that exist) in one RELION-5 particle STAR, gold-
/// standard halves alternating over the merged list. Returns its path and the particle
/// count, or `None` when no series has picks.
pub fn write_picked_star(out: &Path, names: &[String]) -> Result<Option<(PathBuf, usize)>> {
    let mut all: Vec<ParticleRecord> = Vec::new();
    let mut pixel = 0.0;
    let mut box_px = 0;
    let mut any = false;
    for n in names {
        let p = out.join("pick").join(format!("{n}_particles.star"));
        if !p.is_file() {
            continue;
        }
        any = true;
        let star = crate::io::star::StarFile::read(&p)?;
        if let Some(t) = star.block("optics").and_then(|b| b.table()) {
            let col = |k: &str| t.f64_column(k, &p, "optics").ok()?.first().copied();
            pixel = col("rlnTomoTiltSeriesPixelSize").unwrap_or(pixel);
            box_px = col("rlnImageSize").map(|v| v as usize).unwrap_or(box_px);
        }
        all.extend(read_particles_star(&p)?);
    }
    if !any {
        return Ok(None);
    }
    for (i, r) in all.iter_mut().enumerate() {
        r.random_subset = i % 2 + 1;
    }
    let path = out.join("relion").join("particles_picked.star");
    write_particles_star(&path, pixel, box_px, &all)?;
    Ok(Some((path, all.len())))
}
