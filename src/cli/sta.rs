//! `lamella sta`: subtomogram averaging (gold-standard refinement) of particles from a
//! RELION-5 particle STAR in tomograms listed by a RELION-5 `tomograms.star`; the work is
//! `pipeline::sta::run_sta` (also the `[sta]` stage of `lamella run`).

use std::path::PathBuf;

use crate::comm::Comm;
use crate::pipeline::sta::{run_sta, StaConfig};

/// Refine particle poses and average them (gold standard), per class.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  mpirun -n 4 lamella sta --tomograms out/relion/tomograms.star --particles picked.star \\
      --reference template.mrc --box 32 --mask-radius 80 --iterations 4 --out sta/
Writes <out>/iter_<k>/{half1,half2,map}.mrc, fsc.png, fsc.json; <out>/map.mrc, half1.mrc,
half2.mrc, fsc.png, particles.star (refined poses, RELION-5), sta.json (per iteration) and
state.json (the checkpoint --resume reads). The [sta] table of `lamella run` takes the same
settings (snake_case names, lengths in Å: mask_radius_a, max_shift_a, ...).")]
pub struct Args {
    /// RELION-5 tomograms.star (rlnTomoReconstructedTomogram, rlnTomoTiltSeriesStarFile).
    #[arg(long)]
    pub tomograms: PathBuf,
    /// The refinement settings.
    #[command(flatten)]
    pub sta: StaConfig,
    /// Continue from <out>/state.json when it was written with the same inputs and settings.
    #[arg(long)]
    pub resume: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Execute on every rank; exit code 4 when a signal stopped it (checkpointed).
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    let particles = a.sta.particles.as_deref().ok_or_else(|| {
        crate::Error::Config("give --particles (a RELION-5 particle STAR)".into())
    })?;
    let o = run_sta(&a.sta, &a.tomograms, particles, &a.out, a.resume, comm)?;
    if o.interrupted {
        return Ok(4);
    }
    if comm.rank() == 0 {
        println!(
            "lamella sta: {} particles, {} class(es), {} iterations, resolution {:?} Å, {:.1} s",
            o.particles,
            o.classes,
            o.log.len(),
            o.resolution_a
                .iter()
                .map(|r| (r * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            o.seconds
        );
    }
    Ok(0)
}
