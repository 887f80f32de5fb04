//! One subtomogram-averaging refinement iteration on 1 rank (`LocalComm`): particles per
//! second of [`iterate`] (align every particle locally against its half's reference,
//! re-extract and sum in Fourier space, reconstruct, symmetrise, gold-standard FSC).
//!
//! 20 apoferritins simulated in a 160 × 160 × 50 tomogram (10 Å/px), box 24, O symmetry, the
//! settings of `tests/sta_refine.rs` (local ±12° at 4°: 123 rotations per particle, shifts
//! ≤ 30 Å) ([`common::sta_problem`]). Every sample refines the same initial state (the
//! 24³ reference low-passed to 40 Å). Rank scaling (mpirun, 1–3 ranks):
//! `scripts/sta_scaling.sh` and `examples/sta_scaling.rs`; figures in docs/performance.md.

mod common;

use common::{quick, sta_problem};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use lamella::comm::LocalComm;
use lamella::sta::refine::{initial_state, iterate};

fn bench(c: &mut Criterion) {
    let p = sta_problem(160, 20);
    let count = p.particles.len();
    let state = initial_state(
        &LocalComm,
        &p.tomograms,
        p.particles.clone(),
        &p.references,
        1,
        &p.params,
    )
    .expect("initial state");
    let mut group = c.benchmark_group(format!("sta_iteration_{count}p_box24"));
    quick(&mut group);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("iterate", |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| {
                iterate(&LocalComm, &p.tomograms, &mut s, &p.params).expect("iterate");
                s
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
