//! Subtomogram averaging as a stage: the gold-standard refinement loop with its files,
//! checkpoint and resume, shared by `lamella sta` and the `[sta]` stage of `lamella run`.
//!
//! Inputs: a RELION-5 `tomograms.star` (tomograms with their tilt-series STARs) and a
//! RELION-5 particle STAR (positions in Å about the tomogram centre, ZYZ Euler angles).
//! Every rank reads the tomograms; particle `i` is aligned by rank `i mod size`; the sums
//! are reduced with one allreduce per iteration (`sta::refine`). Rank 0 writes, in `out`:
//! `iter_<k>/{half1,half2,map}.mrc`, `fsc.png`, `fsc.json` (with a `class<c>_` prefix when
//! there are several classes), the final maps at the top, `particles.star` (refined poses),
//! `sta.json` (one line per iteration) and `state.json` (the checkpoint `resume` reads).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::comm::{broadcast_serde, Comm};
use crate::error::{Error, Result};
use crate::io::container::input_hash;
use crate::io::mrc::{self, MrcKind};
use crate::io::relion::{
    read_particles_star, read_tilt_series_star, read_tomograms_global, write_particles_star,
    ParticleRecord,
};
use crate::pick::template::recentre_box;
use crate::pipeline::signals;
use crate::pipeline::simio::write_json;
use crate::sta::fsc::write_fsc_png;
use crate::sta::refine::{
    initial_state, iterate, particle_ranks, Particle, RefineParams, State, Tomogram,
};
use crate::sta::weight::CtfMode;

fn default_job() -> String {
    "refine".into()
}
fn default_box() -> usize {
    32
}
fn default_iterations() -> usize {
    3
}
fn default_symmetry() -> String {
    "C1".into()
}
fn default_local_range() -> f64 {
    9.0
}
fn default_local_step() -> f64 {
    3.0
}
fn default_min_step() -> f64 {
    1.0
}
fn default_max_shift() -> f64 {
    30.0
}
fn default_initial_resolution() -> f64 {
    40.0
}
fn default_ctf_mode() -> String {
    "signed".into()
}
fn default_seed() -> u64 {
    1
}

