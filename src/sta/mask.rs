//! Real-space masks for particle boxes `[z, y, x]` (centre voxel `n/2`).

use ndarray::{Array3, ArrayView3};

/// A soft spherical mask of an `n³` box: 1 within `radius_px` of the centre voxel, a raised
/// cosine falling to 0 over `edge_px` beyond it.
pub fn soft_sphere(n: usize, radius_px: f64, edge_px: f64) -> Array3<f32> {
    let c = (n / 2) as f64;
    Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        let r = ((z as f64 - c).powi(2) + (y as f64 - c).powi(2) + (x as f64 - c).powi(2)).sqrt();
        if r <= radius_px {
            1.0
        } else if edge_px > 0.0 && r < radius_px + edge_px {
            (0.5 + 0.5 * (std::f64::consts::PI * (r - radius_px) / edge_px).cos()) as f32
        } else {
            0.0
        }
    })
}

/// Normalise `vol` in place to mean 0 and standard deviation 1 outside the mask (where
/// `mask < 0.5`, the background, as RELION's particle normalisation) or over the whole box
/// when the background is empty; a constant box becomes 0.
pub fn normalise_background(vol: &mut Array3<f32>, mask: ArrayView3<f32>) {
    let (mut s, mut s2, mut n) = (0.0f64, 0.0f64, 0usize);
    for (v, m) in vol.iter().zip(mask.iter()) {
        if *m < 0.5 {
            s += *v as f64;
            s2 += (*v as f64).powi(2);
            n += 1;
        }
    }
    if n < 8 {
        s = vol.iter().map(|v| *v as f64).sum();
        s2 = vol.iter().map(|v| (*v as f64).powi(2)).sum();
        n = vol.len();
    }
    let mean = s / n as f64;
    let sd = (s2 / n as f64 - mean * mean).max(0.0).sqrt();
    let inv = if sd > 0.0 { 1.0 / sd } else { 0.0 };
    vol.mapv_inplace(|v| ((v as f64 - mean) * inv) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sphere_is_one_inside_zero_outside_and_smooth_between() {
        let m = soft_sphere(32, 8.0, 4.0);
        assert_eq!(m[[16, 16, 16]], 1.0);
        assert_eq!(m[[16, 16, 24]], 1.0);
        assert!(m[[16, 16, 26]] > 0.0 && m[[16, 16, 26]] < 1.0);
        assert_eq!(m[[16, 16, 29]], 0.0);
        assert_eq!(m[[0, 0, 0]], 0.0);
    }

    #[test]
    fn background_normalisation() {
        let mask = soft_sphere(16, 4.0, 0.0);
        let mut v =
            Array3::from_shape_fn((16, 16, 16), |(z, y, x)| 3.0 + (x + 2 * y + z) as f32 * 0.1);
        normalise_background(&mut v, mask.view());
        let bg: Vec<f32> = v
            .iter()
            .zip(mask.iter())
            .filter(|(_, m)| **m < 0.5)
            .map(|(v, _)| *v)
            .collect();
        let mean = bg.iter().sum::<f32>() / bg.len() as f32;
        let var = bg.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / bg.len() as f32;
        assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3);
    }
}
