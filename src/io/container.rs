//! The HDF5 container: the run's record (DESIGN §3, layout in `docs/container.md`).
//!
//! - One file per tilt series, `<out>/ts/<name>.h5`, written by the rank that processed it:
//!   `/tilt_series/<name>` with attributes (optics, image size, `complete`), the per-tilt
//!   `alignment/tilts` compound table, `tomograms/bin<k>/<kind>` volumes and one
//!   `stages/<stage>` group per finished stage (input hash, time, `complete`).
//! - The run's `<out>/lamella.h5`, written by rank 0: root attributes (version, config,
//!   command line, ranks, hosts, times) and `/tilt_series/<name>` as HDF5 *external links*
//!   into the per-series files, so no parallel HDF5 is needed. Relative link targets resolve
//!   against the directory of `lamella.h5`, whatever the working directory.
//! - Every file is written at `path.partial`, closed, fsynced and renamed onto `path`
//!   ([`crate::io::atomic`]): a crash leaves either the old file or the complete new one, and
//!   readers ignore `*.partial`.
//!
//! Units: Å, degrees, e/Å², kV, mm; volumes are `f32` `[z, y, x]`.

use crate::align::AlignReport;
use crate::core::geometry::{Optics, TiltImage, TiltSeriesGeometry};
use crate::io::atomic::{commit_partial, partial_path};
use crate::{Error, Result};
use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location};
use ndarray::{Array1, Array3, Ix3};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Description of a run, stored as root attributes of `lamella.h5`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// lamella version (`crate::VERSION`).
    pub program_version: String,
    /// The configuration file's text, verbatim (TOML).
    pub config_text: String,
    /// The command line, joined with spaces.
    pub command_line: String,
    /// Number of MPI ranks.
    pub ranks: usize,
    /// Host name of every rank, in rank order.
    pub hosts: Vec<String>,
    /// Start time, RFC 3339 UTC (e.g. `2025-01-31T12:00:00Z`).
    pub start_time: String,
    /// End time, RFC 3339 UTC.
    pub end_time: String,
}

/// One reconstructed volume of a tilt series.
#[derive(Clone, Debug, PartialEq)]
pub struct TomogramRecord {
    /// Binning factor relative to the tilt-series pixel (1, 2, 4, ...).
    pub bin: usize,
    /// Voxel size, Å.
    pub pixel_a: f64,
    /// `"full"`, `"even"` or `"odd"` (the latter two from even/odd frame or tilt halves).
    pub kind: String,
    /// The volume, `[z, y, x]`.
    pub data: Array3<f32>,
    /// The MRC export of the same volume, if any (path as given to the user).
    pub mrc_path: Option<String>,
}

/// The record of one finished (or unfinished) pipeline stage of a tilt series, used by
/// `--resume`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageRecord {
    /// Stage name, e.g. `"reconstruct"` (no `/`).
    pub name: String,
    /// [`input_hash`] of the stage's inputs and parameters.
    pub input_hash: String,
    /// Wall time of the stage, seconds.
    pub seconds: f64,
    /// True when the stage finished successfully.
    pub complete: bool,
}

/// Everything a rank writes about one tilt series into `ts/<name>.h5`.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesRecord {
    /// Tilt-series name (file stem; no `/`).
    pub name: String,
    /// Refined geometry, one tilt per image in stack order.
    pub geometry: TiltSeriesGeometry,
    /// Nominal (as acquired) tilt angle of every image in stack order, degrees.
    pub nominal_tilts_deg: Vec<f64>,
    /// Reconstructed volumes.
    pub tomograms: Vec<TomogramRecord>,
    /// Stage records.
    pub stages: Vec<StageRecord>,
    /// Correlation of the full tomogram with the simulation truth, when known.
    pub truth_correlation: Option<f64>,
    /// Rank that wrote the file.
    pub rank: usize,
    /// The alignment that produced `geometry`, when an alignment stage ran: written as
    /// `alignment/residuals`, `alignment/beads` and attributes of `alignment`.
    pub alignment: Option<AlignReport>,
    /// Per-frame motion of the movies (`motion/frames`), when a motion correction ran.
    pub motion: Option<MotionTable>,
    /// The CTF fit, when a CTF stage ran: written as the `ctf` table with attributes `hand`,
    /// `hand_evidence`, `hand_tilts`.
    pub ctf: Option<crate::ctf::stage::CtfTable>,
    /// The template-matching result, when a pick stage ran: the `picking` group.
    pub picking: Option<PickingRecord>,
}

/// The template matching of one tomogram (`/tilt_series/<name>/picking`, docs/container.md).
#[derive(Clone, Debug, PartialEq)]
pub struct PickingRecord {
    /// Binning of the searched tomogram.
    pub bin: usize,
    /// Its voxel size, Å.
    pub pixel_a: f64,
    /// The template (file name, or the simulated structure's name).
    pub template: String,
    /// Angular step, degrees.
    pub angular_step_deg: f64,
    /// Expected false picks that set the threshold.
    pub n_false_alarms: f64,
    /// Particle radius (mask and suppression), Å.
    pub radius_a: f64,
    /// σ of the score map.
    pub sigma: f64,
    /// Score threshold used.
    pub threshold: f64,
    /// Best FLCF score per voxel, `[z, y, x]`.
    pub scores: Array3<f32>,
    /// Index into `rotations_zyz_deg` of the best rotation per voxel (−1: none).
    pub rotation_index: Array3<i32>,
    /// The searched rotations, RELION ZYZ `(rot, tilt, psi)` degrees.
    pub rotations_zyz_deg: Vec<[f64; 3]>,
    /// The picks, strongest first.
    pub particles: Vec<PickRow>,
}

