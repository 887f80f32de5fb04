//! Image cross-correlation for alignment: a planned, band-passed correlator with a sub-pixel
//! peak search, the cosine stretch of an image perpendicular to the tilt axis, and a cosine
//! edge window.
//!
//! Frames: images are `[y, x]`; a shift `(dx, dy)` in pixels means "the content of `b` sits
//! at the position of the same content in `a` plus `(dx, dy)`", i.e. `b(u) ≈ a(u − d)`.
//! The correlation `C(d) = Σ_u a_f(u)·b_f(u + d)` of the band-passed images `a_f`, `b_f` is
//! computed as `IFFT(conj(A)·B·w²)` (`w` the band-pass), so its maximum is at `d`.

use crate::core::fourier::{fftfreq, rfftfreq, Fft2};
use crate::core::interp::bilinear;
use ndarray::{Array2, ArrayView2};
use num_complex::Complex32;

/// Band-pass applied to both images before correlating, as weights on frequencies
/// (cycles/pixel of the working image).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bandpass {
    /// Gaussian high-pass: `1 − exp(−f²/(2σ²))` with `σ = highpass_cycles / n` (`n` the
    /// larger image side): removes gradients over the field.
    pub highpass_cycles: f64,
    /// Gaussian low-pass: `exp(−f²/(2σ²))` with `σ = lowpass_nyquist · 0.5` cycles/pixel.
    pub lowpass_nyquist: f64,
}

impl Bandpass {
    /// Weight `w(f)` at radial frequency `f` (cycles/pixel) for images whose larger side is `n`.
    pub fn weight(&self, f: f64, n: usize) -> f64 {
        let sh = (self.highpass_cycles / n.max(1) as f64).max(1e-9);
        let sl = (self.lowpass_nyquist * 0.5).max(1e-9);
        (1.0 - (-f * f / (2.0 * sh * sh)).exp()) * (-f * f / (2.0 * sl * sl)).exp()
    }
}

/// A correlation peak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    /// Shift of `b` relative to `a` along x, pixels (sub-pixel).
    pub dx: f64,
    /// Shift of `b` relative to `a` along y, pixels (sub-pixel).
    pub dy: f64,
    /// Normalised correlation at the peak pixel, in [−1, 1] (band-passed images).
    pub cc: f64,
    /// Peak significance: `(peak − mean)/std` of the correlation map. Noise gives ~4–5
    /// for typical map sizes; a real match gives far more.
    pub significance: f64,
}

/// Planned correlator for `(ny, nx)` images: FFT plan, band-pass weights and buffers made
/// once; clone one per thread.
#[derive(Clone)]
pub struct Correlator {
    fft: Fft2,
    /// `w²` on the half-spectrum `(ny, nx/2+1)`.
    w2: Array2<f32>,
    /// Multiplicity of each half-spectrum column in Parseval sums (1 or 2).
    mult: Vec<f32>,
    spec_a: Array2<Complex32>,
    spec_b: Array2<Complex32>,
    map: Array2<f32>,
}

impl Correlator {
    /// Plan for `(ny, nx)` images with band-pass `bp`.
    pub fn new(ny: usize, nx: usize, bp: Bandpass) -> Self {
        let fy = fftfreq(ny);
        let fx = rfftfreq(nx);
        let n = nx.max(ny);
        let w2 = Array2::from_shape_fn((ny, nx / 2 + 1), |(y, x)| {
            let f = ((fy[y] * fy[y] + fx[x] * fx[x]) as f64).sqrt();
            bp.weight(f, n).powi(2) as f32
        });
        let mult = (0..nx / 2 + 1)
            .map(|x| {
                if x == 0 || (nx % 2 == 0 && x == nx / 2) {
                    1.0
                } else {
                    2.0
                }
            })
            .collect();
        Correlator {
            fft: Fft2::new(ny, nx),
            w2,
            mult,
            spec_a: Array2::zeros((ny, nx / 2 + 1)),
            spec_b: Array2::zeros((ny, nx / 2 + 1)),
            map: Array2::zeros((ny, nx)),
        }
    }

