//! STAR files, RELION dialect: `data_<name>` blocks holding key–value pairs and/or one
//! `loop_` table.
//!
//! What the reader accepts (all seen in real RELION, WarpTools and pytom files):
//! - `data_` blocks with any name, including the empty name (`data_`);
//! - `loop_` (also with trailing spaces), column headers `_rlnX #1` (the `#i` and trailing
//!   spaces are ignored), blank lines between headers and rows;
//! - key–value lines `_key value` outside a loop;
//! - comments: lines starting with `#` (e.g. `# version 50001`) and `#` at the start of a
//!   token outside quotes;
//! - values in single or double quotes (may contain spaces; `""` is the empty value), list
//!   values such as `[0,1,1]` (kept verbatim), scientific notation, CRLF line endings,
//!   tab separators.
//!
//! One table row is one line; a row whose value count differs from the column count is an
//! error naming the file, the block and the line. Values are kept as strings; typed access
//! goes through [`StarTable::f64_column`] and [`StarBlock::get`].
//!
//! The writer puts `# version 50001` before each block, writes `loop_` with `_name #i`
//! headers, and quotes values that would not read back as one token (empty, containing
//! whitespace, or starting with `_`, `#`, a quote, or a reserved word such as `data_`).

use crate::io::atomic::write_bytes_atomic;
use crate::{Error, Result};
use std::path::Path;

/// A whole STAR file: its blocks in file order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StarFile {
    /// Blocks in file order.
    pub blocks: Vec<StarBlock>,
}

/// One `data_<name>` block.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StarBlock {
    /// Block name without the `data_` prefix (may be empty).
    pub name: String,
    /// Key–value pairs in file order; keys without the leading `_`.
    pub pairs: Vec<(String, String)>,
    /// The block's `loop_` table, if any.
    pub table: Option<StarTable>,
}

/// A `loop_` table: column names and rows of string values.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StarTable {
    /// Column names without the leading `_`.
    pub columns: Vec<String>,
    /// Rows; each has exactly `columns.len()` values.
    pub rows: Vec<Vec<String>>,
}

/// Split one line into tokens: whitespace-separated, quoted tokens (`'...'`, `"..."`) may
/// hold spaces, a `#` at the start of a token starts a comment. Returns an error message
/// for an unterminated quote.
fn tokenize(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let n = chars.len();
    while i < n {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        if c == '"' || c == '\'' {
            // A quoted token ends at the matching quote followed by whitespace or the end.
            let mut j = i + 1;
            loop {
                if j >= n {
                    return Err(format!("unterminated {c} quote in `{}`", line.trim()));
                }
                if chars[j] == c && (j + 1 >= n || chars[j + 1].is_whitespace()) {
                    break;
                }
                j += 1;
            }
            out.push(chars[i + 1..j].iter().collect());
            i = j + 1;
            continue;
        }
        let mut j = i;
        while j < n && !chars[j].is_whitespace() {
            j += 1;
        }
        out.push(chars[i..j].iter().collect());
        i = j;
    }
    Ok(out)
}

/// Where the parser is inside a block.
#[derive(PartialEq)]
enum State {
    /// Outside any block (before the first `data_`).
    Outside,
    /// Inside a block, not in a loop.
    Block,
    /// After `loop_`, reading `_column` headers.
    LoopHeader,
    /// Reading loop rows.
    LoopRows,
}

