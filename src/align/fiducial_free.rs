//! Fiducial-free tilt-series alignment: coarse cross-correlation with cosine stretching and a
//! tilt-axis search ([`super::coarse`]), then projection matching at increasing resolution
//! ([`super::projmatch`]) refining shifts, the tilt-axis angle and a global tilt-angle
//! offset, and per-tilt residuals from patch correlations ([`super::local`]).
//!
//! Frames and units as in [`crate::align`]: the stack is `[tilt, y, x]` in ascending nominal
//! tilt; angles in degrees, shifts in Å in the geometry, residuals in unbinned pixels.
//! Method and measured accuracy: `docs/alignment.md`.

use super::coarse::{neighbour_shifts, refine_maximum, search_axis};
use super::local::PatchMeter;
use super::projmatch::{footprint_weights, remove_translation, Evaluation, Matcher};
use super::xcorr::{Bandpass, Correlator};
use super::{AlignMethod, AlignReport, TiltResidual};
use crate::core::geometry::TiltSeriesGeometry;
use crate::recon::wbp::{preprocess, validate_stack};
use crate::{Error, Result};
use ndarray::{ArrayView3, Axis};
use serde::{Deserialize, Serialize};

/// Where the stack came from, for error messages (the stage has no file).
const SRC: &str = "<tilt series>";

/// Parameters of the fiducial-free alignment (a `[align.fiducial_free]` table in the
/// pipeline TOML; every field has a default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FiducialFreeParams {
    /// Longest side of the working images of the coarse stage, pixels (the stack is
    /// Fourier-binned by the smallest integer that reaches it).
    pub coarse_size: usize,
    /// Half range of the coarse tilt-axis search about the initial axis, degrees (0: keep
    /// the initial axis in the coarse stage).
    pub axis_search_deg: f64,
    /// Step of the coarse tilt-axis search, degrees.
    pub axis_step_deg: f64,
    /// Longest side of the working images of each projection-matching level, coarsest
    /// first (empty: coarse alignment only).
    pub refine_sizes: Vec<usize>,
    /// Thickness of the reconstructed slab, Å; `None`: 0.4 × the shorter field side.
    pub slab_thickness_a: Option<f64>,
    /// Most shift iterations per projection-matching round.
    pub max_iterations: usize,
    /// Stop a round when the RMS shift update is below this, working pixels.
    pub converge_px: f64,
    /// Refine the tilt-axis angle by projection matching.
    pub refine_axis: bool,
    /// Scan the tilt axis over ±`axis_search_deg` at the first projection-matching level
    /// (per candidate: coarse shifts at that axis, then projection matching; score = mean
    /// correlation) instead of the coarse neighbour-correlation search. Robust on dense
    /// series (the seed-2024 test), but the score drifts monotonically with the axis on sparse
    /// 96² series (`tiny` preset): off by default, see `docs/alignment.md`.
    pub joint_axis_scan: bool,
    /// Half range of the coarse axis scan at the first projection-matching level, degrees
    /// (a fine scan over a fifth of it follows).
    pub axis_refine_deg: f64,
    /// Refine a global tilt-angle offset by projection matching (first level only; weakly
    /// determined for thin flat specimens, see `docs/alignment.md`).
    pub refine_tilt_offset: bool,
    /// Half range of the tilt-offset scan, degrees.
    pub tilt_offset_range_deg: f64,
    /// Gaussian low-pass of the correlations, fraction of the working Nyquist.
    pub lowpass_nyquist: f64,
    /// Gaussian high-pass of the correlations, cycles per field.
    pub highpass_cycles: f64,
    /// Coarse search radius, fraction of the shorter working side.
    pub max_shift_fraction: f64,
    /// Projection-matching search radius, working pixels.
    pub refine_max_shift_px: f64,
    /// Neighbouring tilts on each side left out of each tilt's reference together with the
    /// tilt itself (0: leave-one-out; see `align::projmatch`).
    pub exclude_neighbours: usize,
    /// Smallest correlation-peak significance (`(peak − mean)/std` of the map) that counts
    /// as a match; the alignment fails when most neighbour pairs are below it.
    pub min_significance: f64,
    /// Patches per side for the per-tilt residuals.
    pub patch_grid: usize,
}

