//! Sub-pixel bead centres from a radial bead profile learnt from the data.
//!
//! A bead imaged with defocus is a dark disk with bright and dark CTF fringes around it; a
//! centroid of darkness is pulled around by the fringes. Instead (as IMOD `beadtrack` fits an
//! average bead), the mean radial profile `T(d)` of many beads is measured from the images
//! ([`BeadProfile::measure`]), and each bead is fitted by least squares with
//! `v(x) ≈ a + b·T(|x − c|)` over a disk of two bead radii (Gauss–Newton in `c`, `a`, `b`):
//! any rotationally symmetric appearance, fringes included, gives an unbiased centre.
//!
//! Positions are image pixel indices `(x, y)` of the unbinned image.

use super::detect::{median, Candidate};
use super::solve::cholesky_solve;
use ndarray::{ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

/// Radial profile sampling step, pixels.
const STEP: f64 = 0.25;

/// Mean radial bead profile, relative contrast `v / background − 1`, sampled every
/// `STEP` pixels from the centre out to `radius_fit`.
#[derive(Clone, Debug, PartialEq)]
pub struct BeadProfile {
    values: Vec<f64>,
    /// Fitting radius, pixels (two bead radii + 2).
    pub radius_fit: f64,
}

impl BeadProfile {
    /// Measure the profile of beads of radius `r` pixels around `centres` (image, centre
    /// pairs); each bead is normalised by the median of its outermost 2-pixel ring. `None`
    /// when no bead lies fully inside its image.
    pub fn measure(items: &[(ArrayView2<f32>, [f64; 2])], r: f64) -> Option<BeadProfile> {
        let radius_fit = 2.0 * r + 2.0;
        let nbins = (radius_fit / STEP).ceil() as usize + 2;
        let (mut sum, mut cnt) = (vec![0.0f64; nbins], vec![0usize; nbins]);
        let mut used = 0;
        let mut ring = Vec::new();
        for (img, c) in items {
            let Some(win) = window(img, *c, radius_fit) else {
                continue;
            };
            ring.clear();
            for_pixels(img, win, *c, radius_fit, |_, _, d, v| {
                if d >= radius_fit - 2.0 {
                    ring.push(v as f32);
                }
            });
            let bg = median(&mut ring) as f64;
            if bg.abs() < 1e-12 {
                continue;
            }
            for_pixels(img, win, *c, radius_fit, |_, _, d, v| {
                let k = (d / STEP) as usize;
                sum[k] += v / bg - 1.0;
                cnt[k] += 1;
            });
            used += 1;
        }
        if used == 0 {
            return None;
        }
        // empty inner bins (few pixels near d = 0) take the next filled one
        let mut values = vec![0.0; nbins];
        let mut last = None;
        for k in (0..nbins).rev() {
            if cnt[k] > 0 {
                last = Some(sum[k] / cnt[k] as f64);
            }
            values[k] = last.unwrap_or(0.0);
        }
        // light smoothing (3-bin running mean) against sampling noise
        let raw = values.clone();
        for k in 1..nbins - 1 {
            values[k] = (raw[k - 1] + raw[k] + raw[k + 1]) / 3.0;
        }
        Some(BeadProfile { values, radius_fit })
    }

    /// Profile value and derivative at distance `d` (linear interpolation).
    fn eval(&self, d: f64) -> (f64, f64) {
        let x = d / STEP;
        let k = (x.floor() as usize).min(self.values.len() - 2);
        let f = x - k as f64;
        let (a, b) = (self.values[k], self.values[k + 1]);
        (a + f * (b - a), (b - a) / STEP)
    }

    /// Fit the centre of the bead near `start` `(x, y)` in `img`. `None` when the fit leaves
    /// the image, moves more than `max_move` pixels or does not find a bead-like (positive
    /// `b`) match.
    pub fn fit(&self, img: &ArrayView2<f32>, start: [f64; 2], max_move: f64) -> Option<[f64; 2]> {
        let mut c = start;
        let (mut a, mut b) = (0.0, 0.0);
        // a, b for the starting centre by linear least squares
        let mut first = true;
        for _ in 0..10 {
            let win = window(img, c, self.radius_fit)?;
            let mut ata = vec![0.0f64; 16];
            let mut atb = vec![0.0f64; 4];
            for_pixels(img, win, c, self.radius_fit, |dx, dy, d, v| {
                let (t, tp) = self.eval(d);
                let (gx, gy) = if d > 1e-6 {
                    (-b * tp * dx / d, -b * tp * dy / d)
                } else {
                    (0.0, 0.0)
                };
                let j = [1.0, t, gx, gy];
                let e = v - a - b * t;
                for p in 0..4 {
                    atb[p] += j[p] * e;
                    for q in 0..4 {
                        ata[p * 4 + q] += j[p] * j[q];
                    }
                }
            });
            if first {
                // linear fit of a, b only (the centre derivatives vanish with b = 0)
                let det = ata[0] * ata[5] - ata[1] * ata[4];
                if det.abs() < 1e-12 {
                    return None;
                }
                let da = (ata[5] * atb[0] - ata[1] * atb[1]) / det;
                let db = (ata[0] * atb[1] - ata[4] * atb[0]) / det;
                a += da;
                b += db;
                first = false;
                if b <= 0.0 {
                    return None;
                }
                continue;
            }
            // small ridge on the centre so a flat patch cannot send it flying
            ata[10] += 1e-9 * (ata[0] + 1.0);
            ata[15] += 1e-9 * (ata[0] + 1.0);
            let step = cholesky_solve(ata, atb, 4)?;
            a += step[0];
            b += step[1];
            let mv = [step[2].clamp(-1.0, 1.0), step[3].clamp(-1.0, 1.0)];
            c = [c[0] + mv[0], c[1] + mv[1]];
            if (c[0] - start[0]).hypot(c[1] - start[1]) > max_move || b <= 0.0 {
                return None;
            }
            if mv[0].hypot(mv[1]) < 1e-3 {
                break;
            }
        }
        Some(c)
    }
}

/// Refine the coarse candidates of every tilt of `stack` `[tilt, y, x]` (beads of radius
/// `r` pixels) in place: the profile is measured around the 10 strongest candidates of each
/// tilt, every candidate is fitted, the profile is measured again around the fitted centres
/// and every candidate is fitted once more from its coarse position. Candidates whose fit
/// fails (no bead-like match within `r`) are dropped. Returns the final profile (`None`
/// when there was no candidate to learn it from; the candidates are then left coarse).
pub fn refine_candidates(
    stack: ArrayView3<f32>,
    cands: &mut [Vec<Candidate>],
    r: f64,
) -> Option<BeadProfile> {
    let learn = |cs: &[Vec<Candidate>]| {
        let items: Vec<(ArrayView2<f32>, [f64; 2])> = cs
            .iter()
            .enumerate()
            .flat_map(|(i, v)| {
                let img = stack.index_axis(Axis(0), i);
                v.iter().take(10).map(move |c| (img, [c.x, c.y]))
            })
            .collect();
        BeadProfile::measure(&items, r)
    };
    let fit_all = |p: &BeadProfile, cs: &[Vec<Candidate>]| -> Vec<Vec<Candidate>> {
        cs.par_iter()
            .enumerate()
            .map(|(i, v)| {
                let img = stack.index_axis(Axis(0), i);
                v.iter()
                    .filter_map(|c| {
                        p.fit(&img, [c.x, c.y], r).map(|q| Candidate {
                            x: q[0],
                            y: q[1],
                            score: c.score,
                        })
                    })
                    .collect()
            })
            .collect()
    };
    let p0 = learn(cands)?;
    let first = fit_all(&p0, cands);
    let p1 = learn(&first).unwrap_or(p0);
    let second = fit_all(&p1, cands);
    for (c, s) in cands.iter_mut().zip(second) {
        *c = s;
    }
    Some(p1)
}

/// Pixel bounds `[x0, x1, y0, y1]` (inclusive) of the disk of radius `r` around `c`;
/// `None` when the disk is not fully inside the image.
fn window(img: &ArrayView2<f32>, c: [f64; 2], r: f64) -> Option<[usize; 4]> {
    let (ny, nx) = img.dim();
    let (x0, y0) = ((c[0] - r).floor(), (c[1] - r).floor());
    let (x1, y1) = ((c[0] + r).ceil(), (c[1] + r).ceil());
    if x0 < 0.0 || y0 < 0.0 || x1 > (nx - 1) as f64 || y1 > (ny - 1) as f64 {
        return None;
    }
    Some([x0 as usize, x1 as usize, y0 as usize, y1 as usize])
}

/// Call `f(dx, dy, d, value)` for every pixel of the window `win` within `r` of `c`.
fn for_pixels<F: FnMut(f64, f64, f64, f64)>(
    img: &ArrayView2<f32>,
    win: [usize; 4],
    c: [f64; 2],
    r: f64,
    mut f: F,
) {
    let [x0, x1, y0, y1] = win;
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f64 - c[0], y as f64 - c[1]);
            let d = dx.hypot(dy);
            if d < r {
                f(dx, dy, d, img[[y, x]] as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    /// A dark disk with a bright fringe ring (the look of a defocused gold bead), supersampled.
    fn fringed_bead(n: usize, r: f64, c: [f64; 2], sigma: f64, seed: u64) -> Array2<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = Normal::new(0.0, sigma).unwrap();
        Array2::from_shape_fn((n, n), |(y, x)| {
            let mut v = 0.0;
            for s in 0..16 {
                let dx = x as f64 + ((s % 4) as f64 + 0.5) / 4.0 - 0.5 - c[0];
                let dy = y as f64 + ((s / 4) as f64 + 0.5) / 4.0 - 0.5 - c[1];
                let d = dx.hypot(dy);
                v += if d < r {
                    -0.35
                } else {
                    0.3 * (-(d - r - 1.5).powi(2) / 2.0).exp()
                } / 16.0;
            }
            (800.0 * (1.0 + v) + noise.sample(&mut rng)) as f32
        })
    }

    #[test]
    fn fits_fringed_beads_without_bias() {
        let r = 6.0;
        let truth = [[31.3, 30.8], [30.55, 32.1], [32.9, 31.45], [31.0, 31.0]];
        let imgs: Vec<Array2<f32>> = truth
            .iter()
            .enumerate()
            .map(|(k, c)| fringed_bead(64, r, *c, 20.0, k as u64))
            .collect();
        // profile measured around deliberately rough centres (1 px off), then refined once
        let rough: Vec<(ArrayView2<f32>, [f64; 2])> =
            imgs.iter().map(|i| (i.view(), [32.0, 32.0])).collect();
        let p0 = BeadProfile::measure(&rough, r).unwrap();
        let first: Vec<[f64; 2]> = imgs
            .iter()
            .map(|i| p0.fit(&i.view(), [32.0, 32.0], r).unwrap())
            .collect();
        let refined: Vec<(ArrayView2<f32>, [f64; 2])> = imgs
            .iter()
            .zip(&first)
            .map(|(i, c)| (i.view(), *c))
            .collect();
        let p1 = BeadProfile::measure(&refined, r).unwrap();
        for (img, t) in imgs.iter().zip(&truth) {
            let c = p1.fit(&img.view(), [32.0, 32.0], r).unwrap();
            let e = (c[0] - t[0]).hypot(c[1] - t[1]);
            assert!(e < 0.1, "fit {c:?} truth {t:?}");
        }
        // a flat image has no bead
        let flat = Array2::<f32>::from_elem((64, 64), 800.0);
        assert!(p1.fit(&flat.view(), [32.0, 32.0], r).is_none());
    }
}
