//! IMOD text files: tilt angles (`.tlt`, `.rawtlt`), 2D linear transforms (`.xf`) and
//! ctfplotter/ctfphaseflip defocus files (`.defocus`, see [`write_defocus`]).
//!
//! `.xf` convention (IMOD): each row `A11 A12 A21 A22 DX DY` maps a raw-image pixel to the
//! aligned image as `x' = A·(x − c) + c + d`, with `c` the image centre, pixels. IMOD's aligned
//! stack has the tilt axis on +Y.
//!
//! lamella's model (see [`crate::core::geometry`]) puts a specimen point at
//! `raw = c + Rz(axis)·q + s`, with `q = [Ry(tilt)·p]_xy / px` and `s = shift / px`. Asking the
//! aligned image to be `c + q` (axis on +Y, no shift) for every `q` gives
//! `A·Rz(axis) = I` and `A·s + d = 0`, so
//!
//! - `A = Rz(−axis)`, i.e. `axis = atan2(A12, A11)` (rows of `Rz(−a)` are `[cos a, sin a]`,
//!   `[−sin a, cos a]`);
//! - `shift_Å = −px · Rz(axis)·d`, and back `d = −Rz(−axis)·shift / px`.
//!
//! Checked on real files (see `tests/formats_imod_mdoc.rs`): IMOD's own `BBa.xf` gives
//! axis ≈ −11°, the `RotationAngle -12.5` given to tiltxcorr for that set.

use crate::core::geometry::rot_z;
use crate::io::atomic::write_bytes_atomic;
use crate::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Parse one number, naming the file, line and column on failure.
fn num(tok: &str, path: &Path, line: usize, col: usize, what: &str) -> Result<f64> {
    match tok.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Error::bad_input(
            path,
            format!("line {line}, column {col} ({what})"),
            format!("`{tok}` is not a finite number; fix or regenerate the file"),
        )),
    }
}

/// Read a `.tlt`/`.rawtlt` file: one tilt angle (degrees) per line, in stack order; blank lines
/// are ignored; extra columns are refused.
pub fn read_tlt(path: &Path) -> Result<Vec<f64>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks.len() {
            0 => continue,
            1 => out.push(num(toks[0], path, i + 1, 1, "tilt angle")?),
            n => {
                return Err(Error::bad_input(
                    path,
                    format!("line {}", i + 1),
                    format!(
                        "expected one tilt angle per line, found {n} values; is this a .tlt file?"
                    ),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::bad_input(
            path,
            "tilt angles",
            "the file holds no angles; regenerate it (one angle in degrees per line)",
        ));
    }
    Ok(out)
}

/// Write a `.tlt` file (IMOD style: `%7.2f` per line), atomically. Angles in degrees.
pub fn write_tlt(path: &Path, angles: &[f64]) -> Result<()> {
    let mut s = String::new();
    for a in angles {
        let _ = writeln!(s, "{a:7.2}");
    }
    write_bytes_atomic(path, s.as_bytes())
}

/// One `.xf` row: `x' = A·(x − c) + c + d` in pixels (`a[row][col]`, `d = (DX, DY)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XfRow {
    pub a: [[f64; 2]; 2],
    pub d: [f64; 2],
}

/// `Rz(deg)` restricted to the image plane, `[[cos, −sin], [sin, cos]]`.
fn rot2(deg: f64) -> [[f64; 2]; 2] {
    let r = rot_z(deg);
    [[r[0][0], r[0][1]], [r[1][0], r[1][1]]]
}

fn mul2(m: &[[f64; 2]; 2], v: [f64; 2]) -> [f64; 2] {
    [
        m[0][0] * v[0] + m[0][1] * v[1],
        m[1][0] * v[0] + m[1][1] * v[1],
    ]
}

impl XfRow {
    /// The identity transform.
    pub const IDENTITY: XfRow = XfRow {
        a: [[1.0, 0.0], [0.0, 1.0]],
        d: [0.0, 0.0],
    };