impl Default for FiducialFreeParams {
    fn default() -> Self {
        FiducialFreeParams {
            coarse_size: 256,
            axis_search_deg: 4.0,
            axis_step_deg: 1.0,
            refine_sizes: vec![128, 256],
            slab_thickness_a: None,
            max_iterations: 6,
            converge_px: 0.1,
            refine_axis: true,
            joint_axis_scan: false,
            axis_refine_deg: 3.0,
            refine_tilt_offset: false,
            tilt_offset_range_deg: 1.0,
            lowpass_nyquist: 0.5,
            highpass_cycles: 4.0,
            max_shift_fraction: 0.3,
            refine_max_shift_px: 8.0,
            exclude_neighbours: 4,
            min_significance: 7.0,
            patch_grid: 4,
        }
    }
}

impl FiducialFreeParams {
    /// Check the parameters; [`Error::Config`] naming the field and the fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: String| {
            Err(Error::Config(format!("align.fiducial_free.{field}: {msg}")))
        };
        if self.coarse_size < 32 {
            return bad(
                "coarse_size",
                format!("{} px is too small: use ≥ 64 (e.g. 256)", self.coarse_size),
            );
        }
        if let Some(s) = self.refine_sizes.iter().find(|&&s| s < 32) {
            return bad(
                "refine_sizes",
                format!("{s} px is too small: use sizes ≥ 64 (e.g. [128, 256])"),
            );
        }
        let range_ok = self.axis_search_deg.is_finite() && self.axis_search_deg >= 0.0;
        let step_ok = self.axis_step_deg.is_finite() && self.axis_step_deg > 0.0;
        if !(range_ok && step_ok) {
            return bad(
                "axis_search_deg/axis_step_deg",
                "need a range ≥ 0 and a step > 0 degrees (e.g. 4 and 1)".into(),
            );
        }
        if let Some(t) = self.slab_thickness_a {
            if !(t.is_finite() && t > 0.0) {
                return bad(
                    "slab_thickness_a",
                    format!("{t} Å: give a positive thickness or leave it unset"),
                );
            }
        }
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(self.converge_px) || !pos(self.lowpass_nyquist) || !pos(self.highpass_cycles) {
            return bad(
                "converge_px/lowpass_nyquist/highpass_cycles",
                "must be positive (e.g. 0.1, 0.5, 4)".into(),
            );
        }
        if !pos(self.axis_refine_deg) || !pos(self.tilt_offset_range_deg) {
            return bad(
                "axis_refine_deg/tilt_offset_range_deg",
                "must be positive degrees (e.g. 3 and 1)".into(),
            );
        }
        let fraction_ok = self.max_shift_fraction > 0.0 && self.max_shift_fraction <= 0.5;
        if !(fraction_ok && pos(self.refine_max_shift_px)) {
            return bad(
                "max_shift_fraction/refine_max_shift_px",
                "need a fraction in (0, 0.5] and a radius > 0 px (e.g. 0.3 and 8)".into(),
            );
        }
        if !(self.min_significance.is_finite() && self.min_significance >= 0.0) {
            return bad("min_significance", "must be ≥ 0 (e.g. 7)".into());
        }
        if self.patch_grid < 2 {
            return bad(
                "patch_grid",
                format!("{}: use ≥ 2 patches per side (e.g. 4)", self.patch_grid),
            );
        }
        Ok(())
    }

    fn bandpass(&self) -> Bandpass {
        Bandpass {
            highpass_cycles: self.highpass_cycles,
            lowpass_nyquist: self.lowpass_nyquist,
        }
    }
}

