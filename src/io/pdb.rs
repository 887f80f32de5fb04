//! Atomic models: PDB `ATOM`/`HETATM` records and mmCIF `_atom_site` loops.
//!
//! Coordinates are Å in the model's own frame. Only the first model of a multi-model file is
//! read (records after the first `ENDMDL`, or `pdbx_PDB_model_num` ≠ the first, are skipped).

use crate::error::{Error, Result};
use std::path::Path;

/// One atom. `element` is upper-case (`"C"`, `"FE"`), `xyz_a` in Å.
#[derive(Clone, Debug, PartialEq)]
pub struct Atom {
    /// Element symbol, upper-case.
    pub element: String,
    /// Position (x, y, z), Å.
    pub xyz_a: [f64; 3],
    /// Occupancy (0–1); 1 when absent.
    pub occupancy: f64,
    /// Isotropic B-factor, Å²; 0 when absent.
    pub b_factor: f64,
}

/// Read the atoms of a `.pdb`/`.ent` (fixed columns) or `.cif`/`.mmcif` (mmCIF `_atom_site`)
/// file; the format is chosen by the extension, falling back to content sniffing.
/// Errors name the file, the line and the fix.
pub fn read_atoms(path: &Path) -> Result<Vec<Atom>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let is_cif = ext == "cif" || ext == "mmcif" || (ext != "pdb" && text.contains("_atom_site."));
    let atoms = if is_cif {
        parse_mmcif(&text, path)?
    } else {
        parse_pdb(&text, path)?
    };
    if atoms.is_empty() {
        return Err(Error::bad_input(
            path,
            "atoms",
            "no ATOM/HETATM records (PDB) or _atom_site loop (mmCIF) found; pass a PDB or mmCIF model",
        ));
    }
    Ok(atoms)
}

/// Element from an atom name when the element column is missing: the leading letters of the
/// name, PDB style (a name starting in column 13 is a two-letter element such as `FE`).
fn element_from_name(name_field: &str) -> String {
    // name_field is columns 13-16 verbatim
    let letters: String = name_field
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_uppercase();
    if letters.is_empty() {
        return "C".into();
    }
    let starts_in_13 = name_field.chars().next().is_some_and(|c| c != ' ');
    if starts_in_13 && letters.len() >= 2 && !name_field.starts_with('H') {
        // e.g. "FE  ", "ZN  " (hydrogens like "HG21" start in column 13 too)
        let two = &letters[..2];
        if crate::io::pdb::is_known_two_letter(two) {
            return two.to_string();
        }
    }
    letters[..1].to_string()
}

/// Two-letter element symbols common in biological models.
pub(crate) fn is_known_two_letter(sym: &str) -> bool {
    matches!(
        sym,
        "FE" | "ZN"
            | "MG"
            | "MN"
            | "CA"
            | "NA"
            | "CL"
            | "CU"
            | "CO"
            | "NI"
            | "SE"
            | "BR"
            | "AU"
            | "PT"
            | "CD"
            | "HG"
            | "PB"
            | "AG"
            | "MO"
            | "LI"
    )
}

fn field(line: &str, a: usize, b: usize) -> &str {
    // 1-based inclusive columns, tolerant of short lines and non-ASCII
    let bytes = line.as_bytes();
    if a > bytes.len() {
        return "";
    }
    let end = b.min(bytes.len());
    std::str::from_utf8(&bytes[a - 1..end]).unwrap_or("")
}

fn parse_pdb(text: &str, path: &Path) -> Result<Vec<Atom>> {
    let mut atoms = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        if line.starts_with("ENDMDL") {
            break;
        }
        if !(line.starts_with("ATOM") || line.starts_with("HETATM")) {
            continue;
        }
        let num = |a: usize, b: usize, what: &str| -> Result<f64> {
            field(line, a, b).trim().parse::<f64>().map_err(|_| {
                Error::bad_input(
                    path,
                    format!("line {} {what} (columns {a}-{b})", ln + 1),
                    format!(
                        "cannot parse {:?} as a number; fix the record",
                        field(line, a, b)
                    ),
                )
            })
        };
        let x = num(31, 38, "x")?;
        let y = num(39, 46, "y")?;
        let z = num(47, 54, "z")?;
        let occupancy = field(line, 55, 60).trim().parse().unwrap_or(1.0);
        let b_factor = field(line, 61, 66).trim().parse().unwrap_or(0.0);
        let el = field(line, 77, 78).trim().to_uppercase();
        let element = if el.is_empty() || !el.chars().all(|c| c.is_ascii_alphabetic()) {
            element_from_name(field(line, 13, 16))
        } else {
            el
        };
        atoms.push(Atom {
            element,
            xyz_a: [x, y, z],
            occupancy,
            b_factor,
        });
    }
    Ok(atoms)
}

/// Split an mmCIF data line into tokens (whitespace separated, '...' and "..." quoted).
fn cif_tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '\'' || c == '"' {
            chars.next();
            let mut s = String::new();
            while let Some(d) = chars.next() {
                if d == c && chars.peek().is_none_or(|n| n.is_whitespace()) {
                    break;
                }
                s.push(d);
            }
            out.push(s);
        } else {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                s.push(d);
                chars.next();
            }
            out.push(s);
        }
    }
    out
}

