//! `lamella ctf`.

use super::SeriesArgs;
use crate::comm::Comm;
use crate::ctf::stage::{self, CtfConfig};
use crate::pipeline::inputs;
use std::path::PathBuf;

/// Estimate the CTF (defocus U/V, astigmatism angle) of every tilt of a series, tilt-aware.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  lamella ctf --stack ts.mrc --tlt ts.tlt --axis 85 --pixel 2.1 --voltage 300 --out ctf/
Writes <out>/<name>.defocus (IMOD ctfplotter v3), <name>_ctf.star (RELION-5 rlnDefocusU/V/Angle),
<name>_ctf_defocus.png, <name>_ctf_radial.png and <name>_ctf_2d.png.")]
pub struct Args {
    /// The tilt series (angles from .tlt or .mdoc; axis from --axis, --xf or the mdoc).
    #[command(flatten)]
    pub series: SeriesArgs,
    /// IMOD .xf alignment (tilt-axis angle and shifts per image), if known.
    #[arg(long)]
    pub xf: Option<PathBuf>,
    /// Acceleration voltage, kV.
    #[arg(long, default_value_t = 300.0)]
    pub voltage: f64,
    /// Spherical aberration, mm.
    #[arg(long, default_value_t = 2.7)]
    pub cs: f64,
    /// Amplitude contrast fraction.
    #[arg(long, default_value_t = 0.07)]
    pub amplitude_contrast: f64,
    /// Periodogram tile, pixels (even, ≥ 32).
    #[arg(long, default_value_t = 256)]
    pub tile: usize,
    /// Defocus search range, Å: `MIN,MAX` (underfocus positive).
    #[arg(long, value_delimiter = ',', default_values_t = [5000.0, 70000.0])]
    pub defocus_range: Vec<f64>,
    /// Fitting band, Å: `LOW,HIGH` (the high end is clamped to 2.2·pixel).
    #[arg(long, value_delimiter = ',', default_values_t = [30.0, 5.0])]
    pub band: Vec<f64>,
    /// Largest astigmatism U − V, Å.
    #[arg(long, default_value_t = 2000.0)]
    pub max_astigmatism: f64,
    /// Keep the handedness as given (default: take the one the defocus gradient votes for).
    #[arg(long)]
    pub keep_hand: bool,
    /// Output name (default: the stack's file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Execute on rank 0 (other ranks have nothing to do).
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    if comm.rank() != 0 {
        return Ok(0);
    }
    for (flag, v) in [("--defocus-range", &a.defocus_range), ("--band", &a.band)] {
        if v.len() != 2 {
            return Err(crate::Error::Config(format!(
                "{flag}: give two values separated by a comma, e.g. {flag} 30,5 (Å)"
            ))
            .into());
        }
    }
    let cfg = CtfConfig {
        defocus_min_a: a.defocus_range[0],
        defocus_max_a: a.defocus_range[1],
        max_astigmatism_a: a.max_astigmatism,
        resolution_low_a: a.band[0],
        resolution_high_a: a.band[1],
        tile: a.tile,
        set_hand: !a.keep_hand,
    };
    cfg.validate(std::path::Path::new("command line"))?;
    for (flag, v, ok) in [
        (
            "--voltage",
            a.voltage,
            a.voltage.is_finite() && a.voltage > 0.0,
        ),
        ("--cs", a.cs, a.cs.is_finite() && a.cs >= 0.0),
        (
            "--amplitude-contrast",
            a.amplitude_contrast,
            (0.0..1.0).contains(&a.amplitude_contrast),
        ),
    ] {
        if !ok {
            return Err(crate::Error::Config(format!(
                "{flag} {v}: give a positive voltage (kV), Cs ≥ 0 (mm) and an amplitude \
                 contrast in [0, 1)"
            ))
            .into());
        }
    }
    let input = a.series.input(a.name.clone(), a.xf.clone(), None);
    let mut s = inputs::load_input(&input)?;
    s.geometry.optics.voltage_kv = a.voltage;
    s.geometry.optics.cs_mm = a.cs;
    s.geometry.optics.amplitude_contrast = a.amplitude_contrast;
    let name = input.series_name();
    let stack_file = a
        .series
        .stack
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let t = std::time::Instant::now();
    let out = stage::run(
        s.stack.view(),
        &mut s.geometry,
        &cfg,
        None,
        &a.out,
        &name,
        &stack_file,
    )?;
    for (i, r) in out.table.rows.iter().enumerate() {
        println!(
            "  {:3} tilt {:6.1}: U {:8.0} V {:8.0} Å, angle {:5.1}°, score {:.3}, fit to {:.1} Å{}",
            i + 1,
            r.tilt_deg,
            r.defocus_u_a,
            r.defocus_v_a,
            r.astig_angle_deg,
            r.score,
            r.fit_resolution_a,
            if r.refitted { " (refitted)" } else { "" }
        );
    }
    println!(
        "CTF of {name} ({} tilts) in {:.1} s: handedness {:+} (evidence {:.4} over {} tilts); wrote {}",
        out.table.rows.len(),
        t.elapsed().as_secs_f64(),
        out.table.hand,
        out.table.hand_evidence,
        out.table.hand_tilts,
        out.files
            .all()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(0)
}