/// Align `stack` `[tilt, y, x]` (raw counts or any contrast, dense matter dark; stack order =
/// ascending nominal tilt) without fiducials.
///
/// `initial`: one tilt per image with the nominal tilt angles, an approximate tilt-axis
/// angle (degrees CCW from +Y, may be off by a few degrees; the first tilt's is used) and
/// usually zero shifts (ignored: the coarse stage finds them); its other fields (defocus,
/// dose, optics) are copied to the result.
///
/// Steps (log lines in [`AlignReport::log`]):
/// 1. coarse: Fourier-bin to ≤ `coarse_size`, correlate neighbouring tilts with cosine
///    stretching, accumulate shifts outward from the zero tilt, for axes within
///    ±`axis_search_deg` (best mean correlation, quadratic fit);
/// 2. per level of `refine_sizes`: projection matching (leave-one-out reprojections of a
///    slab of `slab_thickness_a`) iterating shift updates (the part explained by a 3D
///    specimen translation removed) until the RMS update is < `converge_px`; at the first level,
///    scans of the tilt axis (coarse ± `axis_refine_deg`, then fine over a fifth of it) and
///    optionally of a tilt offset, re-refining the shifts at every candidate and keeping the
///    quadratic-fit maximum of the mean correlation, then shift iterations again;
/// 3. residuals: per tilt the RMS difference between patch shifts and the tilt's shift
///    update at the finest level, unbinned pixels.
///
/// Errors: [`Error::BadInput`] when the stack does not match `initial` (count, size, pixel,
/// non-finite values), is not in ascending tilt order, has fewer than 3 tilts, or holds no
/// consistent features between neighbouring tilts (noise, blank images); [`Error::Config`]
/// for bad parameters.
pub fn align(
    stack: ArrayView3<f32>,
    initial: &TiltSeriesGeometry,
    params: &FiducialFreeParams,
) -> Result<AlignReport> {
    params.validate()?;
    validate_stack(&stack, initial)?;
    validate_series(&stack, initial)?;
    let mut log = Vec::new();
    let mut geom = initial.clone();
    let axis0 = initial.tilts[0].axis_deg;
    for t in geom.tilts.iter_mut() {
        t.axis_deg = axis0;
    }
    let nmax = initial.nx.max(initial.ny);
    let bin_for = |size: usize| nmax.div_ceil(size.max(1)).max(1);

    // 1. coarse alignment
    let bin_c = bin_for(params.coarse_size);
    let images = preprocess(stack, &geom, bin_c, true)?;
    let (_, cy, cx) = images.dim();
    let corr = Correlator::new(cy, cx, params.bandpass());
    let max_shift = params.max_shift_fraction * cy.min(cx) as f64;
    let tilts: Vec<f64> = geom.tilts.iter().map(|t| t.tilt_deg).collect();
    // with projection matching refining the axis, the axis is scanned there (the neighbour
    // correlation is nearly flat in the axis and walked off on sparse or noisy series)
    let joint_scan =
        params.joint_axis_scan && params.refine_axis && !params.refine_sizes.is_empty();
    let (axis, coarse) = if params.axis_search_deg > 0.0 && !joint_scan {
        let s = search_axis(
            images.view(),
            &tilts,
            axis0,
            params.axis_search_deg,
            params.axis_step_deg,
            &corr,
            max_shift,
        );
        let scores: Vec<String> = s
            .scores
            .iter()
            .map(|(a, c)| format!("{a:.2}°:{c:.4}"))
            .collect();
        log.push(format!(
            "coarse: bin {bin_c} ({cx}×{cy}), tilt-axis search {axis0:.2}° ± {:.1}° → {:.2}° \
             (mean neighbour cc {})",
            params.axis_search_deg,
            s.axis_deg,
            scores.join(" ")
        ));
        (s.axis_deg, s.shifts)
    } else {
        (
            axis0,
            neighbour_shifts(images.view(), &tilts, axis0, &corr, max_shift),
        )
    };
    let mut sig: Vec<f64> = coarse
        .significance
        .iter()
        .copied()
        .filter(|s| s.is_finite())
        .collect();
    sig.sort_by(|a, b| a.total_cmp(b));
    let median_sig = sig.get(sig.len() / 2).copied().unwrap_or(0.0);
    log.push(format!(
        "coarse: mean neighbour cc {:.4}, median peak significance {median_sig:.1} \
         (reference tilt {} at {:.1}°)",
        coarse.mean_cc, coarse.reference, tilts[coarse.reference]
    ));
    if median_sig < params.min_significance {
        return Err(Error::bad_input(
            SRC,
            "image content",
            format!(
                "neighbouring tilts share no consistent features (median correlation-peak \
                 significance {median_sig:.1} < min_significance {:.1}): check that the \
                 stack is a tilt series in ascending tilt order with visible specimen (not \
                 blank or pure noise), or use bead alignment",
                params.min_significance
            ),
        ));
    }
    let px_c = initial.pixel_a * bin_c as f64;
    for (t, s) in geom.tilts.iter_mut().zip(&coarse.shifts_px) {
        t.axis_deg = axis;
        t.shift_x_a = s[0] * px_c;
        t.shift_y_a = s[1] * px_c;
    }
    centre_shifts(&mut geom);
    let coarse_images = images;

    // 2. projection matching
    let slab_a = params
        .slab_thickness_a
        .unwrap_or(0.4 * (initial.nx.min(initial.ny) as f64) * initial.pixel_a);
    let mut last: Option<Matcher> = None;
    let nlev = params.refine_sizes.len();
    for (level, &size) in params.refine_sizes.iter().enumerate() {
        let bin = bin_for(size);
        let images = preprocess(stack, &geom, bin, true)?;
        let (_, by, bx) = images.dim();
        let voxel_a = initial.pixel_a * bin as f64;
        let nz = ((slab_a / voxel_a).round() as usize).max(4);
        let m = Matcher {
            bin,
            images,
            nz,
            voxel_a,
            lowpass: None,
            corr: Correlator::new(by, bx, params.bandpass()),
            max_shift_px: params.refine_max_shift_px,
            exclude: params.exclude_neighbours,
        };
        let tag = format!("level {level} (bin {bin}, {bx}×{by}×{nz})");
        let mut rescan = false;
        if joint_scan && level == 0 && params.axis_search_deg > 0.0 {
            // wide joint scan: per candidate axis, coarse shifts from the neighbour chain at
            // that axis, then projection-matching shift iterations; score = mean correlation
            let (g, scores) = wide_axis_scan(
                &m,
                &geom,
                coarse_images.view(),
                &tilts,
                (axis0, px_c, max_shift),
                &corr,
                params,
            );
            geom = g;
            log.push(format!(
                "{tag}: joint tilt-axis scan {axis0:.2}° ± {:.1}° (coarse shifts and \
                 projection matching per axis) → {:.3}° (score {})",
                params.axis_search_deg,
                geom.tilts[0].axis_deg,
                fmt_scores(&scores)
            ));
        }
        shift_rounds(&m, &mut geom, params, &tag, &mut log);
        if params.refine_axis && level == 0 {
            // joint scans about the current axis, shifts re-refined per candidate (coarse
            // then fine; only fine after the wide joint scan), kept within the search range
            // about the initial axis plus the fine scan's half range
            let fine = params.axis_refine_deg / 5.0;
            let halves = if joint_scan {
                vec![fine]
            } else {
                vec![params.axis_refine_deg, fine]
            };
            let lim = params.axis_search_deg + params.axis_refine_deg;
            for half in halves {
                let a0 = geom.tilts[0].axis_deg;
                let (best, scores) = scan(a0, half, |a| {
                    let mut g = geom.clone();
                    for t in g.tilts.iter_mut() {
                        t.axis_deg = a;
                    }
                    refined_score(&m, &mut g, params, SCAN_ITERATIONS)
                });
                let best = best.clamp(axis0 - lim, axis0 + lim);
                for t in geom.tilts.iter_mut() {
                    t.axis_deg = best;
                }
                log.push(format!(
                    "{tag}: tilt-axis scan {a0:.3}° ± {half:.3}° (shifts re-refined per \
                     axis) → {best:.3}° (score {})",
                    fmt_scores(&scores)
                ));
            }
            rescan = true;
        }
        if params.refine_tilt_offset && level == 0 {
            let half = params.tilt_offset_range_deg;
            let base: Vec<f64> = geom.tilts.iter().map(|t| t.tilt_deg).collect();
            let (best, scores) = scan(0.0, half, |d| {
                let mut g = geom.clone();
                for (t, b) in g.tilts.iter_mut().zip(&base) {
                    t.tilt_deg = b + d;
                }
                refined_score(&m, &mut g, params, SCAN_ITERATIONS)
            });
            for (t, b) in geom.tilts.iter_mut().zip(&base) {
                t.tilt_deg = b + best;
            }
            log.push(format!(
                "{tag}: tilt-offset scan ± {half:.2}° → {best:+.3}° (score {})",
                fmt_scores(&scores)
            ));
            rescan = true;
        }
        if rescan {
            shift_rounds(&m, &mut geom, params, &tag, &mut log);
        }
        if level + 1 == nlev {
            last = Some(m);
        }
    }
    drop(coarse_images);

    // 3. residuals
    let mut tilts_out = Vec::with_capacity(geom.len());
    let residuals: Vec<(f64, usize)> = match last {
        Some(m) => {
            // against leave-one-out references (closer to each tilt than the leave-out
            // references the shifts were refined with, so more patches are significant)
            let m = Matcher { exclude: 0, ..m };
            let ev = m.evaluate(&geom);
            let upd: Vec<[f64; 2]> = ev.peaks.iter().map(|p| [p.dx, p.dy]).collect();
            patch_residuals(&m, &geom, &ev, &upd, params)
        }
        None => coarse_residuals(&coarse.significance, params),
    };
    for (i, t) in geom.tilts.iter().enumerate() {
        let (r, n) = residuals[i];
        tilts_out.push(TiltResidual {
            index: i,
            tilt_deg: t.tilt_deg,
            shift_x_px: t.shift_x_a / initial.pixel_a,
            shift_y_px: t.shift_y_a / initial.pixel_a,
            magnification: 1.0,
            residual_px: r,
            n_obs: n,
        });
    }
    let finite: Vec<f64> = residuals
        .iter()
        .map(|r| r.0)
        .filter(|r| r.is_finite())
        .collect();
    let rms_residual_px = if finite.is_empty() {
        f64::NAN
    } else {
        (finite.iter().map(|r| r * r).sum::<f64>() / finite.len() as f64).sqrt()
    };
    log.push(format!(
        "residuals: RMS {rms_residual_px:.3} px (unbinned) over {} of {} tilts",
        finite.len(),
        geom.len()
    ));
    for l in &log {
        tracing::info!("align (fiducial-free): {l}");
    }
    Ok(AlignReport {
        method: AlignMethod::FiducialFree,
        geometry: geom,
        tilts: tilts_out,
        beads: Vec::new(),
        rms_residual_px,
        thickness_a: None,
        pitch_deg: None,
        z_offset_a: None,
        log,
    })
}

