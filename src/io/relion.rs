//! RELION-5 tomography files: tilt-series STAR (per-tilt geometry), `tomograms.star`,
//! particle STAR files; projection matrices `rlnTomoProjX/Y/Z/W`.
//!
//! Geometry comes from [`crate::core::geometry`]: a tilt is a [`TiltImage`]; its RELION-5
//! projection matrix is [`TiltImage::relion_matrix`] (tomogram voxel indices in tilt-series
//! pixels → tilt-image pixels). Field mapping (see `docs/star.md`):
//!
//! | lamella | STAR |
//! |---|---|
//! | `TiltImage::tilt_deg` | `rlnTomoYTilt` (else `rlnTomoNominalStageTiltAngle`) |
//! | `TiltImage::axis_deg` | `rlnTomoZRot` (else `rlnTomoNominalTiltAxisAngle`) |
//! | `TiltImage::x_tilt_deg` | `rlnTomoXTilt` (else 0) |
//! | `TiltImage::shift_x_a/shift_y_a` | `rlnTomoXShiftAngst/YShiftAngst` (else 0) |
//! | `TiltImage::defocus_u_a/v_a/astig_angle_deg` | `rlnDefocusU/V/Angle` (else 0) |
//! | `TiltImage::pre_exposure_e_a2` | `rlnMicrographPreExposure` (else 0) |
//! | `TiltImage::acquisition_index` | rank of `rlnMicrographPreExposure` |
//! | `TiltImage::dose_e_a2` | next larger pre-exposure minus this one (last: previous step) |
//! | `TiltSeriesGeometry::hand` | `rlnTomoHand` (tomograms.star) |
//! | `Optics` | `rlnVoltage`, `rlnSphericalAberration`, `rlnAmplitudeContrast` |

use crate::core::geometry::{Optics, TiltImage, TiltSeriesGeometry};
use crate::io::star::{StarBlock, StarFile, StarTable};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Parse a RELION list value `"[a,b,c,d]"` into 4 numbers.
fn parse_vec4(s: &str) -> Option<[f64; 4]> {
    let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
    let v: Vec<f64> = inner
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    (v.len() == 4).then(|| [v[0], v[1], v[2], v[3]])
}

/// Format a 4-vector as RELION writes it: `[a,b,c,d]`.
fn fmt_vec4(v: &[f64; 4]) -> String {
    format!("[{:.9},{:.9},{:.9},{:.9}]", v[0], v[1], v[2], v[3])
}

/// The 4×4 projection matrices of every row of `block`'s table, from the
/// `rlnTomoProjX/Y/Z/W` columns (each `"[a,b,c,d]"`, one matrix row). Units as RELION-5:
/// tomogram voxel indices (tilt-series pixels, homogeneous) → tilt-image pixels; see
/// [`TiltImage::relion_matrix`]. Errors name the file, block, column, row and value.
pub fn projection_matrices(block: &StarBlock, path: &Path) -> Result<Vec<[[f64; 4]; 4]>> {
    let table = block.require_table(path)?;
    let names = [
        "rlnTomoProjX",
        "rlnTomoProjY",
        "rlnTomoProjZ",
        "rlnTomoProjW",
    ];
    let mut cols = [0usize; 4];
    for (k, n) in names.iter().enumerate() {
        cols[k] = table.col(n).ok_or_else(|| {
            Error::bad_input(
                path,
                format!("data_{}/_{n}", block.name),
                "projection-matrix column missing; this block has no RELION-5 projection matrices (use rlnTomoXTilt/YTilt/ZRot instead)",
            )
        })?;
    }
    table
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut m = [[0.0; 4]; 4];
            for k in 0..4 {
                m[k] = parse_vec4(&r[cols[k]]).ok_or_else(|| {
                    Error::bad_input(
                        path,
                        format!("data_{}/_{} row {}", block.name, names[k], i + 1),
                        format!("`{}` is not a list of 4 numbers `[a,b,c,d]`", r[cols[k]]),
                    )
                })?;
            }
            Ok(m)
        })
        .collect()
}

/// True when a projection matrix has no translation (rows X, Y, Z end in 0), as WarpTools'
/// 2D-stack export writes them: such a matrix maps coordinates about the tomogram centre to
/// coordinates about the (particle-centred) image centre, i.e. use tomogram size `[0, 0, 0]`
/// and image size `[0, 0]` with [`TiltImage::set_from_relion_matrix`].
pub fn matrix_is_centred(m: &[[f64; 4]; 4]) -> bool {
    (0..3).all(|i| m[i][3] == 0.0)
}

