//! The frames of a movie in Fourier space, transformed once, and the global alignment done
//! entirely on those spectra (as [`super::global`] describes it): shifting a frame is a phase
//! ramp, the sum of the others is a subtraction, and each correlation costs one inverse FFT
//! on a grid **cropped** to the band the B-factor low-pass lets through (MotionCor2 also
//! correlates binned frames). The lag found on the coarse grid is scaled back to pixels; the
//! iterations re-centre every frame, so the parabolic sub-pixel fit ends near lag 0 where it
//! has no bias.
//!
//! Spectra: half-spectra `(ny, nx/2+1)` of `(ny, nx)` frames, unnormalised forward FFT
//! ([`crate::core::fourier::Fft2`]); shifts in pixels `[dx, dy]` (content displacement).

use super::global::{GlobalMotion, GlobalParams};
use crate::align::xcorr::{peak_within, Bandpass};
use crate::core::fourier::{fftfreq, rfftfreq, shift_spectrum, Fft2};
use ndarray::{Array2, ArrayView3, Axis};
use num_complex::Complex32;
use rayon::prelude::*;

/// The frames of one movie as half-spectra.
#[derive(Clone, Debug)]
pub struct MovieSpectra {
    /// Frame shape `(ny, nx)`.
    pub shape: (usize, usize),
    /// One half-spectrum `(ny, nx/2+1)` per frame.
    pub frames: Vec<Array2<Complex32>>,
}

impl MovieSpectra {
    /// Forward-transform every frame of `frames` `[frame, y, x]` (in parallel).
    pub fn new(frames: ArrayView3<f32>) -> MovieSpectra {
        let (_, ny, nx) = frames.dim();
        let mut s = MovieSpectra {
            shape: (ny, nx),
            frames: Vec::new(),
        };
        s.push_frames(frames, &Fft2::new(ny, nx));
        s
    }

    /// Transform a movie of `n_frames` frames of `(ny, nx)` delivered in chunks by
    /// `chunk(z0, z1) -> [z1 − z0, ny, nx]`, `chunk_len` frames at a time, so the real
    /// frames of the whole movie are never held at once (half the memory of reading it
    /// whole). Each chunk is checked as [`super::global::align_global`] checks a movie.
    pub fn from_chunks(
        n_frames: usize,
        (ny, nx): (usize, usize),
        chunk_len: usize,
        mut chunk: impl FnMut(usize, usize) -> crate::Result<ndarray::Array3<f32>>,
    ) -> crate::Result<MovieSpectra> {
        let plan = Fft2::new(ny, nx);
        let mut s = MovieSpectra {
            shape: (ny, nx),
            frames: Vec::with_capacity(n_frames),
        };
        let step = chunk_len.max(1);
        for z0 in (0..n_frames).step_by(step) {
            let z1 = (z0 + step).min(n_frames);
            let c = chunk(z0, z1)?;
            if c.dim() != (z1 - z0, ny, nx) {
                return Err(crate::Error::bad_input(
                    "<movie>",
                    "frames",
                    format!(
                        "frames {z0}..{z1} have shape {:?}, expected ({}, {ny}, {nx}): the movie \
                         file is inconsistent",
                        c.dim(),
                        z1 - z0
                    ),
                ));
            }
            super::global::check_values(c.view())?;
            s.push_frames(c.view(), &plan);
        }
        Ok(s)
    }

    /// Read and transform the movie at `path`, each frame multiplied by `gain` (oriented,
    /// `[y, x]`, see [`super::gain`]) when given: MRC movies (`.mrcs`, `.mrc`, `.st`) a few
    /// frames at a time ([`Self::from_chunks`]), other formats read whole
    /// ([`super::movie::read_movie`]). Errors name the file.
    pub fn read(
        path: &std::path::Path,
        gain: Option<&super::gain::Gain>,
    ) -> crate::Result<MovieSpectra> {
        let named = |e| super::series::rename_movie(e, &path.display().to_string());
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if super::movie::MRC_EXTENSIONS.contains(&ext.as_str()) {
            let h = crate::io::mrc::read_header(path)?;
            super::global::check_shape((h.nz, h.ny, h.nx)).map_err(named)?;
            let chunk = rayon::current_num_threads().max(2);
            return Self::from_chunks(h.nz, (h.ny, h.nx), chunk, |z0, z1| {
                let mut c = crate::io::mrc::read_sections(path, z0, z1)?;
                if let Some(g) = gain {
                    g.apply(&mut c)?;
                }
                Ok(c)
            })
            .map_err(named);
        }
        let mut frames = super::movie::read_movie(path)?;
        if let Some(g) = gain {
            g.apply(&mut frames)?;
        }
        super::global::check_frames(frames.view()).map_err(named)?;
        Ok(Self::new(frames.view()))
    }