/// Checks beyond [`validate_stack`]: ≥ 3 tilts, ascending tilts, images not constant.
fn validate_series(stack: &ArrayView3<f32>, g: &TiltSeriesGeometry) -> Result<()> {
    if g.len() < 3 {
        return Err(Error::bad_input(
            SRC,
            "tilt count",
            format!(
                "{} tilts: fiducial-free alignment needs at least 3 (typically 30–60)",
                g.len()
            ),
        ));
    }
    if let Some(i) = (1..g.len()).find(|&i| g.tilts[i].tilt_deg <= g.tilts[i - 1].tilt_deg) {
        return Err(Error::bad_input(
            SRC,
            format!("tilt {i} angle"),
            format!(
                "{:.2}° after {:.2}°: the stack must be sorted by ascending tilt angle \
                 (sort the stack and its .tlt together, e.g. IMOD newstack -tilt)",
                g.tilts[i].tilt_deg,
                g.tilts[i - 1].tilt_deg
            ),
        ));
    }
    if let Some(i) = g.tilts.iter().position(|t| t.tilt_deg.abs() >= 89.0) {
        return Err(Error::bad_input(
            SRC,
            format!("tilt {i} angle"),
            format!(
                "{:.2}°: tilts must lie within ±89° (check the .tlt file)",
                g.tilts[i].tilt_deg
            ),
        ));
    }
    for (i, img) in stack.axis_iter(Axis(0)).enumerate() {
        let first = img.iter().next().copied().unwrap_or(0.0);
        if img.iter().all(|&v| v == first) {
            return Err(Error::bad_input(
                SRC,
                format!("tilt {i} image"),
                "the image is constant (blank): exclude this tilt".to_string(),
            ));
        }
    }
    Ok(())
}