/// Optional numeric column: `Ok(None)` when absent.
fn opt_col(t: &StarTable, name: &str, path: &Path, block: &str) -> Result<Option<Vec<f64>>> {
    if t.col(name).is_some() {
        t.f64_column(name, path, block).map(Some)
    } else {
        Ok(None)
    }
}

/// First present of several columns.
fn first_col(t: &StarTable, names: &[&str], path: &Path, block: &str) -> Result<Option<Vec<f64>>> {
    for n in names {
        if let Some(v) = opt_col(t, n, path, block)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Fill acquisition order and per-tilt dose from the pre-exposures.
fn doses_from_pre_exposure(tilts: &mut [TiltImage]) {
    let mut order: Vec<usize> = (0..tilts.len()).collect();
    order.sort_by(|&a, &b| {
        tilts[a]
            .pre_exposure_e_a2
            .total_cmp(&tilts[b].pre_exposure_e_a2)
    });
    for (rank, &i) in order.iter().enumerate() {
        tilts[i].acquisition_index = rank;
    }
    for k in 0..order.len() {
        let this = tilts[order[k]].pre_exposure_e_a2;
        let dose = if k + 1 < order.len() {
            tilts[order[k + 1]].pre_exposure_e_a2 - this
        } else if k > 0 {
            this - tilts[order[k - 1]].pre_exposure_e_a2
        } else {
            0.0
        };
        tilts[order[k]].dose_e_a2 = dose.max(0.0);
    }
}

/// Read a RELION-5 tilt-series STAR file (the per-tomogram file that `tomograms.star`
/// points to with `rlnTomoTiltSeriesStarFile`): its first block with a table, one row per
/// tilt in stack order. `nx`, `ny` (pixels) and `pixel_a` (Å) describe the stack, which the
/// file does not. Angles come from `rlnTomoXTilt/YTilt/ZRot` (falling back to the nominal
/// angles), shifts from `rlnTomoX/YShiftAngst`; defocus, pre-exposure and optics columns
/// when present (see the module table). `hand` is +1 (it lives in `tomograms.star`).
pub fn read_tilt_series_star(
    path: &Path,
    nx: usize,
    ny: usize,
    pixel_a: f64,
) -> Result<TiltSeriesGeometry> {
    let file = StarFile::read(path)?;
    let block = file
        .blocks
        .iter()
        .find(|b| b.table.is_some())
        .ok_or_else(|| {
            Error::bad_input(path, "loop_", "no table in this file; expected a RELION-5 tilt-series STAR file with one row per tilt")
        })?;
    tilt_series_from_block(block, path, nx, ny, pixel_a)
}

/// [`read_tilt_series_star`] on a block already parsed.
pub fn tilt_series_from_block(
    block: &StarBlock,
    path: &Path,
    nx: usize,
    ny: usize,
    pixel_a: f64,
) -> Result<TiltSeriesGeometry> {
    let t = block.require_table(path)?;
    let b = block.name.as_str();
    let n = t.len();
    let tilt = first_col(t, &["rlnTomoYTilt", "rlnTomoNominalStageTiltAngle"], path, b)?
        .ok_or_else(|| {
            Error::bad_input(
                path,
                format!("data_{b}/_rlnTomoYTilt"),
                "neither rlnTomoYTilt nor rlnTomoNominalStageTiltAngle is present; the tilt angles are unknown",
            )
        })?;
    let axis = first_col(t, &["rlnTomoZRot", "rlnTomoNominalTiltAxisAngle"], path, b)?
        .unwrap_or_else(|| vec![0.0; n]);
    let zero = || vec![0.0; n];
    let xtilt = opt_col(t, "rlnTomoXTilt", path, b)?.unwrap_or_else(zero);
    let sx = opt_col(t, "rlnTomoXShiftAngst", path, b)?.unwrap_or_else(zero);
    let sy = opt_col(t, "rlnTomoYShiftAngst", path, b)?.unwrap_or_else(zero);
    let du = opt_col(t, "rlnDefocusU", path, b)?.unwrap_or_else(zero);
    let dv = opt_col(t, "rlnDefocusV", path, b)?.unwrap_or_else(|| du.clone());
    let da = opt_col(t, "rlnDefocusAngle", path, b)?.unwrap_or_else(zero);
    let pre = opt_col(t, "rlnMicrographPreExposure", path, b)?.unwrap_or_else(zero);
    let mut tilts: Vec<TiltImage> = (0..n)
        .map(|i| {
            let mut ti = TiltImage::nominal(tilt[i], axis[i]);
            ti.x_tilt_deg = xtilt[i];
            ti.shift_x_a = sx[i];
            ti.shift_y_a = sy[i];
            ti.defocus_u_a = du[i];
            ti.defocus_v_a = dv[i];
            ti.astig_angle_deg = da[i];
            ti.pre_exposure_e_a2 = pre[i];
            ti
        })
        .collect();
    doses_from_pre_exposure(&mut tilts);
    let mut optics = Optics::default();
    if let Some(v) = opt_col(t, "rlnVoltage", path, b)? {
        optics.voltage_kv = v[0];
    }
    if let Some(v) = opt_col(t, "rlnSphericalAberration", path, b)? {
        optics.cs_mm = v[0];
    }
    if let Some(v) = opt_col(t, "rlnAmplitudeContrast", path, b)? {
        optics.amplitude_contrast = v[0];
    }
    Ok(TiltSeriesGeometry {
        nx,
        ny,
        pixel_a,
        hand: 1.0,
        optics,
        tilts,
    })
}

/// Build the tilt-series table block; with `tomo_size` (tilt-series pixels) it also holds
/// `rlnTomoProjX/Y/Z/W`.
fn tilt_series_block(
    name: &str,
    geom: &TiltSeriesGeometry,
    image_names: &[String],
    tomo_size: Option<[usize; 3]>,
    path: &Path,
) -> Result<StarBlock> {
    if image_names.len() != geom.len() {
        return Err(Error::bad_input(
            path,
            "rlnMicrographName",
            format!(
                "{} image names for {} tilts; pass one name per tilt",
                image_names.len(),
                geom.len()
            ),
        ));
    }
    let mut cols = vec![
        "rlnMicrographName",
        "rlnTomoNominalStageTiltAngle",
        "rlnTomoNominalTiltAxisAngle",
        "rlnMicrographPreExposure",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnTomoXTilt",
        "rlnTomoYTilt",
        "rlnTomoZRot",
        "rlnTomoXShiftAngst",
        "rlnTomoYShiftAngst",
    ];
    if tomo_size.is_some() {
        cols.extend([
            "rlnTomoProjX",
            "rlnTomoProjY",
            "rlnTomoProjZ",
            "rlnTomoProjW",
        ]);
    }
    let mut table = StarTable::new(&cols);
    let f = |x: f64| format!("{x:.6}");
    for (t, img) in geom.tilts.iter().zip(image_names) {
        let mut row = vec![
            img.clone(),
            f(t.tilt_deg),
            f(t.axis_deg),
            f(t.pre_exposure_e_a2),
            f(t.defocus_u_a),
            f(t.defocus_v_a),
            f(t.astig_angle_deg),
            f(t.x_tilt_deg),
            f(t.tilt_deg),
            f(t.axis_deg),
            f(t.shift_x_a),
            f(t.shift_y_a),
        ];
        if let Some(ts) = tomo_size {
            let m = t.relion_matrix(geom.pixel_a, ts, [geom.nx, geom.ny]);
            row.extend(m.iter().map(fmt_vec4));
        }
        table.push_row(row);
    }
    Ok(StarBlock {
        name: name.to_string(),
        pairs: vec![],
        table: Some(table),
    })
}

/// Write a RELION-5 tilt-series STAR file: one block named after the file stem, one row per
/// tilt in stack order (`image_names[i]` in `rlnMicrographName`, e.g. `"3@stack.mrcs"`),
/// with nominal angles (= the refined ones), `rlnTomoXTilt/YTilt/ZRot` (degrees),
/// `rlnTomoX/YShiftAngst` (Å), defocus (Å, degrees) and pre-exposure (e/Å²). Atomic.
pub fn write_tilt_series_star(
    path: &Path,
    geom: &TiltSeriesGeometry,
    image_names: &[String],
) -> Result<()> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let block = tilt_series_block(&name, geom, image_names, None, path)?;
    StarFile {
        blocks: vec![block],
    }
    .write(path)
}

/// One tomogram of a `tomograms.star`.
#[derive(Clone, Debug, PartialEq)]
pub struct TomogramEntry {
    /// Tomogram name (`rlnTomoName`, also the tilt-series STAR block and file name).
    pub name: String,
    /// Tilt-series geometry (stack size and pixel, optics, hand, per-tilt values).
    pub geometry: TiltSeriesGeometry,
    /// Tomogram size `[x, y, z]` in tilt-series pixels (`rlnTomoSizeX/Y/Z`).
    pub tomo_size_px: [usize; 3],
    /// Binning of the reconstructed tomogram relative to the tilt series.
    pub binning: f64,
    /// Tilt-series stack file (`rlnTomoTiltSeriesName`; tilts named `i@stack`, 1-based).
    pub tilt_series_stack: String,
    /// Reconstructed tomogram file (`rlnTomoReconstructedTomogram`), if any.
    pub reconstructed: Option<String>,
}

/// Write `dir/tomograms.star` (RELION-5 `data_global`: name, optics, `rlnTomoHand`, pixel,
/// `rlnTomoTiltSeriesStarFile` = `tilt_series/<name>.star` relative to `dir`, binning,
/// sizes, reconstruction) and one `dir/tilt_series/<name>.star` per tomogram, whose rows
/// also carry `rlnTomoProjX/Y/Z/W` from [`TiltImage::relion_matrix`]. Atomic per file.
pub fn write_tomograms_star(dir: &Path, entries: &[TomogramEntry]) -> Result<()> {
    let main = dir.join("tomograms.star");
    let mut cols = vec![
        "rlnTomoName",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnMicrographOriginalPixelSize",
        "rlnTomoHand",
        "rlnOpticsGroupName",
        "rlnTomoTiltSeriesPixelSize",
        "rlnTomoTiltSeriesStarFile",
        "rlnTomoTiltSeriesName",
        "rlnTomoFrameCount",
        "rlnTomoTomogramBinning",
        "rlnTomoSizeX",
        "rlnTomoSizeY",
        "rlnTomoSizeZ",
    ];
    let any_rec = entries.iter().any(|e| e.reconstructed.is_some());
    if any_rec {
        cols.push("rlnTomoReconstructedTomogram");
    }
    let mut table = StarTable::new(&cols);
    for (k, e) in entries.iter().enumerate() {
        if e.name.is_empty()
            || e.name.contains(['/', '\\'])
            || e.name.chars().any(char::is_whitespace)
        {
            return Err(Error::bad_input(
                &main,
                "rlnTomoName",
                format!("`{}` cannot be a tomogram name: use a non-empty name without spaces or slashes", e.name),
            ));
        }
        let g = &e.geometry;
        let ts_rel = format!("tilt_series/{}.star", e.name);
        let names: Vec<String> = (1..=g.len())
            .map(|i| format!("{i}@{}", e.tilt_series_stack))
            .collect();
        let block =
            tilt_series_block(&e.name, g, &names, Some(e.tomo_size_px), &dir.join(&ts_rel))?;
        StarFile {
            blocks: vec![block],
        }
        .write(&dir.join(&ts_rel))?;
        let mut row = vec![
            e.name.clone(),
            format!("{:.6}", g.optics.voltage_kv),
            format!("{:.6}", g.optics.cs_mm),
            format!("{:.6}", g.optics.amplitude_contrast),
            format!("{:.6}", g.pixel_a),
            format!("{:.6}", g.hand),
            format!("opticsGroup{}", k + 1),
            format!("{:.6}", g.pixel_a),
            ts_rel,
            e.tilt_series_stack.clone(),
            g.len().to_string(),
            format!("{:.6}", e.binning),
            e.tomo_size_px[0].to_string(),
            e.tomo_size_px[1].to_string(),
            e.tomo_size_px[2].to_string(),
        ];
        if any_rec {
            row.push(e.reconstructed.clone().unwrap_or_default());
        }
        table.push_row(row);
    }
    StarFile {
        blocks: vec![StarBlock {
            name: "global".into(),
            pairs: vec![],
            table: Some(table),
        }],
    }
    .write(&main)
}

/// One tomogram's global entry as read from a `tomograms.star` (`data_global`).
#[derive(Clone, Debug, PartialEq)]
pub struct TomogramGlobal {
    /// `rlnTomoName`.
    pub name: String,
    /// `rlnTomoSizeX/Y/Z`, tilt-series pixels (None when absent).
    pub size_px: Option<[usize; 3]>,
    /// `rlnTomoTiltSeriesPixelSize`, Å.
    pub pixel_a: f64,
    /// `rlnTomoHand` (+1 when absent).
    pub hand: f64,
    /// `rlnVoltage`, `rlnSphericalAberration`, `rlnAmplitudeContrast` (defaults when absent).
    pub optics: Optics,
    /// `rlnTomoTiltSeriesStarFile` as written (None when the per-tilt block is in the same
    /// file, named like the tomogram, as WarpTools writes it).
    pub tilt_series_star: Option<String>,
    /// `rlnTomoReconstructedTomogram` as written, if present.
    pub reconstructed: Option<String>,
    /// `rlnTomoTomogramBinning` (1 when absent).
    pub binning: f64,
}

/// Read `data_global` of a RELION-5 `tomograms.star`.
pub fn read_tomograms_global(path: &Path) -> Result<Vec<TomogramGlobal>> {
    let file = StarFile::read(path)?;
    let g = file.require_block("global", path)?;
    let t = g.require_table(path)?;
    let names = t.str_column("rlnTomoName").ok_or_else(|| {
        Error::bad_input(
            path,
            "data_global/_rlnTomoName",
            "column missing; is this a RELION-5 tomograms.star?",
        )
    })?;
    let n = names.len();
    let pixel = t.f64_column("rlnTomoTiltSeriesPixelSize", path, "global")?;
    let size = match (
        opt_col(t, "rlnTomoSizeX", path, "global")?,
        opt_col(t, "rlnTomoSizeY", path, "global")?,
        opt_col(t, "rlnTomoSizeZ", path, "global")?,
    ) {
        (Some(x), Some(y), Some(z)) => Some((x, y, z)),
        _ => None,
    };
    let hand = opt_col(t, "rlnTomoHand", path, "global")?.unwrap_or_else(|| vec![1.0; n]);
    let d = Optics::default();
    let kv = opt_col(t, "rlnVoltage", path, "global")?.unwrap_or_else(|| vec![d.voltage_kv; n]);
    let cs =
        opt_col(t, "rlnSphericalAberration", path, "global")?.unwrap_or_else(|| vec![d.cs_mm; n]);
    let ac = opt_col(t, "rlnAmplitudeContrast", path, "global")?
        .unwrap_or_else(|| vec![d.amplitude_contrast; n]);
    let ts = t.str_column("rlnTomoTiltSeriesStarFile");
    let rec = t.str_column("rlnTomoReconstructedTomogram");
    let bin = opt_col(t, "rlnTomoTomogramBinning", path, "global")?.unwrap_or_else(|| vec![1.0; n]);
    Ok((0..n)
        .map(|i| TomogramGlobal {
            name: names[i].to_string(),
            size_px: size
                .as_ref()
                .map(|(x, y, z)| [x[i] as usize, y[i] as usize, z[i] as usize]),
            pixel_a: pixel[i],
            hand: hand[i],
            optics: Optics {
                voltage_kv: kv[i],
                cs_mm: cs[i],
                amplitude_contrast: ac[i],
            },
            tilt_series_star: ts.as_ref().map(|v| v[i].to_string()),
            reconstructed: rec.as_ref().map(|v| v[i].to_string()),
            binning: bin[i],
        })
        .collect())
}

/// One particle of a RELION-5 particle STAR file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParticleRecord {
    /// `rlnTomoName` (or `rlnMicrographName` in RELION-3 style files).
    pub tomo_name: String,
    /// Position about the tomogram centre, Å (`rlnCenteredCoordinateX/Y/ZAngst` minus
    /// `rlnOriginX/Y/ZAngst`).
    pub centered_coordinate_a: [f64; 3],
    /// RELION Euler angles (rot, tilt, psi), degrees (0 when absent).
    pub euler_deg: [f64; 3],
    /// `rlnOpticsGroup` (1 when absent).
    pub optics_group: usize,
    /// `rlnRandomSubset` (1 or 2; 0 when absent).
    pub random_subset: usize,
    /// `rlnClassNumber` (0 when absent).
    pub class: usize,
}

