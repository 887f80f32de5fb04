//! Reconstruction: filters, back-projection, weighted back-projection.

pub mod backproject;
pub mod filter;
pub mod wbp;