/// Shift the whole series so that the tilt nearest 0° has zero shift... more robustly:
/// remove the best 3D specimen translation from the shifts (gauge), so the specimen stays
/// centred in the reconstructed slab.
fn centre_shifts(geom: &mut TiltSeriesGeometry) {
    let mut s: Vec<[f64; 2]> = geom
        .tilts
        .iter()
        .map(|t| [t.shift_x_a, t.shift_y_a])
        .collect();
    remove_translation(&mut s, geom);
    for (t, v) in geom.tilts.iter_mut().zip(s) {
        t.shift_x_a = v[0];
        t.shift_y_a = v[1];
    }
}

/// Shift iterations at one level: evaluate, update every tilt with a significant peak by its
/// peak shift (translation gauge removed), until the RMS update < `converge_px` or
/// `max_iterations`. Returns the last evaluation and the updates applied after it
/// (working px).
fn shift_rounds(
    m: &Matcher,
    geom: &mut TiltSeriesGeometry,
    params: &FiducialFreeParams,
    tag: &str,
    log: &mut Vec<String>,
) -> (Evaluation, Vec<[f64; 2]>) {
    let mut it = 0;
    loop {
        let ev = m.evaluate(geom);
        let mut upd: Vec<[f64; 2]> = ev
            .peaks
            .iter()
            .map(|p| {
                if usable(p, m.max_shift_px, params) {
                    [p.dx * m.voxel_a, p.dy * m.voxel_a]
                } else {
                    [0.0, 0.0]
                }
            })
            .collect();
        let weak = ev
            .peaks
            .iter()
            .filter(|p| !usable(p, m.max_shift_px, params))
            .count();
        remove_translation(&mut upd, geom);
        for (t, u) in geom.tilts.iter_mut().zip(&upd) {
            t.shift_x_a += u[0];
            t.shift_y_a += u[1];
        }
        let upd_px: Vec<[f64; 2]> = upd
            .iter()
            .map(|u| [u[0] / m.voxel_a, u[1] / m.voxel_a])
            .collect();
        let rms = (upd_px
            .iter()
            .map(|u| u[0] * u[0] + u[1] * u[1])
            .sum::<f64>()
            / upd_px.len().max(1) as f64)
            .sqrt();
        let (imax, maxu) = upd_px
            .iter()
            .map(|u| u[0].hypot(u[1]))
            .enumerate()
            .fold((0, 0.0f64), |a, (i, v)| if v > a.1 { (i, v) } else { a });
        it += 1;
        log.push(format!(
            "{tag}: iteration {it}: score {:.4}, shift update RMS {rms:.3} max {maxu:.3} \
             (tilt {imax}) working px{}",
            ev.score(),
            if weak > 0 {
                format!(", {weak} tilts without a significant peak inside the search radius (kept)")
            } else {
                String::new()
            }
        ));
        if rms < params.converge_px || it >= params.max_iterations {
            return (ev, upd_px);
        }
    }
}

