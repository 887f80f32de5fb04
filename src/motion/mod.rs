//! Motion correction of tilt movies (issue 4). So far: global (whole-frame) alignment of one
//! movie ([`global`]); patch-based local motion, dose weighting of the sum, even/odd sums,
//! movie/gain readers and the `lamella motioncorr` stage are still to come
//! (`docs/motion.md`).

pub mod global;

pub use global::{align_global, GlobalMotion, GlobalParams};
