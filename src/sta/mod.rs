//! Subtomogram averaging: per-particle transfer (wedge, CTF, dose) weights, extraction,
//! alignment, Fourier-space averaging, FSC, classification, the refinement loop and the
//! RELION 3.1 subtomogram export (`relion31`).
//!
//! Stage code here is pure (arrays in, arrays out, no files, no MPI); `pipeline/` and
//! `cli/` do the I/O and hand a [`crate::comm::Comm`] to the reductions.

pub mod align;
pub mod average;
pub mod extract;
pub mod fsc;
pub mod insert;
pub mod mask;
pub mod particles2d;
pub mod refine;
pub mod relion31;
pub mod weight;
