//! `lamella run CONFIG.toml`: the stage graph (simulate or input -> [motioncorr] -> [align] ->
//! reconstruct) over the tilt series, distributed over MPI ranks largest-first, with resume and a summary.
//!
//! Per series the rank that owns it writes `sim/<name>.*` (simulated data),
//! `tomograms/<name>_bin<k>.mrc`, `ts/<name>.h5` (its container) and `ts/<name>.json`
//! (its summary). Rank 0 then writes `lamella.h5` (linking every `ts/<name>.h5`),
//! `summary.json` and `sim/truth.json`, and prints the summary table.

use super::config::{Config, GeometrySource, InputSeries};
use super::distribute::{assign_largest_first, items_for_rank};
use super::inputs::{self, LoadedSeries};
use super::summary::{AlignSummary, RunSummary, SeriesSummary};
use super::{metrics, motioncorr, pictures, signals, simio};
use crate::align::evaluate::alignment_error;
use crate::align::output as align_output;
use crate::align::stage::{self as align_stage, AlignChoice, AlignConfig};
use crate::align::AlignReport;
use crate::comm::{broadcast_serde, gather_serde, Comm};
use crate::core::geometry::TiltSeriesGeometry;
use crate::device::Device;
use crate::io::container::{self, RunInfo, SeriesRecord, StageRecord, TomogramRecord};
use crate::io::mrc;
use crate::recon::plan::{
    default_max_memory_bytes, reconstruct_with_stop, CheckpointSpec, ReconstructOutcome,
    ReconstructSpec,
};
use crate::sim::{self, Preset, SeriesParams};
use crate::{Error, Result, VERSION};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options from the command line.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Skip tilt series whose outputs are complete with the same inputs and parameters.
    pub resume: bool,
    /// The command line, recorded in the container.
    pub command_line: String,
    /// `--series`: run only the tilt series of these names.
    pub series: Vec<String>,
    /// `--series-index`: run only the tilt series at these 0-based positions of the config
    /// (the order of [`series_names`]).
    pub series_index: Vec<usize>,
}

impl RunOptions {
    /// True when `--series` or `--series-index` selects a subset: such a run writes only the
    /// per-series outputs (`ts/<name>.{h5,json}`, tomograms, ...), not `summary.json`,
    /// `lamella.h5`, the report, the RELION exports or the STA stage, which a later run over
    /// all series (e.g. `--resume`, every series skipped) writes. Array tasks of one config
    /// can thus run at the same time without writing the same files.
    pub fn is_partial(&self) -> bool {
        !self.series.is_empty() || !self.series_index.is_empty()
    }
}

/// What the run ended with, on every rank.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RunOutcome {
    /// The summary (rank 0 only; `None` elsewhere).
    #[serde(skip)]
    pub summary: Option<RunSummary>,
    /// Number of series that failed.
    pub failed: usize,
    /// Largest exit code of the failures (DESIGN §6), 0 when none.
    pub exit_code: i32,
    /// True when a signal stopped the run early.
    pub interrupted: bool,
}

enum Source {
    Sim {
        params: Box<SeriesParams>,
        seed: u64,
    },
    Input(InputSeries),
}

struct Job {
    name: String,
    cost: u64,
    source: Source,
}