    /// lamella's model: image = c + Rz(axis)·(Ry·p)_xy/px + shift/px; IMOD's aligned image
    /// = A·(raw − c) + c + d puts the tilt axis on +Y, so A = Rz(−axis) (pure rotation) and
    /// shift_Å = −px · Rz(axis)·d.
    ///
    /// Returns `(axis_deg, shift_x_a, shift_y_a)`: the axis in degrees counter-clockwise from +Y
    /// in (−180, 180], shifts in Å. The rotation is taken from the rotational part of `A`
    /// (`atan2(A12 − A21, A11 + A22)`), so a magnification (see [`XfRow::scale`]) or a small
    /// skew is ignored; the shift uses the pure rotation too.
    pub fn to_axis_shift(&self, pixel_a: f64) -> (f64, f64, f64) {
        let a = &self.a;
        let axis = (a[0][1] - a[1][0]).atan2(a[0][0] + a[1][1]).to_degrees();
        let s = mul2(&rot2(axis), self.d);
        (axis, -pixel_a * s[0], -pixel_a * s[1])
    }

    /// Inverse of [`XfRow::to_axis_shift`]: `A = Rz(−axis)`, `d = −Rz(−axis)·shift / px`.
    pub fn from_axis_shift(axis_deg: f64, shift_x_a: f64, shift_y_a: f64, pixel_a: f64) -> XfRow {
        let a = rot2(-axis_deg);
        let d = mul2(&a, [shift_x_a / pixel_a, shift_y_a / pixel_a]);
        XfRow {
            a,
            d: [-d[0], -d[1]],
        }
    }

    /// Isotropic magnification of `A`: `sqrt(|det A|)` (1 for a pure rotation). IMOD's
    /// tiltalign writes values ≠ 1 when it solves for magnification; lamella's geometry has no
    /// per-tilt scale, so callers may warn when this departs from 1.
    pub fn scale(&self) -> f64 {
        let a = &self.a;
        (a[0][0] * a[1][1] - a[0][1] * a[1][0]).abs().sqrt()
    }
}

/// Read an `.xf` (or `.tltxf`, `.prexf`) file: six numbers per line, `A11 A12 A21 A22 DX DY`.
/// Blank lines are ignored; a line with another number of values is refused.
pub fn read_xf(path: &Path) -> Result<Vec<XfRow>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    const NAMES: [&str; 6] = ["A11", "A12", "A21", "A22", "DX", "DY"];
    for (i, line) in text.lines().enumerate() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.is_empty() {
            continue;
        }
        if toks.len() != 6 {
            return Err(Error::bad_input(
                path,
                format!("line {}", i + 1),
                format!(
                    "expected 6 values (A11 A12 A21 A22 DX DY), found {}; a local-alignment \
                     file (…local.xf) is not a plain .xf: pass the global .xf",
                    toks.len()
                ),
            ));
        }
        let mut v = [0.0; 6];
        for (k, t) in toks.iter().enumerate() {
            v[k] = num(t, path, i + 1, k + 1, NAMES[k])?;
        }
        out.push(XfRow {
            a: [[v[0], v[1]], [v[2], v[3]]],
            d: [v[4], v[5]],
        });
    }
    if out.is_empty() {
        return Err(Error::bad_input(
            path,
            "transforms",
            "the file holds no transforms; regenerate it",
        ));
    }
    Ok(out)
}

/// Write an `.xf` file in IMOD's fixed-width layout (`%12.7f` ×4, `%12.3f` ×2), atomically.
pub fn write_xf(path: &Path, rows: &[XfRow]) -> Result<()> {
    let mut s = String::new();
    for r in rows {
        let _ = writeln!(
            s,
            "{:12.7}{:12.7}{:12.7}{:12.7}{:12.3}{:12.3}",
            r.a[0][0], r.a[0][1], r.a[1][0], r.a[1][1], r.d[0], r.d[1]
        );
    }
    write_bytes_atomic(path, s.as_bytes())
}

