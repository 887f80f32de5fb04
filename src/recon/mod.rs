//! Reconstruction: filters, back-projection, forward projection, weighted back-projection,
//! SIRT, CTF correction.

pub mod backproject;
pub mod checkpoint;
pub mod ctfcorr;
pub mod filter;
pub mod fsc;
pub mod multibin;
pub mod plan;
pub mod project;
pub mod sirt;
pub mod slab;
#[cfg(test)]
pub(crate) mod test_support;
pub mod wbp;
