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

/// The load-balance section: seconds of each per-series stage summed per rank (a fact per
/// rank) and `report/load_balance.png` (x = rank, one line per stage and the total).
/// `None` when no series has timings.
fn write_load_balance(out: &Path, summary: &RunSummary) -> Result<Option<SeriesReport>> {
    use crate::report::plot::{write_chart_png, Chart, Series, Style, PALETTE};
    use std::collections::BTreeMap;
    let ranks = summary.ranks.max(1);
    let mut per_stage: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in &summary.series {
        for (stage, sec) in &s.seconds {
            per_stage.entry(stage).or_insert_with(|| vec![0.0; ranks])[s.rank.min(ranks - 1)] +=
                sec;
        }
    }
    if per_stage.is_empty() {
        return Ok(None);
    }
    let total: Vec<f64> = (0..ranks)
        .map(|r| per_stage.values().map(|v| v[r]).sum())
        .collect();
    let mean = total.iter().sum::<f64>() / ranks as f64;
    let max = total.iter().cloned().fold(0.0, f64::max);
    let mut facts: Vec<(String, String)> = total
        .iter()
        .enumerate()
        .map(|(r, t)| {
            let parts: Vec<String> = per_stage
                .iter()
                .map(|(k, v)| format!("{k} {:.1}", v[r]))
                .collect();
            (
                format!("rank {r}"),
                format!("{t:.1} s ({})", parts.join(", ")),
            )
        })
        .collect();
    facts.push((
        "balance".into(),
        format!(
            "busiest rank {max:.1} s, mean {mean:.1} s: efficiency {:.0} %",
            if max > 0.0 { 100.0 * mean / max } else { 100.0 }
        ),
    ));
    let mut chart = Chart::new("time per rank", "rank", "seconds");
    chart.x_range = Some((-0.5, ranks as f64 - 0.5));
    let mut lines: Vec<(&str, &Vec<f64>)> = per_stage.iter().map(|(k, v)| (*k, v)).collect();
    lines.push(("total", &total));
    for (i, (label, v)) in lines.iter().enumerate() {
        chart.series.push(Series {
            label: label.to_string(),
            points: v.iter().enumerate().map(|(r, s)| (r as f64, *s)).collect(),
            color: PALETTE[i % PALETTE.len()],
            style: Style::LineMarkers,
        });
    }
    let file = "load_balance.png";
    write_chart_png(&out.join("report").join(file), &chart)?;
    Ok(Some(SeriesReport {
        name: "time per stage and rank (load balance)".into(),
        facts,
        images: vec![("seconds per rank and stage".into(), file.into())],
    }))
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
    if let Some(lb) = write_load_balance(out, summary)? {
        series.push(lb);
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
