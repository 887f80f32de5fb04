//! Alignment benches: fiducial-free and gold-bead alignment of one simulated 256² series of
//! 41 tilts (8 Å/px, axis 85° started at 87°, shifts σ 15 px, angle errors σ 0.5°, 120 e/Å²,
//! 20 gold beads of 100 Å). The 61-tilt 1024² speed target of issue 3 is measured with
//! `cargo run --release --example align_bench -- 1024 61 120` (docs/alignment.md).

use criterion::{criterion_group, criterion_main, Criterion};
use lamella::align::{beads, fiducial_free};
use lamella::core::geometry::TiltSeriesGeometry;
use lamella::sim::{preset, simulate_series, Preset, SimulatedSeries};
use std::path::PathBuf;
use std::time::Duration;

/// The simulated series and the nominal starting geometry (axis 2° off, no shifts).
fn series() -> (SimulatedSeries, TiltSeriesGeometry) {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let mut p = preset(Preset::Demo, &shared).remove(0);
    p.name = "align_bench".into();
    p.axis_deg = 85.0;
    p.shift_sigma_a = 15.0 * p.pixel_a;
    p.angle_error_sigma_deg = 0.5;
    p.gold_beads = 20;
    let s = simulate_series(&p, 5).expect("simulate the bench series");
    let mut g = s.geometry.clone();
    for (t, &a) in g.tilts.iter_mut().zip(&s.nominal_tilts_deg) {
        t.tilt_deg = a;
        t.axis_deg = 87.0;
        t.shift_x_a = 0.0;
        t.shift_y_a = 0.0;
    }
    (s, g)
}

fn bench(c: &mut Criterion) {
    let (s, g) = series();
    let mut group = c.benchmark_group("align_256x256x41");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("fiducial_free", |b| {
        b.iter(|| fiducial_free::align(s.stack.view(), &g, &Default::default()).expect("align"))
    });
    group.bench_function("beads", |b| {
        b.iter(|| beads::align(s.stack.view(), &g, &Default::default()).expect("align"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