impl StarFile {
    /// Parse STAR text. `path` is used only in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<StarFile> {
        let mut file = StarFile::default();
        let mut state = State::Outside;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (lineno, raw) in text.lines().enumerate() {
            let lineno = lineno + 1;
            let line = raw.trim_end_matches('\r');
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let bad = |field: &str, msg: String| {
                Error::bad_input(path, format!("line {lineno}: {field}"), msg)
            };
            if let Some(name) = trimmed.strip_prefix("data_") {
                file.blocks.push(StarBlock {
                    name: name.trim().to_string(),
                    ..Default::default()
                });
                state = State::Block;
                continue;
            }
            if state == State::Outside {
                return Err(bad(
                    "content before the first data_ block",
                    format!("`{trimmed}`: a STAR file must start with a `data_<name>` line; fix or remove this line"),
                ));
            }
            let block = file.blocks.last_mut().expect("state implies a block");
            let block_label = format!("data_{}", block.name);
            if trimmed == "loop_" {
                if block.table.is_some() {
                    return Err(bad(
                        &block_label,
                        "a second loop_ in one data_ block; lamella supports one table per block: split it into two data_ blocks".into(),
                    ));
                }
                block.table = Some(StarTable::default());
                state = State::LoopHeader;
                continue;
            }
            let tokens = tokenize(line).map_err(|m| bad(&block_label, m))?;
            if tokens.is_empty() {
                continue;
            }
            let first_is_label = trimmed.starts_with('_');
            match state {
                State::LoopHeader if first_is_label => {
                    let table = block.table.as_mut().expect("LoopHeader implies a table");
                    table.columns.push(tokens[0][1..].to_string());
                }
                State::LoopHeader | State::LoopRows if !first_is_label => {
                    let table = block.table.as_mut().expect("loop state implies a table");
                    if tokens.len() != table.columns.len() {
                        return Err(bad(
                            &format!("{block_label} row {}", table.rows.len() + 1),
                            format!(
                                "has {} values but the loop has {} columns ({}); quote values containing spaces and check for missing or extra values",
                                tokens.len(),
                                table.columns.len(),
                                table.columns.join(", ")
                            ),
                        ));
                    }
                    table.rows.push(tokens);
                    state = State::LoopRows;
                }
                _ => {
                    // `_key value` outside a loop (or after a loop's rows).
                    if !first_is_label {
                        return Err(bad(
                            &block_label,
                            format!("`{trimmed}` is neither a `_key value` pair nor inside a loop_; fix the line"),
                        ));
                    }
                    let key = tokens[0][1..].to_string();
                    let value = match tokens.len() {
                        2 => tokens[1].clone(),
                        1 => {
                            return Err(bad(
                                &format!("{block_label}/_{key}"),
                                "key without a value; write `\"\"` for an empty value".into(),
                            ))
                        }
                        _ => {
                            return Err(bad(
                                &format!("{block_label}/_{key}"),
                                format!(
                                    "{} values after the key; quote a value that contains spaces",
                                    tokens.len() - 1
                                ),
                            ))
                        }
                    };
                    block.pairs.push((key, value));
                    state = State::Block;
                }
            }
        }
        Ok(file)
    }

    /// Read and parse a STAR file.
    pub fn read(path: &Path) -> Result<StarFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        StarFile::parse(&text, path)
    }

    /// Render as STAR text (RELION style: `# version 50001` before each block).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for b in &self.blocks {
            s.push_str("\n# version 50001\n\n");
            s.push_str("data_");
            s.push_str(&b.name);
            s.push_str("\n\n");
            if !b.pairs.is_empty() {
                let w = b.pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                for (k, v) in &b.pairs {
                    s.push_str(&format!("_{k:<w$}  {}\n", quote(v)));
                }
                s.push('\n');
            }
            if let Some(t) = &b.table {
                s.push_str("loop_\n");
                for (i, c) in t.columns.iter().enumerate() {
                    s.push_str(&format!("_{c} #{}\n", i + 1));
                }
                for row in &t.rows {
                    let cells: Vec<String> = row.iter().map(|v| quote(v)).collect();
                    s.push_str(&cells.join(" "));
                    s.push('\n');
                }
                s.push('\n');
            }
        }
        s
    }

    /// Write atomically (temp file + fsync + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_bytes_atomic(path, self.to_text().as_bytes())
    }

    /// The first block named `name` (without `data_`).
    pub fn block(&self, name: &str) -> Option<&StarBlock> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// The first block named `name`, or an error naming the file and the blocks present.
    pub fn require_block(&self, name: &str, path: &Path) -> Result<&StarBlock> {
        self.block(name).ok_or_else(|| {
            let names: Vec<String> = self
                .blocks
                .iter()
                .map(|b| format!("data_{}", b.name))
                .collect();
            Error::bad_input(
                path,
                format!("data_{name}"),
                format!(
                    "block not found (blocks present: {}); is this the right STAR file?",
                    names.join(", ")
                ),
            )
        })
    }
}

/// Quote `v` if it would not read back as the same single token.
fn quote(v: &str) -> String {
    let needs = v.is_empty()
        || v.chars().any(char::is_whitespace)
        || v.starts_with(['_', '#', '\'', '"', '$', ';'])
        || ["data_", "loop_", "save_", "global_", "stop_"]
            .iter()
            .any(|r| v.to_ascii_lowercase().starts_with(r));
    if !needs {
        v.to_string()
    } else if v.contains('"') {
        format!("'{v}'")
    } else {
        format!("\"{v}\"")
    }
}

