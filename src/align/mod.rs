//! Tilt-series alignment: find the per-tilt geometry (shifts, tilt-axis angle, tilt
//! angles, and for gold beads per-tilt magnification) that makes the images of a tilt
//! series consistent projections of one specimen.
//!
//! Two methods, one result type ([`AlignReport`]):
//! - fiducial-free ([`fiducial_free`]): coarse cross-correlation of neighbouring tilts with
//!   cosine stretching, cumulative shifts, tilt-axis search, then projection matching;
//! - gold beads ([`beads`]): detection, tracking, least-squares solve as IMOD `tiltalign`.
//!
//! Frames and units: the stack is `[tilt, y, x]` in stack order (ascending nominal tilt),
//! pixel `geometry.pixel_a` Å; the geometry model is the one of `core::geometry`
//! (`(u, v) = (n/2) + [Rz(axis)·Ry(tilt)·Rx(x_tilt)·p]_xy / px + shift / px`, specimen point
//! `p` in Å about the tomogram centre), so a refined [`AlignReport::geometry`] goes straight
//! into WBP/SIRT. Shifts are stored in Å in the geometry; residuals are reported in
//! unbinned pixels.
//!
//! Alignment solutions are defined up to a 3D translation of the specimen (it moves every
//! tilt's image by the projection of the translation); [`evaluate`] removes that freedom
//! before comparing with the truth.

pub mod beads;
pub mod coarse;
pub mod evaluate;
pub mod fiducial_free;
pub mod local;
pub mod output;
pub mod projmatch;
pub mod stage;
pub mod thickness;
pub mod xcorr;

use crate::core::geometry::TiltSeriesGeometry;
use serde::{Deserialize, Serialize};

/// Which alignment produced a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlignMethod {
    /// Cross-correlation + projection matching (no fiducials).
    FiducialFree,
    /// Gold-bead tracking and least-squares solve.
    Beads,
}

impl AlignMethod {
    /// Name as used in configs, logs and the container (`fiducial_free`, `beads`).
    pub fn name(&self) -> &'static str {
        match self {
            AlignMethod::FiducialFree => "fiducial_free",
            AlignMethod::Beads => "beads",
        }
    }
}

/// Per-tilt outcome of an alignment (stack order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TiltResidual {
    /// Index in the stack.
    pub index: usize,
    /// Refined tilt angle, degrees.
    pub tilt_deg: f64,
    /// Refined shift, unbinned pixels (`shift_x_a / pixel_a`).
    pub shift_x_px: f64,
    /// Refined shift, unbinned pixels.
    pub shift_y_px: f64,
    /// Refined magnification relative to the series (1 when not refined).
    pub magnification: f64,
    /// RMS residual of this tilt, unbinned pixels: bead reprojection residual (beads) or
    /// the RMS of the last projection-matching shift updates over patches/iterations
    /// (fiducial-free); NaN when the tilt had no observation.
    pub residual_px: f64,
    /// Number of observations behind the residual (beads seen, patches used).
    pub n_obs: usize,
}

/// Per-bead outcome of a bead alignment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BeadResidual {
    /// Bead id (order of the track list).
    pub id: usize,
    /// Solved 3D position, Å about the tomogram centre, specimen frame `(x, y, z)`.
    pub position_a: [f64; 3],
    /// RMS reprojection residual over the tilts where the bead was tracked, unbinned px.
    pub residual_px: f64,
    /// Number of tilts where the bead was tracked.
    pub n_obs: usize,
}

/// The result of an alignment, whichever the method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlignReport {
    /// Method used.
    pub method: AlignMethod,
    /// The refined geometry (same tilts, stack order, as the input geometry).
    pub geometry: TiltSeriesGeometry,
    /// One entry per tilt, stack order.
    pub tilts: Vec<TiltResidual>,
    /// Beads (empty for fiducial-free alignment).
    pub beads: Vec<BeadResidual>,
    /// Overall RMS residual, unbinned pixels.
    pub rms_residual_px: f64,
    /// Estimated specimen thickness, Å (None when not estimated).
    pub thickness_a: Option<f64>,
    /// Estimated specimen pitch (tilt of the slab about the tilt axis at nominal 0°), degrees.
    pub pitch_deg: Option<f64>,
    /// Estimated z offset of the specimen centre from the tomogram centre, Å.
    pub z_offset_a: Option<f64>,
    /// Human-readable log of the stages (one line each: what was refined, by how much).
    pub log: Vec<String>,
}
