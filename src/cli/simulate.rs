//! `lamella simulate`.

use crate::comm::Comm;
use crate::pipeline::simio;
use crate::sim::{self, Preset};
use std::path::PathBuf;

/// Simulate a built-in dataset with full ground truth.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  lamella simulate --preset tiny --seed 7 --out sim/\nWrites per tilt series DIR/<name>.mrc, .rawtlt (nominal), .tlt + .xf (true alignment), .mdoc,\n<name>_truth.mrc, <name>_membrane.mrc, <name>_truth.json, and DIR/truth.json."
)]
pub struct Args {
    /// `tiny` (tests, seconds) or `demo` (3 apoferritin tilt series).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Random seed; the same seed gives bit-identical data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Directory holding structures/ (default: searched; or $LAMELLA_SHARED_DATA).
    #[arg(long)]
    pub shared_data: Option<PathBuf>,
}

/// Execute: series are spread round-robin over ranks; rank 0 writes truth.json.
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    let preset: Preset = a
        .preset
        .parse()
        .map_err(|e| crate::Error::Config(format!("--preset: {e}")))?;
    let shared = simio::find_shared_data(a.shared_data.as_deref())?;
    let series = sim::preset(preset, &shared);
    let names: Vec<String> = series.iter().map(|p| p.name.clone()).collect();
    for (i, p) in series.iter().enumerate() {
        if i % comm.size() != comm.rank() {
            continue;
        }
        let t = std::time::Instant::now();
        let s = sim::simulate_series(p, crate::pipeline::run::series_seed(a.seed, i))?;
        simio::write_series(&a.out, &s)?;
        tracing::info!(series = %p.name, seconds = t.elapsed().as_secs_f64(), "simulated");
    }
    comm.barrier();
    if comm.rank() == 0 {
        simio::write_truth_index(&a.out, a.seed, &a.preset, &names)?;
        println!(
            "simulated {} tilt series into {}",
            names.len(),
            a.out.display()
        );
    }
    Ok(0)
}
