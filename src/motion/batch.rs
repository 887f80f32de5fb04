//! Motion correction of a series tilt by tilt with a checkpoint per tilt
//! ([`super::output::MotionFiles::write_tilt`]): the unit that `--resume` skips and that MPI
//! ranks share out (each rank corrects its own tilts of the same series; one rank then
//! [`assembles`](super::output::MotionFiles::assemble) the stacks).

use super::gain::Gain;
use super::movie::read_movie;
use super::output::{MotionFiles, MotionRecord};
use super::series::{correct_movie_local, correct_spectra, rename_movie, MotionParams};
use super::spectral::MovieSpectra;
use super::sum::Exposure;
use crate::{Error, Result};
use std::path::PathBuf;

/// The movies of one tilt series, in stack order.
#[derive(Clone, Debug)]
pub struct SeriesMovies {
    /// Series name (output file stem).
    pub name: String,
    /// Movie file of each tilt.
    pub movies: Vec<PathBuf>,
    /// Exposure of each tilt (`None`: no dose weighting for it).
    pub exposures: Vec<Option<Exposure>>,
    /// Movie pixel size, Å.
    pub pixel_a: f64,
    /// Gain reference multiplied into every frame (`None`: frames are gain-corrected).
    pub gain: Option<Gain>,
}

impl SeriesMovies {
    /// The record [`MotionFiles::assemble`] completes (its `tilts` are filled there).
    pub fn record(&self, input_hash: &str, params: &MotionParams) -> MotionRecord {
        MotionRecord {
            name: self.name.clone(),
            pixel_a: self.pixel_a,
            input_hash: input_hash.to_string(),
            method: if params.local.is_some() {
                "global+local"
            } else {
                "global"
            }
            .into(),
            dose_weighted: params.dose_weighting,
            movies: self
                .movies
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            tilts: Vec::new(),
        }
    }
}

/// Motion-correct tilts `which` (stack indices) of `series` into per-tilt checkpoints in
/// `files`, skipping tilts already finished with `input_hash` (clear the checkpoints first
/// to redo them). `stop()` is checked before every movie: when it returns true the work ends
/// with [`Error::Runtime`] and the finished tilts stay for `--resume`. Returns the number of
/// tilts corrected now (not skipped).
pub fn correct_tilts(
    series: &SeriesMovies,
    files: &MotionFiles,
    input_hash: &str,
    which: &[usize],
    params: &MotionParams,
    stop: &dyn Fn() -> bool,
) -> Result<usize> {
    let mut done = 0;
    for &i in which {
        if files.finished_tilt(i, input_hash).is_some() {
            tracing::debug!(tilt = i, "movie already corrected: skipped");
            continue;
        }
        if stop() {
            return Err(Error::Runtime(format!(
                "motion correction of {} stopped by a signal before tilt {i}; run again with \
                 --resume to continue",
                series.name
            )));
        }
        let path = &series.movies[i];
        let exposure = series.exposures.get(i).and_then(|e| e.as_ref());
        let named = |e| rename_movie(e, &path.display().to_string());
        let (sums, motion) = if params.local.is_some() {
            // local motion works on the frames themselves
            let mut frames = read_movie(path)?;
            if let Some(g) = &series.gain {
                g.apply(&mut frames)?;
            }
            let (s, m, l) = correct_movie_local(frames.view(), series.pixel_a, exposure, params)
                .map_err(named)?;
            if let Some(l) = l {
                tracing::debug!(tilt = i, fit_rms_px = l.fit_rms_px, "local motion");
            }
            (s, m)
        } else {
            let spectra = MovieSpectra::read(path, series.gain.as_ref())?;
            correct_spectra(&spectra, series.pixel_a, exposure, params).map_err(named)?
        };
        files.write_tilt(i, input_hash, &sums, &motion, series.pixel_a)?;
        tracing::debug!(
            tilt = i,
            iterations = motion.iterations,
            path_px = super::output::path_length_px(&motion),
            "movie corrected"
        );
        done += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_before_the_first_movie_leaves_no_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let series = SeriesMovies {
            name: "ts".into(),
            movies: vec![d.path().join("never_read.mrcs"); 2],
            exposures: vec![None, None],
            pixel_a: 1.0,
            gain: None,
        };
        let files = MotionFiles::new(d.path(), "ts");
        let e = correct_tilts(
            &series,
            &files,
            "h",
            &[0, 1],
            &MotionParams::default(),
            &|| true,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("stopped") && e.to_string().contains("--resume"),
            "{e}"
        );
        assert!(files.finished_tilt(0, "h").is_none());
    }
}
