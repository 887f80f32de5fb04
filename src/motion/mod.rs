//! Motion correction of tilt movies (issue 4): global (whole-frame) alignment of one movie
//! ([`global`]), the motion-corrected, optionally dose-weighted full/even/odd sums ([`sum`]),
//! movie files and their matching to tilts ([`movie`]), the correction of a whole series
//! ([`series`]). The `motioncorr` stage, its output files, patch-based local motion and
//! TIFF/gain input are still to come (`docs/motion.md`).

pub mod gain;
pub mod global;
pub mod movie;
pub mod series;
pub mod sum;
pub mod tif;

pub use global::{align_global, GlobalMotion, GlobalParams};
pub use series::{correct_series, rms_trajectory_error, MotionParams, SeriesMotion, TiltMotion};
pub use sum::{sum_frames, Exposure, MovieSums};
