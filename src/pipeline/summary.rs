//! Run summary: per tilt series the rank, seconds per stage and correlation with the truth;
//! written as `summary.json` and printed as a table by rank 0.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one tilt series went through.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SeriesSummary {
    /// Series name.
    pub name: String,
    /// Rank that processed it.
    pub rank: usize,
    /// Number of tilts.
    pub n_tilts: usize,
    /// Image size `(nx, ny)`, pixels.
    pub image_size: [usize; 2],
    /// Stack pixel size, Å.
    pub pixel_a: f64,
    /// Seconds per stage (`simulate`, `reconstruct`, ...).
    pub seconds: BTreeMap<String, f64>,
    /// Correlation of each tomogram with the true volume, keyed `bin<k>`.
    pub truth_correlation: BTreeMap<String, f64>,
    /// Tomogram MRC files written, relative to the output directory.
    pub tomograms: Vec<String>,
    /// Pictures `(caption, path relative to report/)` of the tomograms and the truth.
    #[serde(default)]
    pub pictures: Vec<(String, String)>,
    /// True when `--resume` found this series complete and skipped it.
    pub resumed: bool,
    /// Motion-correction outcome, when a motioncorr stage ran.
    #[serde(default)]
    pub motion: Option<MotionSummary>,
    /// Alignment outcome, when an alignment stage ran.
    #[serde(default)]
    pub alignment: Option<AlignSummary>,
    /// CTF estimation outcome, when a `[ctf]` stage ran.
    #[serde(default)]
    pub ctf: Option<crate::ctf::stage::CtfSummary>,
    /// Template-matching outcome, when a `[pick]` stage ran.
    #[serde(default)]
    pub picking: Option<crate::pick::output::PickSummary>,
    /// Error message when the series failed.
    pub error: Option<String>,
    /// Exit code of the failure (DESIGN §6).
    pub error_code: Option<i32>,
}

/// What the alignment stage found (and, for simulated data, how far from the truth).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AlignSummary {
    /// `fiducial_free` or `beads`.
    pub method: String,
    /// RMS residual, unbinned pixels.
    pub rms_residual_px: f64,
    /// Estimated specimen thickness, Å.
    pub thickness_a: Option<f64>,
    /// Error against the true geometry (simulated data only).
    pub error: Option<crate::align::evaluate::AlignmentError>,
    /// Alignment files, relative to the output directory (`.xf`, `.tlt`, preali stack).
    pub files: Vec<String>,
}

/// What the motion correction found (and, for simulated data, how far from the truth).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MotionSummary {
    /// `global` (whole-frame alignment).
    pub method: String,
    /// Mean over tilts of the trajectory's path length, pixels.
    pub mean_path_px: f64,
    /// RMS trajectory error against the simulator's drift, pixels (simulated data only).
    pub rms_error_px: Option<f64>,
    /// Files written, relative to the output directory (stacks, record, drift plot).
    pub files: Vec<String>,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunSummary {
    /// lamella version.
    pub version: String,
    /// MPI ranks.
    pub ranks: usize,
    /// Wall time of the run, seconds.
    pub wall_seconds: f64,
    /// False when the run stopped early (signal); `--resume` continues.
    pub complete: bool,
    /// How the reconstruction geometry was obtained.
    pub geometry: String,
    /// Per series, sorted by name.
    pub series: Vec<SeriesSummary>,
    /// Subtomogram averaging over all series, when an `[sta]` stage ran.
    #[serde(default)]
    pub sta: Option<super::sta::StaSummary>,
}

