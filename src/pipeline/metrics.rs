//! Quality against ground truth: correlation of a tomogram with the true volume, both
//! brought to the same grid and band-passed to the same band.

use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;

/// Block-average a volume `[z, y, x]` by `b` in every axis (trailing partial blocks dropped).
pub fn bin_volume(v: &Array3<f32>, b: usize) -> Array3<f32> {
    if b <= 1 {
        return v.clone();
    }
    let (nz, ny, nx) = v.dim();
    let (mz, my, mx) = (nz / b, ny / b, nx / b);
    let norm = 1.0 / (b * b * b) as f32;
    let mut out = Array3::<f32>::zeros((mz, my, mx));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(z, mut plane)| {
            for y in 0..my {
                for x in 0..mx {
                    let mut s = 0.0f32;
                    for dz in 0..b {
                        for dy in 0..b {
                            for dx in 0..b {
                                s += v[[z * b + dz, y * b + dy, x * b + dx]];
                            }
                        }
                    }
                    plane[[y, x]] = s * norm;
                }
            }
        });
    out
}

/// Crop or zero-pad `v` to `shape`, keeping index `n/2` of every axis aligned.
pub fn center_fit(v: &Array3<f32>, shape: (usize, usize, usize)) -> Array3<f32> {
    let src = v.dim();
    let mut out = Array3::<f32>::zeros(shape);
    let off = |n_src: usize, n_dst: usize| (n_src / 2) as isize - (n_dst / 2) as isize;
    let (oz, oy, ox) = (
        off(src.0, shape.0),
        off(src.1, shape.1),
        off(src.2, shape.2),
    );
    for ((z, y, x), o) in out.indexed_iter_mut() {
        let (sz, sy, sx) = (z as isize + oz, y as isize + oy, x as isize + ox);
        if sz >= 0
            && sy >= 0
            && sx >= 0
            && (sz as usize) < src.0
            && (sy as usize) < src.1
            && (sx as usize) < src.2
        {
            *o = v[[sz as usize, sy as usize, sx as usize]];
        }
    }
    out
}

/// Separable Gaussian blur with standard deviation `sigma` voxels (edges clamped).
pub fn gaussian_blur(v: &Array3<f32>, sigma: f64) -> Array3<f32> {
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let ks: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|x| x / ks).collect();
    let mut cur = v.clone();
    for axis in 0..3 {
        let n = cur.len_of(Axis(axis)) as isize;
        let mut out = Array3::<f32>::zeros(cur.dim());
        Zip::from(out.lanes_mut(Axis(axis)))
            .and(cur.lanes(Axis(axis)))
            .par_for_each(|mut lo, li| {
                for i in 0..n {
                    let mut s = 0.0f32;
                    for (j, kv) in k.iter().enumerate() {
                        let idx = (i + j as isize - r).clamp(0, n - 1) as usize;
                        s += kv * li[idx];
                    }
                    lo[i as usize] = s;
                }
            });
        cur = out;
    }
    cur
}

/// Pearson correlation of two equally shaped volumes over the central region that leaves
/// out `margin` (fraction) of x and y on each side.
pub fn pearson_central(a: &Array3<f32>, b: &Array3<f32>, margin: f64) -> f64 {
    assert_eq!(a.dim(), b.dim(), "pearson_central: shapes differ");
    let (nz, ny, nx) = a.dim();
    let my = (ny as f64 * margin) as usize;
    let mx = (nx as f64 * margin) as usize;
    let (mut sa, mut sb, mut saa, mut sbb, mut sab, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0f64);
    for z in 0..nz {
        for y in my..ny - my {
            for x in mx..nx - mx {
                let (p, q) = (a[[z, y, x]] as f64, b[[z, y, x]] as f64);
                sa += p;
                sb += q;
                saa += p * p;
                sbb += q * q;
                sab += p * q;
                n += 1.0;
            }
        }
    }
    if n < 2.0 {
        return 0.0;
    }
    let cov = sab / n - (sa / n) * (sb / n);
    let va = saa / n - (sa / n) * (sa / n);
    let vb = sbb / n - (sb / n) * (sb / n);
    if va <= 0.0 || vb <= 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

/// Band-pass as a difference of Gaussians: keeps structure between ~`lo` and ~`hi` voxels.
pub fn band_pass(v: &Array3<f32>, hi: f64, lo: f64) -> Array3<f32> {
    let fine = gaussian_blur(v, hi);
    let coarse = gaussian_blur(v, lo);
    fine - coarse
}

/// Correlation of a tomogram (binned by `bin`, `[z, y, x]`) with the true volume at the
/// stack pixel size: the truth is block-averaged by `bin`, centred into the tomogram's
/// shape, and both are band-passed to the same band (σ 1 to 6 voxels of the binned grid:
/// object-sized detail, without the slab's constant offset). 10 % of x and y at each edge
/// are left out (WBP edge artefacts).
pub fn truth_correlation(tomo: &Array3<f32>, truth: &Array3<f32>, bin: usize) -> f64 {
    let t = center_fit(&bin_volume(truth, bin), tomo.dim());
    let a = band_pass(tomo, 1.0, 6.0);
    let b = band_pass(&t, 1.0, 6.0);
    pearson_central(&a, &b, 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_volumes_correlate_perfectly() {
        let v = Array3::from_shape_fn((16, 20, 24), |(z, y, x)| {
            ((x as f32 * 0.7).sin() + (y as f32 * 0.3).cos()) * (z as f32 * 0.2).sin()
        });
        assert!((truth_correlation(&v, &v, 1) - 1.0).abs() < 1e-6);
        let neg = v.mapv(|x| -x);
        assert!((truth_correlation(&neg, &v, 1) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn binning_and_fitting_keep_centre() {
        let mut v = Array3::<f32>::zeros((8, 8, 8));
        v[[4, 4, 4]] = 8.0;
        let b = bin_volume(&v, 2);
        assert_eq!(b.dim(), (4, 4, 4));
        assert_eq!(b[[2, 2, 2]], 1.0);
        let f = center_fit(&v, (4, 10, 8));
        assert_eq!(f[[2, 5, 4]], 8.0);
    }

    #[test]
    fn blur_preserves_sum() {
        let mut v = Array3::<f32>::zeros((20, 20, 20));
        v[[10, 10, 10]] = 1.0;
        let b = gaussian_blur(&v, 1.5);
        assert!((b.sum() - 1.0).abs() < 1e-4);
    }
}
