//! Contrast transfer function: model (estimation and correction come later).

pub mod model;

pub use model::{dose_filter, electron_wavelength_a, interaction_constant, Ctf};
