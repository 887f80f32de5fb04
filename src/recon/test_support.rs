//! Helpers shared by the projector unit tests (`backproject`, `project`): a tiny
//! deterministic generator and tilt geometries with random shifts.

use crate::core::geometry::{Projection, TiltImage};

/// Linear congruential generator: uniform in [0, 1), deterministic for a given seed.
pub fn lcg(s: &mut u64) -> f32 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*s >> 40) as f32) / ((1u64 << 24) as f32)
}

/// `nt` tilts from −60° in steps of `step_deg` about tilt axis `axis_deg`, x-tilt
/// `x_tilt_deg`, shifts uniform in ±`shift_a`/2 Å (x then y drawn from `s` per tilt), as
/// projections of 3 Å pixels onto `inx × iny` images.
pub fn random_projections(
    nt: usize,
    step_deg: f64,
    axis_deg: f64,
    x_tilt_deg: f64,
    shift_a: f64,
    (inx, iny): (usize, usize),
    s: &mut u64,
) -> Vec<Projection> {
    (0..nt)
        .map(|i| {
            let mut t = TiltImage::nominal(-60.0 + step_deg * i as f64, axis_deg);
            t.x_tilt_deg = x_tilt_deg;
            t.shift_x_a = shift_a * (lcg(s) as f64 - 0.5);
            t.shift_y_a = shift_a * (lcg(s) as f64 - 0.5);
            t.projection(3.0, inx, iny)
        })
        .collect()
}
