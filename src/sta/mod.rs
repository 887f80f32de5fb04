//! Subtomogram averaging: per-particle transfer (wedge, CTF, dose) weights, extraction,
//! alignment, Fourier-space averaging, FSC, classification and the refinement loop.
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
pub mod weight;
