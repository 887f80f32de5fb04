//! Gold-bead (fiducial) alignment, as IMOD `findbeads3d`/`beadtrack`/`tiltalign` do it:
//! detection on binned tilts ([`detect`]), tracking outward from the zero tilt with
//! predictions from the current 3D model ([`track`]), a robust least-squares solve of
//! per-tilt shifts, the tilt-axis angle, per-tilt tilt angles and magnifications and the 3D
//! bead positions ([`solve`]), and bead erasure before reconstruction ([`erase()`]).
//!
//! Frames and units: the stack is `[tilt, y, x]` in stack order (ascending nominal tilt),
//! raw (beads dark), pixel `initial.pixel_a` Å. Bead `b` (position `p_b`, Å about the
//! tomogram centre) is modelled in tilt `i` at
//! `(nx/2, ny/2) + (m_i·[Rz(axis)·Ry(tilt_i)·p_b]_xy + shift_i) / pixel`, the
//! `core::geometry` projection with a magnification `m_i` about the image centre. The
//! solution is defined up to a 3D translation; it is fixed so that the mean bead depth is the
//! tomogram mid-plane and the per-tilt shifts are as small as possible (least squares).
//! The mean tilt angle stays the nominal mean, the mean magnification 1.

pub mod centre;
pub mod detect;
pub mod erase;
pub mod solve;
pub mod track;

pub use erase::erase;

use super::{AlignMethod, AlignReport, BeadResidual, TiltResidual};
use crate::core::geometry::TiltSeriesGeometry;
use crate::{Error, Result};
use ndarray::{ArrayView3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use solve::{reweight, Model, Obs, SolveOptions};

/// Settings of a gold-bead alignment (config section `[align.beads]`). Lengths in Å.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeadParams {
    /// Gold bead diameter, Å.
    pub bead_diameter_a: f64,
    /// Working binning for detection; 0 = automatic (beads about 8 binned pixels across).
    pub binning: usize,
    /// Detection threshold, in robust standard deviations of the matched-filter image.
    pub threshold_sigma: f64,
    /// Most beads to track (the strongest well-separated ones at the zero tilt).
    pub max_beads: usize,
    /// Fewest tracked beads accepted; fewer is an error.
    pub min_beads: usize,
    /// Largest shift change between neighbouring tilts, Å; 0 = automatic (15% of the smaller
    /// image side).
    pub search_radius_a: f64,
    /// Solve the tilt-axis angle (one for the series).
    pub solve_axis: bool,
    /// Solve per-tilt tilt-angle corrections (their mean is held at the nominal mean).
    pub solve_tilt_angles: bool,
    /// Solve per-tilt magnifications (mean held at 1).
    pub solve_magnification: bool,
    /// Down-weight outlying observations (Tukey bisquare, 3 rounds).
    pub robust: bool,
    /// Beads tracked in fewer than this fraction of the tilts are dropped.
    pub min_tracked_fraction: f64,
}

impl Default for BeadParams {
    fn default() -> Self {
        BeadParams {
            bead_diameter_a: 100.0,
            binning: 0,
            threshold_sigma: 6.0,
            max_beads: 60,
            min_beads: 4,
            search_radius_a: 0.0,
            solve_axis: true,
            solve_tilt_angles: true,
            solve_magnification: false,
            robust: true,
            min_tracked_fraction: 0.2,
        }
    }
}

impl BeadParams {
    /// Working binning for beads of `diameter_px` unbinned pixels.
    pub fn working_binning(&self, diameter_px: f64) -> usize {
        if self.binning > 0 {
            self.binning
        } else {
            ((diameter_px / 8.0).round() as usize).max(1)
        }
    }

    fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, msg: &str| Err(Error::Config(format!("align.beads.{field}: {msg}")));
        if !(self.bead_diameter_a.is_finite() && self.bead_diameter_a > 0.0) {
            return bad(
                "bead_diameter_a",
                "must be > 0 Å (gold beads are usually 50–150 Å)",
            );
        }
        if !(self.threshold_sigma.is_finite() && self.threshold_sigma > 0.0) {
            return bad("threshold_sigma", "must be > 0 (default 6)");
        }
        if self.min_beads < 3 || self.max_beads < self.min_beads {
            return bad("min_beads/max_beads", "need 3 <= min_beads <= max_beads");
        }
        if !(self.search_radius_a.is_finite() && self.search_radius_a >= 0.0) {
            return bad("search_radius_a", "must be >= 0 Å (0 = automatic)");
        }
        if !(0.0..=1.0).contains(&self.min_tracked_fraction) {
            return bad("min_tracked_fraction", "must be in [0, 1]");
        }
        Ok(())
    }
}

/// Align a tilt series on its gold beads.
///
/// - `stack`: raw tilt series `[tilt, y, x]`, stack order = ascending nominal tilt, beads
///   dark, pixel `initial.pixel_a` Å.
/// - `initial`: nominal tilts, an approximate tilt-axis angle (a few degrees off is fine),
///   shifts ignored (assumed unknown, up to ~15% of the image side between neighbours).
///
/// Returns an [`AlignReport`] with the refined geometry (shifts Å, axis and tilts degrees),
/// per-tilt magnification and residuals and per-bead 3D positions (Å about the tomogram
/// centre) and residuals, all residuals in unbinned pixels.
///
/// Errors: [`Error::Config`] for inconsistent inputs or parameters; [`Error::BadInput`] when
/// too few beads are found or tracked (the message says what to change).
pub fn align(
    stack: ArrayView3<f32>,
    initial: &TiltSeriesGeometry,
    params: &BeadParams,
) -> Result<AlignReport> {
    params.validate()?;
    let (nt, ny, nx) = stack.dim();
    if nt != initial.len() || ny != initial.ny || nx != initial.nx || nt < 3 {
        return Err(Error::Config(format!(
            "bead alignment: stack is {nt}×{ny}×{nx} (tilts×y×x) but the geometry has {} tilts \
             of {}×{}; pass the geometry of this stack (at least 3 tilts)",
            initial.len(),
            initial.ny,
            initial.nx
        )));
    }
    let px = initial.pixel_a;
    if !(px.is_finite() && px > 0.0) {
        return Err(Error::Config(format!(
            "bead alignment: pixel size {px} Å: set a positive pixel size"
        )));
    }
    if stack.iter().any(|v| !v.is_finite()) {
        return Err(Error::bad_input(
            "tilt stack",
            "values",
            "contains NaN/Inf; fix or re-export the stack",
        ));
    }
    let diameter_px = params.bead_diameter_a / px;
    if diameter_px < 3.0 || diameter_px > 0.25 * nx.min(ny) as f64 {
        return Err(Error::Config(format!(
            "align.beads.bead_diameter_a = {} Å is {diameter_px:.1} px at {px} Å/px: beads must \
             be 3 px to a quarter of the image across; check the diameter and pixel size",
            params.bead_diameter_a
        )));
    }
    let bin = params.working_binning(diameter_px);
    let mut log = vec![format!(
        "beads: diameter {:.0} Å = {diameter_px:.1} px, detection at bin {bin}",
        params.bead_diameter_a
    )];

    // 1. detection, parallel over tilts
    let det = detect::Detector::new(ny, nx, bin, diameter_px, params.threshold_sigma);
    let max_cands = 4 * params.max_beads + 50;
    let cands: Vec<Vec<detect::Candidate>> = (0..nt)
        .into_par_iter()
        .map_init(
            || det.clone(),
            |d, i| d.detect(stack.index_axis(Axis(0), i), max_cands),
        )
        .collect();
    let mut cands = cands;
    if centre::refine_candidates(stack, &mut cands, 0.5 * diameter_px).is_none() {
        log.push("beads: no candidate to learn the bead profile from".into());
    }
    let n_cands: usize = cands.iter().map(|c| c.len()).sum();
    log.push(format!(
        "beads: {n_cands} candidates over {nt} tilts (threshold {} σ)",
        params.threshold_sigma
    ));

    // 2. tracking
    let nominal: Vec<f64> = initial
        .tilts
        .iter()
        .map(|t| t.tilt_deg.to_radians())
        .collect();
    let axis0 = initial.tilts.iter().map(|t| t.axis_deg).sum::<f64>() / nt as f64;
    let search_px = if params.search_radius_a > 0.0 {
        params.search_radius_a / px
    } else {
        0.15 * nx.min(ny) as f64
    };
    let tp = track::TrackParams {
        diameter_px,
        search_px,
        max_beads: params.max_beads,
    };
    let tracking = track::track(&cands, nx, ny, &nominal, axis0.to_radians(), &tp);
    let no_beads = |what: String| {
        Error::bad_input(
            "tilt stack",
            "gold beads",
            format!(
                "{what}: the series has no usable gold beads of {:.0} Å \
                 ({diameter_px:.1} px). Fix: set align.beads.bead_diameter_a to the real bead \
                 size, lower align.beads.threshold_sigma (now {}), or use fiducial-free \
                 alignment (align.method = \"fiducial_free\")",
                params.bead_diameter_a, params.threshold_sigma
            ),
        )
    };
    if tracking.n_seeds < params.min_beads {
        return Err(no_beads(format!(
            "found {} well-separated bead candidate(s) on the tilt nearest 0° (need {})",
            tracking.n_seeds, params.min_beads
        )));
    }
    log.push(format!(
        "beads: {} seeds on tilt {} ({:.1}°), {} observations tracked, {} tilt(s) without a \
         consistent match {:?}",
        tracking.n_seeds,
        tracking.ref_tilt,
        initial.tilts[tracking.ref_tilt].tilt_deg,
        tracking.obs.len(),
        tracking.skipped.len(),
        tracking.skipped
    ));

    // 3. keep beads tracked in enough tilts
    let min_obs = ((params.min_tracked_fraction * nt as f64).ceil() as usize).max(3);
    let (mut model, mut obs) = keep_tracked(tracking.model, tracking.obs, min_obs);
    if model.beads.len() < params.min_beads {
        return Err(no_beads(format!(
            "only {} bead(s) could be tracked through at least {min_obs} of {nt} tilts (need {})",
            model.beads.len(),
            params.min_beads
        )));
    }

    // 4. final solve, then robust re-weighting
    let opt = SolveOptions {
        axis: params.solve_axis,
        tilts: params.solve_tilt_angles,
        mag: params.solve_magnification,
        ref_tilt: tracking.ref_tilt,
        max_iter: 100,
    };
    let st = solve::solve(&mut model, &obs, &opt);
    log.push(format!(
        "beads: solve of {} beads, {} observations: RMS {:.3} px ({} iterations)",
        model.beads.len(),
        obs.len(),
        st.rms_px,
        st.iterations
    ));
    if params.robust {
        for round in 0..3 {
            let sigma = reweight(&model, &mut obs, 0.05);
            let st = solve::solve(&mut model, &obs, &opt);
            let rejected = obs.iter().filter(|o| o.weight == 0.0).count();
            log.push(format!(
                "beads: robust round {}: σ {sigma:.3} px, {rejected} rejected, weighted RMS \
                 {:.3} px",
                round + 1,
                st.rms_px
            ));
        }
    }
    // tilts the beads do not pin down
    let mut per_tilt = vec![0usize; nt];
    for o in obs.iter().filter(|o| o.weight > 0.0) {
        per_tilt[o.tilt] += 1;
    }
    let weak: Vec<usize> = (0..nt).filter(|&i| per_tilt[i] < 3).collect();
    if weak.len() * 10 > nt {
        return Err(no_beads(format!(
            "{} of {nt} tilts have fewer than 3 tracked beads ({weak:?})",
            weak.len()
        )));
    }
    if !weak.is_empty() {
        log.push(format!(
            "beads: WARNING: tilts {weak:?} have fewer than 3 tracked beads; their shifts \
             are unreliable (consider excluding them)"
        ));
    }
    model.normalise_gauge(&nominal);
    model.recentre_xy();
    let report = build_report(initial, &model, &obs, tracking.ref_tilt, log);
    Ok(report)
}

