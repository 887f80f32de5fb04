//! Contrast transfer function: model, per-image estimation, correction.

pub mod correct;
pub mod estimate;
pub mod model;
pub mod periodogram;

pub use estimate::{estimate, CtfFit, CtfSearch};
pub use model::{dose_filter, electron_wavelength_a, interaction_constant, Ctf};
