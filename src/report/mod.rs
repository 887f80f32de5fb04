//! Reports: PNG pictures of images and volumes, and a self-contained HTML page.
//!
//! - [`png`]: dependency-free 8-bit grayscale PNG encoder.
//! - [`to_gray8`], [`write_png`]: float image `[y, x]` -> 8-bit picture with percentile
//!   clipping, +y up.
//! - [`central_slices`]: central XY and XZ slices (optionally slab-averaged) of a volume.
//! - [`html`]: the HTML report page ([`write_html`], [`SeriesReport`]).
//!
//! See `docs/report.md` for what the report shows and where the files go.

pub mod base64;
pub mod html;
pub mod plot;
pub mod png;

pub use html::{write_html, SeriesReport};

use crate::{Error, Result};
use ndarray::{s, Array2, Array3, ArrayView2, Axis};
use std::path::Path;

/// Value at percentile `p` (0..=100) of `v`, with linear interpolation between order
/// statistics (numpy's default `percentile`). `v` must be non-empty; it is reordered.
fn percentile(v: &mut [f32], p: f64) -> f32 {
    let n = v.len();
    let pos = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let k = (pos.floor() as usize).min(n - 1);
    let frac = pos - k as f64;
    let (_, &mut lo, rest) = v.select_nth_unstable_by(k, f32::total_cmp);
    if frac == 0.0 || rest.is_empty() {
        return lo;
    }
    let hi = rest.iter().copied().fold(f32::INFINITY, f32::min);
    (lo as f64 + frac * (hi as f64 - lo as f64)) as f32
}

/// Map a float image `[y, x]` (shape `(ny, nx)`) to 8-bit grayscale pixels for
/// [`png::encode_gray8`]: `ny` rows of `nx` bytes, top row first.
///
/// The grey scale runs linearly from the `clip_percentiles.0`-th percentile (-> 0) to the
/// `clip_percentiles.1`-th percentile (-> 255) of the finite values (percentiles in 0..=100,
/// e.g. `(1.0, 99.0)`; linear interpolation as numpy); values outside are clipped. The picture
/// is flipped in y so that +y is up: image row `y = 0` (MRC row 0) is the BOTTOM row of the
/// picture. NaN maps to 0; ±inf clip to 255 / 0. If all finite values are equal (or there are
/// none) every finite pixel maps to 128.
pub fn to_gray8(img: ArrayView2<f32>, clip_percentiles: (f64, f64)) -> Vec<u8> {
    let (ny, nx) = img.dim();
    let mut finite: Vec<f32> = img.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = if finite.is_empty() {
        (0.0, 0.0)
    } else {
        let (p0, p1) = (
            clip_percentiles.0.min(clip_percentiles.1),
            clip_percentiles.0.max(clip_percentiles.1),
        );
        (percentile(&mut finite, p0), percentile(&mut finite, p1))
    };
    let span = hi as f64 - lo as f64;
    let map = |v: f32| -> u8 {
        if v.is_nan() {
            0
        } else if span <= 0.0 {
            if v.is_finite() {
                128
            } else if v > 0.0 {
                255
            } else {
                0
            }
        } else {
            let t = ((v as f64 - lo as f64) / span).clamp(0.0, 1.0);
            (t * 255.0).round() as u8
        }
    };
    let mut out = Vec::with_capacity(ny * nx);
    for row in img.axis_iter(Axis(0)).rev() {
        out.extend(row.iter().map(|&v| map(v)));
    }
    out
}

