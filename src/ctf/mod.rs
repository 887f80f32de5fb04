//! Contrast transfer function: model, per-image estimation, correction.

pub mod correct;
pub mod estimate;
pub mod model;
pub mod periodogram;
pub mod stage;
pub mod tilted;

pub use estimate::{estimate, estimate_from_spectrum, CtfFit, CtfSearch};
pub use model::{dose_filter, electron_wavelength_a, interaction_constant, Ctf};
pub use tilted::{estimate_series, SeriesCtfFit};
