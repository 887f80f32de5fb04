//! Particle picking by template matching (`lamella pick`, the `[pick]` stage).
//!
//! Per tomogram: a template ([`template`]) weighted by the CTF, dose and missing wedge of
//! its tilt series is rotated over a uniform SO(3) sampling ([`crate::core::so3`]) and
//! correlated with the tomogram by the fast local normalised correlation ([`flcf`]); the
//! best score and rotation per voxel are kept (split over MPI ranks by rotation chunk,
//! combined by a max-reduction), and peaks above a false-alarm threshold are taken with
//! non-maximum suppression ([`peaks`]). [`evaluate`] scores picks against a known truth.
//!
//! The search is pure (arrays in, arrays out); [`output`] writes the files (maps, STAR,
//! Dynamo table, JSON) that `cli/pick.rs` and `pipeline/pick.rs` ask for.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod evaluate;
pub mod flcf;
pub mod output;
pub mod peaks;
pub mod template;

use ndarray::{Array3, ArrayView3};
use std::time::Instant;

use crate::comm::Comm;
use crate::core::geometry::{matrix_to_euler_zyz, Mat3, TiltSeriesGeometry};
use crate::core::so3::uniform_rotations;
use crate::device::Device;
use crate::sta::weight::CtfMode;
use crate::{Error, Result};
use flcf::{search_on, Matcher, ScoreMaps};
use template::{tomogram_weight, Contrast, Template, WeightSpec};

/// Parameters of one search. Å and degrees.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PickParams {
    /// Angular step of the uniform rotation sampling, degrees.
    pub angular_step_deg: f64,
    /// Particle radius, Å: the mask radius and the non-maximum-suppression distance
    /// (`None` = the template's structure radius).
    pub radius_a: Option<f64>,
    /// Radius of the correlation mask as a multiple of the particle radius (≥ 1). Above 1 the
    /// mask holds a shell of background about the particle: density that goes on past the
    /// particle (a membrane, a filament, a neighbour) raises the local σ there and lowers the
    /// score, so extended objects that look like the particle locally are not picked.
    #[serde(default = "default_mask_scale")]
    pub mask_scale: f64,
    /// Drop the weakest picks when they form a separate population: a score drop between
    /// neighbouring picks (strongest first) of at least this ratio cuts the list
    /// ([`peaks::score_gap_keep`], never below 3 picks); ≤ 1 switches it off.
    #[serde(default = "default_score_gap")]
    pub score_gap_ratio: f64,
    /// Expected number of false picks per tomogram that sets the threshold.
    pub n_false_alarms: f64,
    /// At most this many picks per tomogram.
    pub max_peaks: usize,
    /// Voxels closer than this to a face of the tomogram are not picked (the correlation
    /// wraps around), voxels; `None` = half the particle radius.
    pub edge_px: Option<usize>,
    /// How the template is weighted per tomogram.
    pub weight: WeightSpec,
}

/// The default [`PickParams::mask_scale`]: a background shell of 0.3 radii.
pub fn default_mask_scale() -> f64 {
    1.3
}

/// The default [`PickParams::score_gap_ratio`].
pub fn default_score_gap() -> f64 {
    1.5
}

impl Default for PickParams {
    fn default() -> Self {
        PickParams {
            angular_step_deg: 30.0,
            radius_a: None,
            mask_scale: default_mask_scale(),
            score_gap_ratio: default_score_gap(),
            n_false_alarms: 1.0,
            max_peaks: 1000,
            edge_px: None,
            weight: WeightSpec {
                ctf: CtfMode::Signed,
                dose: true,
                contrast: Contrast::Bright,
                lowpass_a: None,
            },
        }
    }
}

/// One pick: position, pose (RELION ZYZ, `particle(x) = reference(Aᵀ·x)`) and score.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pick {
    /// Voxel `(z, y, x)` of the tomogram.
    pub voxel: [usize; 3],
    /// Position, Å about the tomogram centre (voxel `n/2`), `(x, y, z)`.
    pub position_a: [f64; 3],
    /// RELION `(rot, tilt, psi)`, degrees.
    pub euler_deg: [f64; 3],
    /// The pose matrix `A`.
    pub pose: Mat3,
    /// FLCF score.
    pub score: f64,
}

/// Everything a search found in one tomogram.
#[derive(Clone, Debug)]
pub struct PickResult {
    /// Best score and rotation index per voxel.
    pub maps: ScoreMaps,
    /// The searched rotations (the index map points into this list).
    pub rotations: Vec<Mat3>,
    /// σ of the score map over the pickable voxels.
    pub sigma: f64,
    /// The false-alarm threshold used.
    pub threshold: f64,
    /// The score of the strongest pick the score-gap rule dropped (`None`: none dropped).
    pub gap_cut: Option<f64>,
    /// Particle radius used, Å.
    pub radius_a: f64,
    /// The picks, strongest first.
    pub picks: Vec<Pick>,
    /// Wall time of the angular search on this rank, seconds.
    pub search_seconds: f64,
}

