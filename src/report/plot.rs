//! Line and marker charts as RGB PNG pictures (alignment residuals, FSC curves, CTF fits):
//! dependency-free rasteriser with a built-in 3×5 pixel font for tick labels, the title and
//! the legend.
//!
//! Frames: data coordinates `(x, y)` map to picture pixels with +y up; the picture is
//! written top row first (PNG order).

use crate::report::png::{encode_rgb8, png_dims_ok};
use crate::{Error, Result};
use std::path::Path;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Polyline through the points (in order), 2 px wide.
    Line,
    /// A 5×5 square per point.
    Markers,
    /// Polyline and markers.
    LineMarkers,
}

/// One data series of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text (upper-cased when drawn; letters, digits and `.-+/:()%=<>` ).
    pub label: String,
    /// Data points `(x, y)`; non-finite points are skipped (and break a line).
    pub points: Vec<(f64, f64)>,
    /// RGB colour.
    pub color: [u8; 3],
    /// Drawing style.
    pub style: Style,
}

/// A chart: axes with ticks, optional horizontal reference lines, series and a legend.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Title drawn above the plot area.
    pub title: String,
    /// X-axis label (below the axis).
    pub x_label: String,
    /// Y-axis label (top left, above the axis).
    pub y_label: String,
    /// Picture size in pixels `(width, height)`.
    pub size: (usize, usize),
    /// Data range of x; `None` = the data's extent.
    pub x_range: Option<(f64, f64)>,
    /// Data range of y; `None` = the data's extent (and 0 included).
    pub y_range: Option<(f64, f64)>,
    /// Horizontal reference lines `(y, colour)` (e.g. FSC 0.143).
    pub hlines: Vec<(f64, [u8; 3])>,
    /// The series.
    pub series: Vec<Series>,
}

impl Chart {
    /// An empty 640×400 chart with a title and axis labels.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            size: (640, 400),
            x_range: None,
            y_range: None,
            hlines: Vec::new(),
            series: Vec::new(),
        }
    }
}

/// Colours for successive series (blue, orange, green, red, purple, brown).
pub const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

/// An RGB canvas, row 0 = top.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = 3 * (y as usize * self.w + x as usize);
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.set(x, y, c);
            }
        }
    }

    /// Line from `a` to `b` (pixel coordinates), `width` px thick.
    fn line(&mut self, a: (f64, f64), b: (f64, f64), c: [u8; 3], width: i64) {
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
        for k in 0..=n {
            let t = k as f64 / n as f64;
            let x = (a.0 + t * (b.0 - a.0)).round() as i64;
            let y = (a.1 + t * (b.1 - a.1)).round() as i64;
            self.rect(x, y, x + width - 1, y + width - 1, c);
        }
    }

    /// Text at top-left `(x, y)`, glyphs 3×5 scaled by `scale`; returns the width drawn.
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3], scale: i64) -> i64 {
        let mut cx = x;
        for ch in s.chars() {
            let g = glyph(ch.to_ascii_uppercase());
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        let px = cx + col * scale;
                        let py = y + row as i64 * scale;
                        self.rect(px, py, px + scale - 1, py + scale - 1, c);
                    }
                }
            }
            cx += 4 * scale;
        }
        cx - x
    }
}

/// Width in pixels of `s` drawn at `scale`.
fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 4 * scale
}

/// 3×5 glyphs, one row per entry, bit 2 = left column. Unknown characters are blank.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 3, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        ':' => [0, 2, 0, 2, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '%' => [5, 1, 2, 4, 5],
        '=' => [0, 7, 0, 7, 0],
        '<' => [1, 2, 4, 2, 1],
        '>' => [4, 2, 1, 2, 4],
        '_' => [0, 0, 0, 0, 7],
        '°' => [2, 5, 2, 0, 0],
        'Å' => [2, 0, 7, 5, 5],
        _ => [0; 5],
    }
}

/// "Nice" tick positions (1, 2, 5 × 10^k steps) covering `[lo, hi]`, about `n` of them.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater)
        || !lo.is_finite()
        || !hi.is_finite()
    {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Tick label: as few decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().max(0.0) as usize
    };
    let s = format!("{v:.decimals$}");
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// Data extent of all finite points of `chart` `(xmin, xmax, ymin, ymax)`.
fn extent(chart: &Chart) -> (f64, f64, f64, f64) {
    let mut e = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for s in &chart.series {
        for &(x, y) in s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
        {
            e = (e.0.min(x), e.1.max(x), e.2.min(y), e.3.max(y));
        }
    }
    e
}

/// Widen a degenerate or empty range.
fn fix_range(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        (0.0, 1.0)
    } else if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// Render `chart` to RGB pixels (`width·height·3` bytes, top row first).
