//! Cost of tilt-aware CTF estimation of one 4k × 4k tilt image (issue 4 target: < 1 s on 2
//! cores): `ctf::estimate_series` on a one-tilt series at 30° (axis 85°, 1 Å/px, 300 kV),
//! tile 256, band (30, 5) Å, defocus 0.5–7 µm; the image is the simulator's ice texture
//! (S = 0.1, 1500 Å) through its image formation at 3 e/Å² with Poisson noise. The 30° tilt
//! takes the handedness vote (both hands fitted). Results: docs/performance.md, docs/ctf.md.

mod common;

use common::quick;
use criterion::{criterion_group, criterion_main, Criterion};
use lamella::core::fourier::Fft2;
use lamella::core::geometry::TiltSeriesGeometry;
use lamella::ctf::{estimate_series, CtfSearch};
use lamella::sim::image::{add_ice_texture, expected_counts, ice_texture_sigma, poisson_image};
use ndarray::{Array2, Array3, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn bench(c: &mut Criterion) {
    let n = 4096;
    let px = 1.0;
    let mut g = TiltSeriesGeometry::from_angles(n, n, px, &[30.0], 85.0);
    let t = &mut g.tilts[0];
    t.defocus_u_a = 30250.0;
    t.defocus_v_a = 29750.0;
    t.astig_angle_deg = 40.0;
    t.dose_e_a2 = 3.0;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut proj = Array2::<f32>::zeros((n, n));
    add_ice_texture(
        &mut proj,
        ice_texture_sigma(&g.tilts[0], 1500.0, px, 0.1),
        &mut rng,
    );
    let mut plan = Fft2::new(n, n);
    let mean = expected_counts(&proj, &g, 0, &mut plan);
    let mut stack = Array3::<f32>::zeros((1, n, n));
    stack
        .index_axis_mut(Axis(0), 0)
        .assign(&poisson_image(&mean, &mut rng));
    let mut s = CtfSearch::new(px, 300.0, 2.7, 0.07);
    s.resolution_band_a = (30.0, 5.0);
    let mut group = c.benchmark_group("ctf_estimate");
    quick(&mut group);
    group.bench_function("tilt_4096_at_30deg", |b| {
        b.iter(|| estimate_series(stack.view(), &g, &s).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
