//! Core types shared by every stage: geometry, Fourier helpers, interpolation, statistics.

pub mod fft3;
pub mod fourier;
pub mod geometry;
pub mod interp;
pub mod so3;
pub mod stats;
