//! The `[motioncorr]` stage (before `[ctf]`/`[align]`): the movies of a tilt series, found
//! through its `.mdoc` (`SubFramePath`, or file names matched to tilts), aligned globally and
//! summed with dose weighting, tilt by tilt with a checkpoint per tilt
//! ([`crate::motion::batch`]); the corrected stack replaces the series' stack for the rest of
//! the chain. Files in `<out>/motioncorr/` ([`crate::motion::output`]); the per-frame table
//! goes into the container (`/tilt_series/<name>/motion/frames`).
//!
//! Simulated runs: the simulator makes movies for every series when `[motioncorr]` is
//! present ([`MotionCorrConfig::apply_to_sim`]) and writes them with the `.mdoc`; the true
//! drift in `sim/<name>_truth.json` gives the trajectory error.

use super::inputs::LoadedSeries;
use super::summary::MotionSummary;
use crate::io::container::{input_hash, FrameShiftRow, MotionTable};
use crate::io::mdoc::Mdoc;
use crate::io::mrc;
use crate::motion::batch::{correct_tilts, SeriesMovies};
use crate::motion::gain::{Gain, GainTransform};
use crate::motion::local::LocalParams;
use crate::motion::movie::locate_movies;
use crate::motion::output::{MotionFiles, MotionRecord};
use crate::motion::{rms_trajectory_error, Exposure, GlobalParams, MotionParams};
use crate::sim::SeriesParams;
use crate::{Error, Result, VERSION};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `[motioncorr]`: motion correction of the tilt movies.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MotionCorrConfig {
    /// Exposure per frame, e/Å² (default: the `.mdoc`'s `ExposureDose` / frames per movie).
    #[serde(default)]
    pub dose_per_frame_e_a2: Option<f64>,
    /// Dose-weight the sums (Grant & Grigorieff 2015).
    #[serde(default = "yes")]
    pub dose_weighting: bool,
    /// B-factor of the alignment low-pass, Å².
    #[serde(default = "default_bfactor")]
    pub bfactor_a2: f64,
    /// Folder holding the movies when `SubFramePath` does not point at them.
    #[serde(default)]
    pub frames_dir: Option<PathBuf>,
    /// Gain reference (MRC or TIFF) multiplied into every frame.
    #[serde(default)]
    pub gain: Option<PathBuf>,
    /// Gain rotation code (MotionCor2 `-RotGain` / RELION `--gain_rot`: 0–3 quarter turns).
    #[serde(default)]
    pub gain_rot: u8,
    /// Gain flip code (MotionCor2 `-FlipGain` / RELION `--gain_flip`: 0 none, 1 upside down,
    /// 2 left-right).
    #[serde(default)]
    pub gain_flip: u8,
    /// Patch grid `[x, y]` of the local (beam-induced) motion model on top of the global
    /// alignment; absent = global only.
    #[serde(default)]
    pub local_patches: Option<[usize; 2]>,
    /// Simulated runs: movie frames per tilt.
    #[serde(default = "default_sim_frames")]
    pub sim_frames_per_tilt: usize,
    /// Simulated runs: drift per frame, pixels.
    #[serde(default = "default_sim_drift")]
    pub sim_drift_px_per_frame: f64,
    /// Simulated runs: smooth local deformation at the last frame, pixels (0 = none).
    #[serde(default)]
    pub sim_local_motion_px: f64,
}

