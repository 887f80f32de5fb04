//! CUDA vs CPU back-projection and forward projection on random cases: relative error < 1e-4
//! (every CUDA kernel in `kernels/` against its CPU twin).
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
