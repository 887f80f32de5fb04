//! Template matching on the CPU (`LocalComm`): rotations per second of the FLCF search.
//!
//! - `pick_sim_128x128x64`: a simulated tomogram (`tiny` preset, 128 × 128 × 64 voxels of
//!   10 Å, 12 apoferritins, WBP) searched with the 6z6u template at 10 Å (its default box).
//!   `pick_tomogram_60deg` is the whole of [`pick_tomogram`] at a 60° step (69 rotations:
//!   per-tomogram set-up, search, threshold, peaks), `score_rotation` one rotation of the
//!   search (rotate + weight the template, one forward and one inverse FFT of the tomogram
//!   grid, normalise).
//! - `pick_pytom_462x478x250_t34`: pytom-match-pick's published geometry (462 × 478 × 250
//!   tomogram, 34³ template; 37 rotations/s on a GTX 1080 Ti): a deterministic textured
//!   tomogram, 6z6u at 5 Å in a 34³ box weighted by the CTF, dose and wedge of a
//!   −60…60°/3° series. A full search is minutes here, so one rotation of the search is
//!   timed ([`Matcher::score_rotation`], the work every rotation repeats) and, separately,
//!   [`search`] over 3 rotations (adds the best-score/index update per rotation and the
//!   allocation of the two result maps that a search does once). The per-tomogram set-up
//!   ([`Matcher::new`]: tomogram FFTs, local σ) is printed once. With a GPU,
//!   `cuda/search_30_rotations` is [`search_on`] the CUDA device over 30 rotations (with its
//!   per-search set-up: cuFFT plans, uploads). `score_rotation_ny480`:
//!   the same on a 462 × 480 × 250 grid (478 = 2·239 makes the y FFT prime-length; 480 is
//!   smooth), to show what padding the grid would gain.
//!
//! Throughput is in rotations (criterion's "elements"); docs/performance.md has the figures.

mod common;

use common::{quick, shared_data, simulated_tomogram};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use lamella::comm::LocalComm;
use lamella::core::geometry::TiltSeriesGeometry;
use lamella::core::so3::uniform_rotations;
use lamella::device::{Device, DeviceChoice};
use lamella::pick::flcf::{search, search_on, Matcher};
use lamella::pick::template::{tomogram_weight, Template};
use lamella::pick::{pick_tomogram, PickParams};
use lamella::sim::Structure;
use lamella::sta::mask::soft_sphere;
use ndarray::Array3;
use std::time::{Duration, Instant};

fn small(c: &mut Criterion) {
    let sim = simulated_tomogram(128, 640.0, 12, 7);
    let template = Template::from_structure(&sim.structure, sim.pixel_a, None).expect("template");
    let params = PickParams {
        angular_step_deg: 60.0,
        ..Default::default()
    };
    let rotations = uniform_rotations(params.angular_step_deg);
    eprintln!(
        "pick small: tomogram {:?}, template {}³, {} rotations at {}°",
        sim.tomogram.dim(),
        template.size(),
        rotations.len(),
        params.angular_step_deg
    );
    let mut group = c.benchmark_group("pick_sim_128x128x64");
    quick(&mut group);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(rotations.len() as u64));
    group.bench_function("pick_tomogram_60deg", |b| {
        b.iter(|| {
            pick_tomogram(
                sim.tomogram.view(),
                sim.pixel_a,
                Some(&sim.geometry),
                &template,
                &params,
                None,
                &LocalComm,
                &Device::Cpu,
            )
            .expect("pick")
        })
    });
    let n = template.size();
    let mask = soft_sphere(
        n,
        (template.radius_a / sim.pixel_a).min(n as f64 / 2.0 - 1.0),
        0.0,
    );
    let weight = tomogram_weight(&sim.geometry, [0.0; 3], &params.weight, n, sim.pixel_a);
    let mut matcher = Matcher::new(sim.tomogram.view(), &template, &mask, weight).expect("matcher");
    group.throughput(Throughput::Elements(1));
    let mut k = 0;
    group.bench_function("score_rotation", |b| {
        b.iter(|| {
            matcher.score_rotation(&rotations[k % rotations.len()]);
            k += 1;
        })
    });
    group.finish();
}

