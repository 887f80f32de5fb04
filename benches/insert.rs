//! Fourier insertion of the 40 WarpTools ribosome particles (2D tilt stacks, 1430 tilt
//! images of 32², 12 Å, pad 2): `accumulate` (reading the 40 float16 stacks, FFT, CTF and
//! dose weights, trilinear splat) and `finish` (Wiener division, 64³ inverse FFT, crop,
//! gridding correction). Particles/s = 40 / the accumulate time. RELION 3.1's
//! `relion_reconstruct --ctf` on the same images: tests/sta_real_warptools.rs and
//! docs/sta.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lamella::sta::particles2d::{accumulate, read_stack_set, InsertOptions};
use std::path::PathBuf;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let star = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../shared/data/real/warptools-ribosome-particles/warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star",
    );
    let set = read_stack_set(&star, None).expect("read the WarpTools particle set");
    let opts = InsertOptions::default();
    let mut group = c.benchmark_group("insert_warptools_40x32");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(set.particles.len() as u64));
    group.bench_function("accumulate", |b| {
        b.iter(|| accumulate(&set, &opts).expect("accumulate"))
    });
    let bare = InsertOptions {
        ctf: false,
        dose: false,
        ..opts
    };
    group.bench_function("accumulate_no_ctf_no_dose", |b| {
        b.iter(|| accumulate(&set, &bare).expect("accumulate"))
    });
    group.bench_function("read_stacks", |b| {
        b.iter(|| {
            (0..set.particles.len())
                .map(|p| set.read_stack(p).expect("read").len())
                .sum::<usize>()
        })
    });
    let rec = accumulate(&set, &opts).expect("accumulate");
    let plan = rec.plan();
    group.throughput(Throughput::Elements(1));
    group.bench_function("finish", |b| b.iter(|| rec.finish_with(&plan, opts.wiener)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
