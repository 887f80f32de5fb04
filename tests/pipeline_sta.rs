//! `lamella run` with the `[pick]` and `[sta]` stages on the `tiny` preset (2 series of
//! 160², 10 apoferritins each, 10 Å/px): picking recall against the truth, the merged
//! RELION-5 STAR read by starfile, the STA result against the truth, and `/sta/<job>` in
//! the container read back through lamella.h5's external link by h5py.

mod common;

use common::{python, run_pipeline, run_python};

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
}
