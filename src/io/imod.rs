//! IMOD text files: tilt angles (`.tlt`, `.rawtlt`) and 2D linear transforms (`.xf`).
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
}