/// One row of `/tilt_series/<name>/picking/particles`.
#[derive(H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct PickRow {
    /// Position about the tomogram centre, Å.
    pub x_a: f64,
    /// Position about the tomogram centre, Å.
    pub y_a: f64,
    /// Position about the tomogram centre, Å.
    pub z_a: f64,
    /// RELION rot, degrees.
    pub rot_deg: f64,
    /// RELION tilt, degrees.
    pub tilt_deg: f64,
    /// RELION psi, degrees.
    pub psi_deg: f64,
    /// FLCF score.
    pub score: f64,
}

/// The per-frame shifts of a motion-corrected series (`/tilt_series/<name>/motion`).
#[derive(Clone, Debug, PartialEq)]
pub struct MotionTable {
    /// `global` (whole-frame alignment).
    pub method: String,
    /// Whether the sums were dose-weighted.
    pub dose_weighted: bool,
    /// Rows in stack order, frames in order.
    pub rows: Vec<FrameShiftRow>,
}

/// One row of `/tilt_series/<name>/motion/frames`.
#[derive(H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct FrameShiftRow {
    /// Tilt (stack index).
    pub tilt: u32,
    /// Frame index in the movie.
    pub frame: u32,
    /// Content displacement relative to frame 0, pixels.
    pub shift_x_px: f64,
    /// Content displacement relative to frame 0, pixels.
    pub shift_y_px: f64,
    /// Exposure before this frame, e/Å².
    pub pre_exposure_e_a2: f64,
    /// Exposure of this frame, e/Å².
    pub dose_e_a2: f64,
}

/// One row of `/tilt_series/<name>/ctf` (stack order).
#[derive(H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct CtfH5Row {
    index: u32,
    refitted: u32,
    tilt_deg: f64,
    defocus_u_a: f64,
    defocus_v_a: f64,
    astig_angle_deg: f64,
    score: f64,
    fit_resolution_a: f64,
}

/// One row of `/tilt_series/<name>/alignment/residuals` (stack order).
#[derive(H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct ResidualRow {
    index: u32,
    n_obs: u32,
    tilt_deg: f64,
    shift_x_px: f64,
    shift_y_px: f64,
    magnification: f64,
    residual_px: f64,
}

/// One row of `/tilt_series/<name>/alignment/beads`.
#[derive(H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct BeadRow {
    id: u32,
    n_obs: u32,
    x_a: f64,
    y_a: f64,
    z_a: f64,
    residual_px: f64,
}

/// One row of `/tilt_series/<name>/alignment/tilts` (HDF5 compound; field names are the
/// column names seen by h5py).
#[derive(H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct TiltRow {
    index: u32,
    acquisition_index: u32,
    nominal_tilt_deg: f64,
    tilt_deg: f64,
    axis_deg: f64,
    x_tilt_deg: f64,
    shift_x_a: f64,
    shift_y_a: f64,
    defocus_u_a: f64,
    defocus_v_a: f64,
    astig_angle_deg: f64,
    dose_e_a2: f64,
    pre_exposure_e_a2: f64,
}

/// Tomogram kinds accepted in `tomograms/bin<k>/`.
pub const TOMOGRAM_KINDS: [&str; 3] = ["full", "even", "odd"];

/// SHA-256 (lower-case hex, 64 characters) of the concatenated `parts`, each prefixed by its
/// length (u64 little-endian) so that `["ab", "c"]` and `["a", "bc"]` differ. Used by
/// `--resume` to decide whether a completed stage saw the same inputs and parameters.
pub fn input_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// HDF5 path of a series group: `/tilt_series/<name>`.
pub(crate) fn series_group(name: &str) -> String {
    format!("/tilt_series/{name}")
}

/// Map an HDF5 error to [`Error::Hdf5`] naming the file and what was being done.
pub(crate) fn h5err(path: &Path, what: &str) -> impl FnOnce(hdf5::Error) -> Error {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |e| Error::Hdf5 {
        path,
        msg: format!("{what}: {e}"),
    }
}

/// Reject names that cannot be one HDF5 path component.
pub(crate) fn check_component(path: &Path, field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value == "." || value.contains('/') || value.contains('\0') {
        return Err(Error::bad_input(
            path,
            field,
            format!("{value:?} cannot be an HDF5 group name: use a non-empty name without '/'"),
        ));
    }
    Ok(())
}

fn vlen(path: &Path, s: &str) -> Result<VarLenUnicode> {
    s.parse::<VarLenUnicode>().map_err(|e| Error::Hdf5 {
        path: path.to_path_buf(),
        msg: format!("string {s:?} cannot be stored as an HDF5 string: {e}"),
    })
}

/// Writes scalar attributes on one HDF5 object, naming the file and the object in errors.
pub(crate) struct AttrWriter<'a> {
    pub(crate) path: &'a Path,
    pub(crate) loc: &'a Location,
    pub(crate) obj: &'a str,
}

impl AttrWriter<'_> {
    pub(crate) fn scalar<T: H5Type>(&self, name: &str, v: &T) -> Result<()> {
        let what = format!("writing attribute {name} of {}", self.obj);
        self.loc
            .new_attr::<T>()
            .create(name)
            .and_then(|a| a.write_scalar(v))
            .map_err(h5err(self.path, &what))
    }

    pub(crate) fn f64(&self, name: &str, v: f64) -> Result<()> {
        self.scalar(name, &v)
    }

    pub(crate) fn u64(&self, name: &str, v: usize) -> Result<()> {
        self.scalar(name, &(v as u64))
    }

    pub(crate) fn str(&self, name: &str, v: &str) -> Result<()> {
        self.scalar(name, &vlen(self.path, v)?)
    }

    pub(crate) fn str_array(&self, name: &str, v: &[String]) -> Result<()> {
        let data: Vec<VarLenUnicode> = v
            .iter()
            .map(|s| vlen(self.path, s))
            .collect::<Result<_>>()?;
        let what = format!("writing attribute {name} of {}", self.obj);
        self.loc
            .new_attr_builder()
            .with_data(&Array1::from(data))
            .create(name)
            .map(|_| ())
            .map_err(h5err(self.path, &what))
    }
}

