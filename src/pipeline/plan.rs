//! `lamella plan CONFIG.toml`: peak memory and time of every stage of every tilt series,
//! estimated from the data sizes alone (simulator presets, MRC headers, `.mdoc`) and the
//! measured per-unit costs in [`costs`]; the distribution over ranks (largest-first, the same
//! assignment as `lamella run`, [`super::distribute`]); a suggested `#SBATCH` block.
//! `lamella run` refuses to start when a stage's estimate exceeds the memory of a rank
//! ([`check_fits`]).
//!
//! Units: bytes and seconds throughout; times assume `threads` rayon threads per rank that
//! scale linearly (the rates in [`costs`] are per thread), so they are lower bounds on many
//! cores and the `--time` of the `#SBATCH` block carries [`TIME_SAFETY`].

use super::config::Config;
use super::distribute::assign_largest_first;
use crate::core::geometry::TiltSeriesGeometry;
use crate::device::DeviceChoice;
use crate::recon::plan::{memory_model, tomogram_planes, Method, ReconstructSpec};
use crate::recon::slab::{fmt_bytes, plan_slabs, sirt_halo};
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// Measured per-unit costs. Rates are per rayon thread: the figure measured on the 2-core
/// development VM divided by 2 (the measurements used both cores).
pub mod costs {
    /// Resident memory of the process before any data (binary, libraries, thread pool, FFT
    /// plans): peak RSS of `lamella run configs/tiny.toml --list-series` 16.7 MB and
    /// `lamella info` 18.4 MB (`/usr/bin/time -v`, 2026-12-08, docs/performance.md
    /// "Planning figures"), rounded up for the thread pool of a real run.
    pub const BASE_BYTES: u64 = 24 << 20;
    /// Fixed seconds of a run (config, containers, summary, report): the runs' wall time
    /// less the sum of their stage times, 0.06 s (tiny) and 1.0 s (demo)
    /// (docs/performance.md "Planning figures").
    pub const RUN_OVERHEAD_S: f64 = 1.0;
    /// Simulation: (voxel of the specimen volume × tilt) per thread-second: the demo
    /// preset's series (41 tilts of 256², 100 planes, 10-frame movies) took 8.1–10.4 s,
    /// release, 2 threads (docs/performance.md "Planning figures").
    pub const SIM_VOXEL_TILTS_PER_S: f64 = 1.5e7;
    /// Reading an `[[input]]` stack, bytes/s: an assumed 0.5 GB/s per rank from a shared
    /// filesystem (not measured on a cluster; this VM's page cache reads a 31 MB MRC at
    /// 1.1 GB/s with `dd`, docs/performance.md "Planning figures").
    pub const READ_BYTES_PER_S: f64 = 5e8;
    /// Motion correction in the pipeline (movies read from disk, sums written): (pixel ×
    /// frame) per thread-second: demo, 41 × 256² × 10 frames in 2.1–2.9 s on 2 threads
    /// (docs/performance.md "Planning figures"; the in-memory bench, "Motion correction",
    /// is 7× faster).
    pub const MOTION_PIXEL_FRAMES_PER_S: f64 = 5.4e6;
    /// CTF estimation: tilt pixels per thread-second: one 4096² tilt in 3.0 s,
    /// `cargo bench --bench ctf_estimate` (docs/performance.md "CTF estimation").
    pub const CTF_PIXELS_PER_S: f64 = 2.8e6;
    /// Alignment (fiducial-free): tilt pixels per thread-second: demo, 41 × 256² in
    /// 94–144 s on 2 threads (docs/performance.md "Planning figures").
    pub const ALIGN_PIXELS_PER_S: f64 = 1.1e4;
    /// What the reconstruct stage does after the back-projection (truth correlation,
    /// pictures, container): tomogram voxels per second, not divided by threads: tiny
    /// 4.6 × 10⁵ voxels in 0.46 s, demo 8.9 × 10⁶ in 7.7–12 s less their back-projection
    /// (docs/performance.md "Planning figures").
    pub const RECON_POST_VOXELS_PER_S: f64 = 1.15e6;
    /// WBP: voxel updates (voxel × tilt) per thread-second of the whole reconstruction
    /// (read, pre-process, filter, back-project, write): 61 × 512² → 512² × 128 in 2.79 s
    /// = 7.3 × 10⁸/s (docs/performance.md "Side by side, one sitting").
    pub const WBP_UPDATES_PER_S: f64 = 3.65e8;
    /// SIRT: voxel updates per iteration (forward + back projection) per thread-second:
    /// 10.7 s per iteration of 61 × 1024² → 1024² × 256 (docs/performance.md, issue 3).
    pub const SIRT_UPDATES_PER_S: f64 = 7.6e8;
    /// Template matching: (tomogram voxel × rotation) per thread-second: 74 rotations/s on
    /// a 128 × 128 × 64 tomogram (docs/performance.md "Picking", the low end).
    pub const PICK_VOXEL_ROTATIONS_PER_S: f64 = 3.9e7;
    /// STA: particle-iterations per thread-second at box [`STA_BOX`], scaled by
    /// `(box/STA_BOX)³`: demo, 36 particles × 3 iterations at box 32 in 12.8 s on 2
    /// threads (docs/performance.md "Planning figures"; the bench, 38.5 particles/s at box
    /// 24, is the same figure within 2× once scaled).
    pub const STA_PARTICLES_PER_S: f64 = 4.25;
    /// STA box of that measurement.
    pub const STA_BOX: f64 = 32.0;
    /// Specimen-volume-sized f32 arrays the simulator holds at once: `lamella simulate
    /// --preset demo` peaked at 99 MB (docs/performance.md "Planning figures"), which this
    /// model puts at 130 MB.
    pub const SIM_VOLUME_COPIES: u64 = 3;
    /// Stack-sized f32 arrays the alignment holds (input, pre-aligned, binned, filtered,
    /// re-projections): `lamella align` of `demo_01` (41 × 256²) peaked at 153 MB
    /// (docs/performance.md "Planning figures") = base + 12 stacks.
    pub const ALIGN_STACK_COPIES: u64 = 12;
    /// Tomogram-sized f32 arrays template matching holds besides its FFT buffers (tomogram,
    /// score, angle index, local mean and variance, mask).
    pub const PICK_VOLUMES: u64 = 6;
}

