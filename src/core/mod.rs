//! Core types shared by every stage: geometry, Fourier helpers, interpolation.

pub mod fourier;
pub mod geometry;
pub mod interp;