/// Write an HDF5 file atomically: create `path.partial`, run `fill` on it, close it, fsync it
/// and rename it onto `path`. On any error the partial file is removed and an existing `path`
/// is left untouched.
pub(crate) fn write_h5_atomic(
    path: &Path,
    fill: impl FnOnce(&hdf5::File) -> Result<()>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    let tmp = partial_path(path);
    let result = (|| -> Result<()> {
        let file = hdf5::File::create(&tmp).map_err(h5err(path, "creating the file"))?;
        let filled = fill(&file);
        // close (invalidating every handle, also one a failed HDF5 call may have left open)
        // before anything else: an open handle keeps the inode locked, and a later file that
        // reuses the inode number would then be refused by HDF5's "already open" check
        let closed = file.close().map_err(h5err(path, "closing the file"));
        filled?;
        closed?;
        // HDF5 does not fsync: do it before the rename makes the file visible.
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))
    })();
    match result {
        Ok(()) => commit_partial(path),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Check a record before anything is written.
fn validate_series(path: &Path, rec: &SeriesRecord) -> Result<()> {
    check_component(path, "name", &rec.name)?;
    let n = rec.geometry.tilts.len();
    if rec.nominal_tilts_deg.len() != n {
        return Err(Error::bad_input(
            path,
            "nominal_tilts_deg",
            format!(
                "{} nominal tilt angles for {n} tilts: give one nominal angle per tilt",
                rec.nominal_tilts_deg.len()
            ),
        ));
    }
    for t in &rec.tomograms {
        if !TOMOGRAM_KINDS.contains(&t.kind.as_str()) {
            return Err(Error::bad_input(
                path,
                "tomogram kind",
                format!("{:?} is not one of full, even, odd", t.kind),
            ));
        }
        if t.bin == 0 || t.data.is_empty() {
            return Err(Error::bad_input(
                path,
                format!("tomograms/bin{}/{}", t.bin, t.kind),
                format!(
                    "bin {} with shape {:?}: the bin must be >= 1 and the volume non-empty",
                    t.bin,
                    t.data.shape()
                ),
            ));
        }
    }
    for s in &rec.stages {
        check_component(path, "stage name", &s.name)?;
    }
    Ok(())
}

/// Write the per-series file `path` (normally `<out>/ts/<name>.h5`) atomically.
///
/// Layout (see `docs/container.md`): `/tilt_series/<name>` with attributes `name`, `rank`,
/// `n_tilts`, `pixel_a` (Å), `nx`, `ny` (pixels), `voltage_kv`, `cs_mm`,
/// `amplitude_contrast`, `hand`, `truth_correlation` (if known) and `complete = true`
/// (written last); `alignment/tilts` (compound table, one row per tilt in stack order);
/// `tomograms/bin<k>/<kind>` (`f32 [z, y, x]`, chunked `1 × ≤512 × ≤512`, attributes
/// `pixel_a`, `bin`, `axes = "zyx"`, `units = "A"`, `mrc_path` when set);
/// `stages/<stage>` (attributes `input_hash`, `seconds`, `complete`).
///
/// Errors: [`Error::BadInput`] for an invalid record (name with `/`, nominal angle count ≠
/// tilt count, unknown tomogram kind, empty volume); [`Error::Hdf5`] naming the file and the
/// object when HDF5 fails (e.g. two tomograms with the same bin and kind). On error no
/// `path` is created and an existing one is kept.
pub fn write_series_file(path: &Path, rec: &SeriesRecord) -> Result<()> {
    validate_series(path, rec)?;
    write_h5_atomic(path, |file| {
        let gpath = series_group(&rec.name);
        let g = file
            .create_group(&gpath)
            .map_err(h5err(path, &format!("creating group {gpath}")))?;
        write_series_attrs(path, &g, &gpath, rec)?;
        write_tilt_table(path, &g, &gpath, rec)?;
        if let Some(c) = &rec.ctf {
            write_ctf_table(path, &g, &gpath, c)?;
        }
        for t in &rec.tomograms {
            write_tomogram(path, &g, &gpath, t)?;
        }
        for s in &rec.stages {
            write_stage(path, &g, &gpath, s)?;
        }
        if let Some(m) = &rec.motion {
            write_motion(path, &g, &gpath, m)?;
        }
        if let Some(p) = &rec.picking {
            write_picking(path, &g, &gpath, p)?;
        }
        // `complete` last: a reader that sees it knows everything above was written.
        AttrWriter {
            path,
            loc: &g,
            obj: &gpath,
        }
        .scalar("complete", &true)
    })
}

fn write_series_attrs(path: &Path, g: &Group, gpath: &str, rec: &SeriesRecord) -> Result<()> {
    let a = AttrWriter {
        path,
        loc: g,
        obj: gpath,
    };
    let geo = &rec.geometry;
    a.str("name", &rec.name)?;
    a.u64("rank", rec.rank)?;
    a.u64("n_tilts", geo.tilts.len())?;
    a.f64("pixel_a", geo.pixel_a)?;
    a.u64("nx", geo.nx)?;
    a.u64("ny", geo.ny)?;
    a.f64("voltage_kv", geo.optics.voltage_kv)?;
    a.f64("cs_mm", geo.optics.cs_mm)?;
    a.f64("amplitude_contrast", geo.optics.amplitude_contrast)?;
    a.f64("hand", geo.hand)?;
    if let Some(c) = rec.truth_correlation {
        a.f64("truth_correlation", c)?;
    }
    Ok(())
}

fn write_tilt_table(path: &Path, g: &Group, gpath: &str, rec: &SeriesRecord) -> Result<()> {
    let rows: Vec<TiltRow> = rec
        .geometry
        .tilts
        .iter()
        .zip(&rec.nominal_tilts_deg)
        .enumerate()
        .map(|(i, (t, &nominal))| TiltRow {
            index: i as u32,
            nominal_tilt_deg: nominal,
            tilt_deg: t.tilt_deg,
            axis_deg: t.axis_deg,
            x_tilt_deg: t.x_tilt_deg,
            shift_x_a: t.shift_x_a,
            shift_y_a: t.shift_y_a,
            defocus_u_a: t.defocus_u_a,
            defocus_v_a: t.defocus_v_a,
            astig_angle_deg: t.astig_angle_deg,
            dose_e_a2: t.dose_e_a2,
            pre_exposure_e_a2: t.pre_exposure_e_a2,
            acquisition_index: t.acquisition_index as u32,
        })
        .collect();
    let what = format!("writing {gpath}/alignment/tilts");
    let align = g
        .create_group("alignment")
        .map_err(h5err(path, &format!("creating {gpath}/alignment")))?;
    align
        .new_dataset_builder()
        .with_data(&Array1::from(rows))
        .create("tilts")
        .map_err(h5err(path, &what))?;
    match &rec.alignment {
        Some(r) => write_alignment(path, &align, &format!("{gpath}/alignment"), r),
        None => Ok(()),
    }
}

/// The residual tables and summary attributes of an alignment (see `docs/container.md`).
fn write_alignment(path: &Path, g: &Group, gpath: &str, r: &AlignReport) -> Result<()> {
    let a = AttrWriter {
        path,
        loc: g,
        obj: gpath,
    };
    a.str("method", r.method.name())?;
    a.f64("rms_residual_px", r.rms_residual_px)?;
    for (name, v) in [
        ("thickness_a", r.thickness_a),
        ("pitch_deg", r.pitch_deg),
        ("z_offset_a", r.z_offset_a),
    ] {
        if let Some(v) = v {
            a.f64(name, v)?;
        }
    }
    if !r.log.is_empty() {
        a.str_array("log", &r.log)?;
    }
    let rows: Vec<ResidualRow> = r
        .tilts
        .iter()
        .map(|t| ResidualRow {
            index: t.index as u32,
            tilt_deg: t.tilt_deg,
            shift_x_px: t.shift_x_px,
            shift_y_px: t.shift_y_px,
            magnification: t.magnification,
            residual_px: t.residual_px,
            n_obs: t.n_obs as u32,
        })
        .collect();
    g.new_dataset_builder()
        .with_data(&Array1::from(rows))
        .create("residuals")
        .map_err(h5err(path, &format!("writing {gpath}/residuals")))?;
    if r.beads.is_empty() {
        return Ok(());
    }
    let beads: Vec<BeadRow> = r
        .beads
        .iter()
        .map(|b| BeadRow {
            id: b.id as u32,
            x_a: b.position_a[0],
            y_a: b.position_a[1],
            z_a: b.position_a[2],
            residual_px: b.residual_px,
            n_obs: b.n_obs as u32,
        })
        .collect();
    g.new_dataset_builder()
        .with_data(&Array1::from(beads))
        .create("beads")
        .map(|_| ())
        .map_err(h5err(path, &format!("writing {gpath}/beads")))
}

/// The `ctf` table and its handedness attributes (see `docs/container.md`).
fn write_ctf_table(
    path: &Path,
    g: &Group,
    gpath: &str,
    c: &crate::ctf::stage::CtfTable,
) -> Result<()> {
    let rows: Vec<CtfH5Row> = c
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| CtfH5Row {
            index: i as u32,
            tilt_deg: r.tilt_deg,
            defocus_u_a: r.defocus_u_a,
            defocus_v_a: r.defocus_v_a,
            astig_angle_deg: r.astig_angle_deg,
            score: r.score,
            fit_resolution_a: r.fit_resolution_a,
            refitted: u32::from(r.refitted),
        })
        .collect();
    let full = format!("{gpath}/ctf");
    let ds = g
        .new_dataset_builder()
        .with_data(&Array1::from(rows))
        .create("ctf")
        .map_err(h5err(path, &format!("writing {full}")))?;
    let a = AttrWriter {
        path,
        loc: &ds,
        obj: &full,
    };
    a.f64("hand", c.hand)?;
    a.f64("hand_evidence", c.hand_evidence)?;
    a.u64("hand_tilts", c.hand_tilts)
}