fn parse_mmcif(text: &str, path: &Path) -> Result<Vec<Atom>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "loop_"
            && lines
                .get(i + 1)
                .is_some_and(|l| l.trim_start().starts_with("_atom_site."))
        {
            // header
            let mut cols = Vec::new();
            i += 1;
            while i < lines.len() && lines[i].trim_start().starts_with("_atom_site.") {
                cols.push(
                    lines[i]
                        .trim()
                        .trim_start_matches("_atom_site.")
                        .to_string(),
                );
                i += 1;
            }
            let idx = |name: &str| cols.iter().position(|c| c == name);
            let need = |name: &str| {
                idx(name).ok_or_else(|| {
                    Error::bad_input(
                        path,
                        format!("_atom_site.{name}"),
                        "column missing from the _atom_site loop; the model needs Cartn_x/y/z",
                    )
                })
            };
            let (cx, cy, cz) = (need("Cartn_x")?, need("Cartn_y")?, need("Cartn_z")?);
            let ce = idx("type_symbol");
            let cn = idx("label_atom_id").or(idx("auth_atom_id"));
            let co = idx("occupancy");
            let cb = idx("B_iso_or_equiv");
            let cm = idx("pdbx_PDB_model_num");
            let mut first_model: Option<String> = None;
            let mut atoms = Vec::new();
            let mut pending: Vec<String> = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                let t = l.trim();
                if t.starts_with('#')
                    || t == "loop_"
                    || t.starts_with('_')
                    || t.starts_with("data_")
                {
                    break;
                }
                i += 1;
                if t.is_empty() {
                    continue;
                }
                pending.extend(cif_tokens(l));
                while pending.len() >= cols.len() {
                    let row: Vec<String> = pending.drain(..cols.len()).collect();
                    if let Some(m) = cm {
                        let fm = first_model.get_or_insert_with(|| row[m].clone());
                        if &row[m] != fm {
                            continue;
                        }
                    }
                    let num = |c: usize| -> Result<f64> {
                        row[c].parse::<f64>().map_err(|_| {
                            Error::bad_input(
                                path,
                                format!("_atom_site.{} near line {}", cols[c], i),
                                format!("cannot parse {:?} as a number; fix the row", row[c]),
                            )
                        })
                    };
                    let element = match ce {
                        Some(c) if row[c] != "?" && row[c] != "." => row[c].to_uppercase(),
                        _ => cn
                            .and_then(|c| {
                                let s: String =
                                    row[c].chars().filter(|c| c.is_ascii_alphabetic()).collect();
                                s.chars().next().map(|c| c.to_ascii_uppercase().to_string())
                            })
                            .unwrap_or_else(|| "C".into()),
                    };
                    atoms.push(Atom {
                        element,
                        xyz_a: [num(cx)?, num(cy)?, num(cz)?],
                        occupancy: co.and_then(|c| row[c].parse().ok()).unwrap_or(1.0),
                        b_factor: cb.and_then(|c| row[c].parse().ok()).unwrap_or(0.0),
                    });
                }
            }
            return Ok(atoms);
        }
        i += 1;
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn data() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/structures")
    }

    #[test]
    fn reads_6z6u() {
        let p = data().join("6z6u.pdb");
        if !p.exists() {
            eprintln!("SKIP: {} missing", p.display());
            return;
        }
        let atoms = read_atoms(&p).unwrap();
        assert_eq!(atoms.len(), 32_618);
        assert_eq!(atoms[0].element, "N");
        assert_eq!(atoms[0].xyz_a, [41.825, 76.692, 82.377]);
        assert!((atoms[0].b_factor - 91.41).abs() < 1e-9);
        let mg = atoms.iter().filter(|a| a.element == "MG").count();
        let na = atoms.iter().filter(|a| a.element == "NA").count();
        assert_eq!((mg, na), (2, 24));
    }

    #[test]
    fn element_from_atom_name_when_column_missing() {
        let text = "ATOM      2  CA  SER A   4      42.790  75.724  82.992  1.00 86.17\n\
                    HETATM    3 FE   HEM A   5       1.000   2.000   3.000  0.50 10.00\n\
                    ATOM      4 HG21 THR A   6       1.000   2.000   3.000  1.00 10.00\n";
        let atoms = parse_pdb(text, Path::new("x.pdb")).unwrap();
        assert_eq!(atoms[0].element, "C");
        assert_eq!(atoms[1].element, "FE");
        assert_eq!(atoms[1].occupancy, 0.5);
        assert_eq!(atoms[2].element, "H");
    }

    #[test]
    fn bad_coordinate_names_line() {
        let text =
            "ATOM      2  CA  SER A   4      4x.790  75.724  82.992  1.00 86.17           C\n";
        let e = parse_pdb(text, Path::new("x.pdb")).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("x.pdb"), "{e}");
    }

    #[test]
    fn reads_mmcif_loop() {
        let text =
            "data_test\n#\nloop_\n_atom_site.group_PDB\n_atom_site.id\n_atom_site.type_symbol\n\
_atom_site.label_atom_id\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n_atom_site.Cartn_z\n\
_atom_site.occupancy\n_atom_site.B_iso_or_equiv\n_atom_site.pdbx_PDB_model_num\n\
ATOM 1 N N 1.0 2.0 3.0 1.00 20.0 1\n\
ATOM 2 C \"CA\" 4.5 -5.0 6.25 0.5 30.0 1\n\
HETATM 3 Fe FE 0 0 0 1 10 1\n\
ATOM 4 C CA 9 9 9 1 10 2\n#\n";
        let atoms = parse_mmcif(text, Path::new("x.cif")).unwrap();
        assert_eq!(atoms.len(), 3);
        assert_eq!(atoms[1].xyz_a, [4.5, -5.0, 6.25]);
        assert_eq!(atoms[1].occupancy, 0.5);
        assert_eq!(atoms[2].element, "FE");
    }
}
