//! `lamella sta`: subtomogram averaging (gold-standard refinement) of particles from a
//! RELION-5 particle STAR in tomograms listed by a RELION-5 `tomograms.star`.
//!
//! Every rank reads the tomograms; particle `i` is aligned by rank `i mod size`; the sums are
//! reduced with one allreduce per iteration (`sta::refine`). Rank 0 writes the outputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::comm::{broadcast_serde, Comm};
use crate::error::{Error, Result};
use crate::io::atomic::write_bytes_atomic;
use crate::io::container::input_hash;
use crate::io::mrc::{self, MrcKind};
use crate::io::relion::{
    read_particles_star, read_tilt_series_star, read_tomograms_global, write_particles_star,
    ParticleRecord,
};
use crate::pipeline::signals;
use crate::sta::fsc::write_fsc_png;
use crate::sta::refine::{initial_state, iterate, Particle, RefineParams, State, Tomogram};
use crate::sta::weight::CtfMode;

/// Refine particle poses and average them (gold standard), per class.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  mpirun -n 4 lamella sta --tomograms out/relion/tomograms.star --particles picked.star \\
      --reference template.mrc --box 32 --mask-radius 80 --iterations 4 --out sta/
Writes <out>/iter_<k>/{half1,half2}.mrc, fsc.png, fsc.json; <out>/map.mrc, half1.mrc, half2.mrc,
fsc.png, particles.star (refined poses, RELION-5) and state.json (the checkpoint --resume reads).")]
pub struct Args {
    /// RELION-5 tomograms.star (rlnTomoReconstructedTomogram, rlnTomoTiltSeriesStarFile).
    #[arg(long)]
    pub tomograms: PathBuf,
    /// RELION-5 particle STAR (positions in Å about the tomogram centre, Euler angles).
    #[arg(long)]
    pub particles: PathBuf,
    /// Initial reference MRC (dense positive, reference frame, any voxel: resampled), one per
    /// class; none: the particles' average at their initial poses.
    #[arg(long)]
    pub reference: Vec<PathBuf>,
    /// Number of classes (default: number of references, else 1).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Box edge, voxels of the tomograms (even).
    #[arg(long, default_value_t = 32)]
    pub r#box: usize,
    /// Radius of the soft spherical mask, Å.
    #[arg(long)]
    pub mask_radius: f64,
    /// Iterations.
    #[arg(long, default_value_t = 3)]
    pub iterations: usize,
    /// Symmetry: C1, Cn, Dn, T, O, I.
    #[arg(long, default_value = "C1")]
    pub symmetry: String,
    /// Global angular search step in the first iteration, degrees (default: local search
    /// from the particles' angles).
    #[arg(long)]
    pub global_step: Option<f64>,
    /// Local search half-width, degrees.
    #[arg(long, default_value_t = 9.0)]
    pub local_range: f64,
    /// Local search step in the first iteration (halved each iteration), degrees.
    #[arg(long, default_value_t = 3.0)]
    pub local_step: f64,
    /// Smallest local step, degrees.
    #[arg(long, default_value_t = 1.0)]
    pub min_step: f64,
    /// σ of the Gaussian prior on the angular change in local searches, degrees (RELION's
    /// --sigma_ang); default: a third of --local-range; 0: none (the best score wins).
    #[arg(long)]
    pub sigma_angle: Option<f64>,
    /// Largest offset searched, Å.
    #[arg(long, default_value_t = 30.0)]
    pub max_shift: f64,
    /// Low-pass of the initial references, Å.
    #[arg(long, default_value_t = 40.0)]
    pub initial_resolution: f64,
    /// CTF in the transfer: signed (tomogram not CTF-corrected), flipped, none.
    #[arg(long, default_value = "signed")]
    pub ctf_mode: String,
    /// Leave the exposure filter out of the transfer.
    #[arg(long)]
    pub no_dose_weighting: bool,
    /// Multiply tomogram values by −1 (for tomograms where dense matter is dark).
    #[arg(long)]
    pub invert: bool,
    /// Seed of the FSC phase randomisation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Continue from <out>/state.json when it was written with the same inputs and settings.
    #[arg(long)]
    pub resume: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// The checkpoint: the state plus what it was computed from.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    hash: String,
    state: State,
}

