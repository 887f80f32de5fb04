//! Files of a motion-corrected tilt series, in one directory `dir`:
//!
//! - `<name>.mrc`, `<name>_even.mrc`, `<name>_odd.mrc`: the full / even / odd tilt stacks
//!   `[tilt, y, x]` (MRC image stacks, atomic writes);
//! - `<name>_motion.json`: [`MotionRecord`] (per tilt its movie, frame shifts in pixels
//!   relative to frame 0, exposure; plus the input hash used by `--resume`), written last;
//! - `<name>_drift.png`: the trajectories of all tilts (x against y, pixels, each from the
//!   origin), drawn with [`crate::report::plot`];
//! - while the series is in progress, `<name>_tilts/<i>.mrc` (three slices: full, even, odd)
//!   and `<name>_tilts/<i>.json` ([`TiltCheckpoint`]) per finished tilt `i` (stack order):
//!   the unit of checkpointing and of the MPI split of movies ([`super::batch`]). They are
//!   removed once [`assemble`] has written the stacks.

use super::series::TiltMotion;
use super::sum::MovieSums;
use crate::io::atomic::write_bytes_atomic;
use crate::io::mrc::{self, MrcKind};
use crate::report::plot::{write_chart_png, Chart, Series, Style, PALETTE};
use crate::{Error, Result};
use ndarray::{s, Array3, Axis};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The motion of a series as saved in `<name>_motion.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MotionRecord {
    /// Series name.
    pub name: String,
    /// Movie pixel size, Å.
    pub pixel_a: f64,
    /// Hash of the inputs and parameters (`--resume` redoes the series when it differs).
    pub input_hash: String,
    /// `global` (whole-frame alignment).
    pub method: String,
    /// Whether the sums are dose-weighted.
    pub dose_weighted: bool,
    /// The movie of each tilt (stack order), as found.
    pub movies: Vec<String>,
    /// Per tilt (stack order) its motion.
    pub tilts: Vec<TiltMotion>,
}

impl MotionRecord {
    /// Mean over tilts of the path length of the trajectory, pixels.
    pub fn mean_path_px(&self) -> f64 {
        self.tilts.iter().map(path_length_px).sum::<f64>() / self.tilts.len().max(1) as f64
    }
}

/// One finished tilt (`<name>_tilts/<i>.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TiltCheckpoint {
    /// Hash of the series' inputs and parameters when it was made.
    pub input_hash: String,
    /// The tilt's motion.
    pub motion: TiltMotion,
}

/// Paths of the files of series `name` (whether or not they exist).
#[derive(Clone, Debug)]
pub struct MotionFiles {
    /// Full stack.
    pub stack: PathBuf,
    /// Even-frame stack.
    pub even: PathBuf,
    /// Odd-frame stack.
    pub odd: PathBuf,
    /// The JSON record.
    pub record: PathBuf,
    /// The drift plot.
    pub drift_png: PathBuf,
    /// Per-tilt checkpoints of a series in progress.
    pub tilts_dir: PathBuf,
}

