//! The HTML report: one self-contained page (inline CSS, no JavaScript, no external assets)
//! with a summary table and one section per tilt series with its facts and pictures.

use crate::Result;
use std::fmt::Write as _;
use std::path::Path;

/// One tilt series in the HTML report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesReport {
    /// Series name (section heading).
    pub name: String,
    /// `(label, value)` facts shown as a two-column table.
    pub facts: Vec<(String, String)>,
    /// `(caption, PNG path relative to the report page)`, shown side by side.
    pub images: Vec<(String, String)>,
}

/// Escape text for HTML element content and double- or single-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:0.5em 0}\
th,td{border:1px solid #ccc;padding:0.2em 0.6em;text-align:left;font-variant-numeric:tabular-nums}\
th{background:#f0f0f0}\
.images{display:flex;flex-wrap:wrap;gap:1em}\
figure{margin:0}\
figure img{width:256px;height:auto;image-rendering:pixelated;border:1px solid #999;display:block}\
figcaption{font-size:0.85em;max-width:256px}";

/// Render the report page as a string (see [`write_html`]).
pub fn render_html(
    title: &str,
    table_header: &[String],
    table_rows: &[Vec<String>],
    series: &[SeriesReport],
) -> String {
    let mut h = String::new();
    let t = escape(title);
    // `write!` into a String cannot fail.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{t}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{t}</h1>\n"
    );
    if !table_header.is_empty() || !table_rows.is_empty() {
        h.push_str("<table class=\"summary\">\n");
        if !table_header.is_empty() {
            h.push_str("<tr>");
            for c in table_header {
                let _ = write!(h, "<th>{}</th>", escape(c));
            }
            h.push_str("</tr>\n");
        }
        for row in table_rows {
            h.push_str("<tr>");
            for c in row {
                let _ = write!(h, "<td>{}</td>", escape(c));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    for s in series {
        let _ = writeln!(h, "<section>\n<h2>{}</h2>", escape(&s.name));
        if !s.facts.is_empty() {
            h.push_str("<table class=\"facts\">\n");
            for (label, value) in &s.facts {
                let _ = writeln!(
                    h,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(label),
                    escape(value)
                );
            }
            h.push_str("</table>\n");
        }
        if !s.images.is_empty() {
            h.push_str("<div class=\"images\">\n");
            for (caption, src) in &s.images {
                let c = escape(caption);
                let _ = writeln!(
                    h,
                    "<figure><img src=\"{}\" alt=\"{c}\"><figcaption>{c}</figcaption></figure>",
                    escape(src)
                );
            }
            h.push_str("</div>\n");
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// Write the HTML report to `path` atomically: one self-contained file (inline CSS, no JS, no
/// external assets; all text escaped) with `title`, a summary table (`table_header` row, then
/// `table_rows`, all strings) and one section per series with its facts table and its images
/// side by side (256 px wide, `image-rendering: pixelated`). Image paths are relative to the
/// page; every PNG found there is embedded as a `data:image/png;base64` URI, so the page alone
/// can be copied off the cluster and opened anywhere (the PNG files stay beside it). A
/// missing image keeps its relative path (the browser shows the caption).
pub fn write_html(
    path: &Path,
    title: &str,
    table_header: &[String],
    table_rows: &[Vec<String>],
    series: &[SeriesReport],
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let embedded: Vec<SeriesReport> = series
        .iter()
        .map(|s| SeriesReport {
            images: s
                .images
                .iter()
                .map(|(caption, src)| (caption.clone(), embed_png(dir, src)))
                .collect(),
            ..s.clone()
        })
        .collect();
    let page = render_html(title, table_header, table_rows, &embedded);
    crate::io::atomic::write_bytes_atomic(path, page.as_bytes())
}

/// `src` (relative to `dir`) as a `data:` URI when it is a readable `.png`, else unchanged.
fn embed_png(dir: &Path, src: &str) -> String {
    if !src.ends_with(".png") || src.starts_with("data:") {
        return src.to_string();
    }
    match std::fs::read(dir.join(src)) {
        Ok(bytes) => format!("data:image/png;base64,{}", super::base64::encode(&bytes)),
        Err(_) => src.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn escapes_all_text_and_lists_every_image() {
        let series = vec![
            SeriesReport {
                name: "TS_<01>&\"x\"".into(),
                facts: vec![("pixel <Å>".into(), "1.35 & more".into())],
                images: vec![
                    ("XY bin 4".into(), "TS_01_bin4_xy.png".into()),
                    ("XZ bin 4".into(), "TS_01_bin4_xz.png".into()),
                ],
            },
            SeriesReport {
                name: "TS_02".into(),
                facts: vec![],
                images: vec![("truth <xy>".into(), "truth/TS_02_xy.png".into())],
            },
        ];
        let page = render_html(
            "Run <script>alert(1)</script>",
            &strs(&["series", "a<b"]),
            &[strs(&["TS_01", "0.93 & up"])],
            &series,
        );
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<h2>TS_&lt;01&gt;&amp;&quot;x&quot;</h2>"));
        assert!(!page.contains("TS_<01>"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("Run &lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("<th>a&lt;b</th>"));
        assert!(page.contains("<td>0.93 &amp; up</td>"));
        assert!(page.contains("<th>pixel &lt;Å&gt;</th><td>1.35 &amp; more</td>"));
        assert!(page.contains("<figcaption>truth &lt;xy&gt;</figcaption>"));
        for s in &series {
            for (_, src) in &s.images {
                assert!(page.contains(&format!("src=\"{src}\"")), "{src}");
            }
        }
        assert!(page.contains("image-rendering:pixelated"));
        // Self-contained: no scripts, no external links.
        assert!(!page.contains("<script") && !page.contains("http"));
        assert!(!page.contains("<link"));
    }

    #[test]
    fn write_html_embeds_the_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let png = crate::report::png::encode_gray8(2, 2, &[0, 80, 160, 255]);
        std::fs::write(dir.path().join("a.png"), &png).unwrap();
        let series = vec![SeriesReport {
            name: "s".into(),
            facts: vec![],
            images: vec![
                ("a".into(), "a.png".into()),
                ("b".into(), "gone.png".into()),
            ],
        }];
        let p = dir.path().join("index.html");
        write_html(&p, "t", &[], &[], &series).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        let uri = format!(
            "data:image/png;base64,{}",
            crate::report::base64::encode(&png)
        );
        assert!(s.contains(&format!("src=\"{uri}\"")));
        assert!(s.contains("src=\"gone.png\""));
    }

    #[test]
    fn write_html_writes_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report/index.html");
        write_html(&p, "t & t", &[], &[], &[]).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains("<title>t &amp; t</title>"));
        assert!(!s.contains("<table"));
    }
}