/// Write a PNG picture of the float image `img` (`[y, x]`, shape `(ny, nx)`) to `path`
/// atomically, mapped with [`to_gray8`] (percentile clipping, +y up).
///
/// Errors: [`Error::BadInput`] for an empty image or one too large for PNG; I/O errors name
/// `path`.
pub fn write_png(path: &Path, img: ArrayView2<f32>, clip_percentiles: (f64, f64)) -> Result<()> {
    let (ny, nx) = img.dim();
    if !png::png_dims_ok(nx, ny) {
        return Err(Error::bad_input(
            path,
            "image shape",
            format!(
                "cannot write a {ny} x {nx} (ny x nx) image as PNG: both sides must be \
                 1..=2^31-1 pixels; pass a non-empty image"
            ),
        ));
    }
    let bytes = png::encode_gray8(nx, ny, &to_gray8(img, clip_percentiles));
    crate::io::atomic::write_bytes_atomic(path, &bytes)
}

/// Indices `[start, end)` of `n` slices centred on `len / 2`, clamped to `0..len`.
fn slab(len: usize, n: usize) -> (usize, usize) {
    let n = n.clamp(1, len.max(1));
    let start = (len / 2).saturating_sub((n - 1) / 2).min(len - n.min(len));
    (start, start + n.min(len))
}

