//! Command-line interface (clap), one file per subcommand. Each subcommand builds a typed
//! request and calls the library; no algorithm code here.

pub mod align;
pub mod ctf;
pub mod info;
pub mod logging;
pub mod motioncorr;
pub mod pick;
pub mod plan;
pub mod reconstruct;
pub mod reconstruct_particles;
pub mod report;
pub mod run;
pub mod simulate;
pub mod sta;

use crate::comm::Comm;
use clap::{Parser, Subcommand, ValueEnum};

/// The options that name a tilt series on disk (shared by `align` and `reconstruct`).
#[derive(Debug, clap::Args)]
pub struct SeriesArgs {
    /// Tilt stack (MRC, [tilt, y, x]).
    #[arg(long)]
    pub stack: std::path::PathBuf,
    /// Tilt angles (IMOD .tlt/.rawtlt, degrees, one per image).
    #[arg(long)]
    pub tlt: Option<std::path::PathBuf>,
    /// SerialEM .mdoc (angles, dose, pixel size, tilt axis) when there is no .tlt.
    #[arg(long)]
    pub mdoc: Option<std::path::PathBuf>,
    /// Pixel size in Å (default: the MRC header / mdoc).
    #[arg(long)]
    pub pixel: Option<f64>,
    /// Tilt-axis angle in degrees CCW from +Y (default: the .xf / mdoc).
    #[arg(long)]
    pub axis: Option<f64>,
}

impl SeriesArgs {
    /// The input description the pipeline loader takes, with an optional name, `.xf` and
    /// truth volume.
    pub fn input(
        &self,
        name: Option<String>,
        xf: Option<std::path::PathBuf>,
        truth: Option<std::path::PathBuf>,
    ) -> crate::pipeline::config::InputSeries {
        crate::pipeline::config::InputSeries {
            name,
            stack: self.stack.clone(),
            tlt: self.tlt.clone(),
            xf,
            mdoc: self.mdoc.clone(),
            pixel_a: self.pixel,
            axis_deg: self.axis,
            truth,
            defocus: None,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines prefixed with the MPI rank.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// lamella: cryo-electron tomography from raw tilt series to 3D structures, on one
/// workstation or many MPI ranks.
#[derive(Debug, Parser)]
#[command(
    name = "lamella",
    version,
    after_help = "Examples:\n  lamella simulate --preset tiny --out sim/\n  lamella reconstruct --stack sim/ts_00.mrc --tlt sim/ts_00.tlt --xf sim/ts_00.xf --bin 2 --out ts_00_bin2.mrc\n  mpirun -n 4 lamella run configs/demo.toml\n  lamella info"
)]
pub struct Cli {
    /// Worker threads per rank (default: $SLURM_CPUS_PER_TASK, else the cores of this host
    /// divided by the ranks on it).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate a tilt-series dataset with full ground truth.
    Simulate(simulate::Args),
    /// Motion-correct tilt movies (global alignment, dose-weighted and even/odd sums), the
    /// movies shared out over MPI ranks.
    Motioncorr(motioncorr::Args),
    /// Align a tilt series (fiducial-free or gold beads): IMOD .xf/.tlt, preali stack, residual charts.
    Align(align::Args),
    /// Estimate the CTF (defocus U/V, astigmatism) of every tilt, tilt-aware: IMOD .defocus,
    /// RELION-5 STAR, fit pictures.
    Ctf(ctf::Args),
    /// Reconstruct a tomogram from an MRC stack and IMOD .tlt (+ .xf) by WBP or SIRT, at several
    /// binnings, in slabs when needed.
    Reconstruct(reconstruct::Args),
    /// Pick particles in a tomogram by template matching (FLCF, uniform rotation search,
    /// rotations shared over MPI ranks): score/angle maps, RELION-5 STAR, Dynamo .tbl.
    Pick(pick::Args),
    /// Subtomogram averaging: gold-standard refinement of particle poses, Fourier-space
    /// averages with one MPI allreduce per iteration, FSC, classes.
    Sta(sta::Args),
    /// Reconstruct a map from particles exported as 2D tilt stacks (RELION-5 / WarpTools)
    /// with their poses, by Fourier insertion with CTF and dose weights.
    ReconstructParticles(reconstruct_particles::Args),
    /// Run the pipeline described by a TOML config (MPI-parallel over tilt series).
    Run(run::Args),
    /// Estimate memory and time per stage and tilt series of a config, the distribution over
    /// ranks and a suggested #SBATCH block (nothing is run).
    Plan(plan::Args),
    /// Print devices, MPI ranks, threads and library versions.
    Info(info::Args),
    /// Write the HTML report (`OUT/report/index.html`, pictures embedded) of a run from its
    /// `summary.json` (`lamella run` writes it at the end too).
    Report(report::Args),
}

/// Run the parsed command on this rank. Returns the process exit code.
pub fn dispatch(cli: &Cli, comm: &dyn Comm) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Simulate(a) => simulate::run(a, comm),
        Command::Motioncorr(a) => motioncorr::run(a, comm),
        Command::Align(a) => align::run(a, comm),
        Command::Ctf(a) => ctf::run(a, comm),
        Command::Reconstruct(a) => reconstruct::run(a, comm),
        Command::Pick(a) => pick::run(a, comm),
        Command::Sta(a) => sta::run(a, comm),
        Command::ReconstructParticles(a) => reconstruct_particles::run(a, comm),
        Command::Run(a) => run::run(a, comm),
        Command::Plan(a) => plan::run(a, cli.threads, comm),
        Command::Info(a) => info::run(a, comm),
        Command::Report(a) => report::run(a, comm),
    }
}

/// Set rayon's global thread count: `--threads`, else `$SLURM_CPUS_PER_TASK`, else this
/// host's cores divided by the ranks on this host (at least 1). Returns the count.
pub fn init_threads(threads: Option<usize>, comm: &dyn Comm) -> usize {
    let ranks_here = {
        let me = comm.host();
        comm.all_gather_bytes(me.as_bytes())
            .iter()
            .filter(|h| h.as_slice() == me.as_bytes())
            .count()
            .max(1)
    };
    let n = threads
        .unwrap_or_else(|| default_threads(ranks_here))
        .max(1);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    n
}

/// Threads per rank when `--threads` is not given: `$SLURM_CPUS_PER_TASK`, else this host's
/// cores divided by `ranks_here` (the ranks on this host), at least 1.
pub fn default_threads(ranks_here: usize) -> usize {
    std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            (cores / ranks_here.max(1)).max(1)
        })
        .max(1)
}