impl MotionFiles {
    /// The file names of series `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> MotionFiles {
        MotionFiles {
            stack: dir.join(format!("{name}.mrc")),
            even: dir.join(format!("{name}_even.mrc")),
            odd: dir.join(format!("{name}_odd.mrc")),
            record: dir.join(format!("{name}_motion.json")),
            drift_png: dir.join(format!("{name}_drift.png")),
            tilts_dir: dir.join(format!("{name}_tilts")),
        }
    }

    fn tilt_paths(&self, i: usize) -> (PathBuf, PathBuf) {
        (
            self.tilts_dir.join(format!("{i:04}.mrc")),
            self.tilts_dir.join(format!("{i:04}.json")),
        )
    }

    /// Write tilt `i`'s sums (`[y, x]` each, pixel `pixel_a` Å) and motion; the JSON goes
    /// last, so its presence marks the tilt complete.
    pub fn write_tilt(
        &self,
        i: usize,
        input_hash: &str,
        sums: &MovieSums,
        motion: &TiltMotion,
        pixel_a: f64,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.tilts_dir).map_err(|e| Error::io(&self.tilts_dir, e))?;
        let (ny, nx) = sums.full.dim();
        let mut three = Array3::<f32>::zeros((3, ny, nx));
        for (k, img) in [&sums.full, &sums.even, &sums.odd].into_iter().enumerate() {
            three.index_axis_mut(Axis(0), k).assign(img);
        }
        let (mrc_path, json_path) = self.tilt_paths(i);
        mrc::write(&mrc_path, three.view(), pixel_a as f32, MrcKind::ImageStack)?;
        write_json(
            &json_path,
            &TiltCheckpoint {
                input_hash: input_hash.to_string(),
                motion: motion.clone(),
            },
        )
    }

    /// The motion of tilt `i` when its checkpoint is complete with `input_hash`.
    pub fn finished_tilt(&self, i: usize, input_hash: &str) -> Option<TiltMotion> {
        let (mrc_path, json_path) = self.tilt_paths(i);
        let c: TiltCheckpoint = read_json(&json_path).ok().flatten()?;
        (c.input_hash == input_hash && mrc_path.is_file()).then_some(c.motion)
    }

    /// Remove the per-tilt checkpoints (missing ones are fine).
    pub fn clear_tilts(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.tilts_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.tilts_dir, e)),
        }
    }

    /// The record when the series is complete with `input_hash` and its stacks exist.
    pub fn finished(&self, input_hash: &str) -> Result<Option<MotionRecord>> {
        let r: Option<MotionRecord> = read_json(&self.record)?;
        Ok(r.filter(|r| {
            r.input_hash == input_hash
                && [&self.stack, &self.even, &self.odd]
                    .iter()
                    .all(|p| p.is_file())
        }))
    }

    /// Put the `n` per-tilt checkpoints together: write the three stacks, the drift plot
    /// and `rec` (with `rec.tilts` filled from the checkpoints, last), then remove the
    /// checkpoints. Returns the record and the full stack `[tilt, y, x]`.
    ///
    /// Errors: a missing or stale tilt ([`Error::Runtime`] naming it; rerun with `--resume`).
    pub fn assemble(&self, mut rec: MotionRecord, n: usize) -> Result<(MotionRecord, Array3<f32>)> {
        let mut stacks: Option<[Array3<f32>; 3]> = None;
        rec.tilts.clear();
        for i in 0..n {
            let motion = self.finished_tilt(i, &rec.input_hash).ok_or_else(|| {
                Error::Runtime(format!(
                    "{}: tilt {i} of series {} has no finished motion correction: run again \
                     with --resume",
                    self.tilts_dir.display(),
                    rec.name
                ))
            })?;
            let three = mrc::read(&self.tilt_paths(i).0)?.data;
            let (_, ny, nx) = three.dim();
            let st =
                stacks.get_or_insert_with(|| std::array::from_fn(|_| Array3::zeros((n, ny, nx))));
            if st[0].dim().1 != ny || st[0].dim().2 != nx {
                return Err(Error::bad_input(
                    rec.movies.get(i).map(String::as_str).unwrap_or("<movie>"),
                    "frame size",
                    format!(
                        "{nx}×{ny} but tilt 0's frames are {}×{}: all movies of a tilt series \
                         must have the same size",
                        st[0].dim().2,
                        st[0].dim().1
                    ),
                ));
            }
            for (k, stack) in st.iter_mut().enumerate() {
                stack
                    .slice_mut(s![i, .., ..])
                    .assign(&three.index_axis(Axis(0), k));
            }
            rec.tilts.push(motion);
        }
        let [full, even, odd] =
            stacks.ok_or_else(|| Error::Runtime(format!("series {} has no tilts", rec.name)))?;
        let px = rec.pixel_a as f32;
        mrc::write(&self.stack, full.view(), px, MrcKind::ImageStack)?;
        mrc::write(&self.even, even.view(), px, MrcKind::ImageStack)?;
        mrc::write(&self.odd, odd.view(), px, MrcKind::ImageStack)?;
        write_chart_png(&self.drift_png, &drift_chart(&rec.name, &rec.tilts))?;
        write_json(&self.record, &rec)?;
        self.clear_tilts()?;
        Ok((rec, full))
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Runtime(format!("{}: cannot serialise: {e}", path.display())))?;
    write_bytes_atomic(path, text.as_bytes())
}