/// Write a RELION-5 particle STAR file for 3D subtomograms: `data_general`
/// (`rlnTomoSubTomosAre2DStacks 0`), `data_optics` (one group per distinct
/// `optics_group`, default optics 300 kV / 2.7 mm / 0.07, `rlnImagePixelSize` and
/// `rlnTomoTiltSeriesPixelSize` = `pixel_a` Å, `rlnImageSize` = `box_px`,
/// dimensionality 3) and `data_particles` with `rlnCenteredCoordinateX/Y/ZAngst` (Å),
/// `rlnAngleRot/Tilt/Psi` (degrees), optics group, random subset and class. Atomic.
pub fn write_particles_star(
    path: &Path,
    pixel_a: f64,
    box_px: usize,
    particles: &[ParticleRecord],
) -> Result<()> {
    let mut general = StarBlock::new("general");
    general.set("rlnTomoSubTomosAre2DStacks", "0");
    let mut groups: Vec<usize> = particles.iter().map(|p| p.optics_group).collect();
    groups.sort_unstable();
    groups.dedup();
    if groups.is_empty() {
        groups.push(1);
    }
    let o = Optics::default();
    let mut optics = StarTable::new(&[
        "rlnOpticsGroup",
        "rlnOpticsGroupName",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnTomoTiltSeriesPixelSize",
        "rlnImagePixelSize",
        "rlnImageSize",
        "rlnImageDimensionality",
        "rlnTomoSubtomogramBinning",
    ]);
    for g in &groups {
        optics.push_row(vec![
            g.to_string(),
            format!("opticsGroup{g}"),
            format!("{:.6}", o.voltage_kv),
            format!("{:.6}", o.cs_mm),
            format!("{:.6}", o.amplitude_contrast),
            format!("{pixel_a:.6}"),
            format!("{pixel_a:.6}"),
            box_px.to_string(),
            "3".into(),
            "1.000000".into(),
        ]);
    }
    let mut table = StarTable::new(&[
        "rlnTomoName",
        "rlnTomoParticleName",
        "rlnCenteredCoordinateXAngst",
        "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnOpticsGroup",
        "rlnRandomSubset",
        "rlnClassNumber",
        "rlnOriginXAngst",
        "rlnOriginYAngst",
        "rlnOriginZAngst",
    ]);
    for (i, p) in particles.iter().enumerate() {
        let c = p.centered_coordinate_a;
        let e = p.euler_deg;
        table.push_row(vec![
            p.tomo_name.clone(),
            format!("{}/{}", p.tomo_name, i + 1),
            format!("{:.6}", c[0]),
            format!("{:.6}", c[1]),
            format!("{:.6}", c[2]),
            format!("{:.6}", e[0]),
            format!("{:.6}", e[1]),
            format!("{:.6}", e[2]),
            p.optics_group.to_string(),
            p.random_subset.to_string(),
            p.class.to_string(),
            "0.0".into(),
            "0.0".into(),
            "0.0".into(),
        ]);
    }
    StarFile {
        blocks: vec![
            general,
            StarBlock {
                name: "optics".into(),
                pairs: vec![],
                table: Some(optics),
            },
            StarBlock {
                name: "particles".into(),
                pairs: vec![],
                table: Some(table),
            },
        ],
    }
    .write(path)
}