/// Settings of a refinement: the `[sta]` table of a run config and the flags of `lamella
/// sta` (one struct, so both have the same names, defaults and docs). Lengths in Å unless
/// `_px`, angles in degrees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct StaConfig {
    /// Name of the refinement: `sta/<job>/` and `/sta/<job>` in the container (`lamella run`).
    #[arg(long, default_value = "refine")]
    #[serde(default = "default_job")]
    pub job: String,
    /// RELION-5 particle STAR (positions in Å about the tomogram centre, Euler angles);
    /// in `lamella run` default `relion/particles_picked.star` of the `[pick]` stage.
    #[arg(long)]
    #[serde(default)]
    pub particles: Option<PathBuf>,
    /// Initial reference MRC (dense positive, reference frame, any voxel: resampled), one per
    /// class; none: the particles' average at their initial poses.
    #[arg(long)]
    #[serde(default)]
    pub reference: Vec<PathBuf>,
    /// Number of classes (default: number of references, else 1).
    #[arg(long)]
    #[serde(default)]
    pub classes: Option<usize>,
    /// Box edge, voxels of the tomograms (even).
    #[arg(long = "box", default_value_t = 32)]
    #[serde(default = "default_box", rename = "box")]
    pub box_px: usize,
    /// Radius of the soft spherical mask, Å (default: 3/8 of the box edge).
    #[arg(long = "mask-radius")]
    #[serde(default)]
    pub mask_radius_a: Option<f64>,
    /// Iterations.
    #[arg(long, default_value_t = 3)]
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    /// Symmetry: C1, Cn, Dn, T, O, I.
    #[arg(long, default_value = "C1")]
    #[serde(default = "default_symmetry")]
    pub symmetry: String,
    /// Global angular search step in the first iteration (default: local search from the
    /// particles' angles).
    #[arg(long = "global-step")]
    #[serde(default)]
    pub global_step_deg: Option<f64>,
    /// Local search half-width.
    #[arg(long = "local-range", default_value_t = 9.0)]
    #[serde(default = "default_local_range")]
    pub local_range_deg: f64,
    /// Local search step in the first iteration (halved each iteration).
    #[arg(long = "local-step", default_value_t = 3.0)]
    #[serde(default = "default_local_step")]
    pub local_step_deg: f64,
    /// Smallest local step.
    #[arg(long = "min-step", default_value_t = 1.0)]
    #[serde(default = "default_min_step")]
    pub min_step_deg: f64,
    /// σ of the Gaussian prior on the angular change in local searches (RELION's
    /// --sigma_ang); default: a third of the local range; 0: none (the best score wins).
    #[arg(long = "sigma-angle")]
    #[serde(default)]
    pub sigma_angle_deg: Option<f64>,
    /// Largest offset searched.
    #[arg(long = "max-shift", default_value_t = 30.0)]
    #[serde(default = "default_max_shift")]
    pub max_shift_a: f64,
    /// Low-pass of the initial references.
    #[arg(long = "initial-resolution", default_value_t = 40.0)]
    #[serde(default = "default_initial_resolution")]
    pub initial_resolution_a: f64,
    /// CTF in the transfer: signed (tomogram not CTF-corrected), flipped, none.
    #[arg(long = "ctf-mode", default_value = "signed")]
    #[serde(default = "default_ctf_mode")]
    pub ctf_mode: String,
    /// Leave the exposure filter out of the transfer.
    #[arg(long)]
    #[serde(default)]
    pub no_dose_weighting: bool,
    /// Multiply tomogram values by −1 (for tomograms where dense matter is dark).
    #[arg(long)]
    #[serde(default)]
    pub invert: bool,
    /// Seed of the FSC phase randomisation and of the initial class split.
    #[arg(long, default_value_t = 1)]
    #[serde(default = "default_seed")]
    pub seed: u64,
}

impl StaConfig {
    /// Check the values before any work; errors name the key (`config` for messages).
    pub fn validate(&self, config: &Path) -> Result<()> {
        let err = |m: String| Err(Error::Config(format!("{}: {m}", config.display())));
        if self.box_px < 8 || self.box_px % 2 != 0 {
            return err(format!(
                "sta.box = {}: give an even box of at least 8 voxels",
                self.box_px
            ));
        }
        if self.iterations == 0 {
            return err("sta.iterations = 0: give at least 1".into());
        }
        if self.job.is_empty() || self.job.contains(['/', '\\']) {
            return err(format!(
                "sta.job = {:?}: a plain name such as \"refine\"",
                self.job
            ));
        }
        self.symmetry.parse::<crate::core::so3::Symmetry>()?;
        self.ctf_mode.parse::<CtfMode>()?;
        Ok(())
    }

    /// The refinement parameters at voxel `voxel_a` Å.
    pub fn params(&self, voxel_a: f64) -> Result<RefineParams> {
        Ok(RefineParams {
            box_px: self.box_px,
            mask_radius_a: self
                .mask_radius_a
                .unwrap_or(0.375 * self.box_px as f64 * voxel_a),
            iterations: self.iterations,
            symmetry: self.symmetry.clone(),
            global_step_deg: self.global_step_deg,
            local_range_deg: self.local_range_deg,
            local_step_deg: self.local_step_deg,
            min_step_deg: self.min_step_deg,
            sigma_angle_deg: Some(self.sigma_angle_deg.unwrap_or(self.local_range_deg / 3.0)),
            max_shift_a: self.max_shift_a,
            initial_resolution_a: self.initial_resolution_a,
            ctf_mode: self.ctf_mode.parse::<CtfMode>()?,
            dose_weighting: !self.no_dose_weighting,
            invert: self.invert,
            seed: self.seed,
        })
    }
}

/// The checkpoint: the state plus the hash of what it was computed from.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    hash: String,
    state: State,
}