    /// Image shape `(ny, nx)` this correlator is planned for.
    pub fn shape(&self) -> (usize, usize) {
        self.fft.shape()
    }

    /// Correlate `a` and `b` (`(ny, nx)`, the planned shape) and return the highest peak
    /// with `|d| ≤ max_shift` pixels: `b(u) ≈ a(u − d)` (module docs). The peak is refined to
    /// sub-pixel precision by a parabola through the peak pixel and its neighbours, along x
    /// and y separately.
    pub fn correlate(&mut self, a: ArrayView2<f32>, b: ArrayView2<f32>, max_shift: f64) -> Peak {
        let (ny, nx) = self.shape();
        self.fft.forward_into(a, &mut self.spec_a);
        self.fft.forward_into(b, &mut self.spec_b);
        // energies of the band-passed images (Parseval on the half-spectrum) and the
        // cross-power spectrum, in one pass
        let (mut ea, mut eb) = (0.0f64, 0.0f64);
        for ((y, x), sb) in self.spec_b.indexed_iter_mut() {
            let sa = self.spec_a[[y, x]];
            let w2 = self.w2[[y, x]];
            let m = self.mult[x];
            ea += (m * w2 * sa.norm_sqr()) as f64;
            eb += (m * w2 * sb.norm_sqr()) as f64;
            *sb = sa.conj() * *sb * w2;
        }
        let npix = (nx * ny) as f64;
        let norm = ((ea / npix) * (eb / npix)).sqrt().max(1e-30);
        self.fft.inverse_into(&mut self.spec_b, &mut self.map);
        let p = find_peak(&self.map, max_shift);
        Peak {
            cc: p.value / norm,
            ..p.peak
        }
    }
}

/// The highest pixel of a periodic correlation map `[y, x]` (lag 0 at index 0) within
/// `max_shift` pixels of lag 0, refined by a parabola along x and y through its neighbours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapPeak {
    /// Lag and significance (`cc` left 0: the map has no normalisation here).
    pub peak: Peak,
    /// Map value at the peak pixel.
    pub value: f64,
}

/// Find the peak of `map` (see [`MapPeak`]) with its significance over the whole map; a map
/// with no finite value within the radius gives lag 0 and significance 0.
pub fn find_peak(map: &Array2<f32>, max_shift: f64) -> MapPeak {
    let npix = map.len() as f64;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in map.iter() {
        s1 += v as f64;
        s2 += (v as f64) * (v as f64);
    }
    let mean = s1 / npix;
    let std = (s2 / npix - mean * mean).max(0.0).sqrt().max(1e-30);
    let (dx, dy, value) = peak_within(map, max_shift);
    MapPeak {
        peak: Peak {
            dx,
            dy,
            cc: 0.0,
            significance: if value.is_finite() {
                (value - mean) / std
            } else {
                0.0
            },
        },
        value: if value.is_finite() { value } else { 0.0 },
    }
}

