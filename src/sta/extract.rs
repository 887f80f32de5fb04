//! Cutting particle boxes out of a tomogram.
//!
//! Frames: the tomogram `[z, y, x]` of `voxel_a` Å has its centre (the tilt-axis centre and
//! the origin of particle coordinates, DESIGN §2) at voxel `(nx/2, ny/2, nz/2)`; a particle at
//! `p` Å (x, y, z) about that centre sits at voxel `c + p/voxel_a`. The box `n³` is cut at
//! the nearest whole voxel so that the particle lies at box voxel `n/2 + residual`, with the
//! sub-voxel `residual` (x, y, z, in `[−0.5, 0.5]`) returned for the alignment and averaging
//! to account for. Voxels outside the tomogram are filled with the mean of those inside.

use ndarray::{Array3, ArrayView3};

/// A particle box and where the particle is in it.
#[derive(Clone, Debug)]
pub struct ParticleBox {
    /// The box `[z, y, x]`, `n³`.
    pub data: Array3<f32>,
    /// Offset of the particle from the box centre voxel `n/2`, voxels `(x, y, z)`.
    pub residual_px: [f64; 3],
    /// Fraction of the box inside the tomogram (1 = fully inside).
    pub inside_fraction: f64,
}

/// Cut an `n³` box around `position_a` (Å about the tomogram centre, x, y, z) from `tomo`
/// `[z, y, x]` of `voxel_a` Å (module docs). `sign` multiplies the values (−1 turns a
/// tomogram where dense matter is dark into one where it is positive).
pub fn extract_box(
    tomo: ArrayView3<f32>,
    voxel_a: f64,
    position_a: [f64; 3],
    n: usize,
    sign: f32,
) -> ParticleBox {
    let (nz, ny, nx) = tomo.dim();
    let dims = [nx, ny, nz];
    let mut start = [0i64; 3];
    let mut residual = [0.0; 3];
    for a in 0..3 {
        let v = (dims[a] / 2) as f64 + position_a[a] / voxel_a;
        let r = v.round();
        residual[a] = v - r;
        start[a] = r as i64 - (n / 2) as i64;
    }
    let mut data = Array3::<f32>::zeros((n, n, n));
    let mut inside = vec![false; n * n * n];
    let (mut sum, mut count) = (0.0f64, 0usize);
    for z in 0..n {
        let tz = start[2] + z as i64;
        for y in 0..n {
            let ty = start[1] + y as i64;
            for x in 0..n {
                let tx = start[0] + x as i64;
                if let Some(i) = crate::core::interp::index3(tz, ty, tx, (nz, ny, nx)) {
                    let v = sign * tomo[i];
                    data[[z, y, x]] = v;
                    inside[(z * n + y) * n + x] = true;
                    sum += v as f64;
                    count += 1;
                }
            }
        }
    }
    if count < n * n * n {
        let fill = if count > 0 {
            (sum / count as f64) as f32
        } else {
            0.0
        };
        for (v, i) in data.iter_mut().zip(&inside) {
            if !i {
                *v = fill;
            }
        }
    }
    ParticleBox {
        data,
        residual_px: residual,
        inside_fraction: count as f64 / (n * n * n) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_is_centred_on_the_particle_with_its_residual() {
        let (nz, ny, nx) = (20, 40, 50);
        let mut t = Array3::<f32>::zeros((nz, ny, nx));
        // Particle at voxel (x, y, z) = (30, 12, 7): about the centre (25, 20, 10).
        t[[7, 12, 30]] = 1.0;
        let b = extract_box(t.view(), 2.0, [10.0 + 0.6, -16.0, -6.0], 8, -1.0);
        assert_eq!(b.data[[4, 4, 4]], -1.0);
        assert!((b.residual_px[0] - 0.3).abs() < 1e-9);
        assert_eq!(b.inside_fraction, 1.0);
        // Near the edge the outside is filled with the inside mean.
        let e = extract_box(t.view(), 1.0, [-25.0, 0.0, 0.0], 8, 1.0);
        assert!(e.inside_fraction < 1.0 && e.inside_fraction > 0.3);
    }
}
