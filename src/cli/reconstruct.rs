//! `lamella reconstruct`.

use super::SeriesArgs;
use crate::comm::Comm;
use crate::device::{Device, DeviceChoice};
use crate::pipeline::{inputs, metrics, signals};
use crate::recon::ctfcorr::CtfCorrection;
use crate::recon::filter::Filter;
use crate::recon::plan::{
    reconstruct_with_stop, CheckpointSpec, Method, ReconstructOutcome, ReconstructSpec,
};
use crate::recon::sirt::SupportMask;
use crate::recon::slab::parse_bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Exit code of a run stopped by a signal with its state checkpointed (`--resume` continues).
pub const EXIT_INTERRUPTED: i32 = 4;

/// Reconstruct one tilt series by weighted back-projection or SIRT, at one or several
/// binnings, in slabs along Y when the volume exceeds the memory budget.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  lamella reconstruct --stack ts.mrc --tlt ts.tlt --xf ts.xf --bin 2 --thickness 120 --out ts_bin2.mrc
  lamella reconstruct --stack ts.mrc --tlt ts.tlt --xf ts.xf --bin 2,4 --thickness-a 1800 --out ts.mrc
      (writes ts_bin2.mrc and ts_bin4.mrc from one pre-processing pass)
  lamella reconstruct --stack ts.mrc --tlt ts.tlt --method sirt --iterations 30 --positivity \\
      --mask cylinder --max-memory 2G --checkpoint-every 5 --out ts_sirt.mrc
  (after SIGTERM/SIGUSR1: the same command with --resume continues where it stopped; exit code 4
   means interrupted with the state saved)")]
pub struct Args {
    /// The tilt series.
    #[command(flatten)]
    pub series: SeriesArgs,
    /// IMOD .xf alignment (tilt-axis rotation and shifts per image).
    #[arg(long)]
    pub xf: Option<PathBuf>,
    /// Binning factors (Fourier cropping), e.g. `--bin 2` or `--bin 2,4,8`: one tomogram each,
    /// from one pre-processing pass.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "1")]
    pub bin: Vec<usize>,
    /// Output thickness in voxels of the first binning (default: a quarter of the width).
    #[arg(long, conflicts_with = "thickness_a")]
    pub thickness: Option<usize>,
    /// Output thickness in Å (the same slab at every binning).
    #[arg(long)]
    pub thickness_a: Option<f64>,
    /// Reconstruction method.
    #[arg(long, value_enum, default_value = "wbp")]
    pub method: MethodArg,
    /// WBP weighting filter.
    #[arg(long, value_enum, default_value = "ramp")]
    pub filter: FilterArg,
    /// Iterations mimicked by `--filter sirt-like`.
    #[arg(long, default_value_t = 10)]
    pub sirt_iterations: u32,
    /// Memory budget, e.g. `512M`, `4G` (default: 80 % of MemAvailable over the ranks of the
    /// node). Bigger volumes are made in slabs along Y.
    #[arg(long, value_parser = parse_memory)]
    pub max_memory: Option<u64>,
    /// SIRT options.
    #[command(flatten)]
    pub sirt: Box<SirtArgs>,
    /// Keep the raw contrast (dense matter dark) instead of inverting it.
    #[arg(long)]
    pub no_invert: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// CTF correction with the defocus of the geometry (or `--defocus-a`): 3d is WBP only.
    #[arg(long, default_value = "none")]
    pub ctf: CtfCorrection,
    /// Wiener filter SNR constant (`--ctf wiener`).
    #[arg(long, default_value_t = crate::recon::plan::DEFAULT_WIENER_SNR)]
    pub wiener_snr: f64,
    /// Defocus of every tilt at the tilt axis, Å (underfocus > 0), for `--ctf` when the
    /// inputs carry none (an IMOD .defocus reader is left for the CTF stage).
    #[arg(long)]
    pub defocus_a: Option<f64>,
    /// Ground-truth volume to correlate with (MRC at the stack pixel size).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Output tomogram (MRC, [z, y, x]); with several binnings `<stem>_bin<b>.mrc` beside it.
    #[arg(long)]
    pub out: PathBuf,
}

/// The SIRT options of `lamella reconstruct` (boxed in [`Args`] to keep it small).
#[derive(Debug, clap::Args)]
pub struct SirtArgs {
    /// SIRT iterations (`--method sirt`).
    #[arg(long, default_value_t = 20)]
    pub iterations: u32,
    /// SIRT relaxation in (0, 2).
    #[arg(long, default_value_t = 1.0)]
    pub relaxation: f32,
    /// SIRT: clamp the volume to ≥ 0 after every iteration.
    #[arg(long)]
    pub positivity: bool,
    /// SIRT support mask: voxels outside stay 0.
    #[arg(long, value_enum, default_value = "none")]
    pub mask: MaskArg,
    /// Mask size in Å: the cylinder radius (default: half the volume width) or the slab
    /// thickness (default: the output thickness).
    #[arg(long)]
    pub mask_size: Option<f64>,
    /// Directory of SIRT checkpoints (default: the output's directory).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Save a SIRT checkpoint every this many iterations (0: only when stopped by a signal).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u32,
    /// Continue an interrupted SIRT from its checkpoint (same inputs and parameters).
    #[arg(long)]
    pub resume: bool,
}

/// `--max-memory`: bytes with an optional K/M/G/T suffix.
fn parse_memory(t: &str) -> Result<u64, String> {
    parse_bytes(t).ok_or_else(|| {
        format!("{t:?}: give bytes with an optional K/M/G/T suffix, e.g. 512M or 4G")
    })
}

/// Method choice on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Weighted back-projection.
    Wbp,
    /// SIRT with matched projectors.
    Sirt,
}