impl StarBlock {
    /// A block with a name and nothing else.
    pub fn new(name: &str) -> Self {
        StarBlock {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Value of key `key` (without `_`), if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Set (or add) key `key` (without `_`).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.pairs.iter_mut().find(|(k, _)| k == key) {
            Some(p) => p.1 = value,
            None => self.pairs.push((key.to_string(), value)),
        }
    }

    /// The block's table, if any.
    pub fn table(&self) -> Option<&StarTable> {
        self.table.as_ref()
    }

    /// The block's table, or an error naming the file and block.
    pub fn require_table(&self, path: &Path) -> Result<&StarTable> {
        self.table.as_ref().ok_or_else(|| {
            Error::bad_input(
                path,
                format!("data_{}", self.name),
                "block has no loop_ table; is this the right STAR file?",
            )
        })
    }
}

impl StarTable {
    /// An empty table with the given columns (names without `_`).
    pub fn new(columns: &[&str]) -> Self {
        StarTable {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Index of column `name` (without `_`).
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// All values of column `name`, if present.
    pub fn str_column(&self, name: &str) -> Option<Vec<&str>> {
        let c = self.col(name)?;
        Some(self.rows.iter().map(|r| r[c].as_str()).collect())
    }

    /// Column `name` parsed as f64. The error names the file, the block, the column, the
    /// 1-based row and the bad value (or that the column is missing).
    pub fn f64_column(&self, name: &str, path: &Path, block: &str) -> Result<Vec<f64>> {
        let c = self.col(name).ok_or_else(|| {
            Error::bad_input(
                path,
                format!("data_{block}/_{name}"),
                format!(
                    "column missing (columns present: {}); add it or use a file that has it",
                    self.columns.join(", ")
                ),
            )
        })?;
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r[c].trim().parse::<f64>().map_err(|_| {
                    Error::bad_input(
                        path,
                        format!("data_{block}/_{name} row {}", i + 1),
                        format!("`{}` is not a number; fix the value", r[c]),
                    )
                })
            })
            .collect()
    }

    /// Append a row. Rows must have one value per column (checked by a debug assertion;
    /// the writer would otherwise produce a file that does not read back).
    pub fn push_row(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row length != column count");
        self.rows.push(row);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<StarFile> {
        StarFile::parse(text, Path::new("t.star"))
    }

    #[test]
    fn parses_pairs_loops_quotes_and_comments() {
        let text = "# version 50001\r\n\r\ndata_\r\n_rlnA 1.5e-3\r\n_rlnB \"\"\r\n\r\n\r\ndata_x\n\nloop_ \n_rlnC #1 \n_rlnD #2\n\n1 'a b' # trailing comment\n[0,1,1] \"c d\"\n";
        let f = p(text).unwrap();
        assert_eq!(f.blocks.len(), 2);
        assert_eq!(f.blocks[0].name, "");
        assert_eq!(f.blocks[0].get("rlnA"), Some("1.5e-3"));
        assert_eq!(f.blocks[0].get("rlnB"), Some(""));
        let t = f.block("x").unwrap().table().unwrap();
        assert_eq!(t.columns, vec!["rlnC", "rlnD"]);
        assert_eq!(t.rows, vec![vec!["1", "a b"], vec!["[0,1,1]", "c d"]]);
        assert_eq!(t.str_column("rlnD").unwrap(), vec!["a b", "c d"]);
    }

    #[test]
    fn row_count_mismatch_names_row() {
        let e = p("data_p\nloop_\n_a #1\n_b #2\n1 2\n3\n").unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("t.star") && s.contains("data_p row 2") && s.contains("line 6"),
            "{s}"
        );
    }

    #[test]
    fn bad_number_names_file_block_column_row_value() {
        let f = p("data_p\nloop_\n_a #1\n1\n2\nx7\n").unwrap();
        let e = f.blocks[0]
            .table()
            .unwrap()
            .f64_column("a", Path::new("t.star"), "p")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.star") && e.contains("data_p/_a row 3") && e.contains("x7"),
            "{e}"
        );
    }

    #[test]
    fn write_parse_identity_with_awkward_values() {
        let mut t = StarTable::new(&["a", "b", "c"]);
        t.push_row(vec!["".into(), "x y".into(), "_under".into()]);
        t.push_row(vec!["1e-5".into(), "say \"hi\" now".into(), "#hash".into()]);
        t.push_row(vec!["[0,1]".into(), "data_x".into(), "-0.5".into()]);
        let mut b = StarBlock::new("");
        b.set("k", "v w");
        b.set("e", "");
        let f = StarFile {
            blocks: vec![
                b,
                StarBlock {
                    name: "t".into(),
                    pairs: vec![],
                    table: Some(t),
                },
            ],
        };
        let g = p(&f.to_text()).unwrap();
        assert_eq!(f, g);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert!(p("data_a\n_k \"abc\n").is_err());
        assert!(p("_k v\n").is_err());
    }
}