    fn push_frames(&mut self, frames: ArrayView3<f32>, plan: &Fft2) {
        let views: Vec<_> = frames.axis_iter(Axis(0)).collect();
        let mut new: Vec<Array2<Complex32>> = views
            .into_par_iter()
            .map_init(|| plan.clone(), |p, f| p.forward(f))
            .collect();
        self.frames.append(&mut new);
    }
}

/// The smallest size ≥ `n` (and ≤ `limit`) whose prime factors are 2, 3 and 5, even.
fn smooth_even(n: usize, limit: usize) -> usize {
    let smooth = |mut m: usize| {
        for p in [2, 3, 5] {
            while m % p == 0 {
                m /= p;
            }
        }
        m == 1
    };
    (n.max(16)..limit)
        .find(|&m| m % 2 == 0 && smooth(m))
        .unwrap_or(limit)
}

/// Signed frequency index `k` of row `ky` of an `m`-row grid, as a row of an `n`-row grid.
fn source_row(ky: usize, m: usize, n: usize) -> usize {
    if ky < m.div_ceil(2) {
        ky
    } else {
        n - (m - ky)
    }
}

/// Align the frames of `spectra` (pixel `pixel_a` Å) with `params` (module docs).
pub fn align_spectra(spectra: &MovieSpectra, pixel_a: f64, params: &GlobalParams) -> GlobalMotion {
    let (ny, nx) = spectra.shape;
    let nf = spectra.frames.len();
    // B-factor low-pass exp(−B s²/4) as a Gaussian of σ = sqrt(2/B)·pixel cycles/pixel
    let sigma_cpp = (2.0 / params.bfactor_a2.max(1e-6)).sqrt() * pixel_a;
    let bp = Bandpass {
        highpass_cycles: 1.0,
        lowpass_nyquist: (sigma_cpp / 0.5).min(4.0),
    };
    // keep the band where the weight exceeds 1e-3 (e^(−f²/2σ²) = 1e-3 at f = 3.72σ)
    let fc = (3.72 * bp.lowpass_nyquist * 0.5).min(0.5);
    let my = smooth_even((2.0 * fc * ny as f64).ceil() as usize, ny);
    let mx = smooth_even((2.0 * fc * nx as f64).ceil() as usize, nx);
    let (fy, fx) = (fftfreq(ny), rfftfreq(nx));
    let n = nx.max(ny);
    // cropped, band-passed spectra (the correlation of two of them carries w²)
    let cropped: Vec<Array2<Complex32>> = spectra
        .frames
        .par_iter()
        .map(|s| {
            Array2::from_shape_fn((my, mx / 2 + 1), |(ky, kx)| {
                let sy = source_row(ky, my, ny);
                let f = ((fy[sy] * fy[sy] + fx[kx] * fx[kx]) as f64).sqrt();
                s[[sy, kx]] * bp.weight(f, n) as f32
            })
        })
        .collect();
    let (scale_x, scale_y) = (nx as f64 / mx as f64, ny as f64 / my as f64);
    let radius = params.max_shift_px / scale_x.max(scale_y);
    let plan = Fft2::new(my, mx);
    let mut shifts = vec![[0.0f64; 2]; nf];
    let mut it = 0;
    let mut last = f64::INFINITY;
    // buffers reused by every iteration (fresh large allocations cost page clearing)
    let mut aligned: Vec<Array2<Complex32>> = cropped.clone();
    let mut sum = Array2::<Complex32>::zeros((my, mx / 2 + 1));
    let mut updates = vec![[0.0f64; 2]; nf];
    while it < params.iterations {
        it += 1;
        aligned
            .par_iter_mut()
            .zip(cropped.par_iter().zip(shifts.par_iter()))
            .for_each(|(a, (c, s))| {
                a.assign(c);
                // coarse-grid pixels: the ramp of a shift d on the cropped grid is the same
                // phase per frequency as on the full grid
                shift_spectrum(a, mx, -s[1] / scale_y, -s[0] / scale_x);
            });
        sum.fill(Complex32::new(0.0, 0.0));
        for a in &aligned {
            sum += a;
        }
        aligned
            .par_iter()
            .zip(updates.par_iter_mut())
            .for_each_init(
                || {
                    (
                        plan.clone(),
                        Array2::<Complex32>::zeros((my, mx / 2 + 1)),
                        Array2::<f32>::zeros((my, mx)),
                    )
                },
                |(p, cross, map), (a, u)| {
                    // correlation of the others (a) with this frame (b): conj(A)·B
                    cross.zip_mut_with(a, |c, &b| *c = b);
                    ndarray::Zip::from(&mut *cross)
                        .and(&sum)
                        .for_each(|c, &t| *c *= (t - *c).conj());
                    p.inverse_into(cross, map);
                    let (dx, dy, _) = peak_within(map, radius);
                    *u = [dx * scale_x, dy * scale_y];
                },
            );
        last = updates
            .iter()
            .map(|u| u[0].hypot(u[1]))
            .fold(0.0f64, f64::max);
        for (s, u) in shifts.iter_mut().zip(&updates) {
            s[0] += u[0];
            s[1] += u[1];
        }
        let mean = shifts
            .iter()
            .fold([0.0, 0.0], |a, s| [a[0] + s[0], a[1] + s[1]]);
        for s in shifts.iter_mut() {
            s[0] -= mean[0] / nf as f64;
            s[1] -= mean[1] / nf as f64;
        }
        if last < params.tolerance_px {
            break;
        }
    }
    GlobalMotion {
        shifts_px: shifts,
        iterations: it,
        last_update_px: last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_reading_gives_the_spectra_of_the_whole_movie() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.mrcs");
        let mut frames = ndarray::Array3::from_shape_fn((5, 32, 24), |(f, y, x)| {
            ((f * 7 + y * 3 + x) % 11) as f32
        });
        crate::io::mrc::write(&p, frames.view(), 1.0, crate::io::mrc::MrcKind::ImageStack).unwrap();
        let whole = MovieSpectra::new(frames.view());
        let read = MovieSpectra::read(&p, None).unwrap();
        assert_eq!(read.shape, (32, 24));
        assert_eq!(read.frames, whole.frames);
        // TIFF movies go through read_movie, not the MRC reader
        let t = d.path().join("m.tif");
        crate::motion::tif::tests::write_u16(&t, &frames, true);
        assert_eq!(MovieSpectra::read(&t, None).unwrap().frames, whole.frames);
        let chunks = MovieSpectra::from_chunks(5, (32, 24), 2, |a, b| {
            Ok(frames.slice(ndarray::s![a..b, .., ..]).to_owned())
        })
        .unwrap();
        assert_eq!(chunks.frames, whole.frames);
        frames[[4, 1, 1]] = f32::NAN;
        let e = MovieSpectra::from_chunks(5, (32, 24), 2, |a, b| {
            Ok(frames.slice(ndarray::s![a..b, .., ..]).to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("NaN"), "{e}");
        let e = MovieSpectra::from_chunks(5, (32, 20), 2, |a, b| {
            Ok(frames.slice(ndarray::s![a..b, .., ..]).to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("inconsistent"), "{e}");
    }

    #[test]
    fn crop_sizes_are_fft_friendly_and_rows_map_to_signed_frequencies() {
        assert_eq!(smooth_even(450, 1024), 450);
        assert_eq!(smooth_even(451, 1024), 480);
        assert_eq!(smooth_even(2000, 1024), 1024);
        // 8-row grid inside a 16-row grid: 0..3 stay, 4..7 are −4..−1 → 12..15
        let rows: Vec<usize> = (0..8).map(|k| source_row(k, 8, 16)).collect();
        assert_eq!(rows, vec![0, 1, 2, 3, 12, 13, 14, 15]);
    }
}
