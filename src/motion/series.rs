//! Motion correction of one tilt movie: aligned globally ([`super::global`]), optionally with
//! local motion ([`super::local`]), and summed with dose weighting ([`super::sum`]) into the
//! full, even and odd images. A whole series, tilt by tilt with checkpoints, is
//! [`super::batch`].
//!
//! Convention: the reported trajectory of each tilt is anchored at its **first frame**
//! (`shifts_px[0] = [0, 0]`, content displacement of frame `f` relative to frame 0, pixels)
//! and the sums are on the grid of frame 0, as SerialEM's/the simulator's stack image is. The
//! alignment itself is mean-zero ([`super::GlobalMotion`]); the offset is removed afterwards.

use super::global::{check_frames, check_shape, GlobalParams};
use super::local::{align_local, sum_frames_local, LocalMotion, LocalParams};
use super::spectral::{align_spectra, MovieSpectra};
use super::sum::{sum_spectra, Exposure};
use crate::{Error, Result};
use ndarray::ArrayView3;

/// Options of the motion correction of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct MotionParams {
    /// Global alignment parameters.
    pub global: GlobalParams,
    /// Dose-weight the full/even/odd sums (needs an exposure per tilt).
    pub dose_weighting: bool,
    /// Patch-based local motion on top of the global alignment (`None`: global only).
    pub local: Option<LocalParams>,
}

impl Default for MotionParams {
    fn default() -> Self {
        MotionParams {
            global: GlobalParams::default(),
            dose_weighting: true,
            local: None,
        }
    }
}

/// The motion of one tilt.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TiltMotion {
    /// Per frame `[dx, dy]` content displacement relative to frame 0, pixels.
    pub shifts_px: Vec<[f64; 2]>,
    /// Iterations of the global alignment.
    pub iterations: usize,
    /// Exposure before the first frame, e/Å² (0 when unknown).
    pub pre_exposure_e_a2: f64,
    /// Exposure per frame, e/Å² (0 when unknown).
    pub per_frame_e_a2: f64,
}

/// Align and sum one movie `[frame, y, x]` at `pixel_a` Å; `exposure` is used for dose
/// weighting when `params.dose_weighting`. Returns the sums and the frame-0-anchored motion
/// (global; with `params.local` the sums also undo the local model, see
/// [`correct_movie_local`] for the model itself).
pub fn correct_movie(
    frames: ArrayView3<f32>,
    pixel_a: f64,
    exposure: Option<&Exposure>,
    params: &MotionParams,
) -> Result<(super::MovieSums, TiltMotion)> {
    correct_movie_local(frames, pixel_a, exposure, params).map(|(s, m, _)| (s, m))
}

/// [`correct_movie`], also returning the local motion model when `params.local` is set
/// (its shifts are relative to the returned global trajectory, zero at frame 0).
pub fn correct_movie_local(
    frames: ArrayView3<f32>,
    pixel_a: f64,
    exposure: Option<&Exposure>,
    params: &MotionParams,
) -> Result<(super::MovieSums, TiltMotion, Option<LocalMotion>)> {
    check_frames(frames)?;
    let spectra = MovieSpectra::new(frames);
    let Some(lp) = &params.local else {
        let (sums, motion) = correct_spectra(&spectra, pixel_a, exposure, params)?;
        return Ok((sums, motion, None));
    };
    let motion = global_motion(&spectra, pixel_a, exposure, params);
    drop(spectra);
    let local = align_local(frames, &motion.shifts_px, pixel_a, lp)?;
    let weight = dose_weights(exposure, params);
    let sums = sum_frames_local(frames, &motion.shifts_px, &local, pixel_a, weight)?;
    Ok((sums, motion, Some(local)))
}

