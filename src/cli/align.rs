//! `lamella align`.

use super::SeriesArgs;
use crate::align::output::write_outputs;
use crate::align::stage::{self, AlignChoice, AlignConfig};
use crate::comm::Comm;
use crate::device::{Device, DeviceChoice};
use crate::io::mrc::{self, MrcKind};
use crate::pipeline::inputs;
use std::path::PathBuf;

/// Align one tilt series (fiducial-free or with gold beads).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  lamella align --stack ts.mrc --tlt ts.rawtlt --axis 85 --pixel 8 --out align/\n  lamella align --stack ts.mrc --mdoc ts.mrc.mdoc --method beads --bead-diameter 100 --out align/\nWrites <out>/<name>.xf, <name>.tlt, <name>_preali.mrc, <name>_residuals.png, <name>_shifts.png\n(and <name>_erased.mrc with --method beads)."
)]
pub struct Args {
    /// The tilt series (nominal angles; `--axis` is the approximate tilt-axis angle).
    #[command(flatten)]
    pub series: SeriesArgs,
    /// Alignment method.
    #[arg(long, value_enum, default_value = "fiducial-free")]
    pub method: MethodArg,
    /// Gold bead diameter in Å (--method beads).
    #[arg(long)]
    pub bead_diameter: Option<f64>,
    /// Estimate the specimen slab, level and centre the geometry on it (experimental: gold
    /// beads at the surface can pull it off).
    #[arg(long)]
    pub level: bool,
    /// Keep the beads in the stack (--method beads).
    #[arg(long)]
    pub no_erase: bool,
    /// Compute device for the reconstructions inside the alignment.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Output name (default: the stack's file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Method choice on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Cross-correlation and projection matching.
    FiducialFree,
    /// Gold-bead tracking and least-squares solve.
    Beads,
}

/// Execute on rank 0 (other ranks have nothing to do).
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    if comm.rank() != 0 {
        return Ok(0);
    }
    let input = a.series.input(a.name.clone(), None, None);
    let s = inputs::load_input(&input)?;
    let mut cfg = AlignConfig {
        method: match a.method {
            MethodArg::FiducialFree => AlignChoice::FiducialFree,
            MethodArg::Beads => AlignChoice::Beads,
        },
        level: a.level,
        erase_beads: !a.no_erase,
        ..Default::default()
    };
    if let Some(d) = a.bead_diameter {
        cfg.beads.bead_diameter_a = d;
    }
    let device = Device::select(a.device, comm.local_rank())?;
    let t = std::time::Instant::now();
    let out = stage::run(s.stack.view(), &s.geometry, &cfg, &device)?;
    let name = input.series_name();
    let files = write_outputs(&a.out, &name, s.stack.view(), &out.report)?;
    if let Some(e) = &out.erased {
        let p = a.out.join(format!("{name}_erased.mrc"));
        mrc::write(&p, e.view(), s.geometry.pixel_a as f32, MrcKind::ImageStack)?;
        println!("beads erased: {}", p.display());
    }
    for l in &out.report.log {
        println!("  {l}");
    }
    println!(
        "aligned {name} ({}) in {:.1} s: RMS residual {:.2} px; wrote {}, {}, {}",
        out.report.method.name(),
        t.elapsed().as_secs_f64(),
        out.report.rms_residual_px,
        files.xf.display(),
        files.tlt.display(),
        files.preali.display()
    );
    Ok(0)
}
