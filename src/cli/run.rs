//! `lamella run CONFIG.toml`.

use crate::comm::Comm;
use crate::pipeline::run::{run as run_pipeline, RunOptions};
use std::path::PathBuf;

/// Run the pipeline of a TOML config over all MPI ranks.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  mpirun -n 4 lamella run configs/demo.toml\n  lamella run configs/tiny.toml --resume"
)]
pub struct Args {
    /// The run configuration (TOML; see configs/demo.toml).
    pub config: PathBuf,
    /// Skip tilt series already complete with the same inputs and parameters.
    #[arg(long)]
    pub resume: bool,
}

/// Execute; exit code 0 when every series succeeded, the failure's code otherwise, 4 when
/// a signal stopped the run (state is resumable).
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    let opts = RunOptions {
        resume: a.resume,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
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
