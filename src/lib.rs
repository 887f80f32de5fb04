//! lamella: an MPI-parallel cryo-electron tomography pipeline.
//!
//! Conventions (see `docs/conventions.md`): volumes are `Array3<f32>` indexed `[z, y, x]`,
//! images `[y, x]`, tilt series `[tilt, y, x]`; the centre of an axis of length `n` is
//! index `n / 2`; Å and degrees in public APIs; rotation matrices left-multiply column
//! vectors `(x, y, z)`.

pub mod align;
pub mod cli;
pub mod comm;
pub mod core;
pub mod ctf;
pub mod device;
pub mod error;
pub mod io;
pub mod motion;
pub mod pick;
pub mod pipeline;
pub mod recon;
pub mod report;
pub mod sim;
pub mod sta;

pub use error::{Error, Result};

/// Program version, as recorded in containers and `lamella info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