/// The lag `(dx, dy)` (pixels, sub-pixel by a parabola along x and y) and value of the highest
/// pixel of the periodic map `[y, x]` within `max_shift` pixels of lag 0 (index 0); only that
/// disc is visited. `(0, 0, −∞)` when it holds no finite value.
pub fn peak_within(map: &Array2<f32>, max_shift: f64) -> (f64, f64, f64) {
    let (ny, nx) = map.dim();
    let r2 = max_shift * max_shift;
    // signed lags −(n−1)/2 ..= n/2 within the radius, mapped to indices
    let lags = |n: usize| {
        let lo = -(((n - 1) / 2) as isize);
        let hi = (n / 2) as isize;
        let r = max_shift.floor().max(0.0) as isize;
        (lo.max(-r)..=hi.min(r)).map(move |k| (k, k.rem_euclid(n as isize) as usize))
    };
    let mut best = (0usize, 0usize, f32::NEG_INFINITY, 0isize, 0isize);
    for (ky, y) in lags(ny) {
        for (kx, x) in lags(nx) {
            let v = map[[y, x]];
            if ((kx * kx + ky * ky) as f64) <= r2 && v > best.2 {
                best = (y, x, v, kx, ky);
            }
        }
    }
    let (py, px, pv, kx, ky) = best;
    if !pv.is_finite() {
        return (0.0, 0.0, f64::NEG_INFINITY);
    }
    let vertex = |l: f32, c: f32, r: f32| -> f64 {
        let den = (l - 2.0 * c + r) as f64;
        if den < 0.0 {
            (0.5 * (l - r) as f64 / den).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let ox = vertex(map[[py, (px + nx - 1) % nx]], pv, map[[py, (px + 1) % nx]]);
    let oy = vertex(map[[(py + ny - 1) % ny, px]], pv, map[[(py + 1) % ny, px]]);
    (kx as f64 + ox, ky as f64 + oy, pv as f64)
}

/// Stretch `img` `[y, x]` by `factor` perpendicular to the tilt axis about the image centre
/// `(nx/2, ny/2)`: `out(u) = img(c + S⁻¹(u − c))`, `S = I + (factor − 1)·n·nᵀ`, where
/// `n = (cos axis, sin axis)` (image x, y) is the in-plane direction perpendicular to an axis
/// at `axis_deg` counter-clockwise from +Y. Bilinear; 0 outside the image.
pub fn stretch_perpendicular(img: ArrayView2<f32>, axis_deg: f64, factor: f64) -> Array2<f32> {
    let (ny, nx) = img.dim();
    let (s, c) = axis_deg.to_radians().sin_cos();
    let (cx, cy) = ((nx / 2) as f64, (ny / 2) as f64);
    let k = 1.0 / factor - 1.0;
    Array2::from_shape_fn((ny, nx), |(y, x)| {
        let (dx, dy) = (x as f64 - cx, y as f64 - cy);
        let dn = dx * c + dy * s;
        bilinear(&img, cy + dy + k * dn * s, cx + dx + k * dn * c)
    })
}

/// Apply [`S`](stretch_perpendicular)`·v` to a vector `v = (x, y)`: scale its component along
/// `n = (cos axis, sin axis)` by `factor`.
pub fn stretch_vector(v: [f64; 2], axis_deg: f64, factor: f64) -> [f64; 2] {
    let (s, c) = axis_deg.to_radians().sin_cos();
    let dn = v[0] * c + v[1] * s;
    [
        v[0] + (factor - 1.0) * dn * c,
        v[1] + (factor - 1.0) * dn * s,
    ]
}

/// Cosine edge window `(ny, nx)`: 0 → 1 over `fraction` of each side, 1 inside.
pub fn edge_window(ny: usize, nx: usize, fraction: f64) -> Array2<f32> {
    let ramp = |n: usize| {
        crate::core::fourier::cosine_edge_ramp(n, (n as f64 * fraction).round() as usize)
    };
    let (wy, wx) = (ramp(ny), ramp(nx));
    Array2::from_shape_fn((ny, nx), |(y, x)| wy[y] * wx[x])
}

/// Subtract the `w`-weighted mean of `img` and multiply by `w` (same shape), in place.
pub fn weighted_zero_mean(img: &mut Array2<f32>, w: ArrayView2<f32>) {
    let (mut sw, mut sv) = (0.0f64, 0.0f64);
    for (&v, &k) in img.iter().zip(w.iter()) {
        sw += k as f64;
        sv += (k * v) as f64;
    }
    let mean = if sw > 0.0 { (sv / sw) as f32 } else { 0.0 };
    for (v, &k) in img.iter_mut().zip(w.iter()) {
        *v = (*v - mean) * k;
    }
}

/// Least-squares quadratic `s(x) = a + b·x + c·x²` through `(x, s)` points; returns the
/// vertex `−b/(2c)` when `c < 0` (a maximum) and the fit is determined (≥ 3 distinct x),
/// else `None`.
pub fn quadratic_max(xs: &[f64], ys: &[f64]) -> Option<f64> {
    if xs.len() < 3 || xs.len() != ys.len() {
        return None;
    }
    // normal equations in centred x for conditioning
    let n = xs.len() as f64;
    let xm = xs.iter().sum::<f64>() / n;
    let mut m = [[0.0f64; 3]; 3];
    let mut r = [0.0f64; 3];
    for (&x, &y) in xs.iter().zip(ys) {
        let t = x - xm;
        let p = [1.0, t, t * t];
        for i in 0..3 {
            r[i] += p[i] * y;
            for j in 0..3 {
                m[i][j] += p[i] * p[j];
            }
        }
    }
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-300 {
        return None;
    }
    let col = |k: usize| {
        let mut a = m;
        for i in 0..3 {
            a[i][k] = r[i];
        }
        det(&a) / d
    };
    let (b, c) = (col(1), col(2));
    if c < 0.0 {
        Some(xm - b / (2.0 * c))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fourier::fourier_shift_2d;

    fn blobs(n: usize) -> Array2<f32> {
        let centres = [
            (20.0, 30.0, 3.0),
            (40.0, 12.0, 2.0),
            (45.0, 50.0, 4.0),
            (12.0, 44.0, 2.5),
        ];
        Array2::from_shape_fn((n, n), |(y, x)| {
            centres
                .iter()
                .map(|&(cy, cx, s)| {
                    let r2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                    (-r2 / (2.0 * s * s)).exp()
                })
                .sum()
        })
    }

    #[test]
    fn finds_sub_pixel_shifts() {
        let n = 64;
        let a = blobs(n);
        let mut plan = Fft2::new(n, n);
        let bp = Bandpass {
            highpass_cycles: 2.0,
            lowpass_nyquist: 0.6,
        };
        let mut c = Correlator::new(n, n, bp);
        for &(dx, dy) in &[(0.0, 0.0), (3.3, -1.7), (-5.5, 4.25), (0.4, 0.45)] {
            let b = fourier_shift_2d(a.view(), dy, dx, &mut plan);
            let p = c.correlate(a.view(), b.view(), 10.0);
            assert!(
                (p.dx - dx).abs() < 0.1 && (p.dy - dy).abs() < 0.1,
                "{dx},{dy}: {p:?}"
            );
            assert!(p.cc > 0.95 && p.significance > 8.0, "{p:?}");
        }
        // the search radius is respected
        let b = fourier_shift_2d(a.view(), 0.0, 12.0, &mut plan);
        let p = c.correlate(a.view(), b.view(), 5.0);
        assert!(p.dx.hypot(p.dy) <= 5.5, "{p:?}");
    }

    #[test]
    fn stretch_matches_its_vector_map() {
        let n = 64;
        let a = blobs(n);
        let axis = 85.0;
        let f = 0.8;
        let s = stretch_perpendicular(a.view(), axis, f);
        // the blob at (x 30, y 20) moves to c + S·((30, 20) − c)
        let c = [32.0, 32.0];
        let v = stretch_vector([30.0 - c[0], 20.0 - c[1]], axis, f);
        let (ex, ey) = (c[0] + v[0], c[1] + v[1]);
        let (mut w, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
        for ((y, x), &val) in s.indexed_iter() {
            if (x as f64 - ex).hypot(y as f64 - ey) < 6.0 {
                w += val as f64;
                mx += val as f64 * x as f64;
                my += val as f64 * y as f64;
            }
        }
        assert!(
            (mx / w - ex).abs() < 0.2 && (my / w - ey).abs() < 0.2,
            "{} {} vs {ex} {ey}",
            mx / w,
            my / w
        );
        // along the axis nothing moves: stretching (0, 10) by any factor at axis 0° is identity
        assert_eq!(stretch_vector([0.0, 10.0], 0.0, 0.5), [0.0, 10.0]);
    }

    #[test]
    fn quadratic_vertex() {
        let xs = [-2.0, -1.0, 0.0, 1.0, 2.0];
        let ys: Vec<f64> = xs.iter().map(|x| 3.0 - (x - 0.37f64).powi(2)).collect();
        assert!((quadratic_max(&xs, &ys).unwrap() - 0.37).abs() < 1e-9);
        let up: Vec<f64> = xs.iter().map(|x| x * x).collect();
        assert!(quadratic_max(&xs, &up).is_none());
    }
}
