//! Shared bench geometry: 61 tilts (−60°..60°, 2°) of `n × n` pixels of 4 Å.
//!
//! `axis_deg = 0` is the geometry of ASTRA's slice-by-slice parallel beam and of an aligned
//! stack (tilt axis along image y, no shifts): the separable fast paths run. `axis_deg = 85`
//! with per-tilt shifts is a raw (unaligned) series: the general kernels run.

#![allow(dead_code)]

use lamella::core::geometry::{Projection, TiltSeriesGeometry};
use ndarray::Array3;

/// Voxel and pixel size of the bench cases, Å.
pub const VOXEL_A: f64 = 4.0;

/// Projections of 61 tilts of `n × n` pixels; shifts only for a non-zero axis.
pub fn projections(n: usize, axis_deg: f64) -> Vec<Projection> {
    let angles: Vec<f64> = (0..61).map(|i| -60.0 + 2.0 * i as f64).collect();
    let mut g = TiltSeriesGeometry::from_angles(n, n, VOXEL_A, &angles, axis_deg);
    if axis_deg != 0.0 {
        for (i, t) in g.tilts.iter_mut().enumerate() {
            t.shift_x_a = 6.0 * (i as f64).sin();
            t.shift_y_a = -4.0 * (i as f64).cos();
        }
    }
    g.projections(1)
}

/// Deterministic non-trivial images `[61, n, n]`.
pub fn images(n: usize) -> Array3<f32> {
    Array3::from_shape_fn((61, n, n), |(t, y, x)| {
        ((t * 7 + y * 13 + x * 3) % 17) as f32
    })
}

/// Deterministic non-trivial volume `[nz, n, n]`.
pub fn volume(n: usize, nz: usize) -> Array3<f32> {
    Array3::from_shape_fn((nz, n, n), |(z, y, x)| {
        ((z * 5 + y * 11 + x * 3) % 13) as f32
    })
}

/// Criterion settings that keep `make bench` to a few minutes.
pub fn quick<M: criterion::measurement::Measurement>(g: &mut criterion::BenchmarkGroup<M>) {
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(4));
}
