//! `lamella run` with the `[pick]` and `[sta]` stages on the `tiny` preset (2 series of
//! 160², 10 apoferritins each, 10 Å/px): picking recall against the truth, the merged
//! RELION-5 STAR read by starfile, the STA result against the truth, and `/sta/<job>` in
//! the container read back through lamella.h5's external link by h5py.

mod common;

use common::{chromium, lamella, ok, python, run_pipeline, run_python, screenshot};

const CONFIG: &str = r#"out = "out"
[simulate]
preset = "tiny"
seed = 3
size = 160
particles = 10
[reconstruct]
binnings = [1]
device = "cpu"
[pick]
angular_step_deg = 30
[sta]
box = 24
symmetry = "O"
iterations = 2
"#;

#[test]
fn pick_and_sta_stages_recover_particles_and_structure() {
    let dir = tempfile::tempdir().unwrap();
    let (text, out, s) = run_pipeline(dir.path(), CONFIG, "lamella run [pick] [sta]");
    eprintln!("{text}");
    for ser in s["series"].as_array().unwrap() {
        let acc = &ser["picking"]["accuracy"];
        let recall = acc["recall"].as_f64().unwrap();
        let precision = acc["precision"].as_f64().unwrap();
        eprintln!("{}: {acc}", ser["name"]);
        assert!(recall >= 0.9, "{}: recall {recall}", ser["name"]);
        // beads and the vesicle: mask shell + score gap (1.0 / 1.0 measured 2026-12-08)
        assert!(precision >= 0.9, "{}: precision {precision}", ser["name"]);
    }
    let st = &s["sta"];
    let res = st["resolution_a"][0].as_f64().unwrap();
    let t = &st["truth"];
    let fsc05 = t["fsc_truth_05_a"][0].as_f64().unwrap();
    let pos = t["median_position_a"].as_f64().unwrap();
    eprintln!("sta: resolution {res:.1} Å, truth {t}");
    // Nyquist 20 Å; 0.8 × Nyquist = 25 Å (23.0 Å measured 2026-12-08).
    assert!(res <= 25.0, "gold-standard resolution {res:.1} Å");
    assert!(fsc05 <= 32.0, "FSC vs truth 0.5 at {fsc05:.1} Å");
    assert!(pos < 5.0, "median position error {pos:.1} Å");
    assert!(t["matched"].as_u64().unwrap() >= 18);
    let Some(py) = python("pipeline_sta") else {
        return;
    };
    let code = r#"
import sys, h5py, starfile
out = sys.argv[1]
p = starfile.read(out + "/relion/particles_picked.star")["particles"]
assert len(p) >= 20, len(p)
with h5py.File(out + "/lamella.h5", "r") as f:
    g = f["/sta/refine"]
    assert g["iter_01/half1"].shape == (24, 24, 24)
    assert g["iter_02/fsc"].shape[1] == 5
    assert g["map"].shape == (24, 24, 24) and g["mask"].shape == (24, 24, 24)
    assert len(g["particles"]) == len(p), (len(g["particles"]), len(p))
    assert bool(g.attrs["complete"])
    assert f["/tilt_series/tiny_01/picking/scores"].ndim == 3
print("ok", len(p))
"#;
    let o = run_python(&py, code, &[out.to_str().unwrap()]);
    assert!(o.contains("ok"), "{o}");
    report_in_a_browser(&out, &py);
}

/// `lamella report OUT` rewrites the page; it is one self-contained file (every picture a
/// `data:` URI); headless Chromium loads it with no console error or failed resource and its
/// screenshot shows the pictures (not blank: many grey levels, much non-white area).
fn report_in_a_browser(out: &std::path::Path, py: &std::path::Path) {
    let page = out.join("report/index.html");
    std::fs::remove_file(&page).unwrap();
    let printed = ok(
        lamella()
            .args(["report", out.to_str().unwrap()])
            .output()
            .unwrap(),
        "lamella report",
    );
    assert_eq!(printed.trim(), page.to_str().unwrap());
    let html = std::fs::read_to_string(&page).unwrap();
    let srcs: Vec<&str> = html.split("src=\"").skip(1).collect();
    assert!(srcs.len() >= 8, "{} pictures", srcs.len());
    for s in &srcs {
        assert!(
            s.starts_with("data:image/png;base64,"),
            "not embedded: {}",
            &s[..40.min(s.len())]
        );
    }
    for section in ["tiny_01", "subtomogram averaging: refine", "load balance"] {
        assert!(html.contains(section), "no {section} section");
    }
    // the page alone, away from its PNG files
    let lone = out.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(&page, lone.join("index.html")).unwrap();
    let Some(browser) = chromium("pipeline_sta report") else {
        return;
    };
    let shot = out.join("shot.png");
    let log = screenshot(&browser, &lone.join("index.html"), &shot, (1280, 4000));
    for bad in ["CONSOLE", "Failed to load resource", "Uncaught", "ERR_"] {
        assert!(!log.contains(bad), "browser log has {bad}:\n{log}");
    }
    let code = r#"
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("L")
h = im.histogram()
n = sum(h)
nonwhite = 1 - h[255] / n
levels = sum(1 for c in h if c > 20)
print(f"nonwhite {nonwhite:.3f} levels {levels}")
assert nonwhite > 0.1 and levels > 100, (nonwhite, levels)
"#;
    let o = run_python(py, code, &[shot.to_str().unwrap()]);
    eprintln!("report screenshot: {}", o.trim());
}
