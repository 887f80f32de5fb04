//! One SIRT iteration as `recon::sirt::sirt_solve` runs it: `A·x`, residual `b − A·x`
//! weighted by `R`, `Aᵀ·(R·res)`, update `x += C·g`; throughput counted as one forward plus
//! one back-projection (2 · tilts·nx·ny·nz voxel updates per iteration).
//! Results: docs/performance.md.
//!
//! Cases (61 tilts, 4 Å): `sep/…` axis along image y (ASTRA's geometry) 512²×128 and
//! 1024²×256; `general/…` axis 85° with shifts, 256²×64 (kept small: the general
//! forward projector is the slow one).

mod common;

use common::{images, projections, quick, VOXEL_A};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lamella::device::{Device, DeviceChoice};
use lamella::recon::backproject::backproject;
use lamella::recon::project::forward_project;
use ndarray::{Array3, Zip};

fn bench(c: &mut Criterion) {
    let mut devices = vec![("cpu", Device::Cpu)];
    if let Ok(d) = Device::select(DeviceChoice::Cuda, 0) {
        devices.push(("cuda", d));
    }
    let mut group = c.benchmark_group("sirt_iteration");
    quick(&mut group);
    let cases = [
        ("sep", 0.0, 512usize, 128usize),
        ("sep", 0.0, 1024, 256),
        ("general", 85.0, 256, 64),
    ];
    for &(kind, axis, n, nz) in &cases {
        let b = images(n);
        let projs = projections(n, axis);
        let shape = (nz, n, n);
        // weights as SIRT uses them (the values do not change the cost)
        let r = Array3::<f32>::from_elem(b.dim(), 1.0 / nz as f32);
        let cw = Array3::<f32>::from_elem(shape, 1.0 / 61.0);
        group.throughput(Throughput::Elements((2 * 61 * nz * n * n) as u64));
        let id = format!("61x{n}x{n}_{n}x{n}x{nz}");
        for (name, dev) in &devices {
            let mut x = Array3::<f32>::from_elem(shape, 0.01);
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/{kind}"), &id),
                &(),
                |bch, _| {
                    bch.iter(|| {
                        let mut res =
                            forward_project(dev, x.view(), &projs, (n, n), VOXEL_A).unwrap();
                        Zip::from(&mut res)
                            .and(&b)
                            .and(&r)
                            .par_for_each(|e, &bv, &w| *e = (bv - *e) * w);
                        let g = backproject(dev, res.view(), &projs, shape, VOXEL_A).unwrap();
                        Zip::from(&mut x)
                            .and(&cw)
                            .and(&g)
                            .par_for_each(|xv, &cv, &gv| *xv += cv * gv);
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