impl RunSummary {
    /// Plain-text table for the terminal.
    pub fn table(&self) -> String {
        let mut bins: Vec<String> = self
            .series
            .iter()
            .flat_map(|s| s.truth_correlation.keys().cloned())
            .collect();
        bins.sort_by_key(|b| b.trim_start_matches("bin").parse::<usize>().unwrap_or(0));
        bins.dedup();
        let mut stages: Vec<String> = self
            .series
            .iter()
            .flat_map(|s| s.seconds.keys().cloned())
            .collect();
        stages.sort();
        stages.dedup();
        let mut out = String::new();
        out.push_str(&format!(
            "{:<16} {:>4} {:>6} {:>11}",
            "tilt series", "rank", "tilts", "size"
        ));
        for st in &stages {
            out.push_str(&format!(" {:>12}", format!("{st} s")));
        }
        for b in &bins {
            out.push_str(&format!(" {:>10}", format!("corr {b}")));
        }
        let moved = self.series.iter().any(|s| s.motion.is_some());
        if moved {
            out.push_str(&format!(" {:>9} {:>10}", "drift px", "drift err"));
        }
        let aligned = self.series.iter().any(|s| s.alignment.is_some());
        if aligned {
            out.push_str(&format!(
                " {:>9} {:>10} {:>9}",
                "resid px", "shift err", "axis err"
            ));
        }
        let ctf = self.series.iter().any(|s| s.ctf.is_some());
        if ctf {
            out.push_str(&format!(" {:>9} {:>11}", "defocus", "defocus err"));
        }
        let picked = self.series.iter().any(|s| s.picking.is_some());
        if picked {
            out.push_str(&format!(
                " {:>6} {:>7} {:>9}",
                "picks", "recall", "precision"
            ));
        }
        out.push_str("  status\n");
        for s in &self.series {
            out.push_str(&format!(
                "{:<16} {:>4} {:>6} {:>11}",
                s.name,
                s.rank,
                s.n_tilts,
                format!("{}x{}", s.image_size[0], s.image_size[1])
            ));
            for st in &stages {
                match s.seconds.get(st) {
                    Some(v) => out.push_str(&format!(" {v:>12.2}")),
                    None => out.push_str(&format!(" {:>12}", "-")),
                }
            }
            for b in &bins {
                match s.truth_correlation.get(b) {
                    Some(v) => out.push_str(&format!(" {v:>10.3}")),
                    None => out.push_str(&format!(" {:>10}", "-")),
                }
            }
            let cell = |v: Option<f64>, unit: &str| match v {
                Some(v) => format!("{v:.2}{unit}"),
                None => "-".into(),
            };
            if moved {
                let m = s.motion.as_ref();
                out.push_str(&format!(
                    " {:>9} {:>10}",
                    cell(m.map(|m| m.mean_path_px), ""),
                    cell(m.and_then(|m| m.rms_error_px), " px"),
                ));
            }
            if aligned {
                let a = s.alignment.as_ref();
                let e = a.and_then(|a| a.error.as_ref());
                out.push_str(&format!(
                    " {:>9} {:>10} {:>9}",
                    cell(a.map(|a| a.rms_residual_px), ""),
                    cell(e.map(|e| e.rms_shift_px), " px"),
                    cell(e.map(|e| e.axis_error_deg), "°"),
                ));
            }
            if ctf {
                let c = s.ctf.as_ref();
                let e = c.and_then(|c| c.error.as_ref());
                out.push_str(&format!(
                    " {:>9} {:>11}",
                    c.map(|c| format!("{:.2}um", c.median_defocus_a * 1e-4))
                        .unwrap_or_else(|| "-".into()),
                    e.map(|e| format!("{:.0} A", e.median_defocus_error_a))
                        .unwrap_or_else(|| "-".into()),
                ));
            }
            if picked {
                let p = s.picking.as_ref();
                let a = p.and_then(|p| p.accuracy.as_ref());
                out.push_str(&format!(
                    " {:>6} {:>7} {:>9}",
                    p.map(|p| p.picked.to_string())
                        .unwrap_or_else(|| "-".into()),
                    cell(a.map(|a| a.recall), ""),
                    cell(a.map(|a| a.precision), ""),
                ));
            }
            let status = match (&s.error, s.resumed) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, true) => "resumed (done earlier)".into(),
                (None, false) => "ok".into(),
            };
            out.push_str(&format!("  {status}\n"));
        }
        if let Some(st) = &self.sta {
            let res: Vec<String> = st.resolution_a.iter().map(|r| format!("{r:.1}")).collect();
            out.push_str(&format!(
                "sta {}: {} particles, {} class(es), {} iterations, gold-standard resolution {} Å \
                 (Nyquist {:.1} Å), {:.1} s",
                st.job,
                st.particles,
                st.classes,
                st.log.len(),
                res.join(", "),
                st.nyquist_a,
                st.seconds
            ));
            if let Some(t) = &st.truth {
                let f: Vec<String> = t.fsc_truth_05_a.iter().map(|r| format!("{r:.1}")).collect();
                out.push_str(&format!(
                    "; vs truth: FSC 0.5 at {} Å, orientation {:.1}°, position {:.1} Å, \
                     classes {:.0} % right",
                    f.join(", "),
                    t.median_angle_deg,
                    t.median_position_a,
                    100.0 * t.class_accuracy
                ));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "{} series on {} rank(s) in {:.1} s; geometry: {}{}\n",
            self.series.len(),
            self.ranks,
            self.wall_seconds,
            self.geometry,
            if self.complete {
                ""
            } else {
                "; INTERRUPTED: rerun with --resume"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_series_and_stage() {
        let mut s = SeriesSummary {
            name: "ts_a".into(),
            n_tilts: 41,
            image_size: [256, 256],
            ..Default::default()
        };
        s.seconds.insert("reconstruct".into(), 1.5);
        s.truth_correlation.insert("bin2".into(), 0.61);
        let r = RunSummary {
            ranks: 2,
            complete: true,
            series: vec![s],
            ..Default::default()
        };
        let t = r.table();
        assert!(t.contains("ts_a") && t.contains("0.610") && t.contains("reconstruct s"));
    }
}
