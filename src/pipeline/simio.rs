//! Writing simulated tilt series to disk (`lamella simulate`, and the simulate stage of
//! `lamella run`), and finding `shared/data` (structures used by the presets).
//!
//! Per series `DIR/<name>.mrc` (stack), `.rawtlt` (nominal angles, as the microscope
//! reports), `.tlt` + `.xf` (the TRUE alignment, as a perfect IMOD alignment would give),
//! `.mdoc` (nominal angles, dose, pixel, axis), `<name>_truth.mrc` (clean volume at the
//! stack pixel size), `<name>_membrane.mrc` (membrane mask), `<name>_truth.json`, and with
//! movies `<name>_frames/<name>_<tilt>.mrcs`. `DIR/truth.json` collects every series.

use crate::io::atomic::write_bytes_atomic;
use crate::io::imod::{self, XfRow};
use crate::io::mdoc::{self, MdocTilt};
use crate::io::mrc::{self, MrcKind};
use crate::sim::{SeriesTruth, SimulatedSeries, Truth};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Locate `shared/data`: `explicit`, else `$LAMELLA_SHARED_DATA`, else `./shared/data`,
/// `../shared/data`, or `shared/data` beside the repository that holds the executable.
pub fn find_shared_data(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_dir() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::Config(format!(
                "shared data directory {} does not exist: fix `shared_data` / --shared-data",
                p.display()
            )))
        };
    }
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("LAMELLA_SHARED_DATA") {
        cands.push(PathBuf::from(p));
    }
    cands.push(PathBuf::from("shared/data"));
    cands.push(PathBuf::from("../shared/data"));
    if let Ok(exe) = std::env::current_exe() {
        // <repo>/target/<profile>/lamella -> <repo>/../shared/data
        for anc in exe.ancestors().skip(1).take(5) {
            cands.push(anc.join("shared/data"));
            cands.push(anc.join("../shared/data"));
        }
    }
    cands.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    cands
        .into_iter()
        .find(|p| p.join("structures").is_dir())
        .ok_or_else(|| {
            Error::Config(
                "cannot find shared/data (atomic models for the simulator): set \
                 LAMELLA_SHARED_DATA or --shared-data to the directory holding structures/"
                    .into(),
            )
        })
}

/// Write one simulated series into `dir` (see the module docs for the files).
pub fn write_series(dir: &Path, s: &SimulatedSeries) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let g = &s.geometry;
    let name = &s.name;
    mrc::write(
        &dir.join(format!("{name}.mrc")),
        s.stack.view(),
        g.pixel_a as f32,
        MrcKind::ImageStack,
    )?;
    imod::write_tlt(&dir.join(format!("{name}.rawtlt")), &s.nominal_tilts_deg)?;
    let true_angles: Vec<f64> = g.tilts.iter().map(|t| t.tilt_deg).collect();
    imod::write_tlt(&dir.join(format!("{name}.tlt")), &true_angles)?;
    let xf: Vec<XfRow> = g
        .tilts
        .iter()
        .map(|t| XfRow::from_axis_shift(t.axis_deg, t.shift_x_a, t.shift_y_a, g.pixel_a))
        .collect();
    imod::write_xf(&dir.join(format!("{name}.xf")), &xf)?;
    let axis = g.tilts.first().map(|t| t.axis_deg).unwrap_or(0.0);
    let mtilts: Vec<MdocTilt> = g
        .tilts
        .iter()
        .zip(&s.nominal_tilts_deg)
        .enumerate()
        .map(|(i, (t, &nominal))| MdocTilt {
            z_value: i,
            tilt_deg: nominal,
            dose_e_a2: t.dose_e_a2,
            pixel_a: Some(g.pixel_a),
            sub_frame_path: if s.frames.is_empty() {
                None
            } else {
                Some(format!("{name}_frames/{name}_{i:03}.mrcs"))
            },
            sub_frame_file: None,
            rotation_angle: Some(axis),
            date_time: None,
            num_sub_frames: s.frames.get(i).map(|f| f.dim().0),
            prior_record_dose: Some(t.pre_exposure_e_a2),
        })
        .collect();
    mdoc::write_mdoc(
        &dir.join(format!("{name}.mdoc")),
        &format!("{name}.mrc"),
        g.nx,
        g.ny,
        g.pixel_a,
        axis,
        &mtilts,
    )?;
    mrc::write(
        &dir.join(format!("{name}_truth.mrc")),
        s.truth_volume.view(),
        g.pixel_a as f32,
        MrcKind::Volume,
    )?;
    let mask = s.membrane_mask.mapv(|v| v as f32);
    mrc::write(
        &dir.join(format!("{name}_membrane.mrc")),
        mask.view(),
        g.pixel_a as f32,
        MrcKind::Volume,
    )?;
    if !s.frames.is_empty() {
        let fdir = dir.join(format!("{name}_frames"));
        for (i, f) in s.frames.iter().enumerate() {
            mrc::write(
                &fdir.join(format!("{name}_{i:03}.mrcs")),
                f.view(),
                g.pixel_a as f32,
                MrcKind::ImageStack,
            )?;
        }
    }
    write_json(&dir.join(format!("{name}_truth.json")), &s.truth)
}

/// Write `dir/truth.json` for all series, collecting `dir/<name>_truth.json` files.
pub fn write_truth_index(dir: &Path, seed: u64, preset: &str, names: &[String]) -> Result<()> {
    let mut series = Vec::with_capacity(names.len());
    for n in names {
        let p = dir.join(format!("{n}_truth.json"));
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let t: SeriesTruth = serde_json::from_str(&text)
            .map_err(|e| Error::bad_input(&p, "truth", format!("not a lamella truth file: {e}")))?;
        series.push(t);
    }
    let truth = Truth {
        seed,
        preset: preset.to_string(),
        series,
    };
    write_json(&dir.join("truth.json"), &truth)
}

/// Read a simulator truth file (`sim/<name>_truth.json`, written by [`write_series`]).
pub fn read_truth(path: &Path) -> Result<SeriesTruth> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::bad_input(path, "json", format!("not a lamella truth file: {e}")))
}

/// Serialise `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Runtime(format!("{}: cannot serialise: {e}", path.display())))?;
    write_bytes_atomic(path, text.as_bytes())
}
