//! Reconstruction: filters, back-projection, forward projection, weighted back-projection,
//! SIRT.

pub mod backproject;
pub mod filter;
pub mod project;
pub mod sirt;
pub mod wbp;