/// One view of an IMOD `.defocus` file (ctfplotter / ctfphaseflip). Defocus in Å (the file
/// holds nm), underfocus positive; `defocus_u_a` is IMOD's "defocus 1", along the angle
/// `astig_angle_deg` (degrees from +x), `defocus_v_a` its "defocus 2".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DefocusRow {
    /// Tilt angle of the view, degrees.
    pub tilt_deg: f64,
    /// Defocus 1 (along the astigmatism angle), Å.
    pub defocus_u_a: f64,
    /// Defocus 2, Å (= `defocus_u_a` without astigmatism).
    pub defocus_v_a: f64,
    /// Angle of defocus 1 from +x, degrees (0 without astigmatism).
    pub astig_angle_deg: f64,
}

/// Write a ctfplotter-style `.defocus` file, version 3 with astigmatism, atomically: a first
/// line `1 0 0.0 0.0 0.0 3` (flags = 1: astigmatism, angle in degrees; version 3), then one
/// line per view (stack order, views 1-based) `view view tilt tilt defocus1_nm defocus2_nm
/// angle_deg`. ctfphaseflip, novaCTF and IMOD's tilt read this.
pub fn write_defocus(path: &Path, rows: &[DefocusRow]) -> Result<()> {
    let mut s = String::from("1  0  0.0  0.0  0.0  3\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            s,
            "{v}  {v}  {t:.2}  {t:.2}  {:.2}  {:.2}  {:.2}",
            r.defocus_u_a / 10.0,
            r.defocus_v_a / 10.0,
            r.astig_angle_deg,
            v = i + 1,
            t = r.tilt_deg,
        );
    }
    write_bytes_atomic(path, s.as_bytes())
}

