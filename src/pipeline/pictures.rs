//! Pictures of a run: central XY/XZ slices of every tomogram and of the truth as PNG, and
//! `report/index.html` with the summary table (see `docs/report.md`).

use super::metrics::{bin_volume, center_fit};
use super::summary::RunSummary;
use crate::report::{central_slices, write_html, write_png, SeriesReport};
use crate::Result;
use ndarray::Array3;
use std::path::Path;

/// Percentiles clipped when mapping slices to grey levels.
const CLIP: (f64, f64) = (1.0, 99.0);
/// Neighbouring slices averaged into each picture (a thin slab: less noise).
const SLAB: usize = 3;

/// Write `report/<stem>_xy.png` and `report/<stem>_xz.png` of a volume `[z, y, x]`;
/// returns `(caption, path relative to report/)` for each.
pub fn write_volume_pictures(
    out: &Path,
    stem: &str,
    caption: &str,
    vol: &Array3<f32>,
) -> Result<Vec<(String, String)>> {
    let dir = out.join("report");
    let (xy, xz) = central_slices(vol, SLAB);
    let mut v = Vec::with_capacity(2);
    for (plane, img) in [("xy", xy), ("xz", xz)] {
        let file = format!("{stem}_{plane}.png");
        write_png(&dir.join(&file), img.view(), CLIP)?;
        v.push((format!("{caption} {plane}"), file));
    }
    Ok(v)
}

/// Pictures of the truth on the grid of a tomogram binned by `bin` (shape `shape`).
pub fn write_truth_pictures(
    out: &Path,
    name: &str,
    truth: &Array3<f32>,
    bin: usize,
    shape: (usize, usize, usize),
) -> Result<Vec<(String, String)>> {
    let t = center_fit(&bin_volume(truth, bin), shape);
    write_volume_pictures(out, &format!("{name}_truth_bin{bin}"), "truth", &t)
}

/// `report/index.html`: the summary table and, per series, its facts and pictures.
pub fn write_index(out: &Path, summary: &RunSummary) -> Result<()> {
    let mut bins: Vec<String> = summary
        .series
        .iter()
        .flat_map(|s| s.truth_correlation.keys().cloned())
        .collect();
    bins.sort();
    bins.dedup();
    let mut header: Vec<String> = ["tilt series", "rank", "tilts", "size", "seconds"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(bins.iter().map(|b| format!("corr {b}")));
    header.push("status".into());
    let mut rows = Vec::new();
    let mut series = Vec::new();
    for s in &summary.series {
        let mut row = vec![
            s.name.clone(),
            s.rank.to_string(),
            s.n_tilts.to_string(),
            format!("{}x{}", s.image_size[0], s.image_size[1]),
            s.seconds
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
        ];
        for b in &bins {
            row.push(
                s.truth_correlation
                    .get(b)
                    .map(|c| format!("{c:.3}"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        row.push(match &s.error {
            Some(e) => format!("FAILED: {e}"),
            None if s.resumed => "resumed".into(),
            None => "ok".into(),
        });
        rows.push(row);
        let mut facts = vec![
            ("pixel".to_string(), format!("{:.3} Å", s.pixel_a)),
            ("rank".to_string(), s.rank.to_string()),
        ];
        facts.extend(
            s.tomograms
                .iter()
                .map(|t| ("tomogram".to_string(), t.clone())),
        );
        series.push(SeriesReport {
            name: s.name.clone(),
            facts,
            images: s.pictures.clone(),
        });
    }
    if let Some(st) = &summary.sta {
        let mut facts = vec![
            ("particles".to_string(), st.particles.to_string()),
            ("class sizes".to_string(), format!("{:?}", st.class_sizes)),
            (
                "gold-standard resolution".to_string(),
                st.resolution_a
                    .iter()
                    .map(|r| format!("{r:.1} Å"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("Nyquist".to_string(), format!("{:.1} Å", st.nyquist_a)),
        ];
        for l in &st.log {
            facts.push((
                format!("iteration {}", l.iteration),
                format!(
                    "{} Å, mean score {:.3}, {:.1} s",
                    l.resolution_a
                        .iter()
                        .map(|r| format!("{r:.1}"))
                        .collect::<Vec<_>>()
                        .join("/"),
                    l.mean_score,
                    l.seconds
                ),
            ));
        }
        if let Some(t) = &st.truth {
            facts.push((
                "vs truth".to_string(),
                format!(
                    "FSC 0.5 at {:?} Å; orientation {:.1}°, position {:.1} Å (median of {}); classes {:.0} % right",
                    t.fsc_truth_05_a
                        .iter()
                        .map(|r| (r * 10.0).round() / 10.0)
                        .collect::<Vec<_>>(),
                    t.median_angle_deg,
                    t.median_position_a,
                    t.matched,
                    100.0 * t.class_accuracy
                ),
            ));
        }
        series.push(SeriesReport {
            name: format!("subtomogram averaging: {}", st.job),
            facts,
            images: st.pictures.clone(),
        });
    }
    let title = format!(
        "lamella {}: {} tilt series on {} rank(s); geometry: {}",
        summary.version,
        summary.series.len(),
        summary.ranks,
        summary.geometry
    );
    write_html(
        &out.join("report/index.html"),
        &title,
        &header,
        &rows,
        &series,
    )
}
