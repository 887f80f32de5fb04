//! Back-projection throughput (voxel updates per second = tilts·nx·ny·nz / time), the
//! kernel of WBP. Results: docs/performance.md.
//!
//! Cases (61 tilts, 4 Å): `sep/…` tilt axis along image y (ASTRA's geometry, aligned stack:
//! separable fast path), 512² → 512²×128 and 1024² → 1024²×256; `general/…` axis 85° with
//! shifts (general kernel), 128² → 128³ and 512² → 512²×128. CUDA rows when a device is
//! present.

mod common;

use common::{images, projections, quick, VOXEL_A};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lamella::device::{Device, DeviceChoice};
use lamella::recon::backproject::{backproject, backproject_cpu, is_separable};

fn bench(c: &mut Criterion) {
    let cuda = Device::select(DeviceChoice::Cuda, 0).ok();
    let mut group = c.benchmark_group("backproject");
    quick(&mut group);
    let cases = [
        ("sep", 0.0, 512usize, 128usize),
        ("sep", 0.0, 1024, 256),
        ("general", 85.0, 128, 128),
        ("general", 85.0, 512, 128),
    ];
    for &(kind, axis, n, nz) in &cases {
        let imgs = images(n);
        let projs = projections(n, axis);
        let shape = (nz, n, n);
        assert_eq!(
            is_separable(&projs, shape, (n, n), VOXEL_A),
            kind == "sep",
            "bench case {kind}/{n}: unexpected kernel choice"
        );
        group.throughput(Throughput::Elements((61 * nz * n * n) as u64));
        let id = format!("61x{n}x{n}_to_{n}x{n}x{nz}");
        group.bench_with_input(BenchmarkId::new(format!("cpu/{kind}"), &id), &(), |b, _| {
            b.iter(|| backproject_cpu(imgs.view(), &projs, shape, VOXEL_A))
        });
        if let Some(dev) = &cuda {
            group.bench_with_input(
                BenchmarkId::new(format!("cuda/{kind}"), &id),
                &(),
                |b, _| b.iter(|| backproject(dev, imgs.view(), &projs, shape, VOXEL_A).unwrap()),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
