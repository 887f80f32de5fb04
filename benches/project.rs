//! Forward-projection throughput (voxel updates per second = tilts·nx·ny·nz / time), the
//! other half of a SIRT iteration. Results: docs/performance.md.
//!
//! Cases as `benches/wbp.rs`: `sep/…` (axis along image y: separable fast path) 512²×128
//! and 1024²×256 → 61 × n²; `general/…` (axis 85°, shifts) 512²×128 → 61 × 512². CUDA rows
//! when a device is present.

mod common;

use common::{projections, quick, volume, VOXEL_A};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lamella::device::{Device, DeviceChoice};
use lamella::recon::project::{forward_project, forward_project_cpu};

fn bench(c: &mut Criterion) {
    let cuda = Device::select(DeviceChoice::Cuda, 0).ok();
    let mut group = c.benchmark_group("forward_project");
    quick(&mut group);
    let cases = [
        ("sep", 0.0, 512usize, 128usize),
        ("sep", 0.0, 1024, 256),
        ("general", 85.0, 512, 128),
    ];
    for &(kind, axis, n, nz) in &cases {
        let vol = volume(n, nz);
        let projs = projections(n, axis);
        group.throughput(Throughput::Elements((61 * nz * n * n) as u64));
        let id = format!("{n}x{n}x{nz}_to_61x{n}x{n}");
        group.bench_with_input(BenchmarkId::new(format!("cpu/{kind}"), &id), &(), |b, _| {
            b.iter(|| forward_project_cpu(vol.view(), &projs, (n, n), VOXEL_A))
        });
        if let Some(dev) = &cuda {
            group.bench_with_input(
                BenchmarkId::new(format!("cuda/{kind}"), &id),
                &(),
                |b, _| {
                    b.iter(|| forward_project(dev, vol.view(), &projs, (n, n), VOXEL_A).unwrap())
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