/// Pick particles in `tomogram` (`[z, y, x]`, voxel `pixel_a` Å) with `template` (same
/// pixel): weight the template by the transfer of `geom` at the tomogram centre (or not at
/// all when `geom` is `None`), search every rotation of [`uniform_rotations`] at
/// `params.angular_step_deg` (split over the ranks of `comm`; collective), threshold and
/// pick. `region` (same shape as the tomogram) limits where particles may be picked. The
/// angular search runs on `device` ([`flcf::search_on`]: CPU, or the CUDA twin); the set-up
/// and the peak picking run on the CPU.
///
/// Errors ([`Error::Config`]): template pixel ≠ tomogram pixel, box larger than the
/// tomogram, region of another shape, step ≤ 0; ([`Error::Runtime`]) a failed CUDA search.
#[allow(clippy::too_many_arguments)]
pub fn pick_tomogram(
    tomogram: ArrayView3<f32>,
    pixel_a: f64,
    geom: Option<&TiltSeriesGeometry>,
    template: &Template,
    params: &PickParams,
    region: Option<&Array3<bool>>,
    comm: &dyn Comm,
    device: &Device,
) -> Result<PickResult> {
    if (template.pixel_a - pixel_a).abs() > 1e-3 * pixel_a {
        return Err(Error::Config(format!(
            "template pixel {} Å differs from the tomogram pixel {pixel_a} Å: make the \
             template at the tomogram's pixel",
            template.pixel_a
        )));
    }
    if !(params.angular_step_deg.is_finite() && params.angular_step_deg > 0.0) {
        return Err(Error::Config(format!(
            "angular step {} °: give a step > 0 (e.g. 30 for a quick search, 7 as pytom)",
            params.angular_step_deg
        )));
    }
    let shape = tomogram.dim();
    if let Some(r) = region {
        if r.dim() != shape {
            return Err(Error::Config(format!(
                "pick mask {:?} does not match the tomogram {shape:?} ([z, y, x])",
                r.dim()
            )));
        }
    }
    if !(params.mask_scale.is_finite() && params.mask_scale >= 1.0) {
        return Err(Error::Config(format!(
            "mask scale {}: give a factor ≥ 1 of the particle radius (1 = the particle only)",
            params.mask_scale
        )));
    }
    let radius_a = params.radius_a.unwrap_or(template.radius_a);
    let radius_px = radius_a / pixel_a;
    let mask_px = radius_px * params.mask_scale;
    // the template box must hold the mask and a voxel of margin
    let need = 2 * (mask_px.ceil() as usize + 1);
    let boxed;
    let template = if need > template.size() {
        boxed = template.reboxed(need);
        &boxed
    } else {
        template
    };
    let n = template.size();
    let mask = crate::sta::mask::soft_sphere(n, mask_px.min(n as f64 / 2.0 - 1.0), 0.0);
    let weight = match geom {
        Some(g) => tomogram_weight(g, [0.0; 3], &params.weight, n, pixel_a),
        None => {
            let sign = match params.weight.contrast {
                Contrast::Bright => 1.0,
                Contrast::Dark => -1.0,
            };
            Array3::from_elem((n, n, n / 2 + 1), sign)
        }
    };
    let mut matcher = Matcher::new(tomogram, template, &mask, weight)?;
    let rotations = uniform_rotations(params.angular_step_deg);
    tracing::info!(
        rotations = rotations.len(),
        step_deg = params.angular_step_deg,
        box_px = n,
        ranks = comm.size(),
        device = %device.name(),
        "template matching: {} rotations at {}° over {} rank(s) on {}",
        rotations.len(),
        params.angular_step_deg,
        comm.size(),
        device.name()
    );
    let t = Instant::now();
    let maps = search_on(device, &mut matcher, &rotations, comm, |k, total| {
        if k % 50 == 0 || k == total {
            tracing::debug!(done = k, total, "rotations searched");
        }
    })?;
    let search_seconds = t.elapsed().as_secs_f64();
    let edge = params.edge_px.unwrap_or((radius_px / 2.0).ceil() as usize);
    let (nz, ny, nx) = shape;
    let pickable = Array3::from_shape_fn(shape, |(z, y, x)| {
        let inside =
            z >= edge && y >= edge && x >= edge && z + edge < nz && y + edge < ny && x + edge < nx;
        inside && region.is_none_or(|r| r[[z, y, x]])
    });
    let sigma = peaks::score_sigma(&maps.scores, Some(&pickable));
    let n_vox = pickable.iter().filter(|&&b| b).count();
    let threshold =
        peaks::false_alarm_threshold(sigma, params.n_false_alarms, n_vox, rotations.len());
    let mut found = peaks::extract_peaks(
        &maps.scores,
        &maps.index,
        threshold,
        radius_px,
        Some(&pickable),
        params.max_peaks,
    );
    let found_scores: Vec<f64> = found.iter().map(|p| p.score as f64).collect();
    let keep = peaks::score_gap_keep(&found_scores, params.score_gap_ratio, 3);
    let gap_cut = found_scores.get(keep).copied();
    if let Some(cut) = gap_cut {
        tracing::info!(
            dropped = found.len() - keep,
            "score gap: {} weak pick(s) at ≤ {cut:.3} dropped (next above {:.3})",
            found.len() - keep,
            found_scores[keep - 1]
        );
    }
    found.truncate(keep);
    let picks = found
        .into_iter()
        .map(|p| {
            let pose = rotations[p.rotation];
            let (rot, tilt, psi) = matrix_to_euler_zyz(&pose);
            let [z, y, x] = p.voxel;
            Pick {
                voxel: p.voxel,
                position_a: [
                    (x as f64 - (nx / 2) as f64) * pixel_a,
                    (y as f64 - (ny / 2) as f64) * pixel_a,
                    (z as f64 - (nz / 2) as f64) * pixel_a,
                ],
                euler_deg: [rot, tilt, psi],
                pose,
                score: p.score as f64,
            }
        })
        .collect::<Vec<_>>();
    tracing::info!(
        picks = picks.len(),
        threshold,
        sigma,
        seconds = search_seconds,
        "picked {} particle(s) above {:.4} (σ {:.4})",
        picks.len(),
        threshold,
        sigma
    );
    Ok(PickResult {
        maps,
        rotations,
        sigma,
        threshold,
        gap_cut,
        radius_a,
        picks,
        search_seconds,
    })
}