/// Filter choice on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FilterArg {
    /// R-weighting.
    Ramp,
    /// IMOD-style SIRT-like filter.
    SirtLike,
}

/// Mask choice on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MaskArg {
    None,
    /// Cylinder about the tilt axis (circle in x–z).
    Cylinder,
    /// Slab |z| ≤ thickness/2.
    Slab,
}

/// Output path per binning: `out` itself for one binning, else `<stem>_bin<b>.<ext>`.
pub fn output_paths(out: &Path, bins: &[usize]) -> Vec<PathBuf> {
    if bins.len() == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tomogram".into());
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mrc".into());
    bins.iter()
        .map(|b| out.with_file_name(format!("{stem}_bin{b}.{ext}")))
        .collect()
}

/// Execute on rank 0 (other ranks have nothing to do).
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    if comm.rank() != 0 {
        return Ok(0);
    }
    if a.bin.is_empty() || a.bin.contains(&0) {
        return Err(crate::Error::Config("--bin: give factors >= 1, e.g. --bin 2,4".into()).into());
    }
    let max_memory_bytes = a.max_memory;
    let sa = &a.sirt;
    signals::install();
    let input = a.series.input(None, a.xf.clone(), a.truth.clone());
    let mut s = inputs::load_input(&input)?;
    if let Some(d) = a.defocus_a {
        for t in s.geometry.tilts.iter_mut() {
            t.defocus_u_a = d;
            t.defocus_v_a = d;
        }
    }
    let g = &s.geometry;
    let b0 = a.bin[0];
    let thickness_a = match (a.thickness_a, a.thickness) {
        (Some(t), _) => t,
        (None, Some(n)) => n as f64 * g.pixel_a * b0 as f64,
        (None, None) => ((g.nx / b0) / 4).max(1) as f64 * g.pixel_a * b0 as f64,
    };
    let mask = match sa.mask {
        MaskArg::None => SupportMask::None,
        MaskArg::Cylinder => SupportMask::Cylinder {
            radius_a: sa.mask_size.unwrap_or(0.5 * g.nx as f64 * g.pixel_a),
        },
        MaskArg::Slab => SupportMask::Slab {
            thickness_a: sa.mask_size.unwrap_or(thickness_a),
        },
    };
    let method = match a.method {
        MethodArg::Wbp => Method::Wbp {
            filter: match a.filter {
                FilterArg::Ramp => Filter::Ramp,
                FilterArg::SirtLike => Filter::SirtLike {
                    iterations: a.sirt_iterations,
                },
            },
        },
        MethodArg::Sirt => Method::Sirt {
            iterations: sa.iterations,
            relaxation: sa.relaxation,
            positivity: sa.positivity,
            mask,
        },
    };
    let outputs = output_paths(&a.out, &a.bin);
    let ck_dir = sa.checkpoint_dir.clone().unwrap_or_else(|| {
        a.out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let spec = ReconstructSpec {
        method,
        binnings: a.bin.clone(),
        thickness_a,
        lowpass: None,
        invert_contrast: !a.no_invert,
        max_memory_bytes,
        checkpoint: matches!(a.method, MethodArg::Sirt).then(|| CheckpointSpec {
            dir: ck_dir,
            every: sa.checkpoint_every,
            resume: sa.resume,
        }),
        ctf_correction: a.ctf,
        wiener_snr: a.wiener_snr,
    };
    let device = Device::select(a.device, comm.local_rank())?;
    // Test hook: raise the stop flag (as SIGTERM would) after this many SIRT iterations.
    let stop_after: Option<u32> = std::env::var("LAMELLA_STOP_AFTER_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok());
    let polls = AtomicU32::new(0);
    let stop = || {
        let n = polls.fetch_add(1, Ordering::Relaxed) + 1;
        if stop_after.is_some_and(|k| n >= k) {
            signals::request_stop();
        }
        signals::stop_requested()
    };
    let t = std::time::Instant::now();
    let outcome = reconstruct_with_stop(s.stack.view(), g, &spec, &device, &outputs, &stop)?;
    let tomos = match outcome {
        ReconstructOutcome::Complete(t) => t,
        ReconstructOutcome::Interrupted(i) => {
            eprintln!("lamella: {i}");
            return Ok(EXIT_INTERRUPTED);
        }
    };
    for tomo in &tomos {
        let (nz, ny, nx) = tomo.shape;
        println!(
            "wrote {} ({nx} x {ny} x {nz} voxels of {:.3} Å{}) on {}",
            tomo.path.display(),
            tomo.pixel_a,
            if tomo.slabs > 1 {
                format!(", {} slabs along Y", tomo.slabs)
            } else {
                String::new()
            },
            device.name()
        );
        if let Some(truth) = &s.truth {
            let vol = match &tomo.volume {
                Some(v) => v.clone(),
                None => crate::io::mrc::read(&tomo.path)?.data,
            };
            let c = metrics::truth_correlation(&vol, truth, tomo.bin);
            if tomos.len() == 1 {
                println!("correlation with truth: {c:.3}");
            } else {
                println!("bin {}: correlation with truth: {c:.3}", tomo.bin);
            }
        }
    }
    println!("reconstructed in {:.2} s", t.elapsed().as_secs_f64());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_per_binning() {
        let one = output_paths(Path::new("d/ts.mrc"), &[2]);
        assert_eq!(one, vec![PathBuf::from("d/ts.mrc")]);
        let two = output_paths(Path::new("d/ts.rec"), &[2, 4]);
        assert_eq!(
            two,
            vec![
                PathBuf::from("d/ts_bin2.rec"),
                PathBuf::from("d/ts_bin4.rec")
            ]
        );
    }
}