/// A peak counts as a shift update when it is significant and lies inside the search
/// radius (a maximum on the radius is the edge of a slope, not a match).
fn usable(p: &super::xcorr::Peak, radius: f64, params: &FiducialFreeParams) -> bool {
    p.significance >= params.min_significance && p.dx.hypot(p.dy) < radius - 1.0
}

/// Scan one geometry parameter over `centre ± half` (5 points, extended by up to 2 steps
/// while the best is at an edge), scoring each value with `eval`, and return the
/// quadratic-fit maximum with all `(value, score)` pairs.
fn scan<F>(centre: f64, half: f64, mut eval: F) -> (f64, Vec<(f64, f64)>)
where
    F: FnMut(f64) -> f64,
{
    let step = half / 2.0;
    let mut scores: Vec<(f64, f64)> = (-2..=2)
        .map(|k| {
            let v = centre + k as f64 * step;
            (v, eval(v))
        })
        .collect();
    for _ in 0..2 {
        scores.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best = (0..scores.len())
            .max_by(|&a, &b| scores[a].1.total_cmp(&scores[b].1))
            .unwrap_or(0);
        let v = if best == 0 {
            scores[0].0 - step
        } else if best + 1 == scores.len() {
            scores[best].0 + step
        } else {
            break;
        };
        scores.push((v, eval(v)));
    }
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    (refine_maximum(&scores, step), scores)
}