/// One line per iteration in `sta.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct IterationLog {
    iteration: usize,
    resolution_a: Vec<f64>,
    mean_score: f64,
    seconds: f64,
}

fn ctf_mode(s: &str) -> Result<CtfMode> {
    match s.to_ascii_lowercase().as_str() {
        "signed" => Ok(CtfMode::Signed),
        "flipped" => Ok(CtfMode::Flipped),
        "none" => Ok(CtfMode::None),
        _ => Err(Error::Config(format!(
            "--ctf-mode {s:?}: use signed (tomograms without CTF correction), flipped or none"
        ))),
    }
}

/// Read every tomogram of `path` with its geometry. Paths in the file are relative to its folder.
pub fn read_tomograms(path: &Path) -> Result<Vec<Tomogram>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for g in read_tomograms_global(path)? {
        let rec = g.reconstructed.clone().ok_or_else(|| {
            Error::bad_input(
                path,
                "rlnTomoReconstructedTomogram",
                format!("no tomogram file for {}: add the column (lamella run writes it in relion/tomograms.star)", g.name),
            )
        })?;
        let ts = g.tilt_series_star.clone().ok_or_else(|| {
            Error::bad_input(
                path,
                "rlnTomoTiltSeriesStarFile",
                format!("no tilt-series STAR for {}", g.name),
            )
        })?;
        let m = mrc::read(&dir.join(&rec))?;
        let voxel_a = g.pixel_a * g.binning;
        let (nx, ny) = match g.size_px {
            Some(s) => (s[0], s[1]),
            None => {
                let (_, y, x) = m.data.dim();
                (
                    (x as f64 * g.binning) as usize,
                    (y as f64 * g.binning) as usize,
                )
            }
        };
        let mut geometry = read_tilt_series_star(&dir.join(&ts), nx, ny, g.pixel_a)?;
        geometry.hand = g.hand;
        geometry.optics = g.optics;
        out.push(Tomogram {
            name: g.name,
            volume: m.data,
            voxel_a,
            geometry,
        });
    }
    if out.is_empty() {
        return Err(Error::bad_input(path, "data_global", "no tomogram listed"));
    }
    Ok(out)
}

/// A reference MRC resampled to `voxel_a` and boxed (centred) to `n³`.
fn read_reference(path: &Path, voxel_a: f64, n: usize) -> Result<Array3<f32>> {
    let m = mrc::read(path)?;
    let px = m.header.pixel_size_a()[0] as f64;
    if px.is_nan() || px <= 0.0 {
        return Err(Error::bad_input(path, "cella", "the reference has no pixel size in its header; set it (e.g. with mrcfile's voxel_size)"));
    }
    let r = crate::sim::potential::resample_map(&m.data, px, voxel_a).potential;
    Ok(centre_box(&r, n))
}

/// Crop or zero-pad `v` about its centre voxel (`d/2` per axis) to `n³`.
pub fn centre_box(v: &Array3<f32>, n: usize) -> Array3<f32> {
    let (dz, dy, dx) = v.dim();
    Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        let s = |i: usize, d: usize| i as i64 - (n / 2) as i64 + (d / 2) as i64;
        let (sz, sy, sx) = (s(z, dz), s(y, dy), s(x, dx));
        if sz >= 0
            && sy >= 0
            && sx >= 0
            && (sz as usize) < dz
            && (sy as usize) < dy
            && (sx as usize) < dx
        {
            v[[sz as usize, sy as usize, sx as usize]]
        } else {
            0.0
        }
    })
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(v).map_err(|e| Error::Runtime(e.to_string()))?;
    write_bytes_atomic(path, &text)
}

