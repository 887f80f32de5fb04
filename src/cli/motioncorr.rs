//! `lamella motioncorr`: motion-correct the movies of one or more tilt series, the movies of
//! every series shared out over the MPI ranks (a checkpoint per tilt, so `--resume` after a
//! kill redoes only the unfinished movies).

use crate::comm::Comm;
use crate::motion::batch::{correct_tilts, SeriesMovies};
use crate::motion::output::MotionFiles;
use crate::motion::{Exposure, MotionParams};
use crate::pipeline::motioncorr::{series_movies, stage_hash, MotionCorrConfig};
use crate::pipeline::signals;
use std::path::{Path, PathBuf};

/// Motion-correct tilt movies listed by SerialEM .mdoc files.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  mpirun -n 4 lamella motioncorr --mdoc TS_01.mrc.mdoc --mdoc TS_02.mrc.mdoc --out mc/\nWrites per series <out>/<name>.mrc (dose-weighted sums), <name>_even.mrc, <name>_odd.mrc,\n<name>_motion.json (per-frame shifts, px) and <name>_drift.png; <name> is the .mdoc's stem.\nSingle movies: lamella motioncorr --movie a.mrcs --movie b.mrcs --pixel 1.0 --dose-per-frame 2 --out mc/"
)]
pub struct Args {
    /// SerialEM tilt-series .mdoc (repeat for several series); movies from its SubFramePath,
    /// else matched by file name in its folder or --frames-dir.
    #[arg(long, required_unless_present = "movie")]
    pub mdoc: Vec<PathBuf>,
    /// A single movie to correct on its own (repeat for several; each is a one-image
    /// "series" named by its file stem, pre-exposure 0, dose from --dose-per-frame).
    #[arg(long)]
    pub movie: Vec<PathBuf>,
    /// Folder holding the movies when SubFramePath does not point at them.
    #[arg(long)]
    pub frames_dir: Option<PathBuf>,
    /// Movie pixel size in Å (default: the .mdoc's PixelSpacing).
    #[arg(long)]
    pub pixel: Option<f64>,
    /// Acceleration voltage, kV (dose weighting).
    #[arg(long, default_value_t = 300.0)]
    pub voltage: f64,
    /// Exposure per frame, e/Å² (default: ExposureDose / frames of each tilt).
    #[arg(long)]
    pub dose_per_frame: Option<f64>,
    /// Plain (not dose-weighted) sums.
    #[arg(long)]
    pub no_dose_weighting: bool,
    /// B-factor of the alignment low-pass, Å².
    #[arg(long)]
    pub bfactor: Option<f64>,
    /// Gain reference (MRC or TIFF) multiplied into every frame.
    #[arg(long)]
    pub gain: Option<PathBuf>,
    /// Gain rotation: 0-3 quarter turns counter-clockwise (as MotionCor2 -RotGain, RELION --gain_rot).
    #[arg(long, default_value_t = 0)]
    pub gain_rot: u8,
    /// Gain flip: 0 none, 1 upside down, 2 left-right (as MotionCor2 -FlipGain, RELION --gain_flip).
    #[arg(long, default_value_t = 0)]
    pub gain_flip: u8,
    /// Local (patch) motion on a grid of X×Y patches, e.g. 5x5 (default: global only).
    #[arg(long, value_parser = parse_patches)]
    pub patches: Option<[usize; 2]>,
    /// Keep the tilts finished by an earlier (killed) run with the same inputs.
    #[arg(long)]
    pub resume: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// `5x5` → `[5, 5]`.
fn parse_patches(s: &str) -> Result<[usize; 2], String> {
    let bad = || format!("{s:?}: give the patch grid as XxY, e.g. 5x5");
    let (x, y) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok([
        x.trim().parse().map_err(|_| bad())?,
        y.trim().parse().map_err(|_| bad())?,
    ])
}

/// The series name of an `.mdoc`: its file name without `.mdoc` and a `.mrc`/`.st` before it.
pub fn mdoc_series_name(mdoc: &Path) -> String {
    let f = mdoc
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "series".into());
    let f = f.strip_suffix(".mdoc").unwrap_or(&f);
    let f = f
        .strip_suffix(".mrc")
        .or_else(|| f.strip_suffix(".st"))
        .unwrap_or(f);
    f.to_string()
}

