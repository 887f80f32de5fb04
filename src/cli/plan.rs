//! `lamella plan CONFIG.toml`: estimate memory and time per stage and tilt series, the
//! distribution over ranks and a `#SBATCH` block, without running anything.

use crate::comm::Comm;
use crate::pipeline::config::Config;
use crate::pipeline::plan::{check_fits, estimate, PlanOptions};
use crate::pipeline::run::series_shapes;
use crate::recon::plan::{default_max_memory_bytes, local_ranks};
use std::path::PathBuf;

/// Estimate the peak memory and time of every stage of every tilt series of a config (from
/// the presets or the MRC headers; nothing is run) and suggest SLURM resources.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  lamella plan configs/demo.toml\n  lamella plan my.toml --ranks 8 --threads 16 --memory-per-rank 60\n  lamella plan my.toml --json"
)]
pub struct Args {
    /// The run configuration (TOML; see configs/demo.toml).
    pub config: PathBuf,
    /// MPI ranks to plan for (tilt series are shared out largest-first, as `lamella run`).
    #[arg(long, default_value_t = 1)]
    pub ranks: usize,
    /// Memory one rank may use, GiB (default: 80 % of this node's available memory divided
    /// by --ranks). Exit code 2 when a stage's estimate exceeds it.
    #[arg(long, value_name = "GiB")]
    pub memory_per_rank: Option<f64>,
    /// Print the plan as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Execute on rank 0 (other ranks do nothing). `threads`: the global `--threads`, else
/// [`super::default_threads`] for `--ranks` ranks on one node.
pub fn run(a: &Args, threads: Option<usize>, comm: &dyn Comm) -> anyhow::Result<i32> {
    if comm.rank() != 0 {
        return Ok(0);
    }
    let (cfg, _) = Config::load(&a.config)?;
    let ranks = a.ranks.max(1);
    let memory = match a.memory_per_rank {
        Some(g) if g.is_finite() && g > 0.0 => (g * (1u64 << 30) as f64) as u64,
        Some(g) => {
            return Err(crate::Error::Config(format!("--memory-per-rank {g}: give GiB > 0")).into())
        }
        None => default_max_memory_bytes() * local_ranks() as u64 / ranks as u64,
    };
    let opts = PlanOptions {
        ranks,
        threads: threads.unwrap_or_else(|| super::default_threads(ranks)),
        memory_per_rank_bytes: memory,
    };
    let plan = estimate(&cfg, series_shapes(&cfg)?, opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.table());
    }
    check_fits(&plan, memory)?;
    Ok(0)
}