/// The CTF table of series `name` in `path` (series file or master), `None` when the series
/// has none.
pub fn read_series_ctf(path: &Path, name: &str) -> Result<Option<crate::ctf::stage::CtfTable>> {
    let file = open_file(path)?;
    let dpath = format!("{}/ctf", series_group(name));
    if !link_exists(&file, &dpath) {
        return Ok(None);
    }
    let ds = file
        .dataset(&dpath)
        .map_err(h5err(path, &format!("opening {dpath}")))?;
    let rows: Vec<CtfH5Row> = ds
        .read_raw::<CtfH5Row>()
        .map_err(h5err(path, &format!("reading {dpath}")))?;
    Ok(Some(crate::ctf::stage::CtfTable {
        rows: rows
            .iter()
            .map(|r| crate::ctf::stage::CtfRow {
                tilt_deg: r.tilt_deg,
                defocus_u_a: r.defocus_u_a,
                defocus_v_a: r.defocus_v_a,
                astig_angle_deg: r.astig_angle_deg,
                score: r.score,
                fit_resolution_a: r.fit_resolution_a,
                refitted: r.refitted != 0,
            })
            .collect(),
        hand: read_attr::<f64>(path, &ds, &dpath, "hand")?,
        hand_evidence: read_attr::<f64>(path, &ds, &dpath, "hand_evidence")?,
        hand_tilts: read_attr::<u64>(path, &ds, &dpath, "hand_tilts")? as usize,
    }))
}

/// Chunk shape of a tomogram dataset: one z-slice, at most 512 × 512 in y and x (≤ 1 MiB).
fn tomogram_chunk(shape: &[usize]) -> (usize, usize, usize) {
    (1, shape[1].min(512), shape[2].min(512))
}

