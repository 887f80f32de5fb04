//! Motion correction of tilt movies (issue 4). So far: global (whole-frame) alignment of one
//! movie ([`global`]) and the motion-corrected, optionally dose-weighted full/even/odd sums
//! ([`sum`]); patch-based local motion, movie/gain readers and the `lamella motioncorr` stage
//! are still to come (`docs/motion.md`).

pub mod global;
pub mod sum;

pub use global::{align_global, GlobalMotion, GlobalParams};
pub use sum::{sum_frames, Exposure, MovieSums};