/// [`correct_movie`] with global motion only, on a movie already transformed (the spectra
/// serve the alignment and the sums; `params.local` is not used here: local motion needs the
/// frames, see [`correct_movie_local`]). Errors: fewer than 2 frames or frames smaller than
/// 16² ([`Error::BadInput`]).
pub fn correct_spectra(
    spectra: &MovieSpectra,
    pixel_a: f64,
    exposure: Option<&Exposure>,
    params: &MotionParams,
) -> Result<(super::MovieSums, TiltMotion)> {
    let (ny, nx) = spectra.shape;
    check_shape((spectra.frames.len(), ny, nx))?;
    let motion = global_motion(spectra, pixel_a, exposure, params);
    let sums = sum_spectra(
        spectra,
        &motion.shifts_px,
        pixel_a,
        dose_weights(exposure, params),
    );
    Ok((sums, motion))
}

/// The exposure used for the sums: `exposure` when dose weighting is on and it has a dose.
fn dose_weights<'a>(exposure: Option<&'a Exposure>, params: &MotionParams) -> Option<&'a Exposure> {
    exposure.filter(|e| params.dose_weighting && e.per_frame_e_a2 > 0.0)
}

/// The global alignment of `spectra`, anchored at frame 0, with the exposure recorded.
fn global_motion(
    spectra: &MovieSpectra,
    pixel_a: f64,
    exposure: Option<&Exposure>,
    params: &MotionParams,
) -> TiltMotion {
    let g = align_spectra(spectra, pixel_a, &params.global);
    let s0 = g.shifts_px[0];
    TiltMotion {
        shifts_px: g
            .shifts_px
            .iter()
            .map(|s| [s[0] - s0[0], s[1] - s0[1]])
            .collect(),
        iterations: g.iterations,
        pre_exposure_e_a2: exposure.map_or(0.0, |e| e.pre_exposure_e_a2),
        per_frame_e_a2: exposure.map_or(0.0, |e| e.per_frame_e_a2),
    }
}

/// Replace the `<movie>` placeholder of errors from the per-movie functions by its name.
pub(crate) fn rename_movie(e: Error, name: &str) -> Error {
    match e {
        Error::BadInput { path, field, msg } if path.as_os_str() == "<movie>" => {
            Error::bad_input(name, field, msg)
        }
        other => other,
    }
}

/// RMS error (pixels) of estimated trajectories against true ones, over all frames of all
/// tilts, after removing each tilt's mean (a trajectory is defined up to a common offset).
/// Tilts are paired in order; frames beyond the shorter of a pair are ignored.
pub fn rms_trajectory_error(est_px: &[Vec<[f64; 2]>], truth_px: &[Vec<[f64; 2]>]) -> f64 {
    let mean = |v: &[[f64; 2]]| {
        let n = v.len().max(1) as f64;
        v.iter()
            .fold([0.0, 0.0], |a, d| [a[0] + d[0] / n, a[1] + d[1] / n])
    };
    let (mut ss, mut n) = (0.0, 0usize);
    for (e, t) in est_px.iter().zip(truth_px) {
        let k = e.len().min(t.len());
        let (me, mt) = (mean(&e[..k]), mean(&t[..k]));
        for (a, b) in e[..k].iter().zip(&t[..k]) {
            let dx = (a[0] - me[0]) - (b[0] - mt[0]);
            let dy = (a[1] - me[1]) - (b[1] - mt[1]);
            ss += dx * dx + dy * dy;
            n += 1;
        }
    }
    if n == 0 {
        return f64::NAN;
    }
    (ss / n as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trajectory_error_ignores_a_common_offset() {
        let t = vec![vec![[0.0, 0.0], [1.0, 0.0], [2.0, 1.0]]];
        let e = vec![vec![[5.0, 5.0], [6.0, 5.0], [7.0, 6.0]]];
        assert!(rms_trajectory_error(&e, &t) < 1e-12);
        let e = vec![vec![[0.0, 0.0], [1.0, 0.0], [2.0, 1.0 + 3.0]]];
        // deviations after removing the means: (0, −1), (0, −1), (0, 2) → sqrt(6/3)
        assert!((rms_trajectory_error(&e, &t) - 2f64.sqrt()).abs() < 1e-12);
    }
}