/// Read an IMOD `.defocus` file into one row per view of a stack of `n_views` images.
///
/// Accepted: version 2 (no astigmatism: `start end tilt1 tilt2 defocus_nm`, the first line
/// carrying a 6th value, the version 2) and version 3 (a first line `flags 0 0. 0. 0 3`;
/// flags 1 = astigmatism `defocus1 defocus2 angle`, 2 = angle in radians, 4 = a phase-shift
/// column, 8 = phase in radians, 16 = inverted tilt angles, 32 = a cut-on column; the phase
/// shift and cut-on are read and ignored). A line covering views `start..=end` (1-based)
/// gives every view in the range its values. Errors name the file, line and field: a view
/// outside `1..=n_views`, or a view no line covers.
pub fn read_defocus(path: &Path, n_views: usize) -> Result<Vec<DefocusRow>> {
    let text = read_text(path)?;
    let lines: Vec<(usize, Vec<&str>)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let Some((_, first)) = lines.first() else {
        return Err(Error::bad_input(
            path,
            "defocus values",
            "the file is empty; regenerate it with ctfplotter or `lamella ctf`",
        ));
    };
    // version 3 header: six values with a 3 last and no view data; else version 2
    let v3 = first.len() == 6 && first[5] == "3" && first[1] == "0";
    let (flags, data): (u32, &[(usize, Vec<&str>)]) = if v3 {
        let f = num(first[0], path, lines[0].0, 1, "flags")?;
        (f as u32, &lines[1..])
    } else {
        (0, &lines[..])
    };
    let astig = flags & 1 != 0;
    let radians = flags & 2 != 0;
    let ncol =
        5 + if astig { 2 } else { 0 } + usize::from(flags & 4 != 0) + usize::from(flags & 32 != 0);
    let mut out: Vec<Option<DefocusRow>> = vec![None; n_views];
    for (k, (ln, toks)) in data.iter().enumerate() {
        // version 2: the first data line carries the version number as a 6th value
        let want = if !v3 && k == 0 && toks.len() == ncol + 1 {
            ncol + 1
        } else {
            ncol
        };
        if toks.len() != want {
            return Err(Error::bad_input(
                path,
                format!("line {ln}"),
                format!(
                    "expected {ncol} values (start end tilt1 tilt2 defocus{}), found {}; \
                     check the flags on the first line",
                    if astig { "1 defocus2 angle" } else { "" },
                    toks.len()
                ),
            ));
        }
        let v = |c: usize, what: &str| num(toks[c], path, *ln, c + 1, what);
        let (start, end) = (v(0, "start view")?, v(1, "end view")?);
        let tilt = v(2, "tilt angle")?;
        let d1 = 10.0 * v(4, "defocus")?;
        let (d2, ang) = if astig {
            let a = v(6, "astigmatism angle")?;
            (
                10.0 * v(5, "defocus 2")?,
                if radians { a.to_degrees() } else { a },
            )
        } else {
            (d1, 0.0)
        };
        if start < 1.0 || end < start || end as usize > n_views {
            return Err(Error::bad_input(
                path,
                format!("line {ln}, views"),
                format!(
                    "views {start}..{end} are outside the stack's 1..{n_views}: \
                     the file belongs to another stack"
                ),
            ));
        }
        for view in start as usize..=end as usize {
            out[view - 1] = Some(DefocusRow {
                tilt_deg: tilt,
                defocus_u_a: d1,
                defocus_v_a: d2,
                astig_angle_deg: ang,
            });
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.ok_or_else(|| {
                Error::bad_input(
                    path,
                    format!("view {}", i + 1),
                    "no line gives this view a defocus: fit every view (or give the defocus \
                     of a view range that covers it)",
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::TiltImage;

    #[test]
    fn axis_shift_round_trip() {
        for &(axis, sx, sy) in &[(85.3, 12.0, -30.5), (-95.4, 0.0, 7.0), (179.0, -3.0, 4.0)] {
            let r = XfRow::from_axis_shift(axis, sx, sy, 2.5);
            let (a2, x2, y2) = r.to_axis_shift(2.5);
            assert!((a2 - axis).abs() < 1e-9 && (x2 - sx).abs() < 1e-9 && (y2 - sy).abs() < 1e-9);
            assert!((r.scale() - 1.0).abs() < 1e-12);
        }
    }

    /// The xf from (axis, shift) really undoes lamella's projection: a specimen point lands at
    /// `c + q` in the aligned image, q being the untilted-axis projection.
    #[test]
    fn xf_aligns_lamella_projection() {
        let (nx, ny, px) = (200usize, 160usize, 3.0);
        let mut t = TiltImage::nominal(30.0, 72.0);
        t.shift_x_a = 21.0;
        t.shift_y_a = -9.0;
        let proj = t.projection(px, nx, ny);
        let xf = XfRow::from_axis_shift(t.axis_deg, t.shift_x_a, t.shift_y_a, px);
        let c = [(nx / 2) as f64, (ny / 2) as f64];
        let mut aligned_t = TiltImage::nominal(30.0, 0.0);
        aligned_t.axis_deg = 0.0;
        let aligned_proj = aligned_t.projection(px, nx, ny);
        for p in [[100.0, -50.0, 30.0], [-20.0, 0.0, 0.0], [0.0, 75.0, -40.0]] {
            let raw = proj.project(p);
            let v = mul2(&xf.a, [raw[0] - c[0], raw[1] - c[1]]);
            let al = [v[0] + c[0] + xf.d[0], v[1] + c[1] + xf.d[1]];
            let want = aligned_proj.project(p);
            assert!((al[0] - want[0]).abs() < 1e-9 && (al[1] - want[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn scaled_matrix() {
        let mut r = XfRow::from_axis_shift(10.0, 5.0, 0.0, 1.0);
        for row in r.a.iter_mut() {
            for v in row.iter_mut() {
                *v *= 1.02;
            }
        }
        assert!((r.scale() - 1.02).abs() < 1e-12);
        assert!((r.to_axis_shift(1.0).0 - 10.0).abs() < 1e-9);
    }

    #[test]
    fn files_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tlt");
        write_tlt(&p, &[-60.0, 0.5, 59.996]).unwrap();
        assert_eq!(read_tlt(&p).unwrap(), vec![-60.0, 0.5, 60.0]);
        let rows = vec![
            XfRow::from_axis_shift(85.3, 10.0, -4.0, 1.0),
            XfRow::IDENTITY,
        ];
        let q = dir.path().join("a.xf");
        write_xf(&q, &rows).unwrap();
        let back = read_xf(&q).unwrap();
        for (a, b) in rows.iter().zip(&back) {
            for k in 0..2 {
                assert!((a.d[k] - b.d[k]).abs() <= 5e-4);
                for l in 0..2 {
                    assert!((a.a[k][l] - b.a[k][l]).abs() <= 5e-8);
                }
            }
        }
        std::fs::write(&q, "1 0 0 1 0\n").unwrap();
        let e = read_xf(&q).unwrap_err().to_string();
        assert!(
            e.contains("a.xf") && e.contains("line 1") && e.contains("found 5"),
            "{e}"
        );
        std::fs::write(&p, "1.0\n\nabc\n").unwrap();
        let e = read_tlt(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("abc"), "{e}");
        std::fs::write(&p, "\n\n").unwrap();
        assert!(read_tlt(&p).is_err());
    }

    #[test]
    fn defocus_round_trip_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.defocus");
        let rows = vec![
            DefocusRow {
                tilt_deg: -60.0,
                defocus_u_a: 31234.5,
                defocus_v_a: 30210.1,
                astig_angle_deg: 12.25,
            },
            DefocusRow {
                tilt_deg: 3.0,
                defocus_u_a: 29000.0,
                defocus_v_a: 28999.0,
                astig_angle_deg: 179.5,
            },
        ];
        write_defocus(&p, &rows).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("1  0  0.0  0.0  0.0  3\n"), "{text}");
        for (a, b) in read_defocus(&p, 2).unwrap().iter().zip(&rows) {
            assert!(
                (a.tilt_deg - b.tilt_deg).abs() < 1e-9
                    && (a.defocus_u_a - b.defocus_u_a).abs() < 1e-6
                    && (a.defocus_v_a - b.defocus_v_a).abs() < 1e-6
                    && (a.astig_angle_deg - b.astig_angle_deg).abs() < 1e-9,
                "{a:?} vs {b:?}"
            );
        }
        // version 2 (ctfplotter without astigmatism): the first line ends with the version
        std::fs::write(&p, "1 1 -60.00 -60.00 3120 2\n2 3 -57.00 -54.00 3050\n").unwrap();
        let r = read_defocus(&p, 3).unwrap();
        assert_eq!(r[0].defocus_u_a, 31200.0);
        assert_eq!((r[2].defocus_u_a, r[2].defocus_v_a), (30500.0, 30500.0));
        // flags 3: angle in radians
        std::fs::write(&p, "3 0 0. 0. 0 3\n1 1 0.0 0.0 300.0 290.0 1.0\n").unwrap();
        let r = read_defocus(&p, 1).unwrap();
        assert!((r[0].astig_angle_deg - 57.29577951308232).abs() < 1e-9);
        // a view nobody fitted, and a view outside the stack
        let e = read_defocus(&p, 2).unwrap_err().to_string();
        assert!(e.contains("view 2") && e.contains("a.defocus"), "{e}");
        std::fs::write(&p, "1 0 0. 0. 0 3\n5 5 0.0 0.0 300.0 290.0 1.0\n").unwrap();
        let e = read_defocus(&p, 2).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("outside"), "{e}");
    }
}
