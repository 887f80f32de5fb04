//! The CTF-estimation stage (`[ctf]` in a run config, `lamella ctf`): tilt-aware estimation
//! of a whole series ([`estimate_series`]), the fit written into the geometry's defocus fields
//! (so CTF correction in reconstruction uses it), and the outputs in one folder:
//!
//! - `<name>.defocus`: IMOD ctfplotter format, version 3 with astigmatism
//!   ([`crate::io::imod::write_defocus`]);
//! - `<name>_ctf.star`: RELION-5 tilt-series STAR with `rlnDefocusU/V/Angle`
//!   ([`crate::io::relion::write_tilt_series_star`]);
//! - `<name>_ctf_defocus.png`: mean defocus per tilt (fit, and the truth when known);
//! - `<name>_ctf_radial.png`: radial average of the lowest tilt's rescaled,
//!   background-subtracted spectrum with the fitted `|CTF|`;
//! - `<name>_ctf_2d.png`: the same spectrum in 2D, left half data, right half the fitted
//!   astigmatic `|CTF|` (both over the fitting band, each half standardised).
//!
//! See docs/ctf.md.

use crate::core::geometry::TiltSeriesGeometry;
use crate::core::stats::median;
use crate::ctf::estimate::{fit_to_ctf, CtfFit, CtfSearch, Optics};
use crate::ctf::periodogram::{band_radii, radial_average, radius_map, subtract_background};
use crate::ctf::tilted::{estimate_series, SeriesCtfFit, TiltedSpectra};
use crate::error::{Error, Result};
use crate::io::imod::{write_defocus, DefocusRow};
use crate::report::plot::{write_chart_png, Chart, Series, Style, PALETTE};
use ndarray::{Array2, ArrayView3, Axis};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[ctf]` settings (all optional). Lengths Å.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CtfConfig {
    /// Lowest mean defocus searched, Å (underfocus positive).
    pub defocus_min_a: f64,
    /// Highest mean defocus searched, Å.
    pub defocus_max_a: f64,
    /// Largest astigmatism `U − V`, Å.
    pub max_astigmatism_a: f64,
    /// Low-resolution end of the fitting band, Å.
    pub resolution_low_a: f64,
    /// High-resolution end of the fitting band, Å (clamped to 2.2·pixel).
    pub resolution_high_a: f64,
    /// Periodogram tile, pixels (even, ≥ 32; reduced to the largest even size ≤ the image).
    pub tile: usize,
    /// Set the geometry's handedness to the one the defocus gradient votes for (when any tilt
    /// is beyond 20°); `false` keeps the input's.
    pub set_hand: bool,
}

impl Default for CtfConfig {
    fn default() -> Self {
        CtfConfig {
            defocus_min_a: 5000.0,
            defocus_max_a: 70000.0,
            max_astigmatism_a: 2000.0,
            resolution_low_a: 30.0,
            resolution_high_a: 5.0,
            tile: 256,
            set_hand: true,
        }
    }
}

impl CtfConfig {
    /// The search settings for the optics, pixel and image size of `geom`.
    pub fn search(&self, geom: &TiltSeriesGeometry) -> CtfSearch {
        let o = &geom.optics;
        let mut s = CtfSearch::new(geom.pixel_a, o.voltage_kv, o.cs_mm, o.amplitude_contrast);
        s.defocus_min_a = self.defocus_min_a;
        s.defocus_max_a = self.defocus_max_a;
        s.max_astigmatism_a = self.max_astigmatism_a;
        s.resolution_band_a = (self.resolution_low_a, self.resolution_high_a);
        let small = geom.nx.min(geom.ny);
        s.tile = self.tile.min(small - small % 2).max(32);
        s
    }

    /// Check the settings; errors ([`Error::Config`]) name `ctf.<field>` in `path`.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, msg: String| {
            Err(Error::Config(format!(
                "{}: ctf.{field}: {msg}",
                path.display()
            )))
        };
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(self.defocus_min_a) || !pos(self.defocus_max_a - self.defocus_min_a) {
            return bad(
                "defocus_min_a",
                format!(
                    "range {}..{} Å: give 0 < defocus_min_a < defocus_max_a (underfocus positive)",
                    self.defocus_min_a, self.defocus_max_a
                ),
            );
        }
        if !(self.max_astigmatism_a.is_finite() && self.max_astigmatism_a >= 0.0) {
            return bad(
                "max_astigmatism_a",
                format!("{}: must be ≥ 0 Å", self.max_astigmatism_a),
            );
        }
        if !pos(self.resolution_high_a) || !pos(self.resolution_low_a - self.resolution_high_a) {
            return bad(
                "resolution_low_a",
                format!(
                    "band {}..{} Å: the low end must exceed the high end (e.g. 30 and 5)",
                    self.resolution_low_a, self.resolution_high_a
                ),
            );
        }
        if self.tile < 32 || self.tile % 2 != 0 {
            return bad(
                "tile",
                format!("{}: give an even size ≥ 32 pixels (e.g. 256)", self.tile),
            );
        }
        Ok(())
    }
}

/// One row of the per-tilt CTF table (stack order).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CtfRow {
    /// Tilt angle used, degrees.
    pub tilt_deg: f64,
    /// Fitted defocus U at the tilt axis, Å (`U ≥ V`).
    pub defocus_u_a: f64,
    /// Fitted defocus V, Å.
    pub defocus_v_a: f64,
    /// Angle of U from +x, degrees `[0, 180)`.
    pub astig_angle_deg: f64,
    /// Correlation score of the fit (−1..1).
    pub score: f64,
    /// Fit resolution, Å.
    pub fit_resolution_a: f64,
    /// Refitted by the series consistency check.
    pub refitted: bool,
}

/// The per-tilt table and the handedness vote (the container's `/tilt_series/<name>/ctf`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CtfTable {
    /// Per tilt, stack order.
    pub rows: Vec<CtfRow>,
    /// Handedness from the defocus gradient (+1 as modelled, −1 mirrored).
    pub hand: f64,
    /// Score evidence for `hand` ([`SeriesCtfFit::hand_evidence`]; 0 when no tilt voted).
    pub hand_evidence: f64,
    /// Tilts that voted.
    pub hand_tilts: usize,
}

/// Error of the fit against the truth (simulated data).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CtfTruthError {
    /// Per tilt (stack order), `max(|ΔU|, |ΔV|)`, Å.
    pub defocus_error_a: Vec<f64>,
    /// Median over tilts of `defocus_error_a`, Å.
    pub median_defocus_error_a: f64,
    /// Largest of `defocus_error_a`, Å.
    pub max_defocus_error_a: f64,
    /// Median astigmatism-angle error, degrees, over tilts with true `U − V` ≥ 100 Å
    /// (0 when none).
    pub median_angle_error_deg: f64,
    /// True handedness.
    pub true_hand: f64,
}

/// What the stage found, for `summary.json` (`SeriesSummary::ctf`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CtfSummary {
    /// Median fitted mean defocus, Å.
    pub median_defocus_a: f64,
    /// Handedness found.
    pub hand: f64,
    /// Evidence of the handedness vote.
    pub hand_evidence: f64,
    /// Median fit resolution, Å.
    pub median_fit_resolution_a: f64,
    /// Error against the truth, when known.
    pub error: Option<CtfTruthError>,
    /// Files written (`.defocus`, STAR, PNGs), relative to the run's output directory.
    pub files: Vec<String>,
}

/// Files written by [`run`].
#[derive(Clone, Debug, PartialEq)]
pub struct CtfFiles {
    /// IMOD `.defocus`.
    pub defocus: PathBuf,
    /// RELION-5 tilt-series STAR.
    pub star: PathBuf,
    /// Defocus per tilt chart.
    pub defocus_png: PathBuf,
    /// Radial average with the fitted curve.
    pub radial_png: PathBuf,
    /// 2D half data / half model picture.
    pub spectrum_png: PathBuf,
}

impl CtfFiles {
    /// All paths, in the order of the fields.
    pub fn all(&self) -> [&PathBuf; 5] {
        [
            &self.defocus,
            &self.star,
            &self.defocus_png,
            &self.radial_png,
            &self.spectrum_png,
        ]
    }

    /// `(caption, path)` of the pictures.
    pub fn pictures(&self, name: &str) -> Vec<(String, &PathBuf)> {
        vec![
            (format!("{name}: defocus per tilt"), &self.defocus_png),
            (
                format!("{name}: CTF fit, radial average (lowest tilt)"),
                &self.radial_png,
            ),
            (
                format!("{name}: CTF fit, spectrum (left) and model (right)"),
                &self.spectrum_png,
            ),
        ]
    }
}

/// Result of [`run`].
#[derive(Clone, Debug)]
pub struct CtfOutcome {
    /// The per-tilt table.
    pub table: CtfTable,
    /// Error against the truth, when given.
    pub error: Option<CtfTruthError>,
    /// Files written.
    pub files: CtfFiles,
}

impl CtfOutcome {
    /// The summary, with file paths made relative by `rel`.
    pub fn summary(&self, rel: &dyn Fn(&Path) -> String) -> CtfSummary {
        let rows = &self.table.rows;
        CtfSummary {
            median_defocus_a: median(
                rows.iter()
                    .map(|r| 0.5 * (r.defocus_u_a + r.defocus_v_a))
                    .collect::<Vec<_>>(),
            ),
            hand: self.table.hand,
            hand_evidence: self.table.hand_evidence,
            median_fit_resolution_a: median(
                rows.iter().map(|r| r.fit_resolution_a).collect::<Vec<_>>(),
            ),
            error: self.error.clone(),
            files: self.files.all().iter().map(|p| rel(p)).collect(),
        }
    }
}

/// Estimate the CTF of every tilt of `stack` (`[tilt, y, x]`, the size of `geom`) with the
/// tilt angles, axis, shifts and handedness of `geom`; write the fitted defocus U/V/angle
/// into `geom`'s tilts (and, with `cfg.set_hand` and a vote, its handedness); write the
/// outputs into `dir` (created) named after `name` (the STAR's `rlnMicrographName` is
/// `<i>@<stack_file>`). `truth`, when known, gives the error per tilt.
///
/// Errors: bad settings ([`Error::Config`]), a stack that does not match `geom` or an image
/// without variance ([`Error::Runtime`]), I/O errors naming the file.
pub fn run(
    stack: ArrayView3<f32>,
    geom: &mut TiltSeriesGeometry,
    cfg: &CtfConfig,
    truth: Option<&TiltSeriesGeometry>,
    dir: &Path,
    name: &str,
    stack_file: &str,
) -> Result<CtfOutcome> {
    let s = cfg.search(geom);
    let fit = estimate_series(stack, geom, &s)?;
    let input_hand = geom.hand;
    let rows: Vec<CtfRow> = geom
        .tilts
        .iter()
        .zip(fit.fits.iter().zip(&fit.refitted))
        .map(|(t, (f, &r))| CtfRow {
            tilt_deg: t.tilt_deg,
            defocus_u_a: f.defocus_u_a,
            defocus_v_a: f.defocus_v_a,
            astig_angle_deg: f.astig_angle_deg,
            score: f.score,
            fit_resolution_a: f.fit_resolution_a,
            refitted: r,
        })
        .collect();
    for (t, f) in geom.tilts.iter_mut().zip(&fit.fits) {
        t.defocus_u_a = f.defocus_u_a;
        t.defocus_v_a = f.defocus_v_a;
        t.astig_angle_deg = f.astig_angle_deg;
    }
    if cfg.set_hand && fit.hand_tilts > 0 {
        geom.hand = fit.hand;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let files = CtfFiles {
        defocus: dir.join(format!("{name}.defocus")),
        star: dir.join(format!("{name}_ctf.star")),
        defocus_png: dir.join(format!("{name}_ctf_defocus.png")),
        radial_png: dir.join(format!("{name}_ctf_radial.png")),
        spectrum_png: dir.join(format!("{name}_ctf_2d.png")),
    };
    write_defocus(&files.defocus, &defocus_rows(&rows))?;
    let images: Vec<String> = (0..geom.len())
        .map(|i| format!("{}@{stack_file}", i + 1))
        .collect();
    crate::io::relion::write_tilt_series_star(&files.star, geom, &images)?;
    write_defocus_chart(&files.defocus_png, name, &rows, truth)?;
    // the pictures use the geometry the fit used (its handedness as given)
    let mut fit_geom = geom.clone();
    fit_geom.hand = input_hand;
    write_fit_pictures(&files, name, stack, &fit_geom, &s, &fit)?;
    let error = truth.map(|t| truth_error(&fit.fits, t));
    Ok(CtfOutcome {
        table: CtfTable {
            rows,
            hand: fit.hand,
            hand_evidence: fit.hand_evidence,
            hand_tilts: fit.hand_tilts,
        },
        error,
        files,
    })
}

/// The `.defocus` rows of a CTF table.
pub fn defocus_rows(rows: &[CtfRow]) -> Vec<DefocusRow> {
    rows.iter()
        .map(|r| DefocusRow {
            tilt_deg: r.tilt_deg,
            defocus_u_a: r.defocus_u_a,
            defocus_v_a: r.defocus_v_a,
            astig_angle_deg: r.astig_angle_deg,
        })
        .collect()
}

/// Error of `fits` against the true geometry `t` (same stack order).
pub fn truth_error(fits: &[CtfFit], t: &TiltSeriesGeometry) -> CtfTruthError {
    let mut de = Vec::with_capacity(fits.len());
    let mut ae = Vec::new();
    for (f, ti) in fits.iter().zip(&t.tilts) {
        de.push(
            (f.defocus_u_a - ti.defocus_u_a)
                .abs()
                .max((f.defocus_v_a - ti.defocus_v_a).abs()),
        );
        if ti.defocus_u_a - ti.defocus_v_a >= 100.0 {
            let d = (f.astig_angle_deg - ti.astig_angle_deg).rem_euclid(180.0);
            ae.push(d.min(180.0 - d));
        }
    }
    CtfTruthError {
        median_defocus_error_a: median(de.clone()),
        max_defocus_error_a: de.iter().copied().fold(0.0, f64::max),
        defocus_error_a: de,
        median_angle_error_deg: median(ae),
        true_hand: t.hand,
    }
}

/// Mean defocus (µm) per tilt of the fit and, when known, the truth.
fn write_defocus_chart(
    path: &Path,
    name: &str,
    rows: &[CtfRow],
    truth: Option<&TiltSeriesGeometry>,
) -> Result<()> {
    let mut c = Chart::new(
        &format!("{name}: defocus per tilt"),
        "tilt (deg)",
        "mean defocus (um)",
    );
    let sorted = |mut p: Vec<(f64, f64)>| {
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p
    };
    c.series.push(Series {
        label: "fit".into(),
        points: sorted(
            rows.iter()
                .map(|r| (r.tilt_deg, 0.5e-4 * (r.defocus_u_a + r.defocus_v_a)))
                .collect(),
        ),
        color: PALETTE[0],
        style: Style::LineMarkers,
    });
    if let Some(t) = truth {
        c.series.push(Series {
            label: "truth".into(),
            points: sorted(
                t.tilts
                    .iter()
                    .map(|ti| (ti.tilt_deg, 1e-4 * ti.defocus_mean_a()))
                    .collect(),
            ),
            color: PALETTE[1],
            style: Style::LineMarkers,
        });
    }
    let ys = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    if lo.is_finite() && hi.is_finite() {
        c.y_range = Some((lo - 0.1, hi + 0.1));
    }
    write_chart_png(path, &c)
}

/// Index of the tilt closest to 0°.
fn lowest_tilt(geom: &TiltSeriesGeometry) -> usize {
    (0..geom.len())
        .min_by(|&a, &b| {
            geom.tilts[a]
                .tilt_deg
                .abs()
                .total_cmp(&geom.tilts[b].tilt_deg.abs())
        })
        .unwrap_or(0)
}

/// The radial-average chart and the 2D half/half picture of the lowest tilt: its spectrum
/// rescaled to its fitted defocus with the handedness found, background-subtracted.
fn write_fit_pictures(
    files: &CtfFiles,
    name: &str,
    stack: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    s: &CtfSearch,
    fit: &SeriesCtfFit,
) -> Result<()> {
    let i = lowest_tilt(geom);
    let f = &fit.fits[i];
    let mean = 0.5 * (f.defocus_u_a + f.defocus_v_a);
    let sp = TiltedSpectra::new(stack.index_axis(Axis(0), i), geom, i, s)?;
    let ps = sp.stretched(s, mean, fit.hand * geom.hand);
    let band = s.band();
    let tile = s.tile;
    let data = subtract_background(&ps, tile, s.pixel_a, (band.0, 2.0 * s.pixel_a));
    let (r_lo, r_hi) = band_radii(tile, s.pixel_a, band);
    // radial average with the fitted curve
    let prof = radial_average(&data, &radius_map(tile), tile / 2 + 1);
    let o = Optics::new(s);
    let ds = 1.0 / (tile as f64 * s.pixel_a);
    let pts: Vec<(f64, f64)> = (r_lo..prof.len().min(tile / 2))
        .map(|r| (r as f64 * ds, prof[r]))
        .collect();
    let (lo, hi) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let model: Vec<(f64, f64)> = pts
        .iter()
        .map(|&(sf, _)| (sf, lo + (hi - lo) * o.ctf_abs(mean, sf * sf)))
        .collect();
    let mut c = Chart::new(
        &format!(
            "{name} tilt {:.0}: {:.2} um, fit {:.0} A",
            geom.tilts[i].tilt_deg,
            mean * 1e-4,
            f.fit_resolution_a
        ),
        "spatial frequency (1/A)",
        "amplitude - background",
    );
    c.series.push(Series {
        label: "data".into(),
        points: pts,
        color: PALETTE[0],
        style: Style::Line,
    });
    c.series.push(Series {
        label: "fit |ctf|".into(),
        points: model,
        color: PALETTE[3],
        style: Style::Line,
    });
    write_chart_png(&files.radial_png, &c)?;
    let img = half_half(&data, f, s, (r_lo, r_hi));
    // nearest-neighbour enlargement to ≥ 256 pixels, so small tiles stay readable
    let k = 256usize.div_ceil(tile).max(1);
    let big = Array2::from_shape_fn((tile * k, tile * k), |(r, c)| img[[r / k, c / k]]);
    crate::report::write_png(&files.spectrum_png, big.view(), (1.0, 99.0))
}

/// A centred `tile × tile` picture `[ky, kx]` (DC at `tile/2`): for `kx < 0` the data of the
/// half spectrum `data` (`(tile, tile/2 + 1)`, FFT order; Friedel mate), for `kx ≥ 0` the
/// fitted `|CTF|`; only Fourier radii in `band` (pixels), each half standardised over it.
fn half_half(data: &Array2<f32>, f: &CtfFit, s: &CtfSearch, band: (usize, usize)) -> Array2<f32> {
    let n = s.tile;
    let h = (n / 2) as i64;
    let ctf = fit_to_ctf(f, s);
    let ds = 1.0 / (n as f64 * s.pixel_a);
    let mut img = Array2::<f32>::zeros((n, n));
    let mut inside = Array2::<bool>::from_elem((n, n), false);
    for ((r, c), v) in img.indexed_iter_mut() {
        let (ky, kx) = (r as i64 - h, c as i64 - h);
        let rad = ((ky * ky + kx * kx) as f64).sqrt();
        if rad < band.0 as f64 || rad > band.1 as f64 {
            continue;
        }
        inside[[r, c]] = true;
        *v = if kx < 0 {
            data[[(-ky).rem_euclid(n as i64) as usize, (-kx) as usize]]
        } else {
            ctf.value(kx as f64 * ds, ky as f64 * ds).abs() as f32
        };
    }
    // standardise each half over the band
    for left in [true, false] {
        let sel = |c: usize| (c < n / 2) == left;
        let vals: Vec<f64> = img
            .indexed_iter()
            .filter(|((r, c), _)| inside[[*r, *c]] && sel(*c))
            .map(|(_, &v)| v as f64)
            .collect();
        if vals.len() < 2 {
            continue;
        }
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let sd = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64).sqrt();
        let sd = if sd > 0.0 { sd } else { 1.0 };
        for ((r, c), v) in img.indexed_iter_mut() {
            if inside[[r, c]] && sel(c) {
                *v = ((*v as f64 - m) / sd) as f32;
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_search_and_validation() {
        let c: CtfConfig = toml::from_str("tile = 128\n").unwrap();
        assert_eq!(c.tile, 128);
        assert!(c.set_hand);
        let g = TiltSeriesGeometry::from_angles(100, 90, 2.0, &[0.0], 0.0);
        let s = c.search(&g);
        assert_eq!(s.tile, 90);
        assert_eq!(s.resolution_band_a, (30.0, 5.0));
        assert!(toml::from_str::<CtfConfig>("tyle = 1\n").is_err());
        let p = Path::new("c.toml");
        let bad = CtfConfig {
            tile: 33,
            ..Default::default()
        };
        let e = bad.validate(p).unwrap_err().to_string();
        assert!(e.contains("ctf.tile") && e.contains("c.toml"), "{e}");
        let bad = CtfConfig {
            resolution_low_a: 4.0,
            ..Default::default()
        };
        assert!(bad
            .validate(p)
            .unwrap_err()
            .to_string()
            .contains("ctf.resolution_low_a"));
        assert!(CtfConfig::default().validate(p).is_ok());
    }

    #[test]
    fn truth_error_takes_the_worse_of_u_and_v() {
        let mut t = TiltSeriesGeometry::from_angles(64, 64, 2.0, &[0.0, 30.0, 60.0], 0.0);
        for (k, ti) in t.tilts.iter_mut().enumerate() {
            ti.defocus_u_a = 20500.0 + k as f64;
            ti.defocus_v_a = 19500.0;
            ti.astig_angle_deg = 10.0;
        }
        let fit = |du: f64, dv: f64, a: f64| CtfFit {
            defocus_u_a: 20500.0 + du,
            defocus_v_a: 19500.0 + dv,
            astig_angle_deg: a,
            score: 0.5,
            fit_resolution_a: 8.0,
        };
        let e = truth_error(
            &[
                fit(10.0, -40.0, 12.0),
                fit(1.0, 0.0, 178.0),
                fit(302.0, 5.0, 10.0),
            ],
            &t,
        );
        assert_eq!(e.defocus_error_a, vec![40.0, 0.0, 300.0]);
        assert_eq!(e.median_defocus_error_a, 40.0);
        assert_eq!(e.max_defocus_error_a, 300.0);
        assert!((e.median_angle_error_deg - 2.0).abs() < 1e-9);
    }
}
