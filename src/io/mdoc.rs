//! SerialEM autodoc files: `.mdoc` (tilt-series and frame metadata) and `.nav` (Navigator),
//! which share one syntax:
//!
//! ```text
//! key = value                      header entries (values may contain spaces)
//! [T = SerialEM: ...]              titles; also a bare `T = ...` line before any section
//! [ZValue = 0]                     sections: ZValue, FrameSet, MontSection, Item = 17-1-A, ...
//! key = value                      section entries (keys may repeat; order is kept)
//! ```
//!
//! CRLF or LF line endings, a UTF-8 BOM, blank lines and `#` comment lines are accepted.
//! Units as SerialEM writes them: PixelSpacing Å, TiltAngle and RotationAngle degrees,
//! ExposureDose and PriorRecordDose e/Å².

use crate::io::atomic::write_bytes_atomic;
use crate::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;

/// A parsed autodoc file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mdoc {
    /// `key = value` lines before the first section, in file order.
    pub header: Vec<(String, String)>,
    /// Title texts (`[T = text]` or bare `T = text`), trimmed, in file order.
    pub titles: Vec<String>,
    /// Sections in file order.
    pub sections: Vec<MdocSection>,
}

/// One `[kind = id]` section and its entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MdocSection {
    /// `ZValue`, `FrameSet`, `MontSection`, `Item`, ...
    pub kind: String,
    /// The id as written (`0`, `17-1-A`).
    pub id: String,
    /// `key = value` lines, in file order (repeated keys kept).
    pub entries: Vec<(String, String)>,
}

/// One tilt image of a tilt-series mdoc (`[ZValue = n]` section).
#[derive(Clone, Debug, PartialEq)]
pub struct MdocTilt {
    /// Section index in the stack (`ZValue`).
    pub z_value: usize,
    /// Stage tilt (`TiltAngle`), degrees.
    pub tilt_deg: f64,
    /// Dose of this image (`ExposureDose`), e/Å²; 0 when absent.
    pub dose_e_a2: f64,
    /// `PixelSpacing`, Å.
    pub pixel_a: Option<f64>,
    /// `SubFramePath` as written (Windows or Unix path).
    pub sub_frame_path: Option<String>,
    /// File name part of `SubFramePath` (after the last `\` or `/`).
    pub sub_frame_file: Option<String>,
    /// `RotationAngle` (SerialEM's image rotation), degrees.
    pub rotation_angle: Option<f64>,
    /// `DateTime` as written (e.g. `30-Nov-15  15:21:38`).
    pub date_time: Option<String>,
    /// `NumSubFrames`.
    pub num_sub_frames: Option<usize>,
    /// `PriorRecordDose`, e/Å².
    pub prior_record_dose: Option<f64>,
}

fn lookup<'a>(entries: &'a [(String, String)], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// First whitespace-separated token of `v` as a finite f64.
fn first_f64(v: &str) -> Option<f64> {
    v.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
}

/// Split `key = value` at the first `=`; both sides trimmed.
fn split_kv(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    let k = k.trim();
    if k.is_empty() {
        return None;
    }
    Some((k.to_string(), v.trim().to_string()))
}

impl MdocSection {
    /// Value of the first entry named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        lookup(&self.entries, key)
    }

    /// First number of the first entry named `key` (`ImageShift = 0.1 0.2` gives 0.1).
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(first_f64)
    }

    /// All numbers of the first entry named `key` (`FrameDosesAndNumber = 0.02 3  0.03 7`).
    pub fn get_f64s(&self, key: &str) -> Option<Vec<f64>> {
        self.get(key)?
            .split_whitespace()
            .map(|t| t.parse::<f64>().ok())
            .collect()
    }
}

