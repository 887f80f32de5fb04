//! CUDA vs CPU back-projection, forward projection and template matching on random cases:
//! relative error < 1e-4 (every CUDA kernel in `kernels/` against its CPU twin).
//!
//! On a machine without a usable CUDA device (or a build without the `cuda` feature) the
//! test prints `SKIP: cuda_parity: no CUDA device (<reason>)` and passes. Set
//! `LAMELLA_REQUIRE_CUDA=1` on a GPU node to make a missing device a failure.

#[cfg(feature = "cuda")]
#[test]
fn cuda_backprojection_matches_cpu() {
    use lamella::core::geometry::TiltSeriesGeometry;
    use lamella::device::{Device, DeviceChoice};
    use lamella::recon::backproject::{backproject, backproject_cpu};
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};

    let dev = match Device::select(DeviceChoice::Cuda, 0) {
        Ok(d) => d,
        Err(e) => {
            if std::env::var("LAMELLA_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("LAMELLA_REQUIRE_CUDA=1 but no CUDA device: {e}");
            }
            println!("SKIP: cuda_parity: no CUDA device ({e})");
            return;
        }
    };
    println!("cuda_parity: running on {}", dev.name());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    // odd sizes, image ≠ volume footprint, random axis, shifts and an x-tilt
    let (nt, iny, inx) = (23, 71, 90);
    let angles: Vec<f64> = (0..nt)
        .map(|i| -57.0 + 5.0 * i as f64 + rng.random_range(-1.0..1.0))
        .collect();
    let mut g =
        TiltSeriesGeometry::from_angles(inx, iny, 3.1, &angles, rng.random_range(-95.0..95.0));
    for t in &mut g.tilts {
        t.shift_x_a = rng.random_range(-20.0..20.0);
        t.shift_y_a = rng.random_range(-20.0..20.0);
        t.x_tilt_deg = rng.random_range(-2.0..2.0);
    }
    let images = Array3::from_shape_fn((nt, iny, inx), |_| rng.random_range(-1.0f32..1.0));
    let projs = g.projections(1);
    for &(shape, voxel) in &[((29usize, 64usize, 81usize), 3.1f64), ((7, 33, 47), 6.2)] {
        let cpu = backproject_cpu(images.view(), &projs, shape, voxel);
        let gpu = backproject(&dev, images.view(), &projs, shape, voxel).expect("CUDA backproject");
        assert_eq!(gpu.dim(), cpu.dim());
        let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        let max_diff = cpu
            .iter()
            .zip(gpu.iter())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let l2 = (cpu
            .iter()
            .zip(gpu.iter())
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / cpu.iter().map(|a| (*a as f64).powi(2)).sum::<f64>())
        .sqrt();
        println!(
            "cuda_parity {shape:?}: max |gpu − cpu| / max |cpu| = {:.3e}, rel. L2 = {l2:.3e}",
            max_diff / scale
        );
        assert!(
            max_diff / scale < 1e-4 && l2 < 1e-4,
            "CUDA and CPU differ: {} / {l2}",
            max_diff / scale
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_backprojection_matches_cpu() {
    println!("SKIP: cuda_parity: no CUDA device (lamella built without the `cuda` feature)");
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_forward_projection_matches_cpu() {
    use lamella::core::geometry::TiltSeriesGeometry;
    use lamella::device::{Device, DeviceChoice};
    use lamella::recon::project::{forward_project, forward_project_cpu};
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};

    let dev = match Device::select(DeviceChoice::Cuda, 0) {
        Ok(d) => d,
        Err(e) => {
            if std::env::var("LAMELLA_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("LAMELLA_REQUIRE_CUDA=1 but no CUDA device: {e}");
            }
            println!("SKIP: cuda_parity (forward): no CUDA device ({e})");
            return;
        }
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(77);
    // several geometries: axis 85° (general), axis 0° (separable on the CPU), x-tilt, shifts
    for &(axis, xt, sh) in &[
        (85.0f64, 0.0f64, 15.0f64),
        (0.0, 0.0, 0.0),
        (-93.0, 1.5, 25.0),
    ] {
        let (nt, iny, inx) = (19, 67, 82);
        let angles: Vec<f64> = (0..nt)
            .map(|i| -54.0 + 6.0 * i as f64 + rng.random_range(-1.0..1.0))
            .collect();
        let mut g = TiltSeriesGeometry::from_angles(inx, iny, 3.1, &angles, axis);
        for t in &mut g.tilts {
            t.shift_x_a = sh * rng.random_range(-1.0..1.0);
            t.shift_y_a = sh * rng.random_range(-1.0..1.0);
            t.x_tilt_deg = xt;
        }
        let projs = g.projections(1);
        for &(shape, voxel) in &[((23usize, 61usize, 77usize), 3.1f64), ((9, 31, 45), 6.2)] {
            let vol = Array3::from_shape_fn(shape, |_| rng.random_range(-1.0f32..1.0));
            let img_shape = if voxel > 4.0 {
                (iny / 2, inx / 2)
            } else {
                (iny, inx)
            };
            let cpu = forward_project_cpu(vol.view(), &projs, img_shape, voxel);
            let gpu = forward_project(&dev, vol.view(), &projs, img_shape, voxel)
                .expect("CUDA forward_project");
            assert_eq!(gpu.dim(), cpu.dim());
            let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
            let max_diff = cpu
                .iter()
                .zip(gpu.iter())
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            let l2 = (cpu
                .iter()
                .zip(gpu.iter())
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / cpu.iter().map(|a| (*a as f64).powi(2)).sum::<f64>())
            .sqrt();
            println!(
                "cuda_parity forward (axis {axis}°, x-tilt {xt}°) {shape:?}: max |gpu − cpu| / \
                 max |cpu| = {:.3e}, rel. L2 = {l2:.3e}",
                max_diff / scale
            );
            assert!(
                max_diff / scale < 1e-4 && l2 < 1e-4,
                "CUDA and CPU forward projections differ: {} / {l2}",
                max_diff / scale
            );
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_forward_projection_matches_cpu() {
    println!(
        "SKIP: cuda_parity (forward): no CUDA device (lamella built without the `cuda` feature)"
    );
}

/// CUDA template matching ([`lamella::pick::flcf::search_on`] the CUDA device) against the
/// CPU [`lamella::pick::flcf::search`] on a random 41 × 44 × 36 (x × y × z; odd x exercises
/// the half spectrum of odd length) tomogram with a 12³ random template pasted once, a soft
/// mask, a random Fourier weight and 6 rotations: scores max |gpu − cpu| / max |cpu| < 1e-4,
/// and the same rotation index wherever the CPU's best score beats its second best by
/// 1e-3 · max |cpu| (ten times the score bound, so rounding cannot swap them; at least
/// half of the voxels qualify).
#[cfg(feature = "cuda")]
#[test]
fn cuda_template_matching_matches_cpu() {
    use lamella::comm::LocalComm;
    use lamella::core::geometry::euler_zyz_to_matrix;
    use lamella::core::interp::rotate_volume;
    use lamella::core::so3::identity;
    use lamella::device::{Device, DeviceChoice};
    use lamella::pick::flcf::{search, search_on, Matcher};
    use lamella::pick::template::Template;
    use lamella::sta::mask::soft_sphere;
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};

    let dev = match Device::select(DeviceChoice::Cuda, 0) {
        Ok(d) => d,
        Err(e) => {
            if std::env::var("LAMELLA_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("LAMELLA_REQUIRE_CUDA=1 but no CUDA device: {e}");
            }
            println!("SKIP: cuda_parity: template matching: no CUDA device ({e})");
            return;
        }
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4242);
    let n = 12;
    let template = Template {
        volume: Array3::from_shape_fn((n, n, n), |_| rng.random_range(0.0f32..1.0)),
        pixel_a: 10.0,
        radius_a: 50.0,
    };
    let mask = soft_sphere(n, 3.5, 2.0);
    let weight = Array3::from_shape_fn((n, n, n / 2 + 1), |_| rng.random_range(0.2f32..1.0));
    let (nz, ny, nx) = (36usize, 44usize, 41usize);
    let mut tomo = Array3::from_shape_fn((nz, ny, nx), |_| rng.random_range(-1.0f32..1.0));
    let rotations = vec![
        identity(),
        euler_zyz_to_matrix(30.0, 50.0, -20.0),
        euler_zyz_to_matrix(-75.0, 120.0, 160.0),
        euler_zyz_to_matrix(10.0, 90.0, 45.0),
        euler_zyz_to_matrix(170.0, 20.0, -100.0),
        euler_zyz_to_matrix(-140.0, 65.0, 5.0),
    ];
    // rotation 1 pasted at (z, y, x) = (15, 20, 22): a strong peak with a known pose
    let at = (15usize, 20usize, 22usize);
    let posed = rotate_volume(template.volume.view(), &rotations[1], [0.0; 3]);
    for ((z, y, x), v) in posed.indexed_iter() {
        tomo[[at.0 + z - n / 2, at.1 + y - n / 2, at.2 + x - n / 2]] += 4.0 * v;
    }
    let mut matcher = Matcher::new(tomo.view(), &template, &mask, weight).expect("matcher");
    let cpu = search(&mut matcher, &rotations, &LocalComm, |_, _| {});
    // second-best score per voxel on the CPU, rotation by rotation
    let mut top = Array3::from_elem((nz, ny, nx), [f32::NEG_INFINITY; 2]);
    for r in &rotations {
        matcher.score_rotation(r);
        for (t, &s) in top.iter_mut().zip(matcher.scores.iter()) {
            if s > t[0] {
                *t = [s, t[0]];
            } else if s > t[1] {
                t[1] = s;
            }
        }
    }
    let gpu = search_on(&dev, &mut matcher, &rotations, &LocalComm, |_, _| {})
        .expect("CUDA template matching");
    assert_eq!(gpu.scores.dim(), cpu.scores.dim());
    assert_eq!(gpu.index.dim(), cpu.index.dim());
    let scale = cpu
        .scores
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(1e-30);
    let max_diff = cpu
        .scores
        .iter()
        .zip(gpu.scores.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let margin = 1e-3 * scale;
    let (mut checked, mut differ) = (0usize, 0usize);
    for ((t, &ci), &gi) in top.iter().zip(cpu.index.iter()).zip(gpu.index.iter()) {
        if t[0] - t[1] > margin {
            checked += 1;
            differ += usize::from(ci != gi);
        }
    }
    let total = cpu.index.len();
    println!(
        "cuda_parity template matching {nx}×{ny}×{nz}, {n}³, {} rotations on {}: max |gpu − \
         cpu| / max |cpu| = {:.3e} (max |cpu| {scale:.3}); rotation index compared at \
         {checked} of {total} voxels, {differ} differ",
        rotations.len(),
        dev.name(),
        max_diff / scale
    );
    assert!(
        max_diff / scale < 1e-4,
        "CUDA and CPU scores differ: {}",
        max_diff / scale
    );
    assert!(
        2 * checked >= total,
        "only {checked} of {total} voxels have a clear best"
    );
    assert_eq!(differ, 0, "rotation indices differ at {differ} voxels");
    // the pasted particle is the peak, at its pose, on both
    assert_eq!(gpu.index[[at.0, at.1, at.2]], 1);
    let peak = gpu.scores[[at.0, at.1, at.2]];
    assert!(
        (peak - scale).abs() <= 1e-4 * scale,
        "GPU peak {peak} vs CPU max {scale}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_template_matching_matches_cpu() {
    println!(
        "SKIP: cuda_parity: template matching: no CUDA device (lamella built without the \
         `cuda` feature)"
    );
}