/// A [`Matcher`] for a deterministic textured `(nz, ny, nx)` tomogram and `template`
/// (pixel `pixel_a`), weighted for a −60…60°/3° series; prints the set-up time.
fn textured_matcher(shape: (usize, usize, usize), template: &Template, pixel_a: f64) -> Matcher {
    let (nz, ny, nx) = shape;
    let tomogram = Array3::from_shape_fn(shape, |(z, y, x)| {
        ((z * 5 + y * 11 + x * 3) % 13) as f32 + ((x * y + z) % 7) as f32 * 0.3
    });
    let n = template.size();
    let angles: Vec<f64> = (0..41).map(|i| -60.0 + 3.0 * i as f64).collect();
    let geom = TiltSeriesGeometry::from_angles(nx, ny, pixel_a, &angles, 85.0);
    let params = PickParams::default();
    let mask = soft_sphere(
        n,
        (template.radius_a / pixel_a).min(n as f64 / 2.0 - 1.0),
        0.0,
    );
    let weight = tomogram_weight(&geom, [0.0; 3], &params.weight, n, pixel_a);
    let t = Instant::now();
    let matcher = Matcher::new(tomogram.view(), template, &mask, weight).expect("matcher");
    eprintln!(
        "pick: {nx}×{ny}×{nz} tomogram, {n}³ template (radius {:.0} Å at {pixel_a} Å): \
         set-up (Matcher::new) {:.2} s",
        template.radius_a,
        t.elapsed().as_secs_f64()
    );
    matcher
}

fn pytom_geometry(c: &mut Criterion) {
    let pixel_a = 5.0;
    let apo = Structure::Pdb(shared_data().join("structures").join("6z6u.pdb"));
    let template = Template::from_structure(&apo, pixel_a, Some(34)).expect("template");
    assert_eq!(template.size(), 34);
    let mut matcher = textured_matcher((250, 478, 462), &template, pixel_a);
    let rotations = uniform_rotations(30.0);
    let mut group = c.benchmark_group("pick_pytom_462x478x250_t34");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(10));
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    let mut k = 0;
    group.bench_function("score_rotation", |b| {
        b.iter(|| {
            matcher.score_rotation(&rotations[k % rotations.len()]);
            k += 1;
        })
    });
    // a whole (short) search: 3 rotations, the per-rotation best-score update and the
    // allocation of the result maps (once per search, so this is a lower bound on the rate
    // of a long search, the one rotation above an upper bound)
    group.throughput(Throughput::Elements(3));
    group.bench_function("search_3_rotations", |b| {
        b.iter(|| {
            let lo = (3 * k) % (rotations.len() - 3);
            k += 1;
            search(&mut matcher, &rotations[lo..lo + 3], &LocalComm, |_, _| {})
        })
    });
    // the CUDA twin when a GPU is present: a search of 30 rotations, including its
    // per-search device set-up (plans, uploads of the tomogram spectrum and local norm)
    if let Ok(cuda) = Device::select(DeviceChoice::Cuda, 0) {
        eprintln!("pick: CUDA rows on {}", cuda.name());
        group.throughput(Throughput::Elements(30));
        group.bench_function("cuda/search_30_rotations", |b| {
            b.iter(|| {
                search_on(&cuda, &mut matcher, &rotations[..30], &LocalComm, |_, _| {})
                    .expect("CUDA search")
            })
        });
    }
    drop(matcher);
    // 478 = 2·239: the y transform is a prime-length (Bluestein) FFT; the same search on
    // a grid padded to 480 = 2⁵·3·5 y lines
    let mut padded = textured_matcher((250, 480, 462), &template, pixel_a);
    group.throughput(Throughput::Elements(1));
    group.bench_function("score_rotation_ny480", |b| {
        b.iter(|| {
            padded.score_rotation(&rotations[k % rotations.len()]);
            k += 1;
        })
    });
    group.finish();
}

criterion_group!(benches, small, pytom_geometry);
criterion_main!(benches);
