//! lamella's geometry against an independent simulator (shared/data/sim-independent,
//! made with cryoJAX outside lamella): a weighted back-projection of its tilt series with
//! the true angles and shifts must show the gold beads as dark blobs at their true 3D
//! positions and nothing at the z-mirrored positions. lamella's own simulator and
//! reconstructor could agree with each other and both be mirrored; this test cannot.

mod common;

use lamella::core::geometry::TiltSeriesGeometry;
use lamella::device::Device;
use lamella::pipeline::metrics::band_pass;
use lamella::recon::filter::Filter;
use lamella::recon::wbp::{wbp, WbpParams};

/// Rows of a CSV file as maps column -> value.
fn csv(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let head: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            head.iter()
                .cloned()
                .zip(l.split(',').map(|s| s.trim().to_string()))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, k: &str) -> f64 {
    row[k]
        .parse()
        .unwrap_or_else(|_| panic!("column {k}: {:?}", row[k]))
}

#[test]
fn gold_beads_reconstruct_at_true_positions_not_mirrored() {
    let dir = common::shared_data().join("sim-independent");
    let stack = lamella::io::mrc::read(&dir.join("tilt_series.mrc")).unwrap();
    let (nt, ny, nx) = stack.data.dim();
    let pixel = 6.0;
    let tilts = csv(&dir.join("tilts.csv"));
    assert_eq!(tilts.len(), nt);
    let angles: Vec<f64> = tilts.iter().map(|r| num(r, "tilt_true_deg")).collect();
    let mut geom = TiltSeriesGeometry::from_angles(nx, ny, pixel, &angles, 0.0);
    for (t, r) in geom.tilts.iter_mut().zip(&tilts) {
        t.shift_x_a = num(r, "shift_x_A");
        t.shift_y_a = num(r, "shift_y_A");
    }
    let bin = 2usize;
    let voxel = pixel * bin as f64;
    let nz = (900.0 * 1.2 / voxel) as usize;
    let params = WbpParams {
        bin,
        thickness_px: nz,
        filter: Filter::Ramp,
        lowpass: None,
        invert_contrast: false,
    };
    let vol = wbp(stack.data.view(), &geom, &params, &Device::Cpu).unwrap();
    let (vz, vy, vx) = vol.dim();
    let bp = band_pass(&vol, 1.0, 4.0);
    let mean = bp.mean().unwrap() as f64;
    let sd = (bp.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / bp.len() as f64).sqrt();
    // minimum (darkest) band-passed value in a 3×3×3 neighbourhood, in sd units
    let darkest = |p: [f64; 3]| -> Option<f64> {
        let ix = (p[0] / voxel).round() as isize + (vx / 2) as isize;
        let iy = (p[1] / voxel).round() as isize + (vy / 2) as isize;
        let iz = (p[2] / voxel).round() as isize + (vz / 2) as isize;
        let inside = |i: isize, n: usize| i >= 4 && i < n as isize - 4;
        if !(inside(ix, vx) && inside(iy, vy) && inside(iz, vz)) {
            return None;
        }
        let mut m = f64::INFINITY;
        for dz in -1..=1 {
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let v = bp[[(iz + dz) as usize, (iy + dy) as usize, (ix + dx) as usize]];
                    m = m.min((v as f64 - mean) / sd);
                }
            }
        }
        Some(m)
    };
    let beads = csv(&dir.join("gold.csv"));
    let mut checked = 0;
    for b in &beads {
        let p = [num(b, "x_A"), num(b, "y_A"), num(b, "z_A")];
        let Some(at_true) = darkest(p) else { continue };
        let at_mirror = darkest([p[0], p[1], -p[2]]).unwrap();
        eprintln!(
            "bead {}: {:+.1} sd at the true position, {:+.1} sd at the z-mirror",
            b["bead"], at_true, at_mirror
        );
        assert!(
            at_true < -8.0,
            "bead {} not dark at its true position: {at_true:.1} sd",
            b["bead"]
        );
        // measured: -12 to -19 sd at the true positions, -0.4 to -1.1 sd at the mirrors
        assert!(
            at_mirror > -3.0,
            "bead {} as dark at the mirrored position ({at_mirror:.1}) as at the true one ({at_true:.1})",
            b["bead"]
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "only {checked} beads inside the reconstructed field"
    );
}
