//! Core types shared by every stage: geometry, Fourier helpers, interpolation, statistics.

pub mod fourier;
pub mod geometry;
pub mod interp;
pub mod stats;
