//! `lamella run CONFIG.toml`.

use crate::comm::Comm;
use crate::pipeline::run::{run as run_pipeline, series_names, RunOptions};
use std::path::PathBuf;

/// Run the pipeline of a TOML config over all MPI ranks.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  mpirun -n 4 lamella run configs/demo.toml\n  lamella run configs/tiny.toml --resume\n  lamella run configs/tiny.toml --list-series\n  lamella run configs/tiny.toml --series-index $SLURM_ARRAY_TASK_ID   (one array task)"
)]
pub struct Args {
    /// The run configuration (TOML; see configs/demo.toml).
    pub config: PathBuf,
    /// Skip tilt series already complete with the same inputs and parameters.
    #[arg(long)]
    pub resume: bool,
    /// Run only the tilt series of this name (repeatable). Only the per-series outputs are
    /// written (ts/<name>.h5, ...); summary.json, lamella.h5, the report and [sta] come from
    /// a later run over all series (`--resume` skips the complete ones).
    #[arg(long, value_name = "NAME")]
    pub series: Vec<String>,
    /// Run only the K-th tilt series of the config (0-based, the order of --list-series;
    /// repeatable), e.g. `--series-index $SLURM_ARRAY_TASK_ID`; partial like --series.
    #[arg(long, value_name = "K")]
    pub series_index: Vec<usize>,
    /// Print the config's tilt-series names, one per line in index order, and exit.
    #[arg(long)]
    pub list_series: bool,
}

/// Execute; exit code 0 when every series succeeded, the failure's code otherwise, 4 when
/// a signal stopped the run (state is resumable).
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    if a.list_series {
        let names = series_names(&a.config)?;
        if comm.rank() == 0 {
            println!("{}", names.join("\n"));
        }
        return Ok(0);
    }
    let opts = RunOptions {
        resume: a.resume,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        series: a.series.clone(),
        series_index: a.series_index.clone(),
    };
    let outcome = run_pipeline(&a.config, &opts, comm)?;
    if outcome.failed > 0 {
        if comm.rank() == 0 {
            eprintln!(
                "lamella: {} tilt series failed (see the table above)",
                outcome.failed
            );
        }
        return Ok(outcome.exit_code.max(1));
    }
    if outcome.interrupted {
        if comm.rank() == 0 {
            eprintln!("lamella: stopped by a signal; rerun with --resume to continue");
        }
        return Ok(4);
    }
    Ok(0)
}