/// Central slices of a volume `vol` indexed `[z, y, x]` (shape `(nz, ny, nx)`).
///
/// Returns `(xy, xz)`: `xy` is the slice `z = nz / 2`, shape `(ny, nx)` indexed `[y, x]`;
/// `xz` is the slice `y = ny / 2`, shape `(nz, nx)` indexed `[z, x]` (so [`write_png`] draws
/// +z up). With `average > 1`, each is the mean of `average` neighbouring slices centred on
/// the central one (`nz/2 - (average-1)/2 ..`, shifted to stay inside the volume, and capped
/// at the axis length): a thicker slab with less noise. `average` 0 is treated as 1. An
/// empty axis gives an empty slice.
pub fn central_slices(vol: &Array3<f32>, average: usize) -> (Array2<f32>, Array2<f32>) {
    let (nz, ny, nx) = vol.dim();
    let mean_over = |axis: Axis, len: usize| -> Array2<f32> {
        let (a, b) = slab(len, average);
        if len == 0 {
            return match axis {
                Axis(0) => Array2::zeros((ny, nx)),
                _ => Array2::zeros((nz, nx)),
            };
        }
        let view = match axis {
            Axis(0) => vol.slice(s![a..b, .., ..]),
            _ => vol.slice(s![.., a..b, ..]),
        };
        let sum = view.sum_axis(axis);
        sum / (b - a) as f32
    };
    (mean_over(Axis(0), nz), mean_over(Axis(1), ny))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile(arange(11), [0, 25, 37, 100]) = [0, 2.5, 3.7, 10]
        let mut v: Vec<f32> = (0..=10).rev().map(|i| i as f32).collect();
        assert_eq!(percentile(&mut v, 0.0), 0.0);
        assert!((percentile(&mut v, 25.0) - 2.5).abs() < 1e-6);
        assert!((percentile(&mut v, 37.0) - 3.7).abs() < 1e-5);
        assert_eq!(percentile(&mut v, 100.0), 10.0);
        assert_eq!(percentile(&mut [5.0], 50.0), 5.0);
    }

    #[test]
    fn to_gray8_clips_percentiles_and_flips_y() {
        // 101 values 0..=100 over a 101 x 1 column: value = y. Clip (10, 90) => 10 -> 0,
        // 90 -> 255, y = 50 -> 127.5 -> 128, below 10 -> 0, above 90 -> 255.
        let img = Array2::from_shape_fn((101, 1), |(y, _)| y as f32);
        let g = to_gray8(img.view(), (10.0, 90.0));
        // Picture row r shows image row y = 100 - r.
        let at = |y: usize| g[100 - y];
        assert_eq!(at(0), 0);
        assert_eq!(at(10), 0);
        assert_eq!(at(50), 128);
        assert_eq!(at(90), 255);
        assert_eq!(at(100), 255);
        for y in 10..=90 {
            let want = ((y as f64 - 10.0) / 80.0 * 255.0).round() as u8;
            assert_eq!(at(y), want, "y = {y}");
        }
        // Top row of the picture is the highest y.
        assert_eq!(g[0], 255);
        assert_eq!(*g.last().unwrap(), 0);
    }

    #[test]
    fn to_gray8_row_order_with_outliers_and_nan() {
        // 2 x 3 image; the outlier 1e9 must not squash the rest with (0, 80) clipping.
        let img = ndarray::arr2(&[[0.0f32, 1.0, 2.0], [3.0, f32::NAN, 1e9]]);
        let g = to_gray8(img.view(), (0.0, 80.0));
        // finite sorted: 0,1,2,3,1e9 -> p80 at pos 3.2 = 3 + 0.2 * (1e9 - 3) = 2e8.
        // Picture top row = image row y = 1.
        assert_eq!(g[0], 0); // 3 / 2e8 -> 0
        assert_eq!(g[1], 0); // NaN -> 0
        assert_eq!(g[2], 255); // 1e9 clipped
        assert_eq!(&g[3..], &[0, 0, 0]);
        let img = ndarray::arr2(&[[0.0f32, 1.0, 2.0], [3.0, f32::NAN, 4.0]]);
        let g = to_gray8(img.view(), (0.0, 100.0));
        assert_eq!(g, vec![191, 0, 255, 0, 64, 128]);
    }

    #[test]
    fn to_gray8_constant_and_all_nan() {
        let c = Array2::from_elem((2, 2), 7.0f32);
        assert_eq!(to_gray8(c.view(), (1.0, 99.0)), vec![128; 4]);
        let n = Array2::from_elem((2, 2), f32::NAN);
        assert_eq!(to_gray8(n.view(), (1.0, 99.0)), vec![0; 4]);
    }

    #[test]
    fn central_slices_shapes_and_values() {
        // vol[z, y, x] = 100 z + 10 y + x
        let (nz, ny, nx) = (5, 6, 7);
        let vol = Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| (100 * z + 10 * y + x) as f32);
        let (xy, xz) = central_slices(&vol, 1);
        assert_eq!(xy.dim(), (ny, nx));
        assert_eq!(xz.dim(), (nz, nx));
        assert_eq!(xy[[4, 3]], (100 * 2 + 10 * 4 + 3) as f32);
        assert_eq!(xz[[1, 6]], (100 + 10 * 3 + 6) as f32);
        // average 3: z = 1,2,3 (mean z = 2), y = 2,3,4 (mean y = 3): same values (linear).
        let (xy3, xz3) = central_slices(&vol, 3);
        assert_eq!(xy3, xy);
        assert_eq!(xz3, xz);
        // average 2: z = 2,3 (mean 2.5); y = 3,4 (mean 3.5).
        let (xy2, xz2) = central_slices(&vol, 2);
        assert!((xy2[[0, 0]] - 250.0).abs() < 1e-4);
        assert!((xz2[[0, 0]] - 35.0).abs() < 1e-4);
        // average larger than the axis: the whole axis (z mean 2, y mean 2.5).
        let (xy9, xz9) = central_slices(&vol, 9);
        assert!((xy9[[0, 0]] - 200.0).abs() < 1e-4);
        assert!((xz9[[0, 0]] - 25.0).abs() < 1e-4);
        // average 0 == 1
        assert_eq!(central_slices(&vol, 0).0, xy);
    }

    #[test]
    fn slab_stays_inside_axis() {
        assert_eq!(slab(5, 1), (2, 3));
        assert_eq!(slab(5, 3), (1, 4));
        assert_eq!(slab(4, 4), (0, 4));
        assert_eq!(slab(4, 3), (1, 4));
        assert_eq!(slab(3, 10), (0, 3));
        assert_eq!(slab(1, 2), (0, 1));
    }

    #[test]
    fn write_png_rejects_empty_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.png");
        let img = Array2::<f32>::zeros((0, 4));
        let e = write_png(&p, img.view(), (1.0, 99.0)).unwrap_err();
        assert!(e.to_string().contains("e.png"), "{e}");
        assert!(!p.exists());
    }
}
