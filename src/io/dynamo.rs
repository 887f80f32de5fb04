//! Dynamo particle tables (`.tbl`): read and write.
//!
//! A table is plain text, one particle per line, whitespace-separated numbers; the columns
//! (1-based, Dynamo's `dthelp`) used here are: 1 `tag`, 2 `aligned`, 3 `averaged`,
//! 4–6 `dx dy dz` (shift, pixels), 7–9 `tdrot tilt narot` (degrees), 10 `cc`, 11 `cc2`,
//! 12 `cpu`, 13 `ftype` (1 = single tilt axis about y), 14–15 `ymintilt ymaxtilt`,
//! 16–17 `xmintilt xmaxtilt` (degrees), 18–19 `fs1 fs2`, 20 `tomo`, 21 `reg`, 22 `class`,
//! 23 `annotation`, 24–26 `x y z` (position in the tomogram, pixels), 27–31 `dshift daxis
//! dnarot dcc otag`, 32 `npar`, 33 (unused), 34 `ref`, 35 `sref`; Dynamo files may carry
//! more columns (e.g. 36 `apix`, 37 `def`, 41–42 `eig1 eig2`), which are kept on reading.
//! MATLAB may write a complex value as `a+bi`; the real part `a` is read.
//!
//! Frames. Positions are 1-based voxel coordinates (MATLAB), so voxel index `i` (0-based)
//! is Dynamo `i + 1` and the tomogram centre voxel `n/2` is `n/2 + 1` (Dynamo's box centre
//! `floor(n/2) + 1`). The particle centre is `(x + dx, y + dy, z + dz)`. The angles rotate
//! the particle onto the reference (extrinsic zxz); as a pose matrix (the role of RELION's
//! `A`, `particle(x) = reference(Aᵀ·x)`) they go through
//! [`dynamo_zxz_to_matrix`] / [`matrix_to_dynamo_zxz`].

use std::io::Write;
use std::path::Path;

use crate::core::geometry::{dynamo_zxz_to_matrix, matrix_to_dynamo_zxz, Mat3};
use crate::io::atomic::write_atomic;
use crate::{Error, Result};

/// Number of columns lamella writes (the standard Dynamo table).
pub const COLUMNS: usize = 35;

/// One row of a Dynamo table, all columns as read (at least [`COLUMNS`], padded with 0).
#[derive(Clone, Debug, PartialEq)]
pub struct DynamoRow(pub Vec<f64>);

impl DynamoRow {
    /// Column `c` (1-based, module docs).
    pub fn col(&self, c: usize) -> f64 {
        self.0.get(c - 1).copied().unwrap_or(0.0)
    }

    fn set(&mut self, c: usize, v: f64) {
        if self.0.len() < c {
            self.0.resize(c, 0.0);
        }
        self.0[c - 1] = v;
    }

    /// Particle tag (column 1).
    pub fn tag(&self) -> usize {
        self.col(1).max(0.0) as usize
    }

    /// Tomogram index (column 20).
    pub fn tomo(&self) -> usize {
        self.col(20).max(0.0) as usize
    }

    /// Class (column 22).
    pub fn class(&self) -> usize {
        self.col(22).max(0.0) as usize
    }

    /// Cross-correlation (column 10).
    pub fn cc(&self) -> f64 {
        self.col(10)
    }

    /// The particle centre `(x + dx, y + dy, z + dz)`, Dynamo pixels (1-based).
    pub fn centre_px(&self) -> [f64; 3] {
        [
            self.col(24) + self.col(4),
            self.col(25) + self.col(5),
            self.col(26) + self.col(6),
        ]
    }

    /// `(tdrot, tilt, narot)`, degrees.
    pub fn angles_deg(&self) -> [f64; 3] {
        [self.col(7), self.col(8), self.col(9)]
    }

    /// The pose matrix (module docs).
    pub fn pose(&self) -> Mat3 {
        let [a, b, c] = self.angles_deg();
        dynamo_zxz_to_matrix(a, b, c)
    }

    /// The centre in Å about the tomogram centre for a tomogram of `dims_xyz` voxels of
    /// `pixel_a` Å: `(centre_px − 1 − n/2)·pixel`.
    pub fn centered_a(&self, dims_xyz: [usize; 3], pixel_a: f64) -> [f64; 3] {
        let c = self.centre_px();
        [0, 1, 2].map(|k| (c[k] - 1.0 - (dims_xyz[k] / 2) as f64) * pixel_a)
    }

