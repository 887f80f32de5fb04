//! Global (whole-frame) motion of one movie: each frame is aligned iteratively to the sum of
//! all the other (already aligned) frames, as MotionCor2/RELION do, so no frame is compared
//! with itself and its noise.
//!
//! Frames `[frame, y, x]` (counts); shifts in PIXELS, `[dx, dy]` = the displacement of the
//! frame's content (frame `f` shows the specimen moved by `shift[f]`; undo it by shifting
//! the frame by `−shift[f]`). The trajectory is defined up to a common offset: the result
//! has mean zero over frames (the truth of the simulator has frame 0 at the origin; compare
//! after removing the mean).
//!
//! Per iteration: align every frame by its current shift (Fourier phase ramp), sum; for each
//! frame correlate it (at its current shift) with the sum minus itself, band-passed with a
//! B-factor low-pass (`exp(−B·s²/4)`, amplitude) and a weak high-pass, and add the sub-pixel
//! peak to its shift; stop when the largest update is below `tolerance_px`. All of it runs on
//! the frames' spectra, transformed once ([`super::spectral`]).

use super::spectral::{align_spectra, MovieSpectra};
use crate::{Error, Result};
use ndarray::ArrayView3;

/// Parameters of the global alignment.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalParams {
    /// B-factor of the low-pass applied to the correlations, Å² (MotionCor2 uses 500–1500 at
    /// 1 Å; larger = smoother).
    pub bfactor_a2: f64,
    /// Largest shift of a frame from its current estimate per iteration, pixels.
    pub max_shift_px: f64,
    /// Most iterations.
    pub iterations: usize,
    /// Stop when the largest shift update is below this, pixels.
    pub tolerance_px: f64,
}

impl Default for GlobalParams {
    fn default() -> Self {
        GlobalParams {
            bfactor_a2: 500.0,
            max_shift_px: 20.0,
            iterations: 10,
            tolerance_px: 0.01,
        }
    }
}

/// The global motion of one movie.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalMotion {
    /// Per frame `[dx, dy]` content displacement, pixels, mean zero over frames.
    pub shifts_px: Vec<[f64; 2]>,
    /// Iterations run.
    pub iterations: usize,
    /// Largest shift update of the last iteration, pixels.
    pub last_update_px: f64,
}

/// Align the frames `[frame, y, x]` of one movie with pixel `pixel_a` Å (module docs).
///
/// Errors: [`Error::BadInput`] for fewer than 2 frames, frames smaller than 16², or
/// non-finite values.
pub fn align_global(
    frames: ArrayView3<f32>,
    pixel_a: f64,
    params: &GlobalParams,
) -> Result<GlobalMotion> {
    check_frames(frames)?;
    Ok(align_spectra(&MovieSpectra::new(frames), pixel_a, params))
}

/// The movie checks of [`align_global`]: ≥ 2 frames of ≥ 16² pixels, all values finite.
pub(crate) fn check_frames(frames: ArrayView3<f32>) -> Result<()> {
    check_shape(frames.dim())?;
    check_values(frames)
}

/// ≥ 2 frames of ≥ 16² pixels in a movie of shape `(frames, ny, nx)` ([`Error::BadInput`]).
pub(crate) fn check_shape((nf, ny, nx): (usize, usize, usize)) -> Result<()> {
    if nf < 2 || ny < 16 || nx < 16 {
        return Err(Error::bad_input(
            "<movie>",
            "frames",
            format!("{nf} frames of {nx}×{ny}: need ≥ 2 frames of ≥ 16×16 pixels"),
        ));
    }
    Ok(())
}

/// Refuse NaN/Inf frame values ([`Error::BadInput`]).
pub(crate) fn check_values(frames: ArrayView3<f32>) -> Result<()> {
    if frames.iter().any(|v| !v.is_finite()) {
        return Err(Error::bad_input(
            "<movie>",
            "frame values",
            "contain NaN/Inf: check the movie file and the gain reference",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{preset, simulate_series, Preset};

    /// RMS trajectory error (px, mean removed per movie) of simulated movies: tiny-preset
    /// specimen at `pixel_a` Å on `n`² images, 10 frames per tilt at 0.4 e/Å² per frame,
    /// drift `drift_px` pixels per frame turning randomly, 9 tilts.
    fn trajectory_error(pixel_a: f64, n: usize, drift_px: f64) -> f64 {
        let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        let mut p = preset(Preset::Tiny, &shared).remove(1);
        p.pixel_a = pixel_a;
        p.nx = n;
        p.ny = n;
        p.frames_per_tilt = 10;
        p.drift_a_per_frame = drift_px * pixel_a;
        p.tilt_step_deg = 15.0;
        p.total_dose_e_a2 = 9.0 * 10.0 * 0.4;
        let s = simulate_series(&p, 3).unwrap();
        let (mut est, mut truth) = (Vec::new(), Vec::new());
        for (fr, t) in s.frames.iter().zip(&s.truth.tilts) {
            let m = align_global(fr.view(), pixel_a, &GlobalParams::default()).unwrap();
            est.push(m.shifts_px);
            truth.push(
                t.frame_drift_a
                    .iter()
                    .map(|d| [d[0] / pixel_a, d[1] / pixel_a])
                    .collect(),
            );
        }
        crate::motion::series::rms_trajectory_error(&est, &truth)
    }

    #[test]
    fn recovers_simulated_drift_to_a_fifth_of_a_pixel() {
        for (px, n) in [(10.0, 96), (4.0, 128)] {
            let rms = trajectory_error(px, n, 0.5);
            eprintln!("global motion at {px} Å/px, {n}²: RMS trajectory error {rms:.3} px");
            assert!(rms < 0.2, "{px} Å/px: RMS trajectory error {rms} px");
        }
    }

    #[test]
    fn refuses_a_single_frame() {
        let f = ndarray::Array3::<f32>::ones((1, 32, 32));
        let e = align_global(f.view(), 1.0, &GlobalParams::default()).unwrap_err();
        assert!(e.to_string().contains("≥ 2 frames"), "{e}");
    }
}
