//! Motion correction of tilt movies (issue 4): global (whole-frame) alignment of one movie
//! ([`global`]), the motion-corrected, optionally dose-weighted full/even/odd sums ([`sum`]),
//! movie files and their matching to tilts ([`movie`]), the correction of a whole series
//! ([`series`]), patch-based local motion with a smooth space-time model ([`local`]), TIFF
//! movies ([`tif`]) and gain references ([`gain`]). See `docs/motion.md`.

pub mod batch;
pub mod gain;
pub mod global;
pub mod local;
pub mod movie;
pub mod output;
pub mod series;
pub mod spectral;
pub mod sum;
pub mod tif;

pub use gain::{apply_gain, load_gain, read_gain, transform_gain, GainTransform};
pub use global::{align_global, GlobalMotion, GlobalParams};
pub use local::{align_local, sum_frames_local, undo_motion, LocalMotion, LocalParams};
pub use series::{correct_movie_local, rms_trajectory_error, MotionParams, TiltMotion};
pub use sum::{sum_frames, Exposure, MovieSums};