fn write_tomogram(path: &Path, g: &Group, gpath: &str, t: &TomogramRecord) -> Result<()> {
    let rel = format!("tomograms/bin{}/{}", t.bin, t.kind);
    let full = format!("{gpath}/{rel}");
    let ds = g
        .new_dataset_builder()
        .chunk(tomogram_chunk(t.data.shape()))
        .with_data(t.data.view())
        .create(rel.as_str())
        .map_err(h5err(path, &format!("writing dataset {full}")))?;
    let a = AttrWriter {
        path,
        loc: &ds,
        obj: &full,
    };
    a.f64("pixel_a", t.pixel_a)?;
    a.u64("bin", t.bin)?;
    a.str("axes", "zyx")?;
    a.str("units", "A")?;
    if let Some(m) = &t.mrc_path {
        a.str("mrc_path", m)?;
    }
    Ok(())
}

fn write_motion(path: &Path, g: &Group, gpath: &str, m: &MotionTable) -> Result<()> {
    let full = format!("{gpath}/motion");
    let mg = g
        .create_group("motion")
        .map_err(h5err(path, &format!("creating group {full}")))?;
    let a = AttrWriter {
        path,
        loc: &mg,
        obj: &full,
    };
    a.str("method", &m.method)?;
    a.scalar("dose_weighted", &m.dose_weighted)?;
    mg.new_dataset_builder()
        .with_data(&Array1::from(m.rows.clone()))
        .create("frames")
        .map(|_| ())
        .map_err(h5err(path, &format!("writing {full}/frames")))
}

fn write_picking(path: &Path, g: &Group, gpath: &str, p: &PickingRecord) -> Result<()> {
    let full = format!("{gpath}/picking");
    let pg = g
        .create_group("picking")
        .map_err(h5err(path, &format!("creating group {full}")))?;
    let a = AttrWriter {
        path,
        loc: &pg,
        obj: &full,
    };
    a.u64("bin", p.bin)?;
    a.f64("pixel_a", p.pixel_a)?;
    a.str("template", &p.template)?;
    a.f64("angular_step_deg", p.angular_step_deg)?;
    a.u64("n_rotations", p.rotations_zyz_deg.len())?;
    a.f64("n_false_alarms", p.n_false_alarms)?;
    a.f64("radius_a", p.radius_a)?;
    a.f64("sigma", p.sigma)?;
    a.f64("threshold", p.threshold)?;
    a.str("axes", "zyx")?;
    pg.new_dataset_builder()
        .chunk(tomogram_chunk(p.scores.shape()))
        .with_data(p.scores.view())
        .create("scores")
        .map_err(h5err(path, &format!("writing {full}/scores")))?;
    pg.new_dataset_builder()
        .chunk(tomogram_chunk(p.rotation_index.shape()))
        .with_data(p.rotation_index.view())
        .create("rotation_index")
        .map_err(h5err(path, &format!("writing {full}/rotation_index")))?;
    let rots = ndarray::Array2::from_shape_fn((p.rotations_zyz_deg.len(), 3), |(i, k)| {
        p.rotations_zyz_deg[i][k]
    });
    pg.new_dataset_builder()
        .with_data(rots.view())
        .create("rotations")
        .map_err(h5err(path, &format!("writing {full}/rotations")))?;
    pg.new_dataset_builder()
        .with_data(&Array1::from(p.particles.clone()))
        .create("particles")
        .map(|_| ())
        .map_err(h5err(path, &format!("writing {full}/particles")))
}

/// Write a file holding only `/tilt_series/<name>/picking` (for `lamella pick`), atomically.
pub fn write_picking_file(path: &Path, name: &str, p: &PickingRecord) -> Result<()> {
    check_component(path, "name", name)?;
    write_h5_atomic(path, |file| {
        let gpath = series_group(name);
        let g = file
            .create_group(&gpath)
            .map_err(h5err(path, &format!("creating group {gpath}")))?;
        write_picking(path, &g, &gpath, p)?;
        AttrWriter {
            path,
            loc: &g,
            obj: &gpath,
        }
        .scalar("complete", &true)
    })
}

/// The picks stored in `/tilt_series/<name>/picking/particles` of `path`.
pub fn read_picks(path: &Path, name: &str) -> Result<Vec<PickRow>> {
    let file = open_file(path)?;
    let dpath = format!("{}/picking/particles", series_group(name));
    file.dataset(&dpath)
        .and_then(|d| d.read_raw::<PickRow>())
        .map_err(h5err(path, &format!("reading {dpath}")))
}

fn write_stage(path: &Path, g: &Group, gpath: &str, s: &StageRecord) -> Result<()> {
    let rel = format!("stages/{}", s.name);
    let full = format!("{gpath}/{rel}");
    let sg = g
        .create_group(&rel)
        .map_err(h5err(path, &format!("creating group {full}")))?;
    let a = AttrWriter {
        path,
        loc: &sg,
        obj: &full,
    };
    a.str("input_hash", &s.input_hash)?;
    a.f64("seconds", s.seconds)?;
    a.scalar("complete", &s.complete)
}

/// Read a scalar attribute, naming the file and object on failure.
fn read_attr<T: H5Type>(path: &Path, loc: &Location, obj: &str, name: &str) -> Result<T> {
    loc.attr(name)
        .and_then(|a| a.read_scalar::<T>())
        .map_err(h5err(path, &format!("reading attribute {name} of {obj}")))
}

fn read_str_attr(path: &Path, loc: &Location, obj: &str, name: &str) -> Result<String> {
    read_attr::<VarLenUnicode>(path, loc, obj, name).map(|s| s.as_str().to_string())
}

/// True when `loc` has attribute `name` equal to boolean true.
fn attr_true(loc: &Location, name: &str) -> bool {
    loc.attr(name)
        .and_then(|a| a.read_scalar::<bool>())
        .unwrap_or(false)
}