/// Write one iteration's (or the final) maps and FSC plots into `dir`.
fn write_maps(dir: &Path, state: &State, n: usize, voxel_a: f64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let classes = state.half_maps.len();
    for c in 0..classes {
        let tag = if classes > 1 {
            format!("class{}_", c + 1)
        } else {
            String::new()
        };
        for h in 0..2 {
            let m = state.half_map(c, h, n);
            mrc::write(
                &dir.join(format!("{tag}half{}.mrc", h + 1)),
                m.view(),
                voxel_a as f32,
                MrcKind::Volume,
            )?;
        }
        let full = state.full_map(c, n);
        mrc::write(
            &dir.join(format!("{tag}map.mrc")),
            full.view(),
            voxel_a as f32,
            MrcKind::Volume,
        )?;
        if let Some(g) = &state.fsc[c] {
            write_fsc_png(
                &dir.join(format!("{tag}fsc.png")),
                &format!(
                    "iteration {} class {}: {:.1} A",
                    state.iteration,
                    c + 1,
                    g.resolution_a
                ),
                g,
                None,
            )?;
            write_json(&dir.join(format!("{tag}fsc.json")), g)?;
        }
    }
    Ok(())
}

/// Execute on every rank.
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    signals::install();
    let t0 = Instant::now();
    let tomos = read_tomograms(&a.tomograms)?;
    let records = read_particles_star(&a.particles)?;
    let voxel_a = tomos[0].voxel_a;
    if tomos
        .iter()
        .any(|t| (t.voxel_a - voxel_a).abs() > 1e-3 * voxel_a)
    {
        return Err(Error::bad_input(
            &a.tomograms,
            "rlnTomoTomogramBinning",
            "tomograms of different voxel sizes: average one binning at a time",
        )
        .into());
    }
    let references: Vec<Array3<f32>> = a
        .reference
        .iter()
        .map(|p| read_reference(p, voxel_a, a.r#box))
        .collect::<Result<_>>()?;
    let classes = a.classes.unwrap_or(references.len().max(1));
    let names: Vec<&str> = tomos.iter().map(|t| t.name.as_str()).collect();
    let mut particles = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let tomo = names
            .iter()
            .position(|n| *n == r.tomo_name)
            .ok_or_else(|| {
                Error::bad_input(
                    &a.particles,
                    "rlnTomoName",
                    format!(
                        "particle {}: tomogram {:?} is not in {}",
                        i + 1,
                        r.tomo_name,
                        a.tomograms.display()
                    ),
                )
            })?;
        let half = match r.random_subset {
            1 | 2 => r.random_subset - 1,
            _ => i % 2,
        };
        let class = if classes > 1 {
            if (1..=classes).contains(&r.class) && !references.is_empty() {
                r.class - 1
            } else {
                // Random-looking but fixed start for classification without a prior.
                (crate::sim::mix_seed(a.seed, i as u64) % classes as u64) as usize
            }
        } else {
            0
        };
        particles.push(Particle {
            tomo,
            position_a: r.centered_coordinate_a,
            euler_deg: r.euler_deg,
            half,
            class,
            score: 0.0,
        });
    }
    let params = RefineParams {
        box_px: a.r#box,
        mask_radius_a: a.mask_radius,
        iterations: a.iterations,
        symmetry: a.symmetry.clone(),
        global_step_deg: a.global_step,
        local_range_deg: a.local_range,
        local_step_deg: a.local_step,
        min_step_deg: a.min_step,
        sigma_angle_deg: Some(a.sigma_angle.unwrap_or(a.local_range / 3.0)),
        max_shift_a: a.max_shift,
        initial_resolution_a: a.initial_resolution,
        ctf_mode: ctf_mode(&a.ctf_mode)?,
        dose_weighting: !a.no_dose_weighting,
        invert: a.invert,
        seed: a.seed,
    };
    let star_text = std::fs::read(&a.particles).map_err(|e| Error::io(&a.particles, e))?;
    let refs_text: Vec<Vec<u8>> = a
        .reference
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| Error::io(p, e)))
        .collect::<Result<_>>()?;
    let params_json =
        serde_json::to_vec(&(&params, classes)).map_err(|e| Error::Runtime(e.to_string()))?;
    let tomo_text = std::fs::read(&a.tomograms).map_err(|e| Error::io(&a.tomograms, e))?;
    let mut parts: Vec<&[u8]> = vec![&params_json, &star_text, &tomo_text];
    parts.extend(refs_text.iter().map(|v| v.as_slice()));
    let hash = input_hash(&parts);
    let ck_path = a.out.join("state.json");
    if comm.rank() == 0 {
        std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    }
    // Resume: rank 0 reads the checkpoint and every rank gets it.
    let resumed: Option<State> = {
        let local = if comm.rank() == 0 && a.resume && ck_path.exists() {
            let text = std::fs::read(&ck_path).map_err(|e| Error::io(&ck_path, e))?;
            match serde_json::from_slice::<Checkpoint>(&text) {
                Ok(c) if c.hash == hash => Some(c.state),
                Ok(_) => {
                    tracing::warn!(
                        "{}: written with other inputs or settings; starting again",
                        ck_path.display()
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!("{}: unreadable ({e}); starting again", ck_path.display());
                    None
                }
            }
        } else {
            None
        };
        // A list of 0 or 1 states: JSON cannot tell Some(None) from None.
        let v: Vec<State> = broadcast_serde(comm, 0, Some(local.into_iter().collect()));
        v.into_iter().next()
    };
    let mut state = match resumed {
        Some(s) => {
            tracing::info!(
                iteration = s.iteration,
                "resuming from {}",
                ck_path.display()
            );
            s
        }
        None => initial_state(comm, &tomos, particles, &references, classes, &params)?,
    };
    let n = a.r#box;
    let mut log: Vec<IterationLog> = Vec::new();
    let log_path = a.out.join("sta.json");
    if state.iteration > 0 {
        if let Ok(t) = std::fs::read(&log_path) {
            log = serde_json::from_slice(&t).unwrap_or_default();
        }
    }
    tracing::info!(
        particles = state.particles.len(),
        classes,
        ranks = comm.size(),
        "subtomogram averaging"
    );
    while state.iteration < params.iterations {
        let t = Instant::now();
        iterate(comm, &tomos, &mut state, &params)?;
        let mean_score = state.particles.iter().map(|p| p.score).sum::<f64>()
            / state.particles.len().max(1) as f64;
        tracing::info!(iteration = state.iteration, resolution_a = ?state.resolution_a, mean_score, "iteration done");
        if comm.rank() == 0 {
            write_maps(
                &a.out.join(format!("iter_{:02}", state.iteration)),
                &state,
                n,
                voxel_a,
            )?;
            log.push(IterationLog {
                iteration: state.iteration,
                resolution_a: state.resolution_a.clone(),
                mean_score,
                seconds: t.elapsed().as_secs_f64(),
            });
            write_json(&log_path, &log)?;
            // The checkpoint last: it says the iteration is complete.
            write_json(
                &ck_path,
                &Checkpoint {
                    hash: hash.clone(),
                    state: state.clone(),
                },
            )?;
        }
        let mut flag = [if signals::stop_requested() { 1.0 } else { 0.0 }];
        comm.allreduce_max_f64(&mut flag);
        if flag[0] > 0.0 && state.iteration < params.iterations {
            tracing::warn!(
                "stop signal: iteration {} is checkpointed; run again with --resume to continue",
                state.iteration
            );
            return Ok(4);
        }
    }
    if comm.rank() == 0 {
        write_maps(&a.out, &state, n, voxel_a)?;
        let out: Vec<ParticleRecord> = state
            .particles
            .iter()
            .map(|p| ParticleRecord {
                tomo_name: tomos[p.tomo].name.clone(),
                centered_coordinate_a: p.position_a,
                euler_deg: p.euler_deg,
                optics_group: 1,
                random_subset: p.half + 1,
                class: p.class + 1,
            })
            .collect();
        write_particles_star(&a.out.join("particles.star"), voxel_a, n, &out)?;
        println!(
            "lamella sta: {} particles, {} class(es), {} iterations, resolution {:?} Å, {:.1} s",
            state.particles.len(),
            classes,
            state.iteration,
            state
                .resolution_a
                .iter()
                .map(|r| (r * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(0)
}
