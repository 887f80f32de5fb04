//! Cost of global motion correction of one movie: `motion::series::correct_movie` (forward
//! FFT of every frame, iterative alignment on the cropped spectra, dose-weighted full/even/odd
//! sums) of 10 frames of 1024² px and 20 frames of 2048² px at 1 Å, Poisson counts of a
//! textured specimen (2 e/Å² per frame) drifting 1.5/−1 px per frame, as the peers' movie
//! generator makes them. File I/O is left out (`scripts/peer_motioncorr.sh` times whole
//! program runs against RELION). Results: docs/performance.md.

mod common;

use common::quick;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lamella::core::fourier::{fourier_shift_2d, Fft2};
use lamella::motion::series::correct_movie;
use lamella::motion::{Exposure, MotionParams};
use ndarray::{Array2, Array3, Axis};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};

/// `nf` frames of `n`² px: a smooth random specimen (mean 1, ~30 % contrast) shifted by
/// (1.5, −1) px per frame, Poisson counts at `dose` e/px per frame.
fn movie(n: usize, nf: usize, dose: f64) -> Array3<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let noise = Array2::from_shape_fn((n, n), |_| rng.random::<f32>() - 0.5);
    let mut plan = Fft2::new(n, n);
    let mut spec = plan.forward(noise.view());
    lamella::core::fourier::apply_filter_2d(&mut spec, n, |fy, fx| {
        (-(fy * fy + fx * fx) / (2.0 * 0.03f32 * 0.03)).exp()
    });
    let tex = plan.inverse(spec);
    let sd = tex.std(0.0);
    let spec_img = tex.mapv(|v| 1.0 + 0.3 * v / sd);
    let mut out = Array3::zeros((nf, n, n));
    for (f, mut fr) in out.axis_iter_mut(Axis(0)).enumerate() {
        let s = fourier_shift_2d(spec_img.view(), -(f as f64), 1.5 * f as f64, &mut plan);
        fr.assign(&s.mapv(|v| {
            let lam = (v.max(0.0) as f64 * dose).max(1e-9);
            Poisson::new(lam).map(|p| p.sample(&mut rng)).unwrap_or(0.0) as f32
        }));
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("motion");
    quick(&mut group);
    let params = MotionParams::default();
    for (n, nf) in [(1024usize, 10usize), (2048, 20)] {
        let frames = movie(n, nf, 2.0);
        let ex = Exposure {
            pre_exposure_e_a2: 0.0,
            per_frame_e_a2: 2.0,
            voltage_kv: 300.0,
        };
        group.bench_with_input(
            BenchmarkId::new("correct_movie", format!("{n}x{n}x{nf}")),
            &frames,
            |b, fr| b.iter(|| correct_movie(fr.view(), 1.0, Some(&ex), &params).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