/// Seed of the `i`-th simulated series, from the run seed (splitmix64 mixing).
pub fn series_seed(seed: u64, i: usize) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn build_jobs(cfg: &Config) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    if let Some(s) = &cfg.simulate {
        let preset: Preset = s
            .preset
            .parse()
            .map_err(|e| Error::Config(format!("simulate.preset: {e}")))?;
        let shared = simio::find_shared_data(cfg.shared_data.as_deref())?;
        for (i, mut p) in sim::preset(preset, &shared).into_iter().enumerate() {
            if let Some(mc) = &cfg.motioncorr {
                mc.apply_to_sim(&mut p);
            }
            s.apply_overrides(&mut p, &shared)?;
            let n_tilts = ((p.tilt_max_deg - p.tilt_min_deg) / p.tilt_step_deg).round() as u64 + 1;
            jobs.push(Job {
                name: p.name.clone(),
                cost: n_tilts * (p.nx * p.ny) as u64,
                source: Source::Sim {
                    params: Box::new(p),
                    seed: series_seed(s.seed, i),
                },
            });
        }
    }
    for inp in &cfg.input {
        jobs.push(Job {
            name: inp.series_name(),
            cost: inputs::input_cost(inp)?,
            source: Source::Input(inp.clone()),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for j in &jobs {
        if !seen.insert(j.name.clone()) {
            return Err(Error::Config(format!(
                "two tilt series are called {:?}: rename one [[input]]",
                j.name
            )));
        }
    }
    Ok(jobs)
}

/// The jobs `opts` selects, in config order: all of them unless [`RunOptions::is_partial`].
/// An unknown name or an index past the end is an error that lists what the config has.
fn select_jobs(jobs: Vec<Job>, opts: &RunOptions) -> Result<Vec<Job>> {
    if !opts.is_partial() {
        return Ok(jobs);
    }
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    if let Some(n) = opts.series.iter().find(|n| !names.contains(&n.as_str())) {
        return Err(Error::Config(format!(
            "--series {n:?}: the config's tilt series are {}",
            names.join(", ")
        )));
    }
    if let Some(k) = opts.series_index.iter().find(|&&k| k >= jobs.len()) {
        return Err(Error::Config(format!(
            "--series-index {k}: the config has {} tilt series (indices 0..={})",
            jobs.len(),
            jobs.len().saturating_sub(1)
        )));
    }
    Ok(jobs
        .into_iter()
        .enumerate()
        .filter(|(i, j)| opts.series_index.contains(i) || opts.series.contains(&j.name))
        .map(|(_, j)| j)
        .collect())
}

/// The tilt-series names of the config at `config_path`, in config order (simulated series,
/// then `[[input]]`): index `k` is what `--series-index k` runs.
pub fn series_names(config_path: &Path) -> Result<Vec<String>> {
    let (cfg, _) = Config::load(config_path)?;
    Ok(build_jobs(&cfg)?.into_iter().map(|j| j.name).collect())
}

/// The size of every tilt series of `cfg` that `lamella plan` needs, in config order, from
/// the simulator presets or the headers of the MRC stacks (and `.mdoc` frame counts); no
/// pixel data are read. The tomogram thickness is the one [`run`] picks when the config
/// gives none (simulated: the specimen, ×1.3 with `[align]`; input: a quarter of the
/// smaller image side).
pub fn series_shapes(cfg: &Config) -> Result<Vec<super::plan::SeriesShape>> {
    build_jobs(cfg)?
        .into_iter()
        .map(|j| {
            let rc_th = cfg.reconstruct.thickness_a;
            Ok(match j.source {
                Source::Sim { params: p, .. } => {
                    let n_tilts =
                        ((p.tilt_max_deg - p.tilt_min_deg) / p.tilt_step_deg).round() as usize + 1;
                    let margin = if cfg.align.is_some() {
                        SLAB_MARGIN
                    } else {
                        1.0
                    };
                    super::plan::SeriesShape {
                        name: j.name,
                        cost: j.cost,
                        n_tilts,
                        nx: p.nx,
                        ny: p.ny,
                        pixel_a: p.pixel_a,
                        sim_thickness_a: Some(p.thickness_a),
                        thickness_a: rc_th.unwrap_or(p.thickness_a * margin),
                        frames_per_tilt: p.frames_per_tilt,
                        particles: Some(p.structures.iter().map(|s| s.1).sum()),
                    }
                }
                Source::Input(inp) => {
                    let h = mrc::read_header(&inp.stack)?;
                    // an unreadable .mdoc fails its series later, as without the plan
                    let md = inp
                        .mdoc
                        .as_ref()
                        .and_then(|m| crate::io::mdoc::Mdoc::read(m).ok());
                    let hp = h.pixel_size_a()[0] as f64;
                    let pixel_a = inp
                        .pixel_a
                        .or((hp > 0.0).then_some(hp))
                        .or(md.as_ref().and_then(|d| d.pixel_spacing_a()))
                        .unwrap_or(1.0);
                    let frames = md
                        .as_ref()
                        .and_then(|d| d.tilts().iter().find_map(|t| t.num_sub_frames))
                        .unwrap_or(0);
                    super::plan::SeriesShape {
                        name: j.name,
                        cost: j.cost,
                        n_tilts: h.nz,
                        nx: h.nx,
                        ny: h.ny,
                        pixel_a,
                        sim_thickness_a: None,
                        thickness_a: rc_th.unwrap_or(h.nx.min(h.ny) as f64 / 4.0 * pixel_a),
                        frames_per_tilt: frames,
                        particles: None,
                    }
                }
            })
        })
        .collect()
}

fn job_key(job: &Job) -> String {
    match &job.source {
        Source::Sim { params, seed } => format!(
            "sim:{}:{}",
            seed,
            serde_json::to_string(params).unwrap_or_default()
        ),
        Source::Input(i) => format!("input:{}", serde_json::to_string(i).unwrap_or_default()),
    }
}

/// Run the pipeline described by `config_path` on this rank; collective over `comm`.
pub fn run(config_path: &Path, opts: &RunOptions, comm: &dyn Comm) -> Result<RunOutcome> {
    let t0 = Instant::now();
    let start_time = now_rfc3339();
    let (cfg, config_text) = Config::load(config_path)?;
    check_memory(&cfg, opts, comm)?;
    signals::install();
    for d in ["ts", "tomograms"] {
        let p = cfg.out.join(d);
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    }
    let jobs = select_jobs(build_jobs(&cfg)?, opts)?;
    let partial = opts.is_partial();
    let costs: Vec<u64> = jobs.iter().map(|j| j.cost).collect();
    let assignment = assign_largest_first(&costs, comm.size());
    let mine = items_for_rank(&costs, &assignment, comm.rank());
    tracing::info!(
        series = jobs.len(),
        mine = mine.len(),
        "tilt series assigned largest-first over {} rank(s)",
        comm.size()
    );
    let bar = (comm.rank() == 0 && std::io::stderr().is_terminal())
        .then(|| indicatif::ProgressBar::new(mine.len() as u64));
    let mut done: Vec<SeriesSummary> = Vec::new();
    // Test hook: raise the stop flag (as SIGTERM would) after this many series.
    let stop_after: Option<usize> = std::env::var("LAMELLA_STOP_AFTER_SERIES")
        .ok()
        .and_then(|v| v.parse().ok());
    for &i in &mine {
        if signals::stop_requested() {
            tracing::warn!("stop signal received: leaving the remaining tilt series for --resume");
            break;
        }
        let job = &jobs[i];
        let _span = tracing::info_span!("ts", name = %job.name).entered();
        let s = match process(&cfg, job, opts, comm) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                SeriesSummary {
                    name: job.name.clone(),
                    rank: comm.rank(),
                    error: Some(e.to_string()),
                    error_code: Some(e.exit_code()),
                    ..Default::default()
                }
            }
        };
        done.push(s);
        if stop_after.is_some_and(|n| done.len() >= n) {
            signals::request_stop();
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut flag = [if signals::stop_requested() { 1.0 } else { 0.0 }];
    comm.allreduce_max_f64(&mut flag);
    let interrupted = flag[0] > 0.0;
    // collective: every rank takes part before rank 0 goes on alone
    let hosts = {
        let mut h: Vec<String> = comm
            .all_gather_bytes(comm.host().as_bytes())
            .into_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        h.sort();
        h.dedup();
        h
    };
    let gathered = gather_serde(comm, 0, &done);
    // Rank 0: the exports the STA stage reads (tomograms.star, particles_picked.star).
    let root = match gathered {
        Some(all) => {
            let mut series: Vec<SeriesSummary> = all.into_iter().flatten().collect();
            series.sort_by(|a, b| a.name.cmp(&b.name));
            let finished: Vec<String> = series
                .iter()
                .filter(|s| s.error.is_none())
                .map(|s| s.name.clone())
                .collect();
            let exported = if partial {
                Ok(())
            } else {
                write_exports(&cfg, &finished).map_err(|e| e.to_string())
            };
            Some((series, exported))
        }
        None => None,
    };
    let sta = match &cfg.sta {
        Some(st) if !interrupted && !partial => {
            // every rank learns whether the inputs are there (rank 0 wrote them)
            let ready: std::result::Result<(), String> =
                broadcast_serde(comm, 0, root.as_ref().map(|(_, e)| e.clone().map(|_| ())));
            ready.map_err(Error::Runtime)?;
            Some(sta_stage(&cfg, st, &jobs, opts, comm)?)
        }
        _ => None,
    };
    let sta_interrupted = sta.as_ref().is_some_and(|(_, o)| o.interrupted);
    let root_outcome = if let Some((series, exported)) = root {
        exported.map_err(Error::Runtime)?;
        let failed = series.iter().filter(|s| s.error.is_some()).count();
        let exit_code = series
            .iter()
            .filter_map(|s| s.error_code)
            .max()
            .unwrap_or(0);
        let summary = RunSummary {
            version: VERSION.to_string(),
            ranks: comm.size(),
            wall_seconds: t0.elapsed().as_secs_f64(),
            complete: !interrupted && !sta_interrupted && series.len() == jobs.len(),
            geometry: geometry_note(&cfg),
            series,
            sta: sta.and_then(|(s, _)| s),
        };
        if partial {
            println!("{}", summary.table());
            println!(
                "partial run (--series/--series-index): summary.json, lamella.h5 and the report \
                 come from a run over all series (`lamella run CONFIG --resume`)"
            );
        } else {
            finish_root(
                &cfg,
                &config_text,
                opts,
                hosts,
                comm.size(),
                &summary,
                &start_time,
            )?;
        }
        Some(RunOutcome {
            summary: Some(summary),
            failed,
            exit_code,
            interrupted: interrupted || sta_interrupted,
        })
    } else {
        None
    };
    let shared = broadcast_serde(comm, 0, root_outcome.clone());
    Ok(match root_outcome {
        Some(o) => o,
        None => shared,
    })
}

/// Refuse before any work when a stage's estimated peak memory ([`super::plan`]) exceeds
/// what a rank has: [`default_max_memory_bytes`] (as the reconstruction budget), taken on
/// rank 0 and broadcast so that every rank decides alike. Errors: [`Error::Config`] naming
/// the stage, the series, the estimate, the memory and the fixes.
fn check_memory(cfg: &Config, opts: &RunOptions, comm: &dyn Comm) -> Result<()> {
    let selected: Vec<String> = select_jobs(build_jobs(cfg)?, opts)?
        .into_iter()
        .map(|j| j.name)
        .collect();
    let shapes = series_shapes(cfg)?
        .into_iter()
        .filter(|s| selected.contains(&s.name))
        .collect();
    let here = (comm.rank() == 0).then(default_max_memory_bytes);
    let available: u64 = broadcast_serde(comm, 0, here);
    let plan = super::plan::estimate(
        cfg,
        shapes,
        super::plan::PlanOptions {
            ranks: comm.size(),
            threads: rayon::current_num_threads(),
            memory_per_rank_bytes: available,
        },
    )?;
    super::plan::check_fits(&plan, available)
}

/// Rank 0 after the gather: the truth index, `relion/tomograms.star` (+ tilt-series STARs,
/// `particles_truth.star`) and, with `[pick]`, `relion/particles_picked.star`.
fn write_exports(cfg: &Config, finished: &[String]) -> Result<()> {
    if let Some(s) = &cfg.simulate {
        let dir = cfg.out.join("sim");
        let names: Vec<String> = finished
            .iter()
            .filter(|n| dir.join(format!("{n}_truth.json")).exists())
            .cloned()
            .collect();
        if !names.is_empty() {
            simio::write_truth_index(&dir, s.seed, &s.preset, &names)?;
        }
    }
    super::export::write_relion_exports(&cfg.out, finished, cfg.simulate.is_some())?;
    if cfg.pick.is_some() {
        match super::pick::write_picked_star(&cfg.out, finished)? {
            Some((p, n)) => tracing::info!("{n} picked particles in {}", p.display()),
            None => tracing::warn!("[pick]: no series has picks"),
        }
    }
    Ok(())
}

/// The `[sta]` stage, collective: refine the particles (default the merged picks) in the
/// exported tomograms into `sta/<job>/`; rank 0 then writes `sta/<job>.h5` and compares with
/// the truth of a simulated run. Returns the summary (rank 0) and the outcome.
fn sta_stage(
    cfg: &Config,
    st: &super::sta::StaConfig,
    jobs: &[Job],
    opts: &RunOptions,
    comm: &dyn Comm,
) -> Result<(Option<super::sta::StaSummary>, super::sta::StaOutcome)> {
    let relion = cfg.out.join("relion");
    let particles = st
        .particles
        .clone()
        .unwrap_or_else(|| relion.join("particles_picked.star"));
    let job_dir = cfg.out.join("sta").join(&st.job);
    let _span = tracing::info_span!("sta", job = %st.job).entered();
    let o = super::sta::run_sta(
        st,
        &relion.join("tomograms.star"),
        &particles,
        &job_dir,
        opts.resume,
        comm,
    )?;
    if comm.rank() != 0 || o.interrupted {
        return Ok((None, o));
    }
    let structures: Option<Vec<sim::Structure>> = jobs.iter().find_map(|j| match &j.source {
        Source::Sim { params, .. } => Some(params.structures.iter().map(|s| s.0.clone()).collect()),
        Source::Input(_) => None,
    });
    let truth_star = relion.join("particles_truth.star");
    let summary = super::sta::finish_stage(
        &cfg.out,
        &job_dir,
        st,
        &o,
        structures.as_deref().map(|s| (truth_star.as_path(), s)),
    )?;
    Ok((Some(summary), o))
}

fn geometry_note(cfg: &Config) -> String {
    if let Some(a) = &cfg.align {
        let m = match a.method {
            AlignChoice::FiducialFree => "fiducial-free",
            AlignChoice::Beads => "gold-bead",
        };
        return format!("{m} alignment from the nominal geometry");
    }
    match (cfg.simulate.is_some(), cfg.reconstruct.geometry) {
        (true, GeometrySource::Truth) => {
            "simulated series use the true alignment (no alignment stage yet)".into()
        }
        (true, GeometrySource::Nominal) => "nominal angles, no shifts".into(),
        (false, _) => "from the input .tlt/.xf/.mdoc".into(),
    }
}

/// Rank 0 at the end (no collectives here): summary.json, the report, lamella.h5, the table.
fn finish_root(
    cfg: &Config,
    config_text: &str,
    opts: &RunOptions,
    hosts: Vec<String>,
    ranks: usize,
    summary: &RunSummary,
    start_time: &str,
) -> Result<()> {
    simio::write_json(&cfg.out.join("summary.json"), summary)?;
    pictures::write_index(&cfg.out, summary)?;
    let info = RunInfo {
        program_version: VERSION.to_string(),
        config_text: config_text.to_string(),
        command_line: opts.command_line.clone(),
        ranks,
        hosts,
        start_time: start_time.to_string(),
        end_time: now_rfc3339(),
    };
    let links: Vec<(String, String)> = summary
        .series
        .iter()
        .filter(|s| cfg.out.join("ts").join(format!("{}.h5", s.name)).exists())
        .map(|s| (s.name.clone(), format!("ts/{}.h5", s.name)))
        .collect();
    let sta_links: Vec<(String, String)> = summary
        .sta
        .iter()
        .map(|s| (s.job.clone(), format!("sta/{}.h5", s.job)))
        .filter(|(_, rel)| cfg.out.join(rel).exists())
        .collect();
    container::write_master(&cfg.out.join("lamella.h5"), &info, &links, &sta_links)?;
    println!("{}", summary.table());
    println!("results: {}", cfg.out.display());
    println!("report:  {}", cfg.out.join("report/index.html").display());
    Ok(())
}

/// Run the chain for one tilt series on this rank.
fn process(cfg: &Config, job: &Job, opts: &RunOptions, comm: &dyn Comm) -> Result<SeriesSummary> {
    let ts_dir = cfg.out.join("ts");
    let ts_path = ts_dir.join(format!("{}.h5", job.name));
    let summary_path = ts_dir.join(format!("{}.json", job.name));
    let recon_json = serde_json::to_string(&cfg.reconstruct).unwrap_or_default();
    let align_json = serde_json::to_string(&cfg.align).unwrap_or_default();
    let motion_json = serde_json::to_string(&cfg.motioncorr).unwrap_or_default();
    let ctf_json = serde_json::to_string(&cfg.ctf).unwrap_or_default();
    let pick_json = serde_json::to_string(&cfg.pick).unwrap_or_default();
    let hash = container::input_hash(&[
        pick_json.as_bytes(),
        VERSION.as_bytes(),
        job_key(job).as_bytes(),
        recon_json.as_bytes(),
        align_json.as_bytes(),
        motion_json.as_bytes(),
        ctf_json.as_bytes(),
    ]);
    if opts.resume {
        if let Some(s) = resumed_summary(&ts_path, &summary_path, &job.name, &hash)? {
            tracing::info!("complete with the same inputs: skipped (--resume)");
            return Ok(SeriesSummary {
                rank: comm.rank(),
                resumed: true,
                ..s
            });
        }
    }
    let mut seconds = BTreeMap::new();
    let mut loaded = load_or_simulate(cfg, job, &mut seconds)?;
    let rc = &cfg.reconstruct;
    let device = Device::select(rc.device, comm.local_rank())?;
    let mut stages = Vec::new();
    let mut pictures = Vec::new();
    let moved = match &cfg.motioncorr {
        Some(mc) => {
            let (mdoc, truth) = match &job.source {
                Source::Sim { .. } => {
                    let dir = cfg.out.join("sim");
                    (
                        dir.join(format!("{}.mdoc", job.name)),
                        Some(dir.join(format!("{}_truth.json", job.name))),
                    )
                }
                Source::Input(inp) => (
                    inp.mdoc.clone().ok_or_else(|| {
                        Error::Config(format!(
                            "[[input]] {:?}: [motioncorr] needs its .mdoc",
                            job.name
                        ))
                    })?,
                    None,
                ),
            };
            let m = motioncorr::run_stage(
                &cfg.out,
                mc,
                &job.name,
                &mdoc,
                &job_key(job),
                opts.resume,
                &mut loaded,
                truth.as_deref(),
            )?;
            seconds.insert("motioncorr".to_string(), m.seconds);
            stages.push(StageRecord {
                name: "motioncorr".into(),
                input_hash: m.hash.clone(),
                seconds: m.seconds,
                complete: true,
            });
            pictures.push(m.picture.clone());
            Some(m)
        }
        None => None,
    };
    let ctf = match &cfg.ctf {
        Some(cc) => Some(ctf_series(cfg, cc, job, &mut loaded, &mut pictures)?),
        None => None,
    };
    if let Some((_, secs)) = &ctf {
        seconds.insert("ctf".to_string(), *secs);
        stages.push(StageRecord {
            name: "ctf".into(),
            input_hash: hash.clone(),
            seconds: *secs,
            complete: true,
        });
    }
    let aligned = match &cfg.align {
        Some(ac) => Some(align_series(
            cfg,
            ac,
            job,
            &mut loaded,
            &device,
            &mut pictures,
        )?),
        None => None,
    };
    if let Some(a) = &aligned {
        seconds.insert("align".to_string(), a.seconds);
        stages.push(StageRecord {
            name: "align".into(),
            input_hash: hash.clone(),
            seconds: a.seconds,
            complete: true,
        });
    }
    let t = Instant::now();
    let g = &loaded.geometry;
    let slab_thickness = aligned.as_ref().and_then(|a| a.report.thickness_a);
    let thickness_a = rc
        .thickness_a
        .or(slab_thickness.map(|t| t * SLAB_MARGIN))
        .unwrap_or_else(|| match &loaded.truth {
            Some(t) => t.dim().0 as f64 * g.pixel_a,
            None => (g.nx.min(g.ny) as f64 / 4.0) * g.pixel_a,
        });
    let key = Path::new("reconstruct");
    let spec = ReconstructSpec {
        method: rc.method(key)?,
        binnings: rc.binnings.clone(),
        thickness_a,
        lowpass: rc.lowpass,
        invert_contrast: rc.invert_contrast,
        max_memory_bytes: rc.max_memory_bytes(key)?,
        checkpoint: Some(CheckpointSpec {
            dir: cfg.out.join("checkpoints").join(&job.name),
            every: 0,
            resume: opts.resume,
        }),
        ctf_correction: rc.ctf_correction,
        wiener_snr: rc.wiener_snr,
    };
    let rels: Vec<String> = rc
        .binnings
        .iter()
        .map(|b| format!("tomograms/{}_bin{b}.mrc", job.name))
        .collect();
    let outputs: Vec<PathBuf> = rels.iter().map(|r| cfg.out.join(r)).collect();
    let stop = signals::stop_requested;
    let made = match reconstruct_with_stop(loaded.stack.view(), g, &spec, &device, &outputs, &stop)?
    {
        ReconstructOutcome::Complete(v) => v,
        ReconstructOutcome::Interrupted(i) => {
            return Err(Error::Runtime(format!(
                "{i}; run again with --resume to continue"
            )))
        }
    };
    let mut tomograms = Vec::new();
    let mut corr = BTreeMap::new();
    let mut files = Vec::new();
    for (tomo, rel) in made.into_iter().zip(rels) {
        let bin = tomo.bin;
        let vol = match tomo.volume {
            Some(v) => v,
            None => mrc::read(&tomo.path)?.data,
        };
        pictures.extend(pictures::write_volume_pictures(
            &cfg.out,
            &format!("{}_bin{bin}", job.name),
            &format!("bin {bin}"),
            &vol,
        )?);
        if let Some(truth) = &loaded.truth {
            let c = metrics::truth_correlation(&vol, truth, bin);
            tracing::info!(bin, correlation = c, "tomogram vs truth");
            corr.insert(format!("bin{bin}"), c);
            pictures.extend(pictures::write_truth_pictures(
                &cfg.out,
                &job.name,
                truth,
                bin,
                vol.dim(),
            )?);
        }
        tomograms.push(TomogramRecord {
            bin,
            pixel_a: tomo.pixel_a,
            kind: "full".into(),
            data: vol,
            mrc_path: Some(rel.clone()),
        });
        files.push(rel);
    }
    let recon_s = t.elapsed().as_secs_f64();
    seconds.insert("reconstruct".to_string(), recon_s);
    stages.push(StageRecord {
        name: "reconstruct".into(),
        input_hash: hash.clone(),
        seconds: recon_s,
        complete: true,
    });
    let picked = match &cfg.pick {
        Some(pc) => {
            let p = pick_series(cfg, pc, job, &loaded, &tomograms, &device)?;
            seconds.insert("pick".to_string(), p.seconds);
            stages.push(StageRecord {
                name: "pick".into(),
                input_hash: hash.clone(),
                seconds: p.seconds,
                complete: true,
            });
            pictures.extend(p.pictures.iter().cloned());
            Some(p)
        }
        None => None,
    };
    if let Some(first) = tomograms.first() {
        let (nz, ny, nx) = first.data.dim();
        let stack = match &job.source {
            Source::Sim { .. } => format!("sim/{}.mrc", job.name),
            Source::Input(inp) => inp.stack.to_string_lossy().into_owned(),
        };
        super::export::write_series_export(
            &cfg.out,
            &super::export::TomogramExport {
                name: job.name.clone(),
                geometry: loaded.geometry.clone(),
                binning: first.bin,
                shape_xyz: [nx, ny, nz],
                tomogram: first.mrc_path.clone().unwrap_or_default(),
                stack,
            },
        )?;
    }
    let record = SeriesRecord {
        name: job.name.clone(),
        geometry: loaded.geometry.clone(),
        nominal_tilts_deg: loaded.nominal_tilts_deg.clone(),
        tomograms,
        stages,
        truth_correlation: corr.values().next().copied(),
        rank: comm.rank(),
        alignment: aligned.as_ref().map(|a| a.report.clone()),
        motion: moved.as_ref().map(|m| m.table.clone()),
        ctf: ctf.as_ref().map(|c| c.0.table.clone()),
        picking: picked.as_ref().map(|p| p.record.clone()),
    };
    let summary = SeriesSummary {
        name: job.name.clone(),
        rank: comm.rank(),
        n_tilts: g.len(),
        image_size: [g.nx, g.ny],
        pixel_a: g.pixel_a,
        seconds,
        truth_correlation: corr,
        tomograms: files,
        pictures,
        resumed: false,
        motion: moved.map(|m| m.summary),
        alignment: aligned.map(|a| a.summary),
        ctf: ctf.map(|c| c.0.summary(&|p| rel_to(&cfg.out, p))),
        picking: picked.map(|p| p.summary),
        error: None,
        error_code: None,
    };
    // the summary first, the container last: the container's `complete` marks the series done
    simio::write_json(&summary_path, &summary)?;
    container::write_series_file(&ts_path, &record)?;
    Ok(summary)
}

/// The saved summary of a series that is complete with the same input hash, if any.
fn resumed_summary(
    ts_path: &Path,
    summary_path: &Path,
    name: &str,
    hash: &str,
) -> Result<Option<SeriesSummary>> {
    let Some(stage) = container::read_series_stage(ts_path, name, "reconstruct")? else {
        return Ok(None);
    };
    if !stage.complete || stage.input_hash != hash {
        return Ok(None);
    }
    let Ok(text) = std::fs::read_to_string(summary_path) else {
        return Ok(None);
    };
    Ok(serde_json::from_str(&text).ok())
}

fn load_or_simulate(
    cfg: &Config,
    job: &Job,
    seconds: &mut BTreeMap<String, f64>,
) -> Result<LoadedSeries> {
    let t = Instant::now();
    match &job.source {
        Source::Sim { params, seed } => {
            let s = sim::simulate_series(params, *seed)?;
            simio::write_series(&cfg.out.join("sim"), &s)?;
            seconds.insert("simulate".into(), t.elapsed().as_secs_f64());
            let geometry = match (&cfg.align, cfg.reconstruct.geometry) {
                (None, GeometrySource::Truth) => s.geometry.clone(),
                _ => nominal_geometry(&s.geometry, &s.nominal_tilts_deg),
            };
            Ok(LoadedSeries {
                name: s.name,
                stack: s.stack,
                geometry,
                nominal_tilts_deg: s.nominal_tilts_deg,
                truth: Some(s.truth_volume),
                true_geometry: Some(s.geometry),
            })
        }
        Source::Input(inp) => {
            let l = inputs::load_input(inp)?;
            seconds.insert("load".into(), t.elapsed().as_secs_f64());
            Ok(l)
        }
    }
}

/// `p` relative to the output directory `out` (as given when outside it).
fn rel_to(out: &Path, p: &Path) -> String {
    p.strip_prefix(out)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// The CTF stage of one series (`crate::ctf::stage`): fit every tilt, replace the defocus of
/// `loaded.geometry`, write `ctf/<name>.*` and add the pictures; log the error against the
/// truth when it is known. Returns the outcome and its seconds.
fn ctf_series(
    cfg: &Config,
    cc: &crate::ctf::stage::CtfConfig,
    job: &Job,
    loaded: &mut LoadedSeries,
    pictures: &mut Vec<(String, String)>,
) -> Result<(crate::ctf::stage::CtfOutcome, f64)> {
    let t = Instant::now();
    let stack_file = match &job.source {
        Source::Sim { .. } => format!("{}.mrc", job.name),
        Source::Input(i) => i
            .stack
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let out = crate::ctf::stage::run(
        loaded.stack.view(),
        &mut loaded.geometry,
        cc,
        loaded.true_geometry.as_ref(),
        &cfg.out.join("ctf"),
        &job.name,
        &stack_file,
    )?;
    for (caption, p) in out.files.pictures(&job.name) {
        pictures.push((caption, format!("../{}", rel_to(&cfg.out, p))));
    }
    match &out.error {
        Some(e) => tracing::info!(
            median_error_a = e.median_defocus_error_a,
            max_error_a = e.max_defocus_error_a,
            median_angle_error_deg = e.median_angle_error_deg,
            hand = out.table.hand,
            true_hand = e.true_hand,
            "CTF fit vs truth; per tilt |error| Å: {:?}",
            e.defocus_error_a
                .iter()
                .map(|v| v.round())
                .collect::<Vec<_>>()
        ),
        None => tracing::info!(
            hand = out.table.hand,
            evidence = out.table.hand_evidence,
            "CTF fit of {} tilts",
            out.table.rows.len()
        ),
    }
    Ok((out, t.elapsed().as_secs_f64()))
}

/// The reconstruction is this much thicker than the specimen slab found by the alignment.
const SLAB_MARGIN: f64 = 1.3;

/// What the alignment stage leaves for the rest of [`process`].
struct Aligned {
    report: AlignReport,
    summary: AlignSummary,
    seconds: f64,
}

/// The alignment stage of one series: align (replacing `loaded.geometry`, and the stack
/// when beads were erased), write `align/<name>.{xf,tlt}`, the preali stack and the
/// residual charts (added to `pictures`), and measure the error against the truth when it
/// is known.
fn align_series(
    cfg: &Config,
    ac: &AlignConfig,
    job: &Job,
    loaded: &mut LoadedSeries,
    device: &Device,
    pictures: &mut Vec<(String, String)>,
) -> Result<Aligned> {
    let t = Instant::now();
    let out = align_stage::run(loaded.stack.view(), &loaded.geometry, ac, device)?;
    let dir = cfg.out.join("align");
    let f = align_output::write_outputs(&dir, &job.name, loaded.stack.view(), &out.report)?;
    let rel = |p: &Path| {
        p.strip_prefix(&cfg.out)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    pictures.push((
        format!("{}: alignment residual per tilt", job.name),
        format!("../{}", rel(&f.residuals_png)),
    ));
    pictures.push((
        format!("{}: alignment shifts per tilt", job.name),
        format!("../{}", rel(&f.shifts_png)),
    ));
    let error = match &loaded.true_geometry {
        Some(tg) => {
            let thick = loaded
                .truth
                .as_ref()
                .map(|v| v.dim().0 as f64 * tg.pixel_a)
                .unwrap_or(tg.nx as f64 * tg.pixel_a / 4.0);
            let e = alignment_error(&out.report.geometry, tg, thick)?;
            tracing::info!(
                rms_shift_px = e.rms_shift_px,
                axis_error_deg = e.axis_error_deg,
                tilt_offset_deg = e.tilt_offset_deg,
                rms_reprojection_px = e.rms_reprojection_px,
                "alignment vs truth"
            );
            Some(e)
        }
        None => None,
    };
    loaded.geometry = out.report.geometry.clone();
    if let Some(s) = out.erased {
        loaded.stack = s;
    }
    let summary = AlignSummary {
        method: out.report.method.name().to_string(),
        rms_residual_px: out.report.rms_residual_px,
        thickness_a: out.report.thickness_a,
        error,
        files: [&f.xf, &f.tlt, &f.preali].iter().map(|p| rel(p)).collect(),
    };
    Ok(Aligned {
        report: out.report,
        summary,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The pick stage of one series (`super::pick`): search the tomogram of the configured
/// binning with the template (the first simulated structure by default), and compare with
/// the simulator's truth when the series is simulated.
fn pick_series(
    cfg: &Config,
    pc: &super::pick::PickConfig,
    job: &Job,
    loaded: &LoadedSeries,
    tomograms: &[TomogramRecord],
    device: &Device,
) -> Result<super::pick::Picked> {
    let bin = pc.binning(&cfg.reconstruct.binnings);
    let tomo = tomograms
        .iter()
        .find(|t| t.bin == bin)
        .ok_or_else(|| Error::Config(format!("pick.bin = {bin}: no tomogram of that binning")))?;
    let shared = simio::find_shared_data(cfg.shared_data.as_deref()).unwrap_or_default();
    let (simulated, truth) = match &job.source {
        Source::Sim { params, .. } => {
            let p = cfg.out.join("sim").join(format!("{}_truth.json", job.name));
            (
                params.structures.first().map(|s| &s.0),
                Some(simio::read_truth(&p)?),
            )
        }
        Source::Input(_) => (None, None),
    };
    let (structure, label) = super::pick::template_structure(pc, &shared, simulated)?;
    let symmetry = pc
        .symmetry
        .as_deref()
        .or(cfg.sta.as_ref().map(|s| s.symmetry.as_str()))
        .unwrap_or("C1")
        .parse()?;
    super::pick::pick_series(
        pc,
        &super::pick::PickInput {
            out: &cfg.out,
            name: &job.name,
            tomogram: &tomo.data,
            bin,
            pixel_a: tomo.pixel_a,
            geometry: &loaded.geometry,
            template: &structure,
            template_name: &label,
            bright: cfg.reconstruct.invert_contrast,
            ctf_correction: cfg.reconstruct.ctf_correction,
            truth: truth.as_ref(),
            symmetry,
            device,
        },
    )
}

/// The true geometry with nominal angles and no shifts (what the microscope reports).
fn nominal_geometry(truth: &TiltSeriesGeometry, nominal: &[f64]) -> TiltSeriesGeometry {
    let mut g = truth.clone();
    for (t, &a) in g.tilts.iter_mut().zip(nominal) {
        t.tilt_deg = a;
        t.shift_x_a = 0.0;
        t.shift_y_a = 0.0;
    }
    g
}

/// Current UTC time as RFC 3339 (seconds precision), without extra crates.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant's algorithm, public domain description)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Output directory of a config (for the CLI's messages).
pub fn output_dir(config_path: &Path) -> Result<PathBuf> {
    Ok(Config::load(config_path)?.0.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_series_and_are_stable() {
        assert_ne!(series_seed(1, 0), series_seed(1, 1));
        assert_eq!(series_seed(7, 2), series_seed(7, 2));
    }

    #[test]
    fn rfc3339_format() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 20);
        assert!(s.starts_with("20") && s.ends_with('Z'));
    }
}