/// Does the link `hpath` (absolute, e.g. `/tilt_series/a/stages/x`) exist in `file`,
/// checking each component (HDF5 errors on a missing intermediate group)?
fn link_exists(file: &hdf5::File, hpath: &str) -> bool {
    let mut cur = String::new();
    for part in hpath.split('/').filter(|p| !p.is_empty()) {
        let parent = if cur.is_empty() { "/" } else { cur.as_str() };
        let Ok(g) = file.group(parent) else {
            return false;
        };
        if !g.link_exists(part) {
            return false;
        }
        cur = format!("{cur}/{part}");
    }
    true
}

pub(crate) fn open_file(path: &Path) -> Result<hdf5::File> {
    hdf5::File::open(path).map_err(h5err(path, "opening the file"))
}

/// The record of stage `stage` of series `name` in `path` (a `ts/<name>.h5` or the master
/// `lamella.h5`), for `--resume`: `Ok(None)` when the file, the series or the stage is
/// missing, or when the series or the stage is not marked `complete`; a `path.partial`
/// left by a crashed write is never looked at. `Err` when the file exists but cannot be read
/// as HDF5.
pub fn read_series_stage(path: &Path, name: &str, stage: &str) -> Result<Option<StageRecord>> {
    if !path.is_file() {
        return Ok(None);
    }
    let file = open_file(path)?;
    let gpath = series_group(name);
    let spath = format!("{gpath}/stages/{stage}");
    if !link_exists(&file, &gpath) {
        return Ok(None);
    }
    let g = file
        .group(&gpath)
        .map_err(h5err(path, &format!("opening {gpath}")))?;
    if !attr_true(&g, "complete") || !link_exists(&file, &spath) {
        return Ok(None);
    }
    let sg = file
        .group(&spath)
        .map_err(h5err(path, &format!("opening {spath}")))?;
    if !attr_true(&sg, "complete") {
        return Ok(None);
    }
    Ok(Some(StageRecord {
        name: stage.to_string(),
        input_hash: read_str_attr(path, &sg, &spath, "input_hash")?,
        seconds: read_attr::<f64>(path, &sg, &spath, "seconds")?,
        complete: true,
    }))
}

/// The geometry of series `name` stored in `path` (series file or master): image size and
/// pixel (Å), optics, handedness and the per-tilt table in stack order.
pub fn read_series_geometry(path: &Path, name: &str) -> Result<TiltSeriesGeometry> {
    let file = open_file(path)?;
    let gpath = series_group(name);
    let g = file
        .group(&gpath)
        .map_err(h5err(path, &format!("opening {gpath}")))?;
    let tpath = format!("{gpath}/alignment/tilts");
    let rows: Vec<TiltRow> = g
        .dataset("alignment/tilts")
        .and_then(|d| d.read_raw::<TiltRow>())
        .map_err(h5err(path, &format!("reading {tpath}")))?;
    let get_f = |n: &str| read_attr::<f64>(path, &g, &gpath, n);
    let get_u = |n: &str| read_attr::<u64>(path, &g, &gpath, n).map(|v| v as usize);
    Ok(TiltSeriesGeometry {
        nx: get_u("nx")?,
        ny: get_u("ny")?,
        pixel_a: get_f("pixel_a")?,
        hand: get_f("hand")?,
        optics: Optics {
            voltage_kv: get_f("voltage_kv")?,
            cs_mm: get_f("cs_mm")?,
            amplitude_contrast: get_f("amplitude_contrast")?,
        },
        tilts: rows
            .iter()
            .map(|r| TiltImage {
                tilt_deg: r.tilt_deg,
                axis_deg: r.axis_deg,
                x_tilt_deg: r.x_tilt_deg,
                shift_x_a: r.shift_x_a,
                shift_y_a: r.shift_y_a,
                defocus_u_a: r.defocus_u_a,
                defocus_v_a: r.defocus_v_a,
                astig_angle_deg: r.astig_angle_deg,
                dose_e_a2: r.dose_e_a2,
                pre_exposure_e_a2: r.pre_exposure_e_a2,
                acquisition_index: r.acquisition_index as usize,
            })
            .collect(),
    })
}

/// The tomogram `tomograms/bin<bin>/<kind>` of series `name` in `path` (series file or
/// master), `f32 [z, y, x]`.
pub fn read_tomogram(path: &Path, name: &str, bin: usize, kind: &str) -> Result<Array3<f32>> {
    let file = open_file(path)?;
    let dpath = format!("{}/tomograms/bin{bin}/{kind}", series_group(name));
    file.dataset(&dpath)
        .and_then(|d| d.read::<f32, Ix3>())
        .map_err(h5err(path, &format!("reading dataset {dpath}")))
}

