//! `lamella report OUT`: (re)write the HTML report of a finished or interrupted run from its
//! `summary.json` and the pictures under `OUT/report/`.

use std::path::PathBuf;

use crate::comm::Comm;
use crate::pipeline::pictures::write_index;
use crate::pipeline::summary::RunSummary;
use crate::Error;

/// Arguments of `lamella report`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  lamella report out/    # writes out/report/index.html")]
pub struct Args {
    /// The run's output directory (`out` of its config): holds `summary.json`.
    pub out: PathBuf,
}

/// Execute on rank 0 (other ranks do nothing): read `OUT/summary.json`, write
/// `OUT/report/index.html` (one self-contained file, pictures embedded) and print its path.
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    if comm.rank() != 0 {
        return Ok(0);
    }
    let path = a.out.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::bad_input(
            &path,
            "summary.json",
            format!("cannot read it ({e}): give the output directory of a `lamella run`"),
        )
    })?;
    let summary: RunSummary = serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            &path,
            "summary.json",
            format!("not a lamella run summary ({e}): rerun `lamella run CONFIG --resume`"),
        )
    })?;
    write_index(&a.out, &summary)?;
    println!("{}", a.out.join("report").join("index.html").display());
    Ok(0)
}