/// `Ok(None)` when the file is missing; an unreadable file is an error that says to delete it.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::bad_input(
            path,
            "motion record",
            format!("not a lamella motion record ({e}): delete it to redo the motion correction"),
        )
    })
}

/// Path length of a trajectory, pixels.
pub fn path_length_px(t: &TiltMotion) -> f64 {
    t.shifts_px
        .windows(2)
        .map(|w| (w[1][0] - w[0][0]).hypot(w[1][1] - w[0][1]))
        .sum()
}

/// The drift chart: one line per tilt from frame 0 (origin) along its trajectory, pixels;
/// the first tilt and the one with the longest path are labelled.
pub fn drift_chart(name: &str, tilts: &[TiltMotion]) -> Chart {
    let mut c = Chart::new(
        &format!("{name}: frame drift per tilt"),
        "drift x (px)",
        "drift y (px)",
    );
    let longest = (0..tilts.len())
        .max_by(|&a, &b| path_length_px(&tilts[a]).total_cmp(&path_length_px(&tilts[b])))
        .unwrap_or(0);
    for (i, t) in tilts.iter().enumerate() {
        let label = if i == longest {
            format!("tilt {i}: longest, {:.1} px", path_length_px(t))
        } else if i == 0 {
            "tilt 0".to_string()
        } else {
            String::new()
        };
        c.series.push(Series {
            label,
            points: t.shifts_px.iter().map(|s| (s[0], s[1])).collect(),
            color: PALETTE[i % PALETTE.len()],
            style: Style::LineMarkers,
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn motion(k: f64) -> TiltMotion {
        TiltMotion {
            shifts_px: vec![[0.0, 0.0], [k, 0.5], [2.0 * k, 1.0]],
            iterations: 3,
            pre_exposure_e_a2: k,
            per_frame_e_a2: 0.4,
        }
    }

    #[test]
    fn tilts_assemble_into_stacks_and_stale_ones_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = MotionFiles::new(d.path(), "ts");
        let sums = |v: f32| MovieSums {
            full: Array2::from_elem((8, 6), v),
            even: Array2::from_elem((8, 6), v / 2.0),
            odd: Array2::from_elem((8, 6), v / 2.0 + 1.0),
        };
        for i in 0..3 {
            f.write_tilt(i, "h1", &sums(i as f32), &motion(i as f64), 2.0)
                .unwrap();
        }
        assert!(f.finished_tilt(1, "h1").is_some());
        assert!(f.finished_tilt(1, "h2").is_none(), "another hash is stale");
        let rec = MotionRecord {
            name: "ts".into(),
            pixel_a: 2.0,
            input_hash: "h1".into(),
            method: "global".into(),
            dose_weighted: true,
            movies: vec!["a".into(), "b".into(), "c".into()],
            tilts: Vec::new(),
        };
        let e = f.assemble(
            MotionRecord {
                input_hash: "h2".into(),
                ..rec.clone()
            },
            3,
        );
        assert!(e.unwrap_err().to_string().contains("tilt 0"));
        let (r, full) = f.assemble(rec, 3).unwrap();
        assert_eq!(r.tilts[2], motion(2.0));
        assert_eq!(full[[2, 3, 3]], 2.0);
        assert_eq!(mrc::read(&f.odd).unwrap().data[[1, 0, 0]], 1.5);
        assert!(!f.tilts_dir.exists(), "checkpoints removed");
        assert!(f.finished("h1").unwrap().is_some());
        assert!(f.finished("h2").unwrap().is_none());
        assert!(
            (r.mean_path_px() - (1.0 + 2.0 * 1.25f64.sqrt() + 2.0 * 4.25f64.sqrt()) / 3.0).abs()
                < 1e-9
        );
    }
}