/// Multiplier of the estimated wall time in the suggested `--time`.
pub const TIME_SAFETY: f64 = 2.0;
/// Multiplier of the estimated peak memory in the suggested `--mem-per-cpu`: the estimates
/// were 0.65–0.76× of the measured peak RSS of the tiny run and 0.7× of the demo run's
/// (docs/performance.md "Planning figures").
pub const MEMORY_SAFETY: f64 = 2.0;

/// What `lamella plan` needs to know about one tilt series (no pixel data).
#[derive(Clone, Debug, Serialize)]
pub struct SeriesShape {
    pub name: String,
    /// Distribution cost (tilts × pixels), as `lamella run` uses it.
    pub cost: u64,
    pub n_tilts: usize,
    pub nx: usize,
    pub ny: usize,
    /// Pixel size, Å.
    pub pixel_a: f64,
    /// Simulated specimen thickness, Å (None for `[[input]]`).
    pub sim_thickness_a: Option<f64>,
    /// Tomogram thickness, Å (as `lamella run` chooses it when the config gives none).
    pub thickness_a: f64,
    /// Movie frames per tilt (0: no movies).
    pub frames_per_tilt: usize,
    /// Particles in the series when known (simulated: the truth).
    pub particles: Option<usize>,
}

/// Estimate for one stage: of one tilt series, or collective (`series` None).
#[derive(Clone, Debug, Serialize)]
pub struct StageEstimate {
    pub stage: String,
    pub series: Option<String>,
    /// Peak resident memory of the rank during the stage, bytes.
    pub peak_bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// True when the stage runs on a GPU (`device = "cuda"`).
    pub gpu: bool,
}

/// One rank's share.
#[derive(Clone, Debug, Serialize)]
pub struct RankLoad {
    pub rank: usize,
    pub series: Vec<String>,
    pub seconds: f64,
    pub peak_bytes: u64,
}

/// The whole estimate.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub ranks: usize,
    pub threads: usize,
    /// Memory one rank may use, bytes.
    pub memory_per_rank_bytes: u64,
    pub series: Vec<SeriesShape>,
    /// Per-series stages in order, then the collective ones.
    pub stages: Vec<StageEstimate>,
    pub distribution: Vec<RankLoad>,
    /// Largest rank time plus the collective stages, seconds.
    pub wall_seconds: f64,
    /// Sum of all stage times × threads × ranks-involved, thread-seconds.
    pub cpu_seconds: f64,
    /// Largest peak over all ranks and stages, bytes.
    pub peak_bytes: u64,
    /// The suggested `#SBATCH` lines.
    pub sbatch: Vec<String>,
}

/// Resources to plan for.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    pub ranks: usize,
    pub threads: usize,
    pub memory_per_rank_bytes: u64,
}

fn f32s(n: usize) -> u64 {
    4 * n as u64
}