impl Mdoc {
    /// Parse autodoc text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Mdoc> {
        let mut doc = Mdoc::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |msg: &str| {
                Error::bad_input(
                    path,
                    format!("line {}", i + 1),
                    format!("`{line}`: {msg}; fix the line or regenerate the file with SerialEM"),
                )
            };
            if let Some(inner) = line.strip_prefix('[') {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| bad("a section line must end with `]`"))?;
                let (kind, id) = split_kv(inner).ok_or_else(|| bad("expected `[Kind = id]`"))?;
                if kind == "T" {
                    doc.titles.push(id);
                } else {
                    doc.sections.push(MdocSection {
                        kind,
                        id,
                        entries: Vec::new(),
                    });
                }
                continue;
            }
            let (k, v) = split_kv(line).ok_or_else(|| bad("expected `key = value`"))?;
            match doc.sections.last_mut() {
                Some(sec) => sec.entries.push((k, v)),
                None if k == "T" => doc.titles.push(v),
                None => doc.header.push((k, v)),
            }
        }
        Ok(doc)
    }

    /// Read and parse an autodoc file (`.mdoc`, `.nav`).
    pub fn read(path: &Path) -> Result<Mdoc> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Mdoc::parse(&String::from_utf8_lossy(&bytes), path)
    }

    /// Value of the first header entry named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        lookup(&self.header, key)
    }

    /// Sections of one kind (`"ZValue"`, `"FrameSet"`, `"MontSection"`, `"Item"`), in file order.
    pub fn sections_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a MdocSection> + 'a {
        self.sections.iter().filter(move |s| s.kind == kind)
    }

    /// Pixel size in Å: the header's `PixelSpacing`, else the first section's.
    pub fn pixel_spacing_a(&self) -> Option<f64> {
        self.get("PixelSpacing")
            .and_then(first_f64)
            .or_else(|| self.sections.iter().find_map(|s| s.get_f64("PixelSpacing")))
            .filter(|&p| p > 0.0)
    }

    /// Tilt-axis angle (degrees) from a title `Tilt axis angle = X, ...` (any spacing).
    pub fn tilt_axis_angle(&self) -> Option<f64> {
        const KEY: &str = "tilt axis angle";
        self.titles.iter().find_map(|t| {
            let lower = t.to_ascii_lowercase();
            let at = lower.find(KEY)? + KEY.len();
            let rest = t[at..].trim_start().strip_prefix('=')?.trim_start();
            let end = rest
                .find(|c: char| c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            rest[..end].parse::<f64>().ok().filter(|v| v.is_finite())
        })
    }

    /// The `[ZValue = n]` sections as tilts, in file order (the acquisition order for SerialEM
    /// tilt series). Sections without a numeric id or `TiltAngle` (not tilt images) are skipped.
    pub fn tilts(&self) -> Vec<MdocTilt> {
        self.sections_of("ZValue")
            .filter_map(|s| {
                let z_value = s.id.trim().parse::<usize>().ok()?;
                let tilt_deg = s.get_f64("TiltAngle")?;
                let sub_frame_path = s.get("SubFramePath").map(str::to_string);
                let sub_frame_file = sub_frame_path
                    .as_deref()
                    .and_then(|p| p.rsplit(['\\', '/']).next())
                    .filter(|f| !f.is_empty())
                    .map(str::to_string);
                Some(MdocTilt {
                    z_value,
                    tilt_deg,
                    dose_e_a2: s.get_f64("ExposureDose").unwrap_or(0.0),
                    pixel_a: s.get_f64("PixelSpacing"),
                    sub_frame_path,
                    sub_frame_file,
                    rotation_angle: s.get_f64("RotationAngle"),
                    date_time: s.get("DateTime").map(str::to_string),
                    num_sub_frames: s.get("NumSubFrames").and_then(|v| v.trim().parse().ok()),
                    prior_record_dose: s.get_f64("PriorRecordDose"),
                })
            })
            .collect()
    }
}