/// Projection-matching score of `g` after `iterations − 1` shift updates (the score of
/// the last evaluation); `g` keeps the updated shifts.
fn refined_score(
    m: &Matcher,
    g: &mut TiltSeriesGeometry,
    params: &FiducialFreeParams,
    iterations: usize,
) -> f64 {
    let p = FiducialFreeParams {
        max_iterations: iterations,
        ..params.clone()
    };
    let mut sink = Vec::new();
    shift_rounds(m, g, &p, "", &mut sink).0.score()
}

/// Shift iterations per candidate of a fine geometry scan.
const SCAN_ITERATIONS: usize = 3;
/// Shift iterations per candidate of the wide axis scan (starting from coarse shifts).
const WIDE_SCAN_ITERATIONS: usize = 4;

/// Wide joint tilt-axis scan at the first projection-matching level: candidates
/// `axis0 + k·axis_step_deg` within ±`axis_search_deg` (no extension beyond: the search
/// never walks away from the initial axis by more than its range). Per candidate the
/// neighbour-correlation chain of the coarse images (`coarse`, working pixel `px_c` Å,
/// search radius `max_shift` px) gives the shifts at that axis, refined by projection
/// matching; the score is the mean correlation. Returns the refined geometry of the best
/// candidate with its axis moved to the quadratic-fit maximum (clamped to the range), and
/// all `(axis°, score)`.
fn wide_axis_scan(
    m: &Matcher,
    geom: &TiltSeriesGeometry,
    coarse: ArrayView3<f32>,
    tilts: &[f64],
    (axis0, px_c, max_shift): (f64, f64, f64),
    corr: &Correlator,
    params: &FiducialFreeParams,
) -> (TiltSeriesGeometry, Vec<(f64, f64)>) {
    let step = params.axis_step_deg;
    let n = (params.axis_search_deg / step).round().max(0.0) as i64;
    let mut best: Option<(f64, TiltSeriesGeometry)> = None;
    let mut scores = Vec::new();
    for k in -n..=n {
        let a = axis0 + k as f64 * step;
        let c = neighbour_shifts(coarse, tilts, a, corr, max_shift);
        let mut g = geom.clone();
        for (t, s) in g.tilts.iter_mut().zip(&c.shifts_px) {
            t.axis_deg = a;
            t.shift_x_a = s[0] * px_c;
            t.shift_y_a = s[1] * px_c;
        }
        centre_shifts(&mut g);
        let sc = refined_score(m, &mut g, params, WIDE_SCAN_ITERATIONS);
        scores.push((a, sc));
        if best.as_ref().is_none_or(|b| sc > b.0) {
            best = Some((sc, g));
        }
    }
    let lim = params.axis_search_deg;
    let fitted = refine_maximum(&scores, step).clamp(axis0 - lim, axis0 + lim);
    let mut g = best.map(|b| b.1).unwrap_or_else(|| geom.clone());
    for t in g.tilts.iter_mut() {
        t.axis_deg = fitted;
    }
    (g, scores)
}