/// Estimate every stage of `series` under `cfg` with `opts` (module docs).
pub fn estimate(cfg: &Config, series: Vec<SeriesShape>, opts: PlanOptions) -> Result<Plan> {
    let t = opts.threads.max(1) as f64;
    let rc = &cfg.reconstruct;
    let gpu = rc.device == DeviceChoice::Cuda;
    let key = Path::new("reconstruct");
    let method = rc.method(key)?;
    let budget = rc
        .max_memory_bytes(key)?
        .unwrap_or(opts.memory_per_rank_bytes);
    let mut stages = Vec::new();
    let mut per_series = Vec::new();
    for s in &series {
        let stack = f32s(s.n_tilts * s.nx * s.ny);
        let pixels = (s.n_tilts * s.nx * s.ny) as f64;
        let mut mine = Vec::new();
        let mut push = |stage: &str, peak: u64, seconds: f64, gpu: bool| {
            mine.push(StageEstimate {
                stage: stage.into(),
                series: Some(s.name.clone()),
                peak_bytes: costs::BASE_BYTES + peak,
                seconds,
                gpu,
            })
        };
        // a simulated series keeps its truth volume (specimen size) through every stage
        let truth = match s.sim_thickness_a {
            Some(th) => {
                let vox = s.nx * s.ny * tomogram_planes(th, s.pixel_a);
                // the simulator returns every tilt's movie at once
                let movies = f32s(s.n_tilts * s.frames_per_tilt * s.nx * s.ny);
                push(
                    "simulate",
                    costs::SIM_VOLUME_COPIES * f32s(vox) + 2 * stack + movies,
                    pixels * (vox / (s.nx * s.ny)) as f64 / (costs::SIM_VOXEL_TILTS_PER_S * t),
                    false,
                );
                f32s(vox)
            }
            None => {
                push(
                    "input",
                    stack,
                    stack as f64 / costs::READ_BYTES_PER_S,
                    false,
                );
                0
            }
        };
        // what the pipeline holds between stages: the stack and the truth
        let held = stack + truth;
        if cfg.motioncorr.is_some() && s.frames_per_tilt > 0 {
            // one movie's frames and their spectra (complex: 2 f32) at a time
            let movie = f32s(3 * s.frames_per_tilt * s.nx * s.ny);
            push(
                "motioncorr",
                held + movie,
                pixels * s.frames_per_tilt as f64 / (costs::MOTION_PIXEL_FRAMES_PER_S * t),
                false,
            );
        }
        if cfg.ctf.is_some() {
            push(
                "ctf",
                held + stack,
                pixels / (costs::CTF_PIXELS_PER_S * t),
                false,
            );
        }
        if cfg.align.is_some() {
            push(
                "align",
                held + (costs::ALIGN_STACK_COPIES - 1) * stack,
                pixels / (costs::ALIGN_PIXELS_PER_S * t),
                false,
            );
        }
        let (peak, seconds, volumes) = reconstruct_estimate(cfg, s, &method, budget)?;
        push(
            "reconstruct",
            held + peak,
            seconds / t + volumes as f64 / 4.0 / costs::RECON_POST_VOXELS_PER_S,
            gpu,
        );
        if let Some(pc) = &cfg.pick {
            let bin = pc
                .bin
                .unwrap_or_else(|| rc.binnings.iter().copied().max().unwrap_or(1));
            let vox = (s.nx / bin)
                * (s.ny / bin)
                * tomogram_planes(s.thickness_a, s.pixel_a * bin as f64);
            let rotations = crate::core::so3::uniform_count(pc.angular_step_deg) as f64;
            // per thread: one complex spectrum of the tomogram size being correlated
            let fft = 2 * f32s(vox) * opts.threads.max(1) as u64;
            push(
                "pick",
                held + volumes + costs::PICK_VOLUMES * f32s(vox) + fft,
                rotations * vox as f64 / (costs::PICK_VOXEL_ROTATIONS_PER_S * t),
                gpu,
            );
        }
        per_series.push((
            s.cost,
            mine.iter().map(|e| e.seconds).sum::<f64>(),
            mine.iter().map(|e| e.peak_bytes).max().unwrap_or(0),
        ));
        stages.extend(mine);
    }
    let costs_v: Vec<u64> = series.iter().map(|s| s.cost).collect();
    let assignment = assign_largest_first(&costs_v, opts.ranks);
    let distribution: Vec<RankLoad> = (0..opts.ranks.max(1))
        .map(|r| {
            let idx: Vec<usize> = (0..series.len()).filter(|&i| assignment[i] == r).collect();
            RankLoad {
                rank: r,
                series: idx.iter().map(|&i| series[i].name.clone()).collect(),
                seconds: idx.iter().map(|&i| per_series[i].1).sum(),
                peak_bytes: idx.iter().map(|&i| per_series[i].2).max().unwrap_or(0),
            }
        })
        .collect();
    let mut wall =
        costs::RUN_OVERHEAD_S + distribution.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let mut cpu: f64 = per_series.iter().map(|p| p.1).sum::<f64>() * t;
    if let Some(st) = &cfg.sta {
        let particles: usize = series
            .iter()
            .map(|s| {
                s.particles
                    .or(cfg.pick.as_ref().map(|p| p.max_peaks))
                    .unwrap_or(0)
            })
            .sum();
        let scale = (st.box_px as f64 / costs::STA_BOX).powi(3);
        let all_threads = t * opts.ranks.max(1) as f64;
        let seconds = st.iterations as f64 * particles as f64 * scale
            / (costs::STA_PARTICLES_PER_S * all_threads);
        let box3 = f32s(st.box_px.pow(3));
        let share = particles.div_ceil(opts.ranks.max(1)) as u64;
        // each rank: its particles' subtomograms (+ spectra), two half maps and their
        // Fourier accumulators, one rotated copy per thread
        let peak = costs::BASE_BYTES + 3 * share * box3 + 8 * box3 + 2 * box3 * t as u64;
        stages.push(StageEstimate {
            stage: "sta".into(),
            series: None,
            peak_bytes: peak,
            seconds,
            gpu: false,
        });
        wall += seconds;
        cpu += seconds * all_threads;
    }
    let peak = stages.iter().map(|e| e.peak_bytes).max().unwrap_or(0);
    let mut plan = Plan {
        ranks: opts.ranks.max(1),
        threads: opts.threads.max(1),
        memory_per_rank_bytes: opts.memory_per_rank_bytes,
        series,
        stages,
        distribution,
        wall_seconds: wall,
        cpu_seconds: cpu,
        peak_bytes: peak,
        sbatch: Vec::new(),
    };
    plan.sbatch = sbatch_lines(&plan, gpu, rc.device == DeviceChoice::Auto);
    Ok(plan)
}