/// One line per iteration in `sta.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IterationLog {
    /// Iteration number, from 1.
    pub iteration: usize,
    /// Gold-standard resolution per class, Å.
    pub resolution_a: Vec<f64>,
    /// Mean alignment score of the particles.
    pub mean_score: f64,
    /// Wall time of the iteration, seconds.
    pub seconds: f64,
}

/// What a refinement ended with (on every rank).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StaOutcome {
    /// Number of particles.
    pub particles: usize,
    /// Number of classes.
    pub classes: usize,
    /// Box edge, voxels.
    pub box_px: usize,
    /// Voxel size of the tomograms and maps, Å.
    pub voxel_a: f64,
    /// Mask radius used, Å.
    pub mask_radius_a: f64,
    /// Every iteration done so far (including those of an earlier run that was resumed).
    pub log: Vec<IterationLog>,
    /// Final gold-standard resolution per class, Å.
    pub resolution_a: Vec<f64>,
    /// Particles per class at the end.
    pub class_sizes: Vec<usize>,
    /// True when a stop signal ended the run before the last iteration (checkpointed).
    pub interrupted: bool,
    /// Wall time of this call, seconds.
    pub seconds: f64,
}

/// Read every tomogram of `path` (RELION-5 tomograms.star) with its geometry. Paths in the
/// file are relative to its folder. Volumes `[z, y, x]`, voxel `pixel × binning` Å.
pub fn read_tomograms(path: &Path) -> Result<Vec<Tomogram>> {
    let (mut tomos, files) = read_tomogram_list(path)?;
    load_volumes(&mut tomos, &files, |_| true)?;
    Ok(tomos)
}

/// Read volume `k` of `files` (from [`read_tomogram_list`]) into `tomos[k]` where `load(k)`.
fn load_volumes(
    tomos: &mut [Tomogram],
    files: &[PathBuf],
    load: impl Fn(usize) -> bool,
) -> Result<()> {
    for (k, (t, f)) in tomos.iter_mut().zip(files).enumerate() {
        if load(k) {
            t.volume = mrc::read(f)?.data;
        }
    }
    Ok(())
}

/// The tomograms of `path` with their geometry and voxel size but empty `0 × 0 × 0`
/// volumes, and the MRC file of each volume (load with [`load_volumes`]; only the headers
/// are read here).
fn read_tomogram_list(path: &Path) -> Result<(Vec<Tomogram>, Vec<PathBuf>)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    let mut files = Vec::new();
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
        let file = dir.join(&rec);
        let header = mrc::read_header(&file)?;
        files.push(file);
        let voxel_a = g.pixel_a * g.binning;
        let (nx, ny) = match g.size_px {
            Some(s) => (s[0], s[1]),
            None => (
                (header.nx as f64 * g.binning) as usize,
                (header.ny as f64 * g.binning) as usize,
            ),
        };
        let mut geometry = read_tilt_series_star(&dir.join(&ts), nx, ny, g.pixel_a)?;
        geometry.hand = g.hand;
        geometry.optics = g.optics;
        out.push(Tomogram {
            name: g.name,
            volume: Array3::zeros((0, 0, 0)),
            voxel_a,
            geometry,
        });
    }
    if out.is_empty() {
        return Err(Error::bad_input(path, "data_global", "no tomogram listed"));
    }
    Ok((out, files))
}

/// A reference MRC resampled to `voxel_a` and boxed (centred) to `n³`.
fn read_reference(path: &Path, voxel_a: f64, n: usize) -> Result<Array3<f32>> {
    let m = mrc::read(path)?;
    let px = m.header.pixel_size_a()[0] as f64;
    if px.is_nan() || px <= 0.0 {
        return Err(Error::bad_input(path, "cella", "the reference has no pixel size in its header; set it (e.g. with mrcfile's voxel_size)"));
    }
    let r = crate::sim::potential::resample_map(&m.data, px, voxel_a).potential;
    Ok(recentre_box(&r, n))
}