/// Drop beads with fewer than `min_obs` observations and renumber the rest.
fn keep_tracked(model: Model, obs: Vec<Obs>, min_obs: usize) -> (Model, Vec<Obs>) {
    let mut count = vec![0usize; model.beads.len()];
    for o in &obs {
        count[o.bead] += 1;
    }
    let mut new_id = vec![usize::MAX; model.beads.len()];
    let mut beads = Vec::new();
    for (b, &c) in count.iter().enumerate() {
        if c >= min_obs {
            new_id[b] = beads.len();
            beads.push(model.beads[b]);
        }
    }
    let obs = obs
        .into_iter()
        .filter(|o| new_id[o.bead] != usize::MAX)
        .map(|o| Obs {
            bead: new_id[o.bead],
            ..o
        })
        .collect();
    (Model { beads, ..model }, obs)
}

/// Turn the solved model into the shared report (Å, degrees, unbinned-pixel residuals).
/// Observations with weight 0 (rejected) count in no residual.
fn build_report(
    initial: &TiltSeriesGeometry,
    model: &Model,
    obs: &[Obs],
    ref_tilt: usize,
    mut log: Vec<String>,
) -> AlignReport {
    let px = initial.pixel_a;
    let nt = initial.len();
    let mut geometry = initial.clone();
    for (i, t) in geometry.tilts.iter_mut().enumerate() {
        t.axis_deg = model.axis_rad.to_degrees();
        t.tilt_deg = model.tilt_rad[i].to_degrees();
        t.shift_x_a = model.shift[i][0] * px;
        t.shift_y_a = model.shift[i][1] * px;
    }
    let (mut tilt_ss, mut tilt_n) = (vec![0.0f64; nt], vec![0usize; nt]);
    let nb = model.beads.len();
    let (mut bead_ss, mut bead_n) = (vec![0.0f64; nb], vec![0usize; nb]);
    let (mut ss, mut n) = (0.0, 0usize);
    for o in obs.iter().filter(|o| o.weight > 0.0) {
        let r = model.residual(o);
        let r2 = r[0] * r[0] + r[1] * r[1];
        tilt_ss[o.tilt] += r2;
        tilt_n[o.tilt] += 1;
        bead_ss[o.bead] += r2;
        bead_n[o.bead] += 1;
        ss += r2;
        n += 1;
    }
    let rms = |s: f64, k: usize| {
        if k > 0 {
            (s / k as f64).sqrt()
        } else {
            f64::NAN
        }
    };
    let tilts = (0..nt)
        .map(|i| TiltResidual {
            index: i,
            tilt_deg: model.tilt_rad[i].to_degrees(),
            shift_x_px: model.shift[i][0],
            shift_y_px: model.shift[i][1],
            magnification: model.mag[i],
            residual_px: rms(tilt_ss[i], tilt_n[i]),
            n_obs: tilt_n[i],
        })
        .collect();
    let beads = (0..nb)
        .map(|b| BeadResidual {
            id: b,
            position_a: [
                model.beads[b][0] * px,
                model.beads[b][1] * px,
                model.beads[b][2] * px,
            ],
            residual_px: rms(bead_ss[b], bead_n[b]),
            n_obs: bead_n[b],
        })
        .collect();
    let axis0 = initial.tilts.iter().map(|t| t.axis_deg).sum::<f64>() / nt as f64;
    log.push(format!(
        "beads: axis {:.2}° (initial {axis0:.2}°), reference tilt {ref_tilt}, RMS residual \
         {:.3} px over {n} observations",
        model.axis_rad.to_degrees(),
        rms(ss, n)
    ));
    AlignReport {
        method: AlignMethod::Beads,
        geometry,
        tilts,
        beads,
        rms_residual_px: rms(ss, n),
        thickness_a: None,
        pitch_deg: None,
        z_offset_a: None,
        log,
    }
}