/// Write the run's master file `path` (normally `<out>/lamella.h5`) atomically, on rank 0.
///
/// Root attributes: `program_version`, `config_text`, `command_line`, `ranks` (u64), `hosts`
/// (1-D array of strings, rank order), `start_time`, `end_time` (RFC 3339 UTC). Groups
/// `/tilt_series`, `/particles` and `/sta`; `/tilt_series/<name>` is an external link to
/// `<rel path>:/tilt_series/<name>` for each `(name, rel path)` in `series`. Give `rel path`
/// relative to the directory of `path` (e.g. `"ts/a.h5"`): HDF5 then finds it from any
/// working directory. `/sta/<job>` likewise links `<rel path>:/sta/<job>` for each `(job,
/// rel path)` in `sta` (files written by [`crate::io::sta_container::write_sta_file`]).
pub fn write_master(
    path: &Path,
    info: &RunInfo,
    series: &[(String, String)],
    sta: &[(String, String)],
) -> Result<()> {
    for (name, rel) in series.iter().chain(sta) {
        check_component(path, "tilt series name", name)?;
        if rel.is_empty() {
            return Err(Error::bad_input(
                path,
                format!("tilt series {name}"),
                "empty file path for the external link: give e.g. \"ts/<name>.h5\"",
            ));
        }
    }
    write_h5_atomic(path, |file| {
        let a = AttrWriter {
            path,
            loc: file,
            obj: "/",
        };
        a.str("program_version", &info.program_version)?;
        a.str("config_text", &info.config_text)?;
        a.str("command_line", &info.command_line)?;
        a.u64("ranks", info.ranks)?;
        a.str_array("hosts", &info.hosts)?;
        a.str("start_time", &info.start_time)?;
        a.str("end_time", &info.end_time)?;
        file.create_group("particles")
            .map_err(h5err(path, "creating group /particles"))?;
        let st = file
            .create_group("sta")
            .map_err(h5err(path, "creating group /sta"))?;
        for (job, rel) in sta {
            let target = format!("/sta/{job}");
            st.link_external(rel, &target, job)
                .map_err(h5err(path, &format!("linking {target} to {rel}:{target}")))?;
        }
        let ts = file
            .create_group("tilt_series")
            .map_err(h5err(path, "creating group /tilt_series"))?;
        for (name, rel) in series {
            ts.link_external(rel, &series_group(name), name)
                .map_err(h5err(
                    path,
                    &format!("linking /tilt_series/{name} to {rel}:/tilt_series/{name}"),
                ))?;
        }
        Ok(())
    })
}

