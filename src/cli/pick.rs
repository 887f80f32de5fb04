//! `lamella pick`.

use crate::comm::Comm;
use crate::core::geometry::TiltSeriesGeometry;
use crate::device::{Device, DeviceChoice};
use crate::io::{container, imod, mrc, relion};
use crate::pick::output::{self, PickSummary};
use crate::pick::template::{Contrast, Template, WeightSpec};
use crate::pick::{pick_tomogram, PickParams};
use crate::sta::weight::CtfMode;
use crate::Error;
use std::path::{Path, PathBuf};

/// Pick particles in a tomogram by template matching (FLCF over a uniform rotation search).
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:
  lamella pick --tomogram tomo_bin2.mrc --tlt ts.tlt --template 6z6u.pdb --angular-step 20 \\
      --radius 70 --out pick/
  mpirun -n 3 lamella pick --tomogram t.mrc --tilt-series-star ts.star --template ref.mrc --out pick/
Writes <out>/<name>_scores.mrc, _angles.mrc (rotation index), _rotations.txt, _particles.star
(RELION-5), _particles.tbl (Dynamo), _pick.json and _picking.h5 (/tilt_series/<name>/picking).
The rotations are shared out over MPI ranks; the result does not depend on the rank count.")]
pub struct Args {
    /// The tomogram (MRC `[z, y, x]`).
    #[arg(long)]
    pub tomogram: PathBuf,
    /// Tilt angles of its series (IMOD .tlt, degrees): the missing wedge.
    #[arg(long, conflicts_with = "tilt_series_star")]
    pub tlt: Option<PathBuf>,
    /// RELION-5 tilt-series STAR of its series: wedge, per-tilt defocus (CTF) and exposure.
    #[arg(long)]
    pub tilt_series_star: Option<PathBuf>,
    /// Template: atomic model (.pdb/.cif, rendered as the simulator does) or density map
    /// (.mrc/.map, dense matter positive unless --template-dark).
    #[arg(long)]
    pub template: PathBuf,
    /// The template map has dense matter negative.
    #[arg(long)]
    pub template_dark: bool,
    /// Tomogram pixel size in Å (default: the MRC header).
    #[arg(long)]
    pub pixel: Option<f64>,
    /// Angular step of the uniform rotation search, degrees.
    #[arg(long, default_value_t = 30.0)]
    pub angular_step: f64,
    /// Particle radius in Å: mask radius and minimum distance between picks (default: the
    /// template's structure radius).
    #[arg(long)]
    pub radius: Option<f64>,
    /// Correlation-mask radius as a multiple of the particle radius (≥ 1): above 1 the mask
    /// holds a background shell, so membranes and other extended density score lower.
    #[arg(long, default_value_t = crate::pick::default_mask_scale())]
    pub mask_scale: f64,
    /// Drop the weakest picks when a score drop between neighbours (strongest first) is at
    /// least this ratio (never below 3 picks; ≤ 1: off).
    #[arg(long, default_value_t = crate::pick::default_score_gap())]
    pub score_gap: f64,
    /// Expected false picks per tomogram that set the score threshold.
    #[arg(long, default_value_t = 1.0)]
    pub n_false_alarms: f64,
    /// At most this many picks.
    #[arg(long, default_value_t = 1000)]
    pub max_peaks: usize,
    /// Template box, voxels (default: the structure plus 2 voxels a side).
    #[arg(long = "box")]
    pub box_px: Option<usize>,
    /// Sign of dense matter in the tomogram: bright (lamella's default reconstruction) or
    /// dark (raw electron counts, reconstructed with --no-invert).
    #[arg(long, default_value = "bright")]
    pub contrast: String,
    /// CTF in the template weight: signed (tomogram not CTF-corrected), flipped
    /// (phase-flipped) or none. Default: signed with --tilt-series-star or --defocus,
    /// none otherwise.
    #[arg(long)]
    pub ctf: Option<String>,
    /// Defocus in Å (underfocus positive) for the CTF when the tilts come from a .tlt.
    #[arg(long)]
    pub defocus: Option<f64>,
    /// Exposure per tilt in e/Å² when the tilts come from a .tlt (dose-symmetric order from
    /// 0° assumed); without it (and without a STAR) no exposure filter.
    #[arg(long)]
    pub dose_per_tilt: Option<f64>,
    /// Acceleration voltage, kV (with --tlt).
    #[arg(long, default_value_t = 300.0)]
    pub voltage: f64,
    /// Low-pass of the template, Å.
    #[arg(long)]
    pub lowpass: Option<f64>,
    /// MRC of the tomogram's shape: only voxels where it is > 0 are picked.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Output name (default: the tomogram's file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Compute device of the angular search (GPU `local_rank % count` per rank).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

/// The tilt geometry of the tomogram from the .tlt or STAR (None without either).
fn geometry(
    a: &Args,
    nx: usize,
    ny: usize,
    pixel_a: f64,
) -> crate::Result<Option<TiltSeriesGeometry>> {
    if let Some(star) = &a.tilt_series_star {
        return relion::read_tilt_series_star(star, nx, ny, pixel_a).map(Some);
    }
    let Some(tlt) = &a.tlt else {
        return Ok(None);
    };
    let angles = imod::read_tlt(tlt)?;
    let mut g = TiltSeriesGeometry::from_angles(nx, ny, pixel_a, &angles, 0.0);
    g.optics.voltage_kv = a.voltage;
    if let Some(d) = a.defocus {
        for t in &mut g.tilts {
            t.defocus_u_a = d;
            t.defocus_v_a = d;
        }
    }
    if let Some(dose) = a.dose_per_tilt {
        // dose-symmetric from the lowest |tilt|: rank by |angle| (ties: positive first)
        let mut order: Vec<usize> = (0..angles.len()).collect();
        order.sort_by(|&i, &j| {
            angles[i]
                .abs()
                .total_cmp(&angles[j].abs())
                .then(angles[j].total_cmp(&angles[i]))
        });
        for (k, &i) in order.iter().enumerate() {
            g.tilts[i].dose_e_a2 = dose;
            g.tilts[i].pre_exposure_e_a2 = dose * k as f64;
            g.tilts[i].acquisition_index = k;
        }
    }
    Ok(Some(g))
}

/// Execute on every rank (the rotations are shared); rank 0 writes the files.
pub fn run(a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    if !(a.n_false_alarms.is_finite() && a.n_false_alarms > 0.0) {
        return Err(Error::Config(format!(
            "--n-false-alarms {}: give a positive number of expected false picks (e.g. 1)",
            a.n_false_alarms
        ))
        .into());
    }
    let contrast: Contrast = a.contrast.parse()?;
    let tomo = mrc::read(&a.tomogram)?;
    let (nz, ny, nx) = tomo.data.dim();
    let pixel_a = match a.pixel {
        Some(p) => p,
        None => tomo.header.pixel_size_a()[0] as f64,
    };
    if !(pixel_a.is_finite() && pixel_a > 0.0) {
        return Err(Error::bad_input(
            &a.tomogram,
            "header pixel size",
            "no pixel size in the header: give --pixel (Å)",
        )
        .into());
    }
    let geom = geometry(a, nx, ny, pixel_a)?;
    if geom.is_none() {
        tracing::warn!(
            "no --tlt or --tilt-series-star: the template is not weighted by a missing wedge"
        );
    }
    let has_defocus = a.tilt_series_star.is_some() || a.defocus.is_some();
    let ctf = match &a.ctf {
        Some(s) => s.parse::<CtfMode>()?,
        None if has_defocus => CtfMode::Signed,
        None => CtfMode::None,
    };
    if ctf != CtfMode::None && !has_defocus {
        return Err(Error::Config(
            "--ctf signed/flipped needs the defocus: give --defocus (Å) or --tilt-series-star"
                .into(),
        )
        .into());
    }
    let region = match &a.mask {
        Some(p) => {
            let m = mrc::read(p)?.data;
            if m.dim() != (nz, ny, nx) {
                return Err(Error::bad_input(
                    p,
                    "shape",
                    format!(
                        "{:?} but the tomogram is {:?} ([z, y, x]): give a mask of the tomogram's shape",
                        m.dim(),
                        (nz, ny, nx)
                    ),
                )
                .into());
            }
            Some(m.mapv(|v| v > 0.0))
        }
        None => None,
    };
    let template = Template::read(&a.template, pixel_a, a.box_px, a.template_dark)?;
    let params = PickParams {
        angular_step_deg: a.angular_step,
        radius_a: a.radius,
        mask_scale: a.mask_scale,
        score_gap_ratio: a.score_gap,
        n_false_alarms: a.n_false_alarms,
        max_peaks: a.max_peaks,
        edge_px: None,
        weight: WeightSpec {
            ctf,
            dose: geom
                .as_ref()
                .is_some_and(|g| g.tilts.iter().any(|t| t.dose_e_a2 > 0.0)),
            contrast,
            lowpass_a: a.lowpass,
        },
    };
    let device = Device::select(a.device, comm.local_rank())?;
    let r = pick_tomogram(
        tomo.data.view(),
        pixel_a,
        geom.as_ref(),
        &template,
        &params,
        region.as_ref(),
        comm,
        &device,
    )?;
    if comm.rank() != 0 {
        return Ok(0);
    }
    let name = a.name.clone().unwrap_or_else(|| stem(&a.tomogram));
    let template_name = a
        .template
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut summary = PickSummary::of(&r, &template_name, 1, template.size(), &params, comm.size());
    let range = output::tilt_range(geom.as_ref());
    let files = output::write_outputs(
        &a.out,
        &name,
        &r,
        pixel_a,
        template.size(),
        1,
        range,
        &summary,
    )?;
    let h5 = a.out.join(format!("{name}_picking.h5"));
    container::write_picking_file(
        &h5,
        &name,
        &output::record(&r, &template_name, 1, pixel_a, &params),
    )?;
    summary.files = files
        .all()
        .iter()
        .map(|p| p.display().to_string())
        .chain([h5.display().to_string()])
        .collect();
    crate::pipeline::simio::write_json(&files.json, &summary)?;
    println!(
        "{name}: {} rotations at {}° in {:.1} s ({:.1} rotations/s over {} rank(s)); threshold {:.4} \
         (σ {:.4}, {} false alarm(s)); {} pick(s); wrote {}",
        r.rotations.len(),
        a.angular_step,
        r.search_seconds,
        summary.rotations_per_s,
        comm.size(),
        r.threshold,
        r.sigma,
        a.n_false_alarms,
        r.picks.len(),
        summary.files.join(", ")
    );
    Ok(0)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tomogram".into())
}