/// Reconstruction of one series: (peak bytes besides the stack, thread-seconds, bytes of
/// all its tomograms). The working set is [`memory_model`] of `recon::plan` under the
/// slab plan `budget` gives (the pipeline then holds every binning's tomogram as well).
fn reconstruct_estimate(
    cfg: &Config,
    s: &SeriesShape,
    method: &Method,
    budget: u64,
) -> Result<(u64, f64, u64)> {
    let rc = &cfg.reconstruct;
    let spec = ReconstructSpec {
        method: method.clone(),
        binnings: rc.binnings.clone(),
        thickness_a: s.thickness_a,
        lowpass: rc.lowpass,
        invert_contrast: rc.invert_contrast,
        max_memory_bytes: Some(budget),
        checkpoint: None,
        ctf_correction: rc.ctf_correction,
        wiener_snr: rc.wiener_snr,
    };
    let shape = (s.n_tilts, s.ny, s.nx);
    let mut working = 0u64;
    let mut volumes = 0u64;
    let mut seconds = 0.0;
    for &bin in &rc.binnings {
        let (by, bx) = (s.ny / bin, s.nx / bin);
        let voxel_a = s.pixel_a * bin as f64;
        let nz = tomogram_planes(s.thickness_a, voxel_a);
        let mem = memory_model(&spec, shape, bin, nz);
        let updates = (s.n_tilts * by * bx * nz) as f64;
        let halo = match method {
            Method::Wbp { .. } => {
                seconds += updates / costs::WBP_UPDATES_PER_S;
                0
            }
            Method::Sirt { iterations, .. } => {
                seconds += *iterations as f64 * updates / costs::SIRT_UPDATES_PER_S;
                // nominal geometry: evenly spaced tilts over ±60°
                let angles: Vec<f64> = (0..s.n_tilts)
                    .map(|i| -60.0 + 120.0 * i as f64 / (s.n_tilts.max(2) - 1) as f64)
                    .collect();
                let g = TiltSeriesGeometry::from_angles(s.nx, s.ny, s.pixel_a, &angles, 0.0);
                sirt_halo(&g.projections(bin), (nz, by, bx), voxel_a, *iterations)
            }
        };
        let lines = match plan_slabs(by, mem, budget, halo) {
            Ok(p) => p
                .slabs
                .iter()
                .map(|sl| sl.padded_height())
                .max()
                .unwrap_or(by),
            // `reconstruct` refuses such a budget itself (with its own message)
            Err(_) => (2 * halo + 1).min(by),
        };
        working = working.max(mem.bytes(lines));
        volumes += f32s(nz * by * bx);
    }
    Ok((working + volumes, seconds, volumes))
}