/// Write a SerialEM-like tilt-series `.mdoc` (LF line endings), atomically: header
/// (`PixelSpacing`, `ImageFile`, `ImageSize = nx ny`, `DataMode = 2`), a program title, the
/// `Tilt axis angle = axis_deg` title, then one `[ZValue = n]` section per tilt with the fields
/// of [`MdocTilt`] that are set. `pixel_a` Å is used where a tilt has no pixel size.
pub fn write_mdoc(
    path: &Path,
    image_file: &str,
    nx: usize,
    ny: usize,
    pixel_a: f64,
    axis_deg: f64,
    tilts: &[MdocTilt],
) -> Result<()> {
    let mut s = String::new();
    let _ = writeln!(s, "PixelSpacing = {pixel_a}");
    let _ = writeln!(s, "ImageFile = {image_file}");
    let _ = writeln!(s, "ImageSize = {nx} {ny}");
    let _ = writeln!(s, "DataMode = 2");
    let _ = writeln!(s);
    let _ = writeln!(s, "[T = lamella {}]", crate::VERSION);
    let _ = writeln!(s);
    let _ = writeln!(s, "[T =     Tilt axis angle = {axis_deg}, binning = 1]");
    for t in tilts {
        let _ = writeln!(s);
        let _ = writeln!(s, "[ZValue = {}]", t.z_value);
        let _ = writeln!(s, "TiltAngle = {}", t.tilt_deg);
        let _ = writeln!(s, "ExposureDose = {}", t.dose_e_a2);
        let _ = writeln!(s, "PixelSpacing = {}", t.pixel_a.unwrap_or(pixel_a));
        if let Some(v) = t.rotation_angle {
            let _ = writeln!(s, "RotationAngle = {v}");
        }
        if let Some(v) = t.prior_record_dose {
            let _ = writeln!(s, "PriorRecordDose = {v}");
        }
        if let Some(v) = &t.sub_frame_path {
            let _ = writeln!(s, "SubFramePath = {v}");
        }
        if let Some(v) = t.num_sub_frames {
            let _ = writeln!(s, "NumSubFrames = {v}");
        }
        if let Some(v) = &t.date_time {
            let _ = writeln!(s, "DateTime = {v}");
        }
    }
    write_bytes_atomic(path, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_variants() {
        let text =
            "\u{feff}T = SerialEM: bare title   \r\nPixelSpacing = 2.5\r\nKey = a b  c\r\n\r\n\
                    [T = Tilt axis angle = -86.7, binning = 1]\r\n# comment\r\n[ZValue = 3]\r\n\
                    TiltAngle = -1.5\r\nX = 1\r\nX = 2\r\nSubFramePath = /a/b/c.tif\r\n\
                    [Item = 17-1-A]\r\nNote = Sec 0 - map.mrc -\r\n[MontSection = 0]\r\n";
        let d = Mdoc::parse(text, Path::new("t.mdoc")).unwrap();
        assert_eq!(
            d.titles,
            vec![
                "SerialEM: bare title",
                "Tilt axis angle = -86.7, binning = 1"
            ]
        );
        assert_eq!(d.get("Key"), Some("a b  c"));
        assert_eq!(d.pixel_spacing_a(), Some(2.5));
        assert_eq!(d.tilt_axis_angle(), Some(-86.7));
        assert_eq!(d.sections.len(), 3);
        assert_eq!(
            d.sections[0]
                .entries
                .iter()
                .filter(|(k, _)| k == "X")
                .count(),
            2
        );
        assert_eq!(d.sections[0].get("X"), Some("1"));
        assert_eq!(d.sections[1].kind, "Item");
        assert_eq!(d.sections[1].id, "17-1-A");
        assert_eq!(d.sections[1].get("Note"), Some("Sec 0 - map.mrc -"));
        let t = d.tilts();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].z_value, t[0].tilt_deg), (3, -1.5));
        assert_eq!(t[0].sub_frame_file.as_deref(), Some("c.tif"));
    }

    #[test]
    fn bad_lines_refused() {
        let e = Mdoc::parse("A = 1\n[ZValue = 0\n", Path::new("x.mdoc"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.mdoc") && e.contains("line 2"), "{e}");
        let e = Mdoc::parse("A = 1\njunk\n", Path::new("x.mdoc"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("junk"), "{e}");
    }
}