/// Find the `tomograms.star` that goes with particle file `path`: `<stem>_tomograms.star`
/// (WarpTools), the `rlnTomoTomogramsFile` of `<stem>_optimisation_set.star`, or
/// `tomograms.star` in the same folder.
pub fn find_tomograms_star(path: &Path) -> Option<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new(""));
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    let sibling = dir.join(format!("{stem}_tomograms.star"));
    if sibling.is_file() {
        return Some(sibling);
    }
    let opt = dir.join(format!("{stem}_optimisation_set.star"));
    if let Ok(f) = StarFile::read(&opt) {
        if let Some(t) = f.blocks.iter().find_map(|b| b.get("rlnTomoTomogramsFile")) {
            let p = dir.join(t);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let plain = dir.join("tomograms.star");
    plain.is_file().then_some(plain)
}

/// Read a particle STAR file (RELION-5, or RELION-3 style with one table).
///
/// Positions: `rlnCenteredCoordinateX/Y/ZAngst` (Å about the tomogram centre) when present;
/// otherwise `rlnCoordinateX/Y/Z` in pixels, converted as
/// `coord · coord_pixel − (size_px / 2) · tilt_series_pixel` with the tomogram size and
/// pixel from the matching `tomograms.star` (see `find_tomograms_star`: `<stem>_tomograms.star`,
/// the optimisation set, or `tomograms.star` beside the file). `coord_pixel` is the optics
/// group's `rlnImagePixelSize` when `rlnTomoSubTomosAre2DStacks` is 1 (WarpTools writes
/// coordinates at the export pixel size), else its `rlnTomoTiltSeriesPixelSize`, else the
/// tomogram's pixel. `rlnOriginX/Y/ZAngst` are subtracted in both cases. Angles default to
/// 0, optics group to 1, subset and class to 0.
pub fn read_particles_star(path: &Path) -> Result<Vec<ParticleRecord>> {
    let file = StarFile::read(path)?;
    let block = file
        .block("particles")
        .filter(|b| b.table.is_some())
        .or_else(|| file.blocks.iter().find(|b| b.table.is_some()))
        .ok_or_else(|| {
            Error::bad_input(path, "data_particles", "no particle table in this file")
        })?;
    let b = block.name.as_str();
    let t = block.require_table(path)?;
    let n = t.len();
    let names = t
        .str_column("rlnTomoName")
        .or_else(|| t.str_column("rlnMicrographName"))
        .ok_or_else(|| {
            Error::bad_input(
                path,
                format!("data_{b}/_rlnTomoName"),
                "column missing: which tomogram each particle is in is unknown",
            )
        })?;
    let zero = || vec![0.0; n];
    let col_or = |name: &str, d: f64| -> Result<Vec<f64>> {
        Ok(opt_col(t, name, path, b)?.unwrap_or_else(|| vec![d; n]))
    };
    let rot = col_or("rlnAngleRot", 0.0)?;
    let tilt = col_or("rlnAngleTilt", 0.0)?;
    let psi = col_or("rlnAnglePsi", 0.0)?;
    let og = col_or("rlnOpticsGroup", 1.0)?;
    let rs = col_or("rlnRandomSubset", 0.0)?;
    let cl = col_or("rlnClassNumber", 0.0)?;
    let ox = opt_col(t, "rlnOriginXAngst", path, b)?.unwrap_or_else(zero);
    let oy = opt_col(t, "rlnOriginYAngst", path, b)?.unwrap_or_else(zero);
    let oz = opt_col(t, "rlnOriginZAngst", path, b)?.unwrap_or_else(zero);
    let centred: Vec<[f64; 3]> = if t.col("rlnCenteredCoordinateXAngst").is_some() {
        let x = t.f64_column("rlnCenteredCoordinateXAngst", path, b)?;
        let y = t.f64_column("rlnCenteredCoordinateYAngst", path, b)?;
        let z = t.f64_column("rlnCenteredCoordinateZAngst", path, b)?;
        (0..n).map(|i| [x[i], y[i], z[i]]).collect()
    } else if t.col("rlnCoordinateX").is_some() {
        let x = t.f64_column("rlnCoordinateX", path, b)?;
        let y = t.f64_column("rlnCoordinateY", path, b)?;
        let z = t.f64_column("rlnCoordinateZ", path, b)?;
        let tomo_path = find_tomograms_star(path).ok_or_else(|| {
            Error::bad_input(
                path,
                format!("data_{b}/_rlnCoordinateX"),
                "coordinates are in pixels but no tomograms.star was found beside the file \
                 (looked for <stem>_tomograms.star, <stem>_optimisation_set.star, tomograms.star); \
                 the tomogram sizes and pixel size are needed to centre them: put the tomograms.star \
                 there or convert to rlnCenteredCoordinateX/Y/ZAngst",
            )
        })?;
        let tomos: HashMap<String, TomogramGlobal> = read_tomograms_global(&tomo_path)?
            .into_iter()
            .map(|g| (g.name.clone(), g))
            .collect();
        let stacks2d = file
            .block("general")
            .and_then(|g| g.get("rlnTomoSubTomosAre2DStacks"))
            .map(|v| v.trim() == "1")
            .unwrap_or(false);
        let mut group_px: HashMap<usize, f64> = HashMap::new();
        if let Some(ot) = file.block("optics").and_then(|o| o.table()) {
            let key = if stacks2d {
                "rlnImagePixelSize"
            } else {
                "rlnTomoTiltSeriesPixelSize"
            };
            if let (Some(_), Some(_)) = (ot.col("rlnOpticsGroup"), ot.col(key)) {
                let g = ot.f64_column("rlnOpticsGroup", path, "optics")?;
                let p = ot.f64_column(key, path, "optics")?;
                for (gi, pi) in g.iter().zip(p) {
                    group_px.insert(*gi as usize, pi);
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let tomo = tomos.get(names[i]).ok_or_else(|| {
                Error::bad_input(
                    &tomo_path,
                    "data_global/_rlnTomoName",
                    format!(
                        "no tomogram `{}` (particle row {} of {}); add it to the tomograms file",
                        names[i],
                        i + 1,
                        path.display()
                    ),
                )
            })?;
            let size = tomo.size_px.ok_or_else(|| {
                Error::bad_input(
                    &tomo_path,
                    "data_global/_rlnTomoSizeX",
                    "tomogram sizes rlnTomoSizeX/Y/Z missing: needed to centre pixel coordinates",
                )
            })?;
            let cp = group_px
                .get(&(og[i] as usize))
                .copied()
                .unwrap_or(tomo.pixel_a);
            let c = [x[i], y[i], z[i]];
            let mut v = [0.0; 3];
            for k in 0..3 {
                v[k] = c[k] * cp - (size[k] / 2) as f64 * tomo.pixel_a;
            }
            out.push(v);
        }
        out
    } else {
        return Err(Error::bad_input(
            path,
            format!("data_{b}"),
            "no particle positions: expected rlnCenteredCoordinateX/Y/ZAngst or rlnCoordinateX/Y/Z",
        ));
    };
    Ok((0..n)
        .map(|i| ParticleRecord {
            tomo_name: names[i].to_string(),
            centered_coordinate_a: [
                centred[i][0] - ox[i],
                centred[i][1] - oy[i],
                centred[i][2] - oz[i],
            ],
            euler_deg: [rot[i], tilt[i], psi[i]],
            optics_group: og[i].max(0.0) as usize,
            random_subset: rs[i].max(0.0) as usize,
            class: cl[i].max(0.0) as usize,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom() -> TiltSeriesGeometry {
        let angles = [-6.0, -3.0, 0.0, 3.0, 6.0];
        let mut g = TiltSeriesGeometry::from_angles(512, 480, 2.5, &angles, 85.0);
        for (i, t) in g.tilts.iter_mut().enumerate() {
            t.x_tilt_deg = 0.3;
            t.shift_x_a = 10.0 * i as f64 - 7.25;
            t.shift_y_a = -3.5 * i as f64;
            t.defocus_u_a = 30000.0 + i as f64;
            t.defocus_v_a = 29000.0;
            t.astig_angle_deg = 45.0;
            // dose-symmetric-ish order: 0, 3, -3, 6, -6 => indices 2, 3, 1, 4, 0
            t.pre_exposure_e_a2 = [12.0, 6.0, 0.0, 3.0, 9.0][i];
        }
        g
    }

    #[test]
    fn tilt_series_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ts.star");
        let g = geom();
        let names: Vec<String> = (1..=5).map(|i| format!("{i}@ts.mrcs")).collect();
        write_tilt_series_star(&p, &g, &names).unwrap();
        let r = read_tilt_series_star(&p, 512, 480, 2.5).unwrap();
        for (a, b) in g.tilts.iter().zip(&r.tilts) {
            for (x, y) in [
                (a.tilt_deg, b.tilt_deg),
                (a.axis_deg, b.axis_deg),
                (a.x_tilt_deg, b.x_tilt_deg),
                (a.shift_x_a, b.shift_x_a),
                (a.shift_y_a, b.shift_y_a),
                (a.defocus_u_a, b.defocus_u_a),
                (a.defocus_v_a, b.defocus_v_a),
                (a.astig_angle_deg, b.astig_angle_deg),
                (a.pre_exposure_e_a2, b.pre_exposure_e_a2),
            ] {
                assert!((x - y).abs() < 1e-6, "{x} vs {y}");
            }
            assert!((b.dose_e_a2 - 3.0).abs() < 1e-9);
        }
        let order: Vec<usize> = r.tilts.iter().map(|t| t.acquisition_index).collect();
        assert_eq!(order, vec![4, 2, 0, 1, 3]);
        assert!(write_tilt_series_star(&p, &g, &names[..2]).is_err());
    }

    #[test]
    fn tomograms_star_matrices_decompose_back() {
        let dir = tempfile::tempdir().unwrap();
        let e = TomogramEntry {
            name: "TS_1".into(),
            geometry: geom(),
            tomo_size_px: [512, 480, 200],
            binning: 4.0,
            tilt_series_stack: "TS_1.mrcs".into(),
            reconstructed: None,
        };
        write_tomograms_star(dir.path(), std::slice::from_ref(&e)).unwrap();
        let g = read_tomograms_global(&dir.path().join("tomograms.star")).unwrap();
        assert_eq!(g[0].size_px, Some([512, 480, 200]));
        let ts = dir.path().join(g[0].tilt_series_star.as_ref().unwrap());
        let f = StarFile::read(&ts).unwrap();
        let mats = projection_matrices(&f.blocks[0], &ts).unwrap();
        assert_eq!(mats.len(), 5);
        for (m, t) in mats.iter().zip(&e.geometry.tilts) {
            let mut u = TiltImage::nominal(0.0, 0.0);
            u.set_from_relion_matrix(m, 2.5, [512, 480, 200], [512, 480])
                .unwrap();
            assert!((u.tilt_deg - t.tilt_deg).abs() < 1e-6);
            assert!((u.axis_deg - t.axis_deg).abs() < 1e-6);
            assert!((u.shift_x_a - t.shift_x_a).abs() < 1e-5);
            assert!((u.shift_y_a - t.shift_y_a).abs() < 1e-5);
        }
    }

    #[test]
    fn particles_round_trip_and_missing_tomograms_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("particles.star");
        let parts: Vec<ParticleRecord> = (0..4)
            .map(|i| ParticleRecord {
                tomo_name: format!("TS_{}", i % 2),
                centered_coordinate_a: [i as f64 * 10.5, -3.25, 100.0],
                euler_deg: [10.0, 20.0 + i as f64, -30.0],
                optics_group: 1 + i % 2,
                random_subset: 1 + i % 2,
                class: 1,
            })
            .collect();
        write_particles_star(&p, 10.0, 32, &parts).unwrap();
        assert_eq!(read_particles_star(&p).unwrap(), parts);
        let q = dir.path().join("pix.star");
        std::fs::write(&q, "data_particles\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n_rlnCoordinateZ #4\nA 1 2 3\n").unwrap();
        let e = read_particles_star(&q).unwrap_err().to_string();
        assert!(
            e.contains("tomograms.star") && e.contains("rlnCoordinateX"),
            "{e}"
        );
    }
}
