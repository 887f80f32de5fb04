//! Back-projection throughput (voxel updates per second = tilts·nx·ny·nz / time).
//!
//! Cases: 61 tilts (−60°..60°, 2°) of 512×512 into 512×512×128, and of 128×128 into 128³.
//! CPU always; CUDA too when a device is available. Results: docs/performance.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lamella::core::geometry::TiltSeriesGeometry;
use lamella::device::{Device, DeviceChoice};
use lamella::recon::backproject::{backproject, backproject_cpu};
use ndarray::Array3;
use std::time::Duration;

fn case(n: usize, nz: usize) -> (Array3<f32>, TiltSeriesGeometry, (usize, usize, usize)) {
    let angles: Vec<f64> = (0..61).map(|i| -60.0 + 2.0 * i as f64).collect();
    let mut g = TiltSeriesGeometry::from_angles(n, n, 4.0, &angles, 85.0);
    for (i, t) in g.tilts.iter_mut().enumerate() {
        t.shift_x_a = 6.0 * (i as f64).sin();
        t.shift_y_a = -4.0 * (i as f64).cos();
    }
    let imgs = Array3::from_shape_fn((61, n, n), |(t, y, x)| {
        ((t * 7 + y * 13 + x * 3) % 17) as f32
    });
    (imgs, g, (nz, n, n))
}

fn bench(c: &mut Criterion) {
    let cuda = Device::select(DeviceChoice::Cuda, 0).ok();
    let mut group = c.benchmark_group("backproject");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for &(n, nz) in &[(128usize, 128usize), (512, 128)] {
        let (imgs, g, shape) = case(n, nz);
        let projs = g.projections(1);
        let updates = (61 * shape.0 * shape.1 * shape.2) as u64;
        group.throughput(Throughput::Elements(updates));
        let id = format!("61x{n}x{n}_to_{n}x{n}x{nz}");
        group.bench_with_input(BenchmarkId::new("cpu", &id), &(), |b, _| {
            b.iter(|| backproject_cpu(imgs.view(), &projs, shape, 4.0))
        });
        if let Some(dev) = &cuda {
            group.bench_with_input(BenchmarkId::new("cuda", &id), &(), |b, _| {
                b.iter(|| backproject(dev, imgs.view(), &projs, shape, 4.0).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
