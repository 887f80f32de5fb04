//! `lamella reconstruct`.

use crate::comm::Comm;
use crate::device::{Device, DeviceChoice};
use crate::io::mrc::{self, MrcKind};
use crate::pipeline::config::InputSeries;
use crate::pipeline::{inputs, metrics};
use crate::recon::filter::Filter;
use crate::recon::wbp::{wbp, WbpParams};
use std::path::PathBuf;

/// Reconstruct one tilt series by weighted back-projection.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  lamella reconstruct --stack ts.mrc --tlt ts.tlt --xf ts.xf --bin 2 --thickness 120 --out ts_bin2.mrc"
)]
pub struct Args {
    /// Tilt stack (MRC, [tilt, y, x]).
    #[arg(long)]
    pub stack: PathBuf,
    /// Tilt angles (IMOD .tlt, degrees, one per image).
    #[arg(long)]
    pub tlt: Option<PathBuf>,
    /// IMOD .xf alignment (tilt-axis rotation and shifts per image).
    #[arg(long)]
    pub xf: Option<PathBuf>,
    /// SerialEM .mdoc (angles, dose, pixel size, tilt axis) when there is no .tlt.
    #[arg(long)]
    pub mdoc: Option<PathBuf>,
    /// Pixel size in Å (default: the MRC header).
    #[arg(long)]
    pub pixel: Option<f64>,
    /// Tilt-axis angle in degrees CCW from +Y, when there is no .xf.
    #[arg(long)]
    pub axis: Option<f64>,
    /// Binning factor (Fourier cropping).
    #[arg(long, default_value_t = 1)]
    pub bin: usize,
    /// Output thickness in binned voxels (default: a quarter of the width).
    #[arg(long)]
    pub thickness: Option<usize>,
    /// Weighting filter.
    #[arg(long, value_enum, default_value = "ramp")]
    pub filter: FilterArg,
    /// Iterations mimicked by `--filter sirt-like`.
    #[arg(long, default_value_t = 10)]
    pub sirt_iterations: u32,
    /// Keep the raw contrast (dense matter dark) instead of inverting it.
    #[arg(long)]
    pub no_invert: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Ground-truth volume to correlate with (MRC at the stack pixel size).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Output tomogram (MRC, [z, y, x]).
    #[arg(long)]
    pub out: PathBuf,
}

/// Filter choice on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FilterArg {
    /// R-weighting.
    Ramp,
    /// IMOD-style SIRT-like filter.
    SirtLike,
}

/// Execute on rank 0 (other ranks have nothing to do).
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    if comm.rank() != 0 {
        return Ok(0);
    }
    if a.bin == 0 {
        return Err(crate::Error::Config("--bin must be >= 1".into()).into());
    }
    let input = InputSeries {
        name: None,
        stack: a.stack.clone(),
        tlt: a.tlt.clone(),
        xf: a.xf.clone(),
        mdoc: a.mdoc.clone(),
        pixel_a: a.pixel,
        axis_deg: a.axis,
        truth: a.truth.clone(),
    };
    let s = inputs::load_input(&input)?;
    let g = &s.geometry;
    let params = WbpParams {
        bin: a.bin,
        thickness_px: a.thickness.unwrap_or((g.nx / a.bin) / 4).max(1),
        filter: match a.filter {
            FilterArg::Ramp => Filter::Ramp,
            FilterArg::SirtLike => Filter::SirtLike {
                iterations: a.sirt_iterations,
            },
        },
        lowpass: None,
        invert_contrast: !a.no_invert,
    };
    let device = Device::select(a.device, comm.local_rank())?;
    let t = std::time::Instant::now();
    let vol = wbp(s.stack.view(), g, &params, &device)?;
    let pixel = g.pixel_a * a.bin as f64;
    mrc::write(&a.out, vol.view(), pixel as f32, MrcKind::Volume)?;
    let (nz, ny, nx) = vol.dim();
    println!(
        "wrote {} ({nx} x {ny} x {nz} voxels of {pixel:.3} Å) in {:.2} s on {}",
        a.out.display(),
        t.elapsed().as_secs_f64(),
        device.name()
    );
    if let Some(truth) = &s.truth {
        println!(
            "correlation with truth: {:.3}",
            metrics::truth_correlation(&vol, truth, a.bin)
        );
    }
    Ok(0)
}
