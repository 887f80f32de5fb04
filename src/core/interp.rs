//! Interpolation on regular grids. Sample positions are in pixel/voxel index units;
//! outside the grid the value is 0.

use ndarray::parallel::prelude::*;
use ndarray::{Array3, ArrayView2, ArrayView3, Axis};

use super::geometry::Mat3;

/// The index `[z, y, x]` of the signed voxel position `(z, y, x)` when it lies inside an
/// array of shape `dim` `(nz, ny, nx)`, else `None`.
#[inline]
pub fn index3(z: i64, y: i64, x: i64, dim: (usize, usize, usize)) -> Option<[usize; 3]> {
    let ok = |v: i64, n: usize| v >= 0 && (v as usize) < n;
    (ok(z, dim.0) && ok(y, dim.1) && ok(x, dim.2)).then_some([z as usize, y as usize, x as usize])
}

/// Bilinear sample of `img` `[y, x]` at `(y, x)`; 0 outside `[0, n-1]`.
#[inline]
pub fn bilinear(img: &ArrayView2<f32>, y: f64, x: f64) -> f32 {
    let (ny, nx) = img.dim();
    if !(x >= 0.0 && y >= 0.0 && x <= (nx - 1) as f64 && y <= (ny - 1) as f64) {
        return 0.0;
    }
    let x0 = (x.floor() as usize).min(nx.saturating_sub(2));
    let y0 = (y.floor() as usize).min(ny.saturating_sub(2));
    let fx = (x - x0 as f64) as f32;
    let fy = (y - y0 as f64) as f32;
    let x1 = (x0 + 1).min(nx - 1);
    let y1 = (y0 + 1).min(ny - 1);
    let a = img[[y0, x0]] * (1.0 - fx) + img[[y0, x1]] * fx;
    let b = img[[y1, x0]] * (1.0 - fx) + img[[y1, x1]] * fx;
    a * (1.0 - fy) + b * fy
}

/// Trilinear sample of `vol` `[z, y, x]` at `(z, y, x)`; 0 outside `[0, n-1]`.
#[inline]
pub fn trilinear(vol: &ArrayView3<f32>, z: f64, y: f64, x: f64) -> f32 {
    let (nz, ny, nx) = vol.dim();
    if !(x >= 0.0
        && y >= 0.0
        && z >= 0.0
        && x <= (nx - 1) as f64
        && y <= (ny - 1) as f64
        && z <= (nz - 1) as f64)
    {
        return 0.0;
    }
    let x0 = (x.floor() as usize).min(nx.saturating_sub(2));
    let y0 = (y.floor() as usize).min(ny.saturating_sub(2));
    let z0 = (z.floor() as usize).min(nz.saturating_sub(2));
    let (fx, fy, fz) = (
        (x - x0 as f64) as f32,
        (y - y0 as f64) as f32,
        (z - z0 as f64) as f32,
    );
    let (x1, y1, z1) = (
        (x0 + 1).min(nx - 1),
        (y0 + 1).min(ny - 1),
        (z0 + 1).min(nz - 1),
    );
    let l = |zz: usize| {
        let a = vol[[zz, y0, x0]] * (1.0 - fx) + vol[[zz, y0, x1]] * fx;
        let b = vol[[zz, y1, x0]] * (1.0 - fx) + vol[[zz, y1, x1]] * fx;
        a * (1.0 - fy) + b * fy
    };
    l(z0) * (1.0 - fz) + l(z1) * fz
}

/// Rotate and shift a volume `[z, y, x]` about its centre voxel `(n/2)` per axis:
/// `out(x) = vol(Aᵀ·(x − c − t) + c)` with `x` in voxels `(x, y, z)` and `t = shift_px`
/// (x, y, z) voxels, i.e. the content is rotated by `a` and then moved by `t` (the pose of a
/// particle, `particle(x) = reference(Aᵀ·x)`). Trilinear, 0 outside; parallel over z.
pub fn rotate_volume(vol: ArrayView3<f32>, a: &Mat3, shift_px: [f64; 3]) -> Array3<f32> {
    let (nz, ny, nx) = vol.dim();
    let c = [(nx / 2) as f64, (ny / 2) as f64, (nz / 2) as f64];
    let mut out = Array3::<f32>::zeros((nz, ny, nx));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(iz, mut plane)| {
            let pz = iz as f64 - c[2] - shift_px[2];
            for iy in 0..ny {
                let py = iy as f64 - c[1] - shift_px[1];
                // Source = Aᵀ·p + c; Aᵀ's rows are A's columns. Linear in x along a row.
                let base = [
                    a[1][0] * py + a[2][0] * pz + c[0],
                    a[1][1] * py + a[2][1] * pz + c[1],
                    a[1][2] * py + a[2][2] * pz + c[2],
                ];
                for ix in 0..nx {
                    let px = ix as f64 - c[0] - shift_px[0];
                    let sx = base[0] + a[0][0] * px;
                    let sy = base[1] + a[0][1] * px;
                    let sz = base[2] + a[0][2] * px;
                    plane[[iy, ix]] = trilinear(&vol, sz, sy, sx);
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    #[test]
    fn bilinear_is_exact_on_planes() {
        let img = Array2::from_shape_fn((5, 6), |(y, x)| 2.0 * x as f32 + 3.0 * y as f32);
        let v = bilinear(&img.view(), 1.25, 3.5);
        assert!((v - (7.0 + 3.75)).abs() < 1e-5);
        assert_eq!(bilinear(&img.view(), -0.1, 1.0), 0.0);
        assert!((bilinear(&img.view(), 4.0, 5.0) - 22.0).abs() < 1e-5);
    }

    #[test]
    fn trilinear_is_exact_on_planes() {
        let v = Array3::from_shape_fn((4, 5, 6), |(z, y, x)| {
            x as f32 + 2.0 * y as f32 + 4.0 * z as f32
        });
        let s = trilinear(&v.view(), 1.5, 2.25, 3.75);
        assert!((s - (3.75 + 4.5 + 6.0)).abs() < 1e-5);
    }

    #[test]
    fn rotate_volume_moves_a_point_as_the_pose_says() {
        use crate::core::geometry::{apply, euler_zyz_to_matrix};
        let n = 16;
        let mut v = Array3::<f32>::zeros((n, n, n));
        // Reference point at offset (3, 0, 0) from the centre.
        v[[8, 8, 11]] = 1.0;
        let a = euler_zyz_to_matrix(90.0, 0.0, 0.0);
        let out = rotate_volume(v.view(), &a, [1.0, 0.0, 2.0]);
        let p = apply(&a, [3.0, 0.0, 0.0]);
        let (x, y, z) = (
            (8.0 + p[0] + 1.0).round() as usize,
            (8.0 + p[1]).round() as usize,
            (8.0 + p[2] + 2.0).round() as usize,
        );
        assert!(
            (out[[z, y, x]] - 1.0).abs() < 1e-5,
            "point not at {x},{y},{z}"
        );
        assert!((out.sum() - 1.0).abs() < 1e-5);
    }
}
