//! Simulate one tilt series and align it without fiducials, printing the errors against the
//! truth and the wall time (docs/alignment.md).
//!
//! ```text
//! cargo run --release --example align_bench -- [size] [tilts] [total dose e/Å²] [params TOML]
//! cargo run --release --example align_bench -- 1024 61 120        # the speed target
//! ```
//! `size` px (square, pixel 8·256/size Å so the field stays 2048 Å), `tilts` over −60…60°,
//! shifts σ 15 px, tilt axis 85° started at 87°, angle errors σ 0.5°, Poisson noise.
//! The optional TOML string overrides fields of `FiducialFreeParams`.

use lamella::align::evaluate::alignment_error;
use lamella::align::fiducial_free::{align, FiducialFreeParams};
use lamella::core::geometry::{apply, TiltSeriesGeometry};
use lamella::sim::{preset, simulate_series, Preset};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(256);
    let tilts: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(41);
    let dose: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(120.0);
    let params: FiducialFreeParams = args
        .get(3)
        .map(|t| toml::from_str(t).expect("params TOML"))
        .unwrap_or_default();
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let mut p = preset(Preset::Demo, &shared).remove(0);
    p.name = format!("bench_{size}");
    p.nx = size;
    p.ny = size;
    p.pixel_a = 8.0 * 256.0 / size as f64;
    p.tilt_step_deg = 120.0 / (tilts.max(2) - 1) as f64;
    p.axis_deg = 85.0;
    p.shift_sigma_a = 15.0 * p.pixel_a;
    // ALIGN_BENCH_ANGLE_SIGMA / ALIGN_BENCH_SEED / ALIGN_BENCH_AXIS0 override the tilt-angle
    // errors, the seed and the starting axis
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    p.angle_error_sigma_deg = env("ALIGN_BENCH_ANGLE_SIGMA").unwrap_or(0.5);
    let seed = env("ALIGN_BENCH_SEED").map_or(5, |v| v as u64);
    p.noise = env("ALIGN_BENCH_NOISE").is_none_or(|v| v != 0.0);
    p.total_dose_e_a2 = dose;
    // ALIGN_BENCH_TINY=1: the `tiny_02` preset series as it is (96², sparse), seed 11 as the
    // pipeline tests use
    if env("ALIGN_BENCH_TINY").is_some() {
        p = preset(Preset::Tiny, &shared).remove(1);
    }
    let t = Instant::now();
    let s = simulate_series(&p, seed).expect("simulate");
    let size = s.geometry.nx;
    eprintln!(
        "simulated {}×{}×{} in {:.1} s",
        s.stack.dim().0,
        size,
        size,
        t.elapsed().as_secs_f64()
    );
    let init = TiltSeriesGeometry::from_angles(
        size,
        size,
        p.pixel_a,
        &s.nominal_tilts_deg,
        env("ALIGN_BENCH_AXIS0").unwrap_or(87.0),
    );
    let t = Instant::now();
    let rep = align(s.stack.view(), &init, &params).expect("align");
    let secs = t.elapsed().as_secs_f64();
    for l in &rep.log {
        eprintln!("{l}");
    }
    let e = alignment_error(&rep.geometry, &s.geometry, p.thickness_a).expect("compare");
    // per-tilt image error of the tomogram centre after the removed translation, px
    for (i, (a, b)) in rep.geometry.tilts.iter().zip(&s.geometry.tilts).enumerate() {
        let q = apply(&a.rotation(), e.translation_a);
        let ex = (q[0] + a.shift_x_a - b.shift_x_a) / p.pixel_a;
        let ey = (q[1] + a.shift_y_a - b.shift_y_a) / p.pixel_a;
        eprintln!(
            "tilt {i:2} {:6.1}°: true shift ({:6.1}, {:6.1}) px, error ({ex:6.2}, {ey:6.2}) px, \
             residual {:.2} px, angle error {:+.2}°",
            b.tilt_deg,
            b.shift_x_a / p.pixel_a,
            b.shift_y_a / p.pixel_a,
            rep.tilts[i].residual_px,
            a.tilt_deg - b.tilt_deg
        );
    }
    println!(
        "size {size} tilts {} dose {dose}: align {secs:.1} s (threads {}), RMS shift error \
         {:.3} px (max {:.3}), axis error {:+.3}°, tilt offset {:+.3}°, reported residual \
         {:.3} px",
        s.stack.dim().0,
        rayon::current_num_threads(),
        e.rms_shift_px,
        e.max_shift_px,
        e.axis_error_deg,
        e.tilt_offset_deg,
        rep.rms_residual_px
    );
}