/// Read the root attributes of a master file back into a [`RunInfo`].
pub fn read_run_info(path: &Path) -> Result<RunInfo> {
    let file = open_file(path)?;
    let s = |n: &str| read_str_attr(path, &file, "/", n);
    let hosts = file
        .attr("hosts")
        .and_then(|a| a.read_raw::<VarLenUnicode>())
        .map_err(h5err(path, "reading attribute hosts of /"))?;
    Ok(RunInfo {
        program_version: s("program_version")?,
        config_text: s("config_text")?,
        command_line: s("command_line")?,
        ranks: read_attr::<u64>(path, &file, "/", "ranks")? as usize,
        hosts: hosts.iter().map(|h| h.as_str().to_string()).collect(),
        start_time: s("start_time")?,
        end_time: s("end_time")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small record with distinct values in every column and a non-symmetric volume.
    pub(crate) fn sample(name: &str) -> SeriesRecord {
        let angles = [-6.0, -3.0, 0.0, 3.0, 6.0];
        let mut geometry = TiltSeriesGeometry::from_angles(64, 48, 2.5, &angles, 84.5);
        geometry.hand = -1.0;
        geometry.optics.voltage_kv = 200.0;
        for (i, t) in geometry.tilts.iter_mut().enumerate() {
            let f = i as f64;
            t.tilt_deg += 0.1 * f;
            t.x_tilt_deg = 0.01 * f;
            t.shift_x_a = 1.5 * f - 2.0;
            t.shift_y_a = -0.5 * f;
            t.defocus_u_a = 30000.0 + 100.0 * f;
            t.defocus_v_a = 29000.0 + 100.0 * f;
            t.astig_angle_deg = 10.0 * f;
            t.dose_e_a2 = 3.0;
            t.pre_exposure_e_a2 = 3.0 * f;
            t.acquisition_index = (i + 2) % 5;
        }
        let data = Array3::from_shape_fn((6, 5, 7), |(z, y, x)| {
            (z * 100 + y * 10 + x) as f32 * 0.5 - 3.0
        });
        SeriesRecord {
            name: name.to_string(),
            geometry,
            nominal_tilts_deg: angles.to_vec(),
            tomograms: vec![
                TomogramRecord {
                    bin: 4,
                    pixel_a: 10.0,
                    kind: "full".into(),
                    data: data.clone(),
                    mrc_path: Some(format!("tomograms/{name}_bin4.mrc")),
                },
                TomogramRecord {
                    bin: 4,
                    pixel_a: 10.0,
                    kind: "even".into(),
                    data: data.mapv(|v| -v),
                    mrc_path: None,
                },
            ],
            stages: vec![
                StageRecord {
                    name: "reconstruct".into(),
                    input_hash: input_hash(&[b"stack", b"bin=4"]),
                    seconds: 1.25,
                    complete: true,
                },
                StageRecord {
                    name: "denoise".into(),
                    input_hash: input_hash(&[b"x"]),
                    seconds: 0.5,
                    complete: false,
                },
            ],
            truth_correlation: Some(0.875),
            rank: 2,
            alignment: None,
            motion: None,
            ctf: Some(crate::ctf::stage::CtfTable {
                rows: (0..5)
                    .map(|i| crate::ctf::stage::CtfRow {
                        tilt_deg: angles[i],
                        defocus_u_a: 30000.0 + 10.0 * i as f64,
                        defocus_v_a: 29500.0,
                        astig_angle_deg: 5.0 * i as f64,
                        score: 0.25,
                        fit_resolution_a: 7.5,
                        refitted: i == 3,
                    })
                    .collect(),
                hand: -1.0,
                hand_evidence: -0.125,
                hand_tilts: 2,
            }),
            picking: None,
        }
    }

    #[test]
    fn input_hash_is_sha256_with_length_prefixes() {
        let h = input_hash(&[]);
        // SHA-256 of the empty message
        assert_eq!(
            h,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(input_hash(&[b"ab", b"c"]).len(), 64);
        assert_ne!(input_hash(&[b"ab", b"c"]), input_hash(&[b"a", b"bc"]));
        assert_eq!(input_hash(&[b"ab", b"c"]), input_hash(&[b"ab", b"c"]));
    }

    #[test]
    fn series_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ts").join("a.h5");
        let rec = sample("a");
        write_series_file(&p, &rec).unwrap();
        assert!(p.is_file() && !partial_path(&p).exists());

        let geo = read_series_geometry(&p, "a").unwrap();
        assert_eq!(geo, rec.geometry);
        for t in &rec.tomograms {
            let v = read_tomogram(&p, "a", t.bin, &t.kind).unwrap();
            assert_eq!(v, t.data);
        }
        let s = read_series_stage(&p, "a", "reconstruct").unwrap().unwrap();
        assert_eq!(s, rec.stages[0]);
        assert_eq!(read_series_ctf(&p, "a").unwrap(), rec.ctf);
        // incomplete stage, missing stage, missing series, missing file
        assert_eq!(read_series_stage(&p, "a", "denoise").unwrap(), None);
        assert_eq!(read_series_stage(&p, "a", "ctf").unwrap(), None);
        assert_eq!(read_series_stage(&p, "b", "reconstruct").unwrap(), None);
        assert_eq!(
            read_series_stage(&dir.path().join("none.h5"), "a", "reconstruct").unwrap(),
            None
        );
        // the chunk layout is one z-slice
        let f = hdf5::File::open(&p).unwrap();
        let ds = f.dataset("/tilt_series/a/tomograms/bin4/full").unwrap();
        assert_eq!(ds.chunk(), Some(vec![1, 5, 7]));
    }

    #[test]
    fn master_links_series_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a", "b"] {
            write_series_file(&dir.path().join(format!("ts/{n}.h5")), &sample(n)).unwrap();
        }
        let info = RunInfo {
            program_version: crate::VERSION.into(),
            config_text: "[run]\nname = \"x\"\n".into(),
            command_line: "lamella run -c x.toml".into(),
            ranks: 2,
            hosts: vec!["n1".into(), "n2".into()],
            start_time: "2025-01-31T12:00:00Z".into(),
            end_time: "2025-01-31T12:05:00Z".into(),
        };
        let m = dir.path().join("lamella.h5");
        let series = vec![
            ("a".to_string(), "ts/a.h5".to_string()),
            ("b".to_string(), "ts/b.h5".to_string()),
        ];
        write_master(&m, &info, &series, &[]).unwrap();
        assert_eq!(read_run_info(&m).unwrap(), info);
        // reading through the external links
        let rec = sample("b");
        assert_eq!(read_series_geometry(&m, "b").unwrap(), rec.geometry);
        assert_eq!(
            read_tomogram(&m, "b", 4, "full").unwrap(),
            rec.tomograms[0].data
        );
        assert_eq!(
            read_series_stage(&m, "a", "reconstruct").unwrap().unwrap(),
            rec.stages[0]
        );
        let f = hdf5::File::open(&m).unwrap();
        assert!(f.group("particles").is_ok() && f.group("sta").is_ok());
    }

    #[test]
    fn failed_write_leaves_no_file_and_keeps_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ts/a.h5");
        // duplicate tomogram: HDF5 fails half-way through the file
        let mut bad = sample("a");
        bad.tomograms[1].kind = "full".into();
        let e = write_series_file(&p, &bad).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Hdf5 { .. }), "{msg}");
        assert!(
            msg.contains("a.h5") && msg.contains("tomograms/bin4/full"),
            "{msg}"
        );
        assert!(!p.exists() && !partial_path(&p).exists());

        // an existing file survives a failed rewrite
        let good = sample("a");
        write_series_file(&p, &good).unwrap();
        assert!(write_series_file(&p, &bad).is_err());
        assert_eq!(read_series_geometry(&p, "a").unwrap(), good.geometry);
        assert!(!partial_path(&p).exists());
    }

    #[test]
    fn invalid_records_are_rejected_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.h5");
        let mut r = sample("a");
        r.nominal_tilts_deg.pop();
        let e = write_series_file(&p, &r).unwrap_err();
        assert!(e.to_string().contains("nominal_tilts_deg"), "{e}");
        let mut r = sample("a/b");
        r.name = "a/b".into();
        assert!(matches!(
            write_series_file(&p, &r),
            Err(Error::BadInput { .. })
        ));
        let mut r = sample("a");
        r.tomograms[0].kind = "half1".into();
        assert!(write_series_file(&p, &r)
            .unwrap_err()
            .to_string()
            .contains("half1"));
        assert!(!p.exists() && !partial_path(&p).exists());
    }

    #[test]
    fn partial_files_are_ignored_by_resume() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ts/a.h5");
        // a crash after writing everything but before the rename leaves only a.h5.partial
        write_series_file(&p, &sample("a")).unwrap();
        std::fs::rename(&p, partial_path(&p)).unwrap();
        assert_eq!(read_series_stage(&p, "a", "reconstruct").unwrap(), None);
    }

    #[test]
    fn garbage_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.h5");
        std::fs::write(&p, b"not hdf5").unwrap();
        let e = read_series_stage(&p, "a", "reconstruct").unwrap_err();
        assert!(e.to_string().contains("a.h5"), "{e}");
    }

    #[test]
    fn picking_file_round_trips_the_picks() {
        let dir = std::env::temp_dir().join(format!("lamella_pickh5_{}", std::process::id()));
        let path = dir.join("p.h5");
        let rec = PickingRecord {
            bin: 2,
            pixel_a: 20.0,
            template: "6z6u.pdb".into(),
            angular_step_deg: 30.0,
            n_false_alarms: 1.0,
            radius_a: 70.0,
            sigma: 0.03,
            threshold: 0.2,
            scores: Array3::from_elem((3, 4, 5), 0.5),
            rotation_index: Array3::from_elem((3, 4, 5), 7),
            rotations_zyz_deg: vec![[1.0, 2.0, 3.0]; 8],
            particles: vec![PickRow {
                x_a: 1.0,
                y_a: -2.0,
                z_a: 3.0,
                rot_deg: 10.0,
                tilt_deg: 20.0,
                psi_deg: 30.0,
                score: 0.5,
            }],
        };
        write_picking_file(&path, "ts_a", &rec).unwrap();
        assert_eq!(read_picks(&path, "ts_a").unwrap(), rec.particles);
        let _ = std::fs::remove_dir_all(dir);
    }
}