/// The file-name prefix of class `c` (from 0) among `classes`: `""` or `class<c+1>_`.
pub fn class_tag(c: usize, classes: usize) -> String {
    if classes > 1 {
        format!("class{}_", c + 1)
    } else {
        String::new()
    }
}

/// Write one iteration's (or the final) maps and FSC plots into `dir`.
fn write_maps(dir: &Path, state: &State, n: usize, voxel_a: f64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let classes = state.half_maps.len();
    for c in 0..classes {
        let tag = class_tag(c, classes);
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

/// The particles of `records` as refinement particles in `tomos` (`particles` is the STAR
/// they came from, for messages).
fn to_particles(
    records: &[ParticleRecord],
    tomos: &[Tomogram],
    classes: usize,
    have_references: bool,
    seed: u64,
    particles: &Path,
) -> Result<Vec<Particle>> {
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let tomo = tomos
            .iter()
            .position(|t| t.name == r.tomo_name)
            .ok_or_else(|| {
                Error::bad_input(
                    particles,
                    "rlnTomoName",
                    format!(
                        "particle {}: tomogram {:?} is not in the tomograms STAR",
                        i + 1,
                        r.tomo_name
                    ),
                )
            })?;
        let half = match r.random_subset {
            1 | 2 => r.random_subset - 1,
            _ => i % 2,
        };
        let class = if classes > 1 {
            if (1..=classes).contains(&r.class) && have_references {
                r.class - 1
            } else {
                // Random-looking but fixed start for classification without a prior.
                (crate::sim::mix_seed(seed, i as u64) % classes as u64) as usize
            }
        } else {
            0
        };
        out.push(Particle {
            tomo,
            position_a: r.centered_coordinate_a,
            euler_deg: r.euler_deg,
            half,
            class,
            score: 0.0,
        });
    }
    Ok(out)
}

/// Run the refinement of `cfg` on the particles of `particles` in the tomograms of
/// `tomograms`, writing into `out` (module docs); collective over `comm`. With `resume`, a
/// checkpoint `out/state.json` written from the same inputs and settings is continued (a
/// finished one only rewrites the final files). A stop signal ends it after the current
/// iteration's checkpoint (`interrupted`).
pub fn run_sta(
    cfg: &StaConfig,
    tomograms: &Path,
    particles: &Path,
    out: &Path,
    resume: bool,
    comm: &dyn Comm,
) -> Result<StaOutcome> {
    signals::install();
    let t0 = Instant::now();
    // names, geometry and voxel sizes first; volumes below, only those this rank averages
    let (mut tomos, volume_files) = read_tomogram_list(tomograms)?;
    let records = read_particles_star(particles)?;
    if records.is_empty() {
        return Err(Error::bad_input(
            particles,
            "data_particles",
            "no particles: nothing to average (lower the picking threshold or check the tomograms)",
        ));
    }
    let voxel_a = tomos[0].voxel_a;
    if tomos
        .iter()
        .any(|t| (t.voxel_a - voxel_a).abs() > 1e-3 * voxel_a)
    {
        return Err(Error::bad_input(
            tomograms,
            "rlnTomoTomogramBinning",
            "tomograms of different voxel sizes: average one binning at a time",
        ));
    }
    let references: Vec<Array3<f32>> = cfg
        .reference
        .iter()
        .map(|p| read_reference(p, voxel_a, cfg.box_px))
        .collect::<Result<_>>()?;
    let classes = cfg.classes.unwrap_or(references.len().max(1));
    let parts = to_particles(
        &records,
        &tomos,
        classes,
        !references.is_empty(),
        cfg.seed,
        particles,
    )?;
    let ranks = particle_ranks(&parts, comm.size());
    let mut needed = vec![false; tomos.len()];
    for (p, r) in parts.iter().zip(&ranks) {
        needed[p.tomo] |= *r == comm.rank();
    }
    load_volumes(&mut tomos, &volume_files, |k| needed[k])?;
    let n_read = needed.iter().filter(|b| **b).count();
    tracing::info!(
        tomograms = n_read,
        of = tomos.len(),
        "this rank reads {n_read} of {} tomogram(s)",
        tomos.len()
    );
    let params = cfg.params(voxel_a)?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    let star_text = read(particles)?;
    let tomo_text = read(tomograms)?;
    let refs_text: Vec<Vec<u8>> = cfg
        .reference
        .iter()
        .map(|p| read(p))
        .collect::<Result<_>>()?;
    let params_json =
        serde_json::to_vec(&(&params, classes)).map_err(|e| Error::Runtime(e.to_string()))?;
    let mut hashed: Vec<&[u8]> = vec![&params_json, &star_text, &tomo_text];
    hashed.extend(refs_text.iter().map(|v| v.as_slice()));
    let hash = input_hash(&hashed);
    let ck_path = out.join("state.json");
    if comm.rank() == 0 {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    // Resume: rank 0 reads the checkpoint and every rank gets it.
    let resumed: Option<State> = {
        let local = if comm.rank() == 0 && resume && ck_path.exists() {
            let text = read(&ck_path)?;
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
        None => initial_state(comm, &tomos, parts, &references, classes, &params)?,
    };
    let n = cfg.box_px;
    let log_path = out.join("sta.json");
    let mut log: Vec<IterationLog> = if state.iteration > 0 {
        std::fs::read(&log_path)
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    log.truncate(state.iteration);
    tracing::info!(
        particles = state.particles.len(),
        classes,
        ranks = comm.size(),
        "subtomogram averaging"
    );
    let mut interrupted = false;
    while state.iteration < params.iterations {
        let t = Instant::now();
        iterate(comm, &tomos, &mut state, &params)?;
        let mean_score = state.particles.iter().map(|p| p.score).sum::<f64>()
            / state.particles.len().max(1) as f64;
        tracing::info!(iteration = state.iteration, resolution_a = ?state.resolution_a, mean_score, "iteration done");
        log.push(IterationLog {
            iteration: state.iteration,
            resolution_a: state.resolution_a.clone(),
            mean_score,
            seconds: t.elapsed().as_secs_f64(),
        });
        if comm.rank() == 0 {
            write_maps(
                &out.join(format!("iter_{:02}", state.iteration)),
                &state,
                n,
                voxel_a,
            )?;
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
            interrupted = true;
            break;
        }
    }
    if comm.rank() == 0 && !interrupted {
        write_maps(out, &state, n, voxel_a)?;
        let refined: Vec<ParticleRecord> = state
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
        write_particles_star(&out.join("particles.star"), voxel_a, n, &refined)?;
    }
    let mut class_sizes = vec![0; classes];
    for p in &state.particles {
        class_sizes[p.class] += 1;
    }
    Ok(StaOutcome {
        particles: state.particles.len(),
        classes,
        box_px: n,
        voxel_a,
        mask_radius_a: params.mask_radius_a,
        log,
        resolution_a: state.resolution_a.clone(),
        class_sizes,
        interrupted,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// How a refinement of simulated particles compares with the simulator's truth.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StaTruth {
    /// Per class, where the FSC of its final map against its true structure (the class's
    /// structure, rendered at the voxel size) falls below 0.5, Å.
    pub fsc_truth_05_a: Vec<f64>,
    /// Refined particles matched to a true particle (same tomogram, within half the mask
    /// radius).
    pub matched: usize,
    /// True particles.
    pub n_truth: usize,
    /// Median orientation error of the matched particles (symmetry-aware), degrees.
    pub median_angle_deg: f64,
    /// Median position error, Å.
    pub median_position_a: f64,
    /// Fraction of matched particles whose class is their structure's (best labelling).
    pub class_accuracy: f64,
}

/// The refinement's entry in `summary.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StaSummary {
    /// Job name.
    pub job: String,
    /// Particles refined.
    pub particles: usize,
    /// Classes.
    pub classes: usize,
    /// Particles per class.
    pub class_sizes: Vec<usize>,
    /// Box, voxels.
    pub box_px: usize,
    /// Voxel size, Å.
    pub voxel_a: f64,
    /// Nyquist of the data, Å (2 × voxel).
    pub nyquist_a: f64,
    /// Final gold-standard resolution per class (FSC 0.143, phase-randomisation corrected), Å.
    pub resolution_a: Vec<f64>,
    /// Per iteration.
    pub log: Vec<IterationLog>,
    /// Wall time of the stage in this run, seconds.
    pub seconds: f64,
    /// Against the truth (simulated runs).
    pub truth: Option<StaTruth>,
    /// Files, relative to the output directory.
    pub files: Vec<String>,
    /// Pictures `(caption, path relative to report/)`.
    pub pictures: Vec<(String, String)>,
}

/// The MRC `path` as an array (errors name the file).
fn read_map(path: &Path) -> Result<Array3<f32>> {
    Ok(mrc::read(path)?.data)
}

/// The class → structure labelling (a permutation when `k == structures`, identity
/// otherwise) that maximises the agreement of `pairs` `(class, structure)`.
fn best_labelling(pairs: &[(usize, usize)], k: usize, structures: usize) -> Vec<usize> {
    fn perms(k: usize) -> Vec<Vec<usize>> {
        if k == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for p in perms(k - 1) {
            for i in 0..=p.len() {
                let mut q = p.clone();
                q.insert(i, k - 1);
                out.push(q);
            }
        }
        out
    }
    let identity: Vec<usize> = (0..k).collect();
    if k != structures || !(2..=5).contains(&k) {
        return identity;
    }
    perms(k)
        .into_iter()
        .max_by_key(|p| pairs.iter().filter(|(c, s)| p[*c] == *s).count())
        .unwrap_or(identity)
}

/// Compare a refinement (its `refined` particles and final `maps`, one per class) with the
/// truth of a simulated run: particles from `truth_star` (RELION-5, class = structure
/// index + 1), true maps from `structures`.
fn against_truth(
    refined: &[ParticleRecord],
    maps: &[Array3<f32>],
    truth_star: &Path,
    structures: &[crate::sim::Structure],
    o: &StaOutcome,
    symmetry: &str,
) -> Result<StaTruth> {
    use crate::core::geometry::euler_zyz_to_matrix;
    use crate::pick::evaluate::{evaluate, Posed};
    let truth = read_particles_star(truth_star)?;
    let sym = symmetry.parse::<crate::core::so3::Symmetry>()?.matrices();
    let posed = |r: &ParticleRecord| Posed {
        position_a: r.centered_coordinate_a,
        pose: euler_zyz_to_matrix(r.euler_deg[0], r.euler_deg[1], r.euler_deg[2]),
    };
    let mut names: Vec<&str> = truth.iter().map(|t| t.tomo_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let (mut angles, mut dists, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for n in names {
        let t: Vec<&ParticleRecord> = truth.iter().filter(|r| r.tomo_name == n).collect();
        let p: Vec<&ParticleRecord> = refined.iter().filter(|r| r.tomo_name == n).collect();
        let tp: Vec<Posed> = t.iter().map(|r| posed(r)).collect();
        let pp: Vec<Posed> = p.iter().map(|r| posed(r)).collect();
        let acc = evaluate(&pp, &tp, 0.5 * o.mask_radius_a, &sym);
        angles.extend(acc.angle_errors_deg);
        dists.extend(acc.distances_a);
        pairs.extend(
            acc.matches
                .iter()
                .map(|&(i, j)| (p[i].class.max(1) - 1, t[j].class.max(1) - 1)),
        );
    }
    let labels = best_labelling(&pairs, o.classes, structures.len());
    let class_accuracy =
        pairs.iter().filter(|(c, s)| labels[*c] == *s).count() as f64 / pairs.len().max(1) as f64;
    let mut fsc_truth_05_a = Vec::new();
    for (c, &s) in labels.iter().enumerate() {
        let Some(st) = structures.get(s) else {
            fsc_truth_05_a.push(f64::NAN);
            continue;
        };
        let map = &maps[c];
        let t = recentre_box(&st.render(o.voxel_a)?.potential, o.box_px);
        let f = crate::recon::fsc::fsc(map.view(), t.view(), o.voxel_a);
        fsc_truth_05_a.push(crate::sta::fsc::resolution_at(&f.s_per_a, &f.fsc, 0.5));
    }
    let med = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            crate::core::stats::median(v)
        }
    };
    Ok(StaTruth {
        fsc_truth_05_a,
        matched: pairs.len(),
        n_truth: truth.len(),
        median_angle_deg: med(&angles),
        median_position_a: med(&dists),
        class_accuracy,
    })
}

/// Rank 0 after [`run_sta`] in `lamella run`: write `out/sta/<job>.h5` (`/sta/<job>`,
/// from the files in `job_dir`), the pictures of the final maps, and compare with the truth
/// when `truth` (`relion/particles_truth.star` and the simulated structures) is given.
pub fn finish_stage(
    out: &Path,
    job_dir: &Path,
    cfg: &StaConfig,
    o: &StaOutcome,
    truth: Option<(&Path, &[crate::sim::Structure])>,
) -> Result<StaSummary> {
    use crate::io::sta_container::{
        write_sta_file, StaClassMaps, StaIteration, StaParticleRow, StaRecord,
    };
    let rel = |p: &Path| {
        p.strip_prefix(out)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let fsc_of = |p: &Path| -> Option<crate::sta::fsc::GoldStandard> {
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    };
    let mut iterations = Vec::new();
    for l in &o.log {
        let dir = job_dir.join(format!("iter_{:02}", l.iteration));
        let classes = (0..o.classes)
            .map(|c| {
                let tag = class_tag(c, o.classes);
                Ok(StaClassMaps {
                    half1: read_map(&dir.join(format!("{tag}half1.mrc")))?,
                    half2: read_map(&dir.join(format!("{tag}half2.mrc")))?,
                    fsc: fsc_of(&dir.join(format!("{tag}fsc.json"))),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        iterations.push(StaIteration {
            iteration: l.iteration,
            classes,
        });
    }
    let maps: Vec<Array3<f32>> = (0..o.classes)
        .map(|c| read_map(&job_dir.join(format!("{}map.mrc", class_tag(c, o.classes)))))
        .collect::<Result<_>>()?;
    let refined = read_particles_star(&job_dir.join("particles.star"))?;
    let mut tomograms: Vec<String> = Vec::new();
    let particles = refined
        .iter()
        .map(|r| {
            let t = match tomograms.iter().position(|n| *n == r.tomo_name) {
                Some(i) => i,
                None => {
                    tomograms.push(r.tomo_name.clone());
                    tomograms.len() - 1
                }
            };
            StaParticleRow {
                tomogram: t as u32,
                x_a: r.centered_coordinate_a[0],
                y_a: r.centered_coordinate_a[1],
                z_a: r.centered_coordinate_a[2],
                rot_deg: r.euler_deg[0],
                tilt_deg: r.euler_deg[1],
                psi_deg: r.euler_deg[2],
                half: r.random_subset as u32,
                reserved: 0,
                class: r.class as u32,
            }
        })
        .collect();
    let params = cfg.params(o.voxel_a)?;
    let h5 = out.join("sta").join(format!("{}.h5", cfg.job));
    let record = StaRecord {
        job: cfg.job.clone(),
        voxel_a: o.voxel_a,
        symmetry: cfg.symmetry.clone(),
        mask_radius_a: o.mask_radius_a,
        mask: crate::sta::refine::refinement_mask(&params, o.voxel_a),
        iterations,
        maps,
        resolution_a: o.resolution_a.clone(),
        tomograms,
        particles,
    };
    write_sta_file(&h5, &record)?;
    let maps = record.maps;
    let mut pictures = Vec::new();
    for (c, m) in maps.iter().enumerate() {
        let tag = class_tag(c, o.classes);
        pictures.extend(super::pictures::write_volume_pictures(
            out,
            &format!("sta_{}_{tag}map", cfg.job),
            &format!("STA {} class {}: final map", cfg.job, c + 1),
            m,
        )?);
        let png = job_dir.join(format!("{tag}fsc.png"));
        if png.is_file() {
            pictures.push((
                format!(
                    "STA {} class {}: gold-standard FSC ({:.1} Å)",
                    cfg.job,
                    c + 1,
                    o.resolution_a[c]
                ),
                format!("../{}", rel(&png)),
            ));
        }
    }
    let report_dir = out.join("report");
    for c in 0..o.classes {
        let curves: Vec<(usize, &crate::sta::fsc::GoldStandard)> = record
            .iterations
            .iter()
            .filter_map(|it| Some((it.iteration, it.classes.get(c)?.fsc.as_ref()?)))
            .collect();
        if curves.is_empty() {
            continue;
        }
        let file = format!(
            "sta_{}_{}fsc_iterations.png",
            cfg.job,
            class_tag(c, o.classes)
        );
        crate::sta::fsc::write_fsc_iterations_png(
            &report_dir.join(&file),
            &format!("{} class {}: FSC per iteration", cfg.job, c + 1),
            &curves,
        )?;
        pictures.push((
            format!(
                "STA {} class {}: FSC per iteration (0.143 line)",
                cfg.job,
                c + 1
            ),
            file,
        ));
    }
    if !o.log.is_empty() {
        let per_class: Vec<Vec<(f64, f64)>> = (0..o.classes)
            .map(|c| {
                o.log
                    .iter()
                    .filter_map(|l| Some((l.iteration as f64, *l.resolution_a.get(c)?)))
                    .collect()
            })
            .collect();
        let file = format!("sta_{}_resolution.png", cfg.job);
        crate::sta::fsc::write_resolution_png(
            &report_dir.join(&file),
            &format!("{}: resolution per iteration", cfg.job),
            &per_class,
        )?;
        pictures.push((format!("STA {}: resolution per iteration", cfg.job), file));
    }
    let truth = match truth {
        Some((star, structures)) if star.is_file() => {
            let t = against_truth(&refined, &maps, star, structures, o, &cfg.symmetry)?;
            tracing::info!(
                fsc_truth_05_a = ?t.fsc_truth_05_a,
                median_angle_deg = t.median_angle_deg,
                median_position_a = t.median_position_a,
                class_accuracy = t.class_accuracy,
                "STA vs truth"
            );
            Some(t)
        }
        _ => None,
    };
    let mut files: Vec<String> = (0..o.classes)
        .map(|c| rel(&job_dir.join(format!("{}map.mrc", class_tag(c, o.classes)))))
        .collect();
    files.push(rel(&job_dir.join("particles.star")));
    files.push(rel(&h5));
    Ok(StaSummary {
        job: cfg.job.clone(),
        particles: o.particles,
        classes: o.classes,
        class_sizes: o.class_sizes.clone(),
        box_px: o.box_px,
        voxel_a: o.voxel_a,
        nyquist_a: 2.0 * o.voxel_a,
        resolution_a: o.resolution_a.clone(),
        log: o.log.clone(),
        seconds: o.seconds,
        truth,
        files,
        pictures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelling_finds_the_swapped_classes() {
        // classes 0/1 hold structures 1/0 except one particle
        let pairs = [(0, 1), (0, 1), (1, 0), (1, 0), (1, 1)];
        assert_eq!(best_labelling(&pairs, 2, 2), vec![1, 0]);
        assert_eq!(best_labelling(&pairs, 1, 2), vec![0]);
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: StaConfig = toml::from_str("box = 24\nsymmetry = \"O\"").unwrap();
        assert_eq!((c.box_px, c.iterations, c.job.as_str()), (24, 3, "refine"));
        assert!((c.params(8.0).unwrap().mask_radius_a - 72.0).abs() < 1e-9);
        assert!(toml::from_str::<StaConfig>("boxx = 24").is_err());
        assert!(c.validate(Path::new("c.toml")).is_ok());
        let bad = StaConfig { box_px: 23, ..c };
        assert!(bad.validate(Path::new("c.toml")).is_err());
    }
}