pub fn render(chart: &Chart) -> Vec<u8> {
    let (w, h) = chart.size;
    let mut cv = Canvas::new(w, h);
    let (ex0, ex1, ey0, ey1) = extent(chart);
    let (x0, x1) = fix_range_or(chart.x_range, ex0, ex1);
    let (y0, y1) = match chart.y_range {
        Some(r) => fix_range(r.0, r.1),
        None => {
            let ylo = ey0.min(0.0);
            let yhi = ey1.max(0.0);
            let pad = 0.05 * (yhi - ylo);
            fix_range(ylo, yhi + pad)
        }
    };
    // plot area
    let (left, right, top, bottom) = (56i64, w as i64 - 12, 30i64, h as i64 - 34);
    let sx = |x: f64| left as f64 + (x - x0) / (x1 - x0) * (right - left) as f64;
    let sy = |y: f64| bottom as f64 - (y - y0) / (y1 - y0) * (bottom - top) as f64;
    let grey = [200, 200, 200];
    let black = [0, 0, 0];
    let xt = ticks(x0, x1, 8);
    let yt = ticks(y0, y1, 6);
    let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    for &t in &xt {
        let x = sx(t).round() as i64;
        cv.rect(x, top, x, bottom, grey);
        let lab = tick_label(t, xstep);
        cv.text(x - text_width(&lab, 2) / 2, bottom + 6, &lab, black, 2);
    }
    for &t in &yt {
        let y = sy(t).round() as i64;
        cv.rect(left, y, right, y, grey);
        let lab = tick_label(t, ystep);
        cv.text(left - 6 - text_width(&lab, 2), y - 5, &lab, black, 2);
    }
    for &(y, c) in &chart.hlines {
        if y >= y0 && y <= y1 {
            let py = sy(y);
            cv.line((left as f64, py), (right as f64, py), c, 1);
        }
    }
    cv.rect(left, top, right, top, black);
    cv.rect(left, bottom, right, bottom, black);
    cv.rect(left, top, left, bottom, black);
    cv.rect(right, top, right, bottom, black);
    for s in &chart.series {
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) {
                prev = None;
                continue;
            }
            let p = (sx(x.clamp(x0, x1)), sy(y.clamp(y0, y1)));
            if matches!(s.style, Style::Line | Style::LineMarkers) {
                if let Some(q) = prev {
                    cv.line(q, p, s.color, 2);
                }
            }
            if matches!(s.style, Style::Markers | Style::LineMarkers) {
                let (px, py) = (p.0.round() as i64, p.1.round() as i64);
                cv.rect(px - 2, py - 2, px + 2, py + 2, s.color);
            }
            prev = Some(p);
        }
    }
    cv.text(left, 8, &chart.title, black, 3);
    cv.text(4, top - 12, &chart.y_label, black, 2);
    let xl = &chart.x_label;
    cv.text(
        (left + right) / 2 - text_width(xl, 2) / 2,
        h as i64 - 14,
        xl,
        black,
        2,
    );
    // legend, top right inside the plot area
    let mut ly = top + 6;
    for s in chart.series.iter().filter(|s| !s.label.is_empty()) {
        let tw = text_width(&s.label, 2);
        let lx = right - 8 - tw - 18;
        cv.rect(lx, ly + 3, lx + 12, ly + 6, s.color);
        cv.text(lx + 18, ly, &s.label, black, 2);
        ly += 14;
    }
    cv.px
}

/// `r` (fixed up), or the data extent when `None`.
fn fix_range_or(r: Option<(f64, f64)>, lo: f64, hi: f64) -> (f64, f64) {
    match r {
        Some(r) => fix_range(r.0, r.1),
        None => fix_range(lo, hi),
    }
}

/// Render `chart` and write it to `path` as PNG, atomically.
///
/// Errors: [`Error::BadInput`] for a picture size outside the PNG limits or smaller than
/// 120×80; I/O errors name `path`.
pub fn write_chart_png(path: &Path, chart: &Chart) -> Result<()> {
    let (w, h) = chart.size;
    if !png_dims_ok(w, h) || w < 120 || h < 80 {
        return Err(Error::bad_input(
            path,
            "chart size",
            format!("a {w} x {h} chart cannot be drawn: use at least 120 x 80 pixels"),
        ));
    }
    crate::io::atomic::write_bytes_atomic(path, &encode_rgb8(w, h, &render(chart)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        let t = ticks(0.0, 1.0, 5);
        let want = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(t.len(), want.len());
        assert!(
            t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{t:?}"
        );
        let t = ticks(-61.0, 61.0, 8);
        assert_eq!(t.first(), Some(&-60.0));
        assert_eq!(t.last(), Some(&60.0));
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 20.0).abs() < 1e-9));
    }

    #[test]
    fn a_series_is_drawn_in_its_colour_where_its_points_are() {
        let mut c = Chart::new("residuals", "tilt", "px");
        c.x_range = Some((0.0, 10.0));
        c.y_range = Some((0.0, 10.0));
        c.series.push(Series {
            label: String::new(),
            points: vec![(5.0, 5.0)],
            color: [255, 0, 0],
            style: Style::Markers,
        });
        let px = render(&c);
        let (w, h) = c.size;
        // the point maps to the centre of the plot area
        let (left, right, top, bottom) = (56.0, w as f64 - 12.0, 30.0, h as f64 - 34.0);
        let x = ((left + right) / 2.0).round() as usize;
        let y = ((top + bottom) / 2.0).round() as usize;
        let i = 3 * (y * w + x);
        assert_eq!(&px[i..i + 3], &[255, 0, 0]);
        // and nowhere else far from it
        let red = px.chunks_exact(3).filter(|p| p == &[255, 0, 0]).count();
        assert_eq!(red, 25);
    }

    #[test]
    fn tiny_charts_are_refused() {
        let mut c = Chart::new("t", "x", "y");
        c.size = (50, 50);
        let d = tempfile::tempdir().unwrap();
        assert!(write_chart_png(&d.path().join("c.png"), &c).is_err());
    }
}