/// `HH:MM:SS` (or `D-HH:MM:SS`) of `seconds`, rounded up to whole minutes.
pub fn slurm_time(seconds: f64) -> String {
    let m = (seconds / 60.0).ceil().max(1.0) as u64;
    let (d, h, m) = (m / 1440, m / 60 % 24, m % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:00")
    } else {
        format!("{h:02}:{m:02}:00")
    }
}

fn sbatch_lines(p: &Plan, gpu: bool, auto: bool) -> Vec<String> {
    let rank_peak = p
        .distribution
        .iter()
        .map(|r| r.peak_bytes)
        .max()
        .unwrap_or(0);
    let rank_peak = rank_peak.max(p.peak_bytes);
    let per_cpu_mib = ((rank_peak as f64 * MEMORY_SAFETY) / p.threads as f64 / (1u64 << 20) as f64)
        .ceil()
        .max(100.0) as u64;
    // 300 s: the templates' `--signal=B:USR1@300` margin to save and requeue
    let time = slurm_time(p.wall_seconds * TIME_SAFETY + 300.0);
    let mut v = vec![
        format!("#SBATCH --ntasks={}", p.ranks),
        format!("#SBATCH --cpus-per-task={}", p.threads),
        format!("#SBATCH --mem-per-cpu={per_cpu_mib}M"),
        format!("#SBATCH --time={time}"),
    ];
    if gpu {
        v.push("#SBATCH --gpus-per-task=1".into());
    } else if auto {
        v.push(
            "# device = \"auto\": add --gpus-per-task=1 to run reconstruct/pick on a GPU".into(),
        );
    }
    v.extend([
        "#SBATCH --signal=B:USR1@300".to_string(),
        "#SBATCH --requeue".to_string(),
        "#SBATCH --open-mode=append".to_string(),
    ]);
    v
}

/// The first stage whose estimated peak exceeds `available` bytes, as a config error
/// (exit code 2) naming the stage, the series, the estimate, the memory and the fixes.
pub fn check_fits(plan: &Plan, available: u64) -> Result<()> {
    match plan.stages.iter().find(|e| e.peak_bytes > available) {
        None => Ok(()),
        Some(e) => Err(Error::Config(format!(
            "stage {} of {} needs an estimated {} of memory but a rank has {} available: \
             give each rank more memory (--mem-per-cpu / --mem, or fewer ranks per node), \
             or use a higher binning (reconstruct.binnings) or a smaller simulate.size; \
             `lamella plan CONFIG` shows every stage's estimate",
            e.stage,
            e.series.as_deref().unwrap_or("all series"),
            fmt_bytes(e.peak_bytes),
            fmt_bytes(available)
        ))),
    }
}

impl Plan {
    /// The human-readable report: stage × series table, totals, ranks, `#SBATCH` block.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "plan: {} rank(s) × {} thread(s), {} per rank",
            self.ranks,
            self.threads,
            fmt_bytes(self.memory_per_rank_bytes)
        );
        let _ = writeln!(
            o,
            "{:<12} {:<16} {:>12} {:>10}",
            "stage", "series", "peak memory", "time"
        );
        for e in &self.stages {
            let over = if e.peak_bytes > self.memory_per_rank_bytes {
                "  > memory per rank"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "{:<12} {:<16} {:>12} {:>9.1}s{}{over}",
                e.stage,
                e.series.as_deref().unwrap_or("(all)"),
                fmt_bytes(e.peak_bytes),
                e.seconds,
                if e.gpu { " gpu" } else { "" },
            );
        }
        let _ = writeln!(
            o,
            "total: wall {:.1} s, {:.1} thread-s, peak {} per rank",
            self.wall_seconds,
            self.cpu_seconds,
            fmt_bytes(self.peak_bytes)
        );
        for r in &self.distribution {
            let _ = writeln!(
                o,
                "rank {}: {} series ({}), {:.1} s, peak {}",
                r.rank,
                r.series.len(),
                r.series.join(", "),
                r.seconds,
                fmt_bytes(r.peak_bytes)
            );
        }
        let _ = writeln!(o, "suggested resources (slurm/README.md):");
        for l in &self.sbatch {
            let _ = writeln!(o, "{l}");
        }
        o
    }
}