fn fmt_scores(scores: &[(f64, f64)]) -> String {
    scores
        .iter()
        .map(|(v, s)| format!("{v:.3}:{s:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Per tilt `(residual, patches)`: RMS over significant patches of the difference between the
/// patch shift and the tilt's whole-image update, in unbinned pixels.
fn patch_residuals(
    m: &Matcher,
    geom: &TiltSeriesGeometry,
    ev: &Evaluation,
    upd: &[[f64; 2]],
    params: &FiducialFreeParams,
) -> Vec<(f64, usize)> {
    use rayon::prelude::*;
    let (_, by, bx) = m.images.dim();
    let weights = footprint_weights(geom, m.bin, (m.nz, by, bx), m.voxel_a);
    let meter = PatchMeter::new(
        by,
        bx,
        params.patch_grid,
        params.bandpass(),
        params.min_significance,
    );
    let bin = m.bin as f64;
    (0..geom.len())
        .into_par_iter()
        .map_init(
            || meter.clone(),
            |pm, i| {
                let r = pm.measure(
                    ev.masked_images.index_axis(Axis(0), i),
                    ev.reprojections.index_axis(Axis(0), i),
                    weights.index_axis(Axis(0), i),
                    params.refine_max_shift_px,
                );
                if r.patches.is_empty() {
                    return (f64::NAN, 0);
                }
                let n = r.patches.len();
                let ss = r
                    .patches
                    .iter()
                    .map(|p| (p.1[0] - upd[i][0]).powi(2) + (p.1[1] - upd[i][1]).powi(2))
                    .sum::<f64>();
                ((ss / n as f64).sqrt() * bin, n)
            },
        )
        .collect()
}

/// Residuals when no projection matching ran: unknown (NaN), with 1 observation for tilts
/// whose neighbour correlation was significant.
fn coarse_residuals(significance: &[f64], params: &FiducialFreeParams) -> Vec<(f64, usize)> {
    significance
        .iter()
        .map(|&s| (f64::NAN, usize::from(s >= params.min_significance)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_validate() {
        let p = FiducialFreeParams::default();
        p.validate().unwrap();
        let t = toml::to_string(&p).unwrap();
        let q: FiducialFreeParams = toml::from_str(&t).unwrap();
        assert_eq!(p, q);
        let partial: FiducialFreeParams = toml::from_str("refine_sizes = [64]").unwrap();
        assert_eq!(partial.refine_sizes, vec![64]);
        assert_eq!(partial.coarse_size, p.coarse_size);
        assert!(toml::from_str::<FiducialFreeParams>("coarse_sise = 3").is_err());
        let bad = FiducialFreeParams {
            patch_grid: 1,
            ..p.clone()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains("patch_grid"), "{e}");
    }

    #[test]
    fn refuses_bad_series() {
        let p = FiducialFreeParams::default();
        let g = TiltSeriesGeometry::from_angles(64, 64, 4.0, &[-3.0, 0.0, 3.0], 85.0);
        let stack = ndarray::Array3::<f32>::from_shape_fn((3, 64, 64), |(t, y, x)| {
            ((t * 7 + y * 3 + x) % 5) as f32
        });
        let mut unsorted = g.clone();
        unsorted.tilts[2].tilt_deg = -6.0;
        let e = align(stack.view(), &unsorted, &p).unwrap_err();
        assert!(e.to_string().contains("ascending"), "{e}");
        let mut blank = stack.clone();
        blank.index_axis_mut(Axis(0), 1).fill(3.0);
        let e = align(blank.view(), &g, &p).unwrap_err();
        assert!(e.to_string().contains("tilt 1 image"), "{e}");
        let two = TiltSeriesGeometry::from_angles(64, 64, 4.0, &[0.0, 3.0], 85.0);
        assert!(align(stack.slice(ndarray::s![..2, .., ..]), &two, &p).is_err());
    }
}
