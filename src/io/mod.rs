//! File formats: MRC, STAR, IMOD, SerialEM .mdoc, PDB, the HDF5 container; atomic writes.

pub mod atomic;
pub mod container;
pub mod dynamo;
pub mod imod;
pub mod mdoc;
pub mod mrc;
pub mod pdb;
pub mod relion;
pub mod sta_container;
pub mod star;