/// A movie corrected on its own: pixel from `pixel_a`, else its MRC header.
fn single_movie(
    path: &Path,
    mc: &MotionCorrConfig,
    pixel_a: Option<f64>,
    voltage_kv: f64,
) -> crate::Result<SeriesMovies> {
    let header_pixel = || {
        crate::io::mrc::read_header(path)
            .ok()
            .map(|h| h.pixel_size_a()[0] as f64)
            .filter(|&p| p > 0.0)
    };
    let pixel_a = pixel_a.or_else(header_pixel).ok_or_else(|| {
        crate::Error::bad_input(
            path,
            "pixel size",
            "not in the file header: give --pixel (Å)",
        )
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "movie".into());
    Ok(SeriesMovies {
        name,
        movies: vec![path.to_path_buf()],
        exposures: vec![mc.dose_per_frame_e_a2.map(|d| Exposure {
            pre_exposure_e_a2: 0.0,
            per_frame_e_a2: d,
            voltage_kv,
        })],
        pixel_a,
        gain: mc.load_gain()?,
    })
}

/// Collective over `comm`: every rank corrects its share of the movies of every series, then
/// rank 0 assembles the stacks. A failure on any rank fails all of them (no rank waits
/// forever).
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    signals::install();
    let mut mc = MotionCorrConfig {
        dose_per_frame_e_a2: a.dose_per_frame,
        dose_weighting: !a.no_dose_weighting,
        frames_dir: a.frames_dir.clone(),
        gain: a.gain.clone(),
        gain_rot: a.gain_rot,
        gain_flip: a.gain_flip,
        local_patches: a.patches,
        ..Default::default()
    };
    if let Some(b) = a.bfactor {
        mc.bfactor_a2 = b;
    }
    mc.validate(Path::new("command line"))?;
    let params = mc.params();
    let mut jobs = Vec::new();
    for m in &a.mdoc {
        let name = mdoc_series_name(m);
        let s = series_movies(&name, m, &mc, a.pixel, a.voltage)?;
        let key = format!("{}:{:?}", m.display(), s.movies);
        let hash = stage_hash(&key, &mc);
        jobs.push((s, hash));
    }
    for m in &a.movie {
        let s = single_movie(m, &mc, a.pixel, a.voltage)?;
        let hash = stage_hash(&format!("movie:{}", m.display()), &mc);
        jobs.push((s, hash));
    }
    let mut names = std::collections::HashSet::new();
    if let Some((s, _)) = jobs.iter().find(|(s, _)| !names.insert(s.name.clone())) {
        anyhow::bail!(
            "two inputs are both called {:?}: their outputs would overwrite each other; \
             correct them into different --out folders",
            s.name
        );
    }
    let t = std::time::Instant::now();
    std::fs::create_dir_all(&a.out)?;
    if comm.rank() == 0 && !a.resume {
        for (s, _) in &jobs {
            MotionFiles::new(&a.out, &s.name).clear_tilts()?;
        }
    }
    comm.barrier();
    // every (series, tilt) in one list, dealt out round-robin (movies cost about the same)
    let mut mine: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    let mut k = 0;
    for (j, (s, _)) in jobs.iter().enumerate() {
        for i in 0..s.movies.len() {
            if k % comm.size() == comm.rank() {
                mine[j].push(i);
            }
            k += 1;
        }
    }
    // test hook: raise the stop flag (as SIGTERM would) after this many movies on this rank
    let stop_after: Option<usize> = std::env::var("LAMELLA_STOP_AFTER_MOVIES")
        .ok()
        .and_then(|v| v.parse().ok());
    let asked = std::cell::Cell::new(0usize);
    let stop = || {
        let k = asked.replace(asked.get() + 1);
        if stop_after.is_some_and(|n| k >= n) {
            signals::request_stop();
        }
        signals::stop_requested()
    };
    let mut result = Ok(());
    for (j, (s, hash)) in jobs.iter().enumerate() {
        let files = MotionFiles::new(&a.out, &s.name);
        if let Err(e) = correct_tilts(s, &files, hash, &mine[j], &params, &stop) {
            result = Err(e);
            break;
        }
    }
    let mut failed = [if result.is_err() { 1.0 } else { 0.0 }];
    comm.allreduce_max_f64(&mut failed);
    if let Err(e) = result {
        return Err(e.into());
    }
    if failed[0] > 0.0 {
        anyhow::bail!(
            "motion correction failed on another rank (see its log); rerun with --resume"
        );
    }
    let assembled = if comm.rank() == 0 {
        assemble_all(&a.out, &jobs, &params, comm.size(), t)
    } else {
        Ok(())
    };
    let mut failed = [if assembled.is_err() { 1.0 } else { 0.0 }];
    comm.allreduce_max_f64(&mut failed);
    assembled?;
    if failed[0] > 0.0 {
        anyhow::bail!("assembling the stacks failed on rank 0 (see its log)");
    }
    Ok(0)
}

/// Rank 0: write the stacks of every series from the per-tilt checkpoints, and say so.
fn assemble_all(
    out: &Path,
    jobs: &[(SeriesMovies, String)],
    params: &MotionParams,
    ranks: usize,
    t: std::time::Instant,
) -> crate::Result<()> {
    for (s, hash) in jobs {
        let files = MotionFiles::new(out, &s.name);
        let (rec, _) = files.assemble(s.record(hash, params), s.movies.len())?;
        println!(
            "{}: {} movies, mean drift path {:.2} px; wrote {}, {}, {}, {}",
            s.name,
            s.movies.len(),
            rec.mean_path_px(),
            files.stack.display(),
            files.even.display(),
            files.odd.display(),
            files.drift_png.display()
        );
    }
    println!(
        "motion-corrected {} series on {ranks} rank(s) in {:.1} s",
        jobs.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_from_mdoc_files() {
        assert_eq!(mdoc_series_name(Path::new("/a/TS_01.mrc.mdoc")), "TS_01");
        assert_eq!(mdoc_series_name(Path::new("x.st.mdoc")), "x");
        assert_eq!(mdoc_series_name(Path::new("y.mdoc")), "y");
        assert_eq!(parse_patches("5x7"), Ok([5, 7]));
        assert!(parse_patches("5").is_err());
    }
}