impl Default for MotionCorrConfig {
    fn default() -> Self {
        MotionCorrConfig {
            dose_per_frame_e_a2: None,
            dose_weighting: true,
            bfactor_a2: default_bfactor(),
            frames_dir: None,
            gain: None,
            gain_rot: 0,
            gain_flip: 0,
            local_patches: None,
            sim_frames_per_tilt: default_sim_frames(),
            sim_drift_px_per_frame: default_sim_drift(),
            sim_local_motion_px: 0.0,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_bfactor() -> f64 {
    GlobalParams::default().bfactor_a2
}
fn default_sim_frames() -> usize {
    10
}
fn default_sim_drift() -> f64 {
    0.5
}

impl MotionCorrConfig {
    /// Make the simulator write movies for `p`: `sim_frames_per_tilt` frames drifting by
    /// `sim_drift_px_per_frame` pixels.
    pub fn apply_to_sim(&self, p: &mut SeriesParams) {
        p.frames_per_tilt = self.sim_frames_per_tilt;
        p.drift_a_per_frame = self.sim_drift_px_per_frame * p.pixel_a;
        p.local_motion_a = self.sim_local_motion_px * p.pixel_a;
    }

    /// Check the values; errors name the config file and the key.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let err = |m: String| Err(Error::Config(format!("{}: motioncorr.{m}", path.display())));
        if let Some(d) = self.dose_per_frame_e_a2 {
            if !(d.is_finite() && d > 0.0) {
                return err(format!("dose_per_frame_e_a2 = {d}: must be > 0 e/Å²"));
            }
        }
        if !(self.bfactor_a2.is_finite() && self.bfactor_a2 > 0.0) {
            return err(format!("bfactor_a2 = {}: must be > 0 Å²", self.bfactor_a2));
        }
        if self.sim_frames_per_tilt < 2 {
            return err(format!(
                "sim_frames_per_tilt = {}: need at least 2 frames",
                self.sim_frames_per_tilt
            ));
        }
        if self.gain_rot > 3 || self.gain_flip > 2 {
            return err(format!(
                "gain_rot = {}, gain_flip = {}: rotation 0-3 (quarter turns), flip 0-2",
                self.gain_rot, self.gain_flip
            ));
        }
        if let Some([px, py]) = self.local_patches {
            if px < 2 || py < 2 || px > 20 || py > 20 {
                return err(format!(
                    "local_patches = [{px}, {py}]: give 2 to 20 patches per axis (e.g. [5, 5])"
                ));
            }
        }
        if !(self.sim_local_motion_px.is_finite() && self.sim_local_motion_px >= 0.0) {
            return err(format!(
                "sim_local_motion_px = {}: must be ≥ 0 pixels",
                self.sim_local_motion_px
            ));
        }
        if !(self.sim_drift_px_per_frame.is_finite() && self.sim_drift_px_per_frame >= 0.0) {
            return err(format!(
                "sim_drift_px_per_frame = {}: must be ≥ 0 pixels",
                self.sim_drift_px_per_frame
            ));
        }
        Ok(())
    }

    /// The library parameters.
    pub fn params(&self) -> MotionParams {
        MotionParams {
            global: GlobalParams {
                bfactor_a2: self.bfactor_a2,
                ..Default::default()
            },
            dose_weighting: self.dose_weighting,
            local: self.local_patches.map(|patches| LocalParams {
                patches,
                ..Default::default()
            }),
        }
    }

    /// The gain reference, oriented, when one is set.
    pub fn load_gain(&self) -> Result<Option<Gain>> {
        self.gain
            .as_deref()
            .map(|p| {
                Gain::load(
                    p,
                    GainTransform {
                        rotate: self.gain_rot,
                        flip: self.gain_flip,
                    },
                )
            })
            .transpose()
    }
}

/// The movies and exposures of the series described by `mdoc_path` (stack order =
/// `ZValue` order), pixel `pixel_a` Å (`None`: the `.mdoc`'s `PixelSpacing`).
///
/// Exposure per tilt: per frame `dose_per_frame_e_a2` or the tilt's `ExposureDose` over its
/// frame count (`NumSubFrames`, else the movie's header); before it `PriorRecordDose`, else
/// the sum of the doses of the tilts before it in the `.mdoc`'s (acquisition) order.
pub fn series_movies(
    name: &str,
    mdoc_path: &Path,
    mc: &MotionCorrConfig,
    pixel_a: Option<f64>,
    voltage_kv: f64,
) -> Result<SeriesMovies> {
    let md = Mdoc::read(mdoc_path)?;
    let tilts = md.tilts();
    if tilts.is_empty() {
        return Err(Error::bad_input(
            mdoc_path,
            "[ZValue]",
            "no tilt sections: give the tilt series' .mdoc (one [ZValue = n] per tilt)",
        ));
    }
    let pixel_a = pixel_a.or_else(|| md.pixel_spacing_a()).ok_or_else(|| {
        Error::bad_input(
            mdoc_path,
            "PixelSpacing",
            "missing: give the pixel size (--pixel, or [[input]] pixel_a)",
        )
    })?;
    let movies = locate_movies(mdoc_path, &tilts, mc.frames_dir.as_deref())?;
    let mut prior = vec![0.0; tilts.len()];
    let mut acc = 0.0;
    for (i, t) in tilts.iter().enumerate() {
        prior[i] = t.prior_record_dose.unwrap_or(acc);
        acc += t.dose_e_a2;
    }
    let mut order: Vec<usize> = (0..tilts.len()).collect();
    order.sort_by_key(|&i| tilts[i].z_value);
    let exposures = order
        .iter()
        .zip(&movies)
        .map(|(&i, m)| {
            let t = &tilts[i];
            let per = match mc.dose_per_frame_e_a2 {
                Some(d) => d,
                None => {
                    let n = match t.num_sub_frames {
                        Some(n) => n,
                        None => mrc::read_header(m)?.nz,
                    };
                    t.dose_e_a2 / n.max(1) as f64
                }
            };
            Ok((per > 0.0).then_some(Exposure {
                pre_exposure_e_a2: prior[i],
                per_frame_e_a2: per,
                voltage_kv,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    if mc.dose_weighting && exposures.iter().any(Option::is_none) {
        tracing::warn!(
            mdoc = %mdoc_path.display(),
            "some tilts have no ExposureDose: they are summed without dose weighting \
             (set motioncorr.dose_per_frame_e_a2)"
        );
    }
    Ok(SeriesMovies {
        name: name.to_string(),
        movies,
        exposures,
        pixel_a,
        gain: mc.load_gain()?,
    })
}

/// Hash of a series' motion-correction inputs: the version, `key` (what identifies the
/// movies) and the settings.
pub fn stage_hash(key: &str, mc: &MotionCorrConfig) -> String {
    let mc_json = serde_json::to_string(mc).unwrap_or_default();
    input_hash(&[VERSION.as_bytes(), key.as_bytes(), mc_json.as_bytes()])
}

/// Motion-correct a whole series on this rank into `dir`: with `resume`, a series complete
/// with `hash` is read back and finished tilts are kept; otherwise everything is redone.
/// Returns the record and the full stack `[tilt, y, x]`.
pub fn correct_whole_series(
    dir: &Path,
    series: &SeriesMovies,
    mc: &MotionCorrConfig,
    hash: &str,
    resume: bool,
    stop: &dyn Fn() -> bool,
) -> Result<(MotionRecord, ndarray::Array3<f32>)> {
    let files = MotionFiles::new(dir, &series.name);
    if resume {
        if let Some(r) = files.finished(hash)? {
            tracing::info!("motion correction complete with the same inputs: read back");
            return Ok((r, mrc::read(&files.stack)?.data));
        }
    } else {
        files.clear_tilts()?;
    }
    let params = mc.params();
    let all: Vec<usize> = (0..series.movies.len()).collect();
    correct_tilts(series, &files, hash, &all, &params, stop)?;
    files.assemble(series.record(hash, &params), all.len())
}

/// What the stage leaves for the rest of the chain of one series.
pub struct MotionOutcome {
    /// For `summary.json`.
    pub summary: MotionSummary,
    /// For the container.
    pub table: MotionTable,
    /// The stage's input hash.
    pub hash: String,
    /// Seconds spent.
    pub seconds: f64,
    /// The drift plot `(caption, path relative to report/)`.
    pub picture: (String, String),
}

/// The `[motioncorr]` stage of `lamella run` for series `name`, movies listed by `mdoc`:
/// correct into `<out>/motioncorr/` and replace `loaded.stack` by the corrected stack.
/// `key` identifies the series' inputs (hashed with the settings); `truth_json` is the
/// simulator's truth file, for the trajectory error.
///
/// Errors: movies of another size than the stack ([`Error::BadInput`] naming the movie),
/// a `.mdoc` with another tilt count, and those of [`series_movies`] and the correction.
#[allow(clippy::too_many_arguments)]
pub fn run_stage(
    out: &Path,
    mc: &MotionCorrConfig,
    name: &str,
    mdoc: &Path,
    key: &str,
    resume: bool,
    loaded: &mut LoadedSeries,
    truth_json: Option<&Path>,
) -> Result<MotionOutcome> {
    let t0 = Instant::now();
    let dir = out.join("motioncorr");
    let g = &loaded.geometry;
    let series = series_movies(name, mdoc, mc, Some(g.pixel_a), g.optics.voltage_kv)?;
    if series.movies.len() != g.len() {
        return Err(Error::bad_input(
            mdoc,
            "[ZValue]",
            format!(
                "{} movies for a stack of {} tilts: the .mdoc must list one movie per tilt",
                series.movies.len(),
                g.len()
            ),
        ));
    }
    let hash = stage_hash(key, mc);
    let (rec, stack) = correct_whole_series(
        &dir,
        &series,
        mc,
        &hash,
        resume,
        &super::signals::stop_requested,
    )?;
    let (_, ny, nx) = stack.dim();
    if (nx, ny) != (g.nx, g.ny) {
        return Err(Error::bad_input(
            &series.movies[0],
            "frame size",
            format!(
                "{nx}×{ny} frames but the tilt stack is {}×{}: give movies at the stack's \
                 size and pixel",
                g.nx, g.ny
            ),
        ));
    }
    loaded.stack = stack;
    let rms_error_px = truth_json.map(|p| truth_error(p, &rec)).transpose()?;
    let mean_path_px = rec.mean_path_px();
    tracing::info!(
        mean_path_px,
        rms_error_px = rms_error_px.unwrap_or(f64::NAN),
        "motion corrected"
    );
    let f = MotionFiles::new(&dir, name);
    let rel = |p: &Path| {
        p.strip_prefix(out)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    Ok(MotionOutcome {
        summary: MotionSummary {
            method: rec.method.clone(),
            mean_path_px,
            rms_error_px,
            files: [&f.stack, &f.even, &f.odd, &f.record, &f.drift_png]
                .iter()
                .map(|p| rel(p))
                .collect(),
        },
        table: motion_table(&rec),
        hash,
        seconds: t0.elapsed().as_secs_f64(),
        picture: (
            format!("{name}: frame drift per tilt"),
            format!("../{}", rel(&f.drift_png)),
        ),
    })
}

/// The container table of `rec`: one row per frame of every tilt.
pub fn motion_table(rec: &MotionRecord) -> MotionTable {
    let rows = rec
        .tilts
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            t.shifts_px
                .iter()
                .enumerate()
                .map(move |(k, s)| FrameShiftRow {
                    tilt: i as u32,
                    frame: k as u32,
                    shift_x_px: s[0],
                    shift_y_px: s[1],
                    pre_exposure_e_a2: t.pre_exposure_e_a2 + k as f64 * t.per_frame_e_a2,
                    dose_e_a2: t.per_frame_e_a2,
                })
        })
        .collect();
    MotionTable {
        method: rec.method.clone(),
        dose_weighted: rec.dose_weighted,
        rows,
    }
}

/// RMS trajectory error (pixels, each movie's common offset removed) of `rec` against the
/// simulator's truth file `path` (`sim/<name>_truth.json`).
pub fn truth_error(path: &Path, rec: &MotionRecord) -> Result<f64> {
    let t = super::simio::read_truth(path)?;
    let truth: Vec<Vec<[f64; 2]>> = t
        .tilts
        .iter()
        .map(|x| {
            x.frame_drift_a
                .iter()
                .map(|d| [d[0] / rec.pixel_a, d[1] / rec.pixel_a])
                .collect()
        })
        .collect();
    let est: Vec<Vec<[f64; 2]>> = rec.tilts.iter().map(|x| x.shifts_px.clone()).collect();
    Ok(rms_trajectory_error(&est, &truth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_bad_values() {
        let mc: MotionCorrConfig = toml::from_str("").unwrap();
        assert_eq!(mc, MotionCorrConfig::default());
        assert!(mc.dose_weighting && mc.sim_frames_per_tilt == 10);
        let bad = MotionCorrConfig {
            dose_per_frame_e_a2: Some(-1.0),
            ..Default::default()
        };
        let e = bad.validate(Path::new("c.toml")).unwrap_err().to_string();
        assert!(
            e.contains("c.toml") && e.contains("motioncorr.dose_per_frame_e_a2"),
            "{e}"
        );
        assert!(toml::from_str::<MotionCorrConfig>("bfactor = 3").is_err());
    }
}
