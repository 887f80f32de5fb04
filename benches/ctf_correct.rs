//! Cost of CTF correction in reconstruction: `recon::plan::reconstruct` (WBP, ramp, bin 1,
//! read from memory, MRC written to a temporary directory) of 61 tilts of 512² px at 4 Å
//! into 512² × 128 (512 Å: 2 Z slabs for `3d` at ±60°) with `ctf_correction` none, phaseflip
//! and 3d, and one strip-corrected 1024² image at 60° tilt. Results: docs/performance.md.

mod common;

use common::{images, quick, VOXEL_A};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lamella::core::geometry::TiltSeriesGeometry;
use lamella::ctf::correct::{defocus_plane, plane_ctf, Corrector, Filter as CtfFilter};
use lamella::device::Device;
use lamella::recon::ctfcorr::{tolerance_a, CtfCorrection};
use lamella::recon::filter::Filter;
use lamella::recon::plan::{reconstruct, Method, ReconstructSpec};
use ndarray::Array2;

fn geometry(n: usize) -> TiltSeriesGeometry {
    let angles: Vec<f64> = (0..61).map(|i| -60.0 + 2.0 * i as f64).collect();
    let mut g = TiltSeriesGeometry::from_angles(n, n, VOXEL_A, &angles, 0.0);
    for t in g.tilts.iter_mut() {
        t.defocus_u_a = 30100.0;
        t.defocus_v_a = 29900.0;
    }
    g
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ctf_correct");
    quick(&mut group);
    let n = 512;
    let g = geometry(n);
    let stack = images(n).mapv(|v| v + 10.0);
    let dir = tempfile::tempdir().unwrap();
    for mode in [
        CtfCorrection::None,
        CtfCorrection::Phaseflip,
        CtfCorrection::ThreeD,
    ] {
        let spec = ReconstructSpec {
            method: Method::Wbp {
                filter: Filter::Ramp,
            },
            binnings: vec![1],
            thickness_a: 128.0 * VOXEL_A,
            lowpass: None,
            invert_contrast: true,
            max_memory_bytes: Some(8 << 30),
            checkpoint: None,
            ctf_correction: mode,
            wiener_snr: 3.0,
        };
        let out = vec![dir.path().join("t.mrc")];
        group.bench_with_input(
            BenchmarkId::new(format!("wbp/{mode:?}"), "61x512x512_to_512x512x128"),
            &(),
            |b, _| b.iter(|| reconstruct(stack.view(), &g, &spec, &Device::Cpu, &out).unwrap()),
        );
    }
    let g = geometry(1024);
    let i = 0; // −60°
    let plane = defocus_plane(&g, i, 1, 0.0);
    let ctf = plane_ctf(&g, i, &plane);
    let tol = tolerance_a(&g, 1);
    let mut corr = Corrector::new(1024, 1024, VOXEL_A);
    let img = Array2::from_shape_fn((1024, 1024), |(y, x)| ((y * 13 + x * 3) % 17) as f32);
    group.bench_function("phaseflip_strips/1024x1024_at_60deg", |b| {
        b.iter(|| {
            let mut a = img.clone();
            corr.correct(a.view_mut(), &ctf, &plane, CtfFilter::PhaseFlip, 0.0, tol)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
