//! Pipeline: config (serde TOML), stage graph, resume, work distribution over ranks.
//!
//! Stage modules are pure functions; this module does the file I/O and the rank logic.
//! The stage graph is `simulate | input -> [motioncorr] -> [align] -> reconstruct`.

pub mod config;
pub mod distribute;
pub mod export;
pub mod inputs;
pub mod metrics;
pub mod motioncorr;
pub mod pick;
pub mod pictures;
pub mod plan;
pub mod run;
pub mod signals;
pub mod simio;
pub mod sta;
pub mod summary;