    /// A new row: `tag`, `tomo`, `class`, centre at 0-based voxel `voxel_xyz` (written as
    /// 1-based `x y z`, no shift), pose `a`, score `cc`, tilt range `tilt_range_deg` about
    /// y (`ftype` 1), `aligned = averaged = 1`.
    pub fn new(
        tag: usize,
        tomo: usize,
        class: usize,
        voxel_xyz: [f64; 3],
        a: &Mat3,
        cc: f64,
        tilt_range_deg: [f64; 2],
    ) -> DynamoRow {
        let mut r = DynamoRow(vec![0.0; COLUMNS]);
        let (t, tl, n) = matrix_to_dynamo_zxz(a);
        r.set(1, tag as f64);
        r.set(2, 1.0);
        r.set(3, 1.0);
        r.set(7, t);
        r.set(8, tl);
        r.set(9, n);
        r.set(10, cc);
        r.set(13, 1.0);
        r.set(14, tilt_range_deg[0]);
        r.set(15, tilt_range_deg[1]);
        r.set(20, tomo as f64);
        r.set(22, class as f64);
        for (k, v) in voxel_xyz.iter().enumerate() {
            r.set(24 + k, v + 1.0);
        }
        r
    }
}

/// Parse one number of a table: a real, or MATLAB's complex `a+bi` / `a-bi` (real part).
fn parse_number(tok: &str) -> Option<f64> {
    if let Ok(v) = tok.parse::<f64>() {
        return Some(v);
    }
    let t = tok.strip_suffix('i').or_else(|| tok.strip_suffix('j'))?;
    // split at the sign that starts the imaginary part (not one after an exponent 'e')
    let bytes = t.as_bytes();
    let at = (1..bytes.len()).rev().find(|&k| {
        (bytes[k] == b'+' || bytes[k] == b'-') && !matches!(bytes[k - 1], b'e' | b'E')
    })?;
    let re = t[..at].parse::<f64>().ok()?;
    t[at..].parse::<f64>().ok()?;
    Some(re)
}

/// Parse the text of a table (`path` names it in errors). Blank lines are skipped; a line
/// with fewer than 26 columns or a token that is not a number is an error naming the line.
pub fn parse_table(text: &str, path: &Path) -> Result<Vec<DynamoRow>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut v = Vec::new();
        for (k, tok) in line.split_whitespace().enumerate() {
            v.push(parse_number(tok).ok_or_else(|| {
                Error::bad_input(
                    path,
                    format!("line {} column {}", i + 1, k + 1),
                    format!("{tok:?} is not a number; a Dynamo table holds numbers only"),
                )
            })?);
        }
        if v.len() < 26 {
            return Err(Error::bad_input(
                path,
                format!("line {}", i + 1),
                format!(
                    "{} columns; a Dynamo table needs at least 26 (x y z are columns 24–26)",
                    v.len()
                ),
            ));
        }
        if v.len() < COLUMNS {
            v.resize(COLUMNS, 0.0);
        }
        rows.push(DynamoRow(v));
    }
    Ok(rows)
}

/// Read a Dynamo table.
pub fn read_table(path: &Path) -> Result<Vec<DynamoRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_table(&text, path)
}

/// Write `rows` as a Dynamo table (every column of every row; integers without decimals,
/// others in the shortest decimal form that reads back exactly), atomically.
pub fn write_table(path: &Path, rows: &[DynamoRow]) -> Result<()> {
    write_atomic(path, |w| {
        for r in rows {
            let line: Vec<String> =
                r.0.iter()
                    .map(|&v| {
                        if v == v.trunc() && v.abs() < 1e15 {
                            format!("{}", v as i64)
                        } else {
                            format!("{v}")
                        }
                    })
                    .collect();
            writeln!(w, "{}", line.join(" "))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::{euler_zyz_to_matrix, max_abs_diff};

    #[test]
    fn complex_tokens_read_their_real_part() {
        assert_eq!(parse_number("0+1.2074e-06i"), Some(0.0));
        assert_eq!(parse_number("-2.5-3e+01i"), Some(-2.5));
        assert_eq!(parse_number("1.5e-3"), Some(1.5e-3));
        assert_eq!(parse_number("abc"), None);
    }

    #[test]
    fn write_read_round_trip_keeps_pose_and_position() {
        let a = euler_zyz_to_matrix(137.7, 1.1777, 42.727);
        let r = DynamoRow::new(7, 2, 1, [10.0, 20.0, 30.0], &a, 0.4321, [-60.0, 60.0]);
        // the published equivalent pair (docs/conventions.md)
        let [t, tl, n] = r.angles_deg();
        assert!(
            (t + 47.273).abs() < 1e-3 && (tl - 1.1777).abs() < 1e-3 && (n + 132.3).abs() < 1e-3
        );
        let dir = std::env::temp_dir().join(format!("lamella_dynamo_{}", std::process::id()));
        let p = dir.join("t.tbl");
        write_table(&p, std::slice::from_ref(&r)).unwrap();
        let back = read_table(&p).unwrap();
        assert_eq!(back.len(), 1);
        assert!(max_abs_diff(&back[0].pose(), &a) < 1e-5);
        assert_eq!(back[0].centre_px(), [11.0, 21.0, 31.0]);
        assert_eq!(back[0].centered_a([20, 40, 60], 10.0), [0.0, 0.0, 0.0]);
        assert_eq!((back[0].tag(), back[0].tomo(), back[0].class()), (7, 2, 1));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse_table("1 2 3\n", Path::new("x.tbl")).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
