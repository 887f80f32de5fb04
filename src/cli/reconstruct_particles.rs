//! `lamella reconstruct-particles`: a map from 2D tilt-stack particles (RELION-5 /
//! WarpTools) with their given poses, by Fourier insertion ([`crate::sta::particles2d`]).

use crate::comm::Comm;
use crate::io::mrc::{self, MrcKind};
use crate::sta::particles2d::{accumulate_particles, read_stack_set, InsertOptions, StackFrame};
use std::path::PathBuf;

/// Reconstruct a map from particles exported as 2D tilt stacks, with their poses.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  lamella reconstruct-particles --particles warptools_particles.star --out map.mrc
  mpirun -n 3 lamella reconstruct-particles --particles p.star --tomograms p_tomograms.star --out map.mrc --subset 1
The particle STAR must have rlnTomoSubTomosAre2DStacks 1 (WarpTools ts_export_particles --2d);
the tomograms STAR (default: <stem>_tomograms.star beside it) gives per-tilt projection matrices,
defocus, rlnCtfScalefactor and pre-exposure. Ranks share the particles and sum their Fourier
grids with one allreduce; rank 0 writes the map.")]
pub struct Args {
    /// Particle STAR file (RELION-5, 2D stacks).
    #[arg(long)]
    pub particles: PathBuf,
    /// Tomograms STAR file (default: found beside the particles).
    #[arg(long)]
    pub tomograms: Option<PathBuf>,
    /// Output map (MRC, float32).
    #[arg(long)]
    pub out: PathBuf,
    /// Map box, pixels (even; default: the image size). Images are cropped or zero-padded.
    #[arg(long = "box")]
    pub box_px: Option<usize>,
    /// Padding factor of the Fourier grid.
    #[arg(long, default_value_t = 2)]
    pub pad: usize,
    /// Wiener constant, relative to the mean Fourier weight.
    #[arg(long, default_value_t = 0.01)]
    pub wiener: f64,
    /// Only this random subset (rlnRandomSubset 1 or 2).
    #[arg(long)]
    pub subset: Option<usize>,
    /// Reference frame: relion5 (reproduces RELION-5's maps of 2D stacks) or lamella (its
    /// mirror image, lamella's pose convention as is).
    #[arg(long, value_enum, default_value = "relion5")]
    pub frame: StackFrame,
    /// No CTF weighting.
    #[arg(long)]
    pub no_ctf: bool,
    /// No exposure (dose) filter.
    #[arg(long)]
    pub no_dose: bool,
    /// CTF at each tilt's centre defocus instead of at the particle's depth.
    #[arg(long)]
    pub no_depth: bool,
}

/// Execute: every rank reads the metadata and inserts its share of the particles; the grids
/// are summed over ranks; rank 0 finishes and writes the map.
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    if a.pad == 0 || a.pad > 4 {
        return Err(crate::Error::Config(format!(
            "--pad {}: give 1 to 4 (2 is RELION's default)",
            a.pad
        ))
        .into());
    }
    if !(a.wiener >= 0.0 && a.wiener.is_finite()) {
        return Err(crate::Error::Config(format!(
            "--wiener {}: give a finite value ≥ 0 (e.g. 0.01)",
            a.wiener
        ))
        .into());
    }
    if let Some(s) = a.subset {
        if s != 1 && s != 2 {
            return Err(crate::Error::Config(format!(
                "--subset {s}: give 1 or 2 (rlnRandomSubset)"
            ))
            .into());
        }
    }
    if let Some(b) = a.box_px {
        if b < 2 || b % 2 != 0 {
            return Err(crate::Error::Config(format!(
                "--box {b}: give an even size of at least 2 pixels"
            ))
            .into());
        }
    }
    let set = read_stack_set(&a.particles, a.tomograms.as_deref())?;
    let opts = InsertOptions {
        pad: a.pad,
        wiener: a.wiener,
        ctf: !a.no_ctf,
        dose: !a.no_dose,
        depth: !a.no_depth,
        frame: a.frame,
        subset: a.subset,
        box_px: a.box_px.unwrap_or(0),
    };
    let selected = set.selected(&opts);
    if selected.is_empty() {
        return Err(crate::Error::bad_input(
            &a.particles,
            "data_particles/_rlnRandomSubset",
            format!(
                "no particle has rlnRandomSubset {} (the column is absent or holds other \
                 values); drop --subset or add the column",
                a.subset.unwrap_or(0)
            ),
        )
        .into());
    }
    let (rank, size) = (comm.rank(), comm.size());
    let mine: Vec<usize> = selected
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| i % size == rank)
        .map(|(_, p)| p)
        .collect();
    let t0 = std::time::Instant::now();
    let mut rec = accumulate_particles(&set, &opts, &mine)?;
    comm.allreduce_sum_f32(rec.data_mut());
    comm.allreduce_sum_f32(rec.weight_mut());
    if rank == 0 {
        let map = rec.finish(opts.wiener);
        let slices: usize = selected.iter().map(|&p| set.slices(p, &opts).len()).sum();
        mrc::write(&a.out, map.view(), set.pixel_a as f32, MrcKind::Volume)?;
        tracing::info!(
            "reconstructed {} particles ({slices} tilt images, box {} px, {:.2} Å) on {size} rank(s) in {:.2} s -> {}",
            selected.len(),
            opts.map_box(set.box_px),
            set.pixel_a,
            t0.elapsed().as_secs_f64(),
            a.out.display()
        );
    }
    Ok(0)
}
