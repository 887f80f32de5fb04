//! Coarse alignment: cross-correlation of neighbouring tilts with cosine stretching,
//! cumulative shifts outward from the zero tilt, and a tilt-axis search.
//!
//! Model (module docs of `core::geometry`): a flat specimen seen at tilt `θ` is compressed by
//! `cos θ` perpendicular to the tilt axis. With `O_k` the projection about the specimen centre
//! and `S` the stretch by `f = cos θ_k / cos θ_j` perpendicular to the axis, `O_k ≈ O_j ∘ S⁻¹`.
//! Image `j` is `I_j(u) = O_j(u − c − s_j)`, so the stretched image
//! `J(u) = I_j(c + S⁻¹(u − c)) = O_j(S⁻¹(u − c − S·s_j))` and `I_k(u) = J(u − d)` with
//! `d = s_k − S·s_j`: the correlation of `J` with `I_k` gives `d`, and `s_k = d + S·s_j`,
//! accumulated outward from the tilt nearest 0° (whose shift is set to 0).

use super::xcorr::{edge_window, stretch_perpendicular, stretch_vector, weighted_zero_mean};
use super::xcorr::{quadratic_max, Correlator};
use ndarray::{Array2, ArrayView3, Axis};
use rayon::prelude::*;

/// Partners per tilt in the neighbour chain (nearest, second and third nearest towards the
/// reference tilt).
const LINKS: usize = 3;
/// Candidate shifts closer than this fraction of the shorter image side agree (smaller
/// disagreements are left to projection matching; a wrong peak is usually far off).
const AGREE_FRACTION: f64 = 0.1;

/// Result of one pass of neighbour correlation.
#[derive(Clone, Debug, PartialEq)]
pub struct CoarseShifts {
    /// Per tilt (stack order) the image shift `(x, y)` in working pixels, relative to the
    /// reference tilt (the one nearest 0°, shift 0).
    pub shifts_px: Vec<[f64; 2]>,
    /// Index of the reference tilt.
    pub reference: usize,
    /// Mean normalised correlation of the neighbour pairs.
    pub mean_cc: f64,
    /// Per tilt the significance of its correlation with its lower-tilt neighbour (the
    /// reference gets `f64::INFINITY`).
    pub significance: Vec<f64>,
}

/// Correlate every tilt with its lower-|tilt| neighbour (stretched by
/// `cos θ_k / cos θ_j` perpendicular to `axis_deg`) and accumulate the shifts.
///
/// Each tilt is also correlated with its second and third lower-|tilt| neighbours; of the
/// (up to 3) shifts these links give, the one most of the others agree with (within
/// `AGREE_FRACTION` = 0.1 of the shorter side; ties: the nearest neighbour's) is kept, so a single wrong peak (e.g.
/// one gold bead matched to another) does not offset the rest of the chain.
///
/// `images` `[tilt, y, x]`: pre-processed working images (zero-mean contrast, tapered
/// edges), stack order = ascending tilt; `tilts_deg`: one angle per image; `corr` a
/// correlator planned for the image shape (cloned per thread); `max_shift_px` the search
/// radius in working pixels.
pub fn neighbour_shifts(
    images: ArrayView3<f32>,
    tilts_deg: &[f64],
    axis_deg: f64,
    corr: &Correlator,
    max_shift_px: f64,
) -> CoarseShifts {
    let (nt, ny, nx) = images.dim();
    let reference = (0..nt)
        .min_by(|&a, &b| tilts_deg[a].abs().total_cmp(&tilts_deg[b].abs()))
        .unwrap_or(0);
    let window = edge_window(ny, nx, 0.1);
    // lower-|tilt| neighbour of each tilt (None for the reference)
    let parent = |k: usize| -> Option<usize> {
        match k.cmp(&reference) {
            std::cmp::Ordering::Greater => Some(k - 1),
            std::cmp::Ordering::Less => Some(k + 1),
            std::cmp::Ordering::Equal => None,
        }
    };
    let factor = |k: usize, j: usize| {
        tilts_deg[k].to_radians().cos() / tilts_deg[j].to_radians().cos().max(1e-3)
    };
    // up to LINKS lower-|tilt| partners of each tilt: k∓1, k∓2, k∓3 (not past the reference)
    let partners = |k: usize| -> Vec<usize> {
        let mut v = Vec::new();
        let mut j = k;
        while let Some(p) = parent(j) {
            v.push(p);
            if v.len() == LINKS {
                break;
            }
            j = p;
        }
        v
    };
    let jobs: Vec<(usize, usize)> = (0..nt)
        .flat_map(|k| partners(k).into_iter().map(move |j| (k, j)))
        .collect();
    let peaks: Vec<super::xcorr::Peak> = jobs
        .par_iter()
        .map_init(
            || corr.clone(),
            |c, &(k, j)| {
                let mut a: Array2<f32> =
                    stretch_perpendicular(images.index_axis(Axis(0), j), axis_deg, factor(k, j));
                let mut b = images.index_axis(Axis(0), k).to_owned();
                weighted_zero_mean(&mut a, window.view());
                weighted_zero_mean(&mut b, window.view());
                c.correlate(a.view(), b.view(), max_shift_px)
            },
        )
        .collect();
    let mut links: Vec<Vec<(usize, super::xcorr::Peak)>> = vec![Vec::new(); nt];
    for (&(k, j), p) in jobs.iter().zip(peaks) {
        links[k].push((j, p));
    }
    let pairs: Vec<Option<super::xcorr::Peak>> =
        links.iter().map(|l| l.first().map(|x| x.1)).collect();
    let agree_px = AGREE_FRACTION * ny.min(nx) as f64;
    let mut shifts = vec![[0.0f64; 2]; nt];
    let mut significance = vec![f64::INFINITY; nt];
    let order_up = reference + 1..nt;
    let order_down = (0..reference).rev();
    for k in order_up.chain(order_down) {
        // candidate shifts of tilt k via each partner; keep the one most others agree with
        // (ties: the nearest partner), so one wrong peak does not offset the rest of the chain
        let cands: Vec<([f64; 2], f64)> = links[k]
            .iter()
            .map(|(j, p)| {
                let sj = stretch_vector(shifts[*j], axis_deg, factor(k, *j));
                ([p.dx + sj[0], p.dy + sj[1]], p.significance)
            })
            .collect();
        let support = |c: &[f64; 2]| {
            cands
                .iter()
                .filter(|o| (o.0[0] - c[0]).hypot(o.0[1] - c[1]) < agree_px)
                .count()
        };
        let mut best = 0;
        for i in 1..cands.len() {
            if support(&cands[i].0) > support(&cands[best].0) {
                best = i;
            }
        }
        shifts[k] = cands[best].0;
        significance[k] = cands[best].1;
    }
    let ccs: Vec<f64> = pairs.iter().flatten().map(|p| p.cc).collect();
    let mean_cc = if ccs.is_empty() {
        0.0
    } else {
        ccs.iter().sum::<f64>() / ccs.len() as f64
    };
    CoarseShifts {
        shifts_px: shifts,
        reference,
        mean_cc,
        significance,
    }
}

/// Outcome of the tilt-axis search of the coarse stage.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisSearch {
    /// Best axis, degrees.
    pub axis_deg: f64,
    /// Shifts at the best axis.
    pub shifts: CoarseShifts,
    /// `(axis°, mean cc)` of every candidate tried.
    pub scores: Vec<(f64, f64)>,
}

/// Search the tilt axis: run [`neighbour_shifts`] for axes `axis0 + k·step`,
/// `k = −n..=n` (`n = round(half_range/step)`), extend the scan by a step while the best is
/// at its edge (up to 3 extra steps), fit a quadratic to the mean correlation over the best
/// candidate and its neighbours (±2 steps), and return the shifts at the fitted axis.
pub fn search_axis(
    images: ArrayView3<f32>,
    tilts_deg: &[f64],
    axis0: f64,
    half_range: f64,
    step: f64,
    corr: &Correlator,
    max_shift_px: f64,
) -> AxisSearch {
    let step = step.abs().max(1e-3);
    let n = (half_range / step).round().max(0.0) as i64;
    let eval = |a: f64| neighbour_shifts(images, tilts_deg, a, corr, max_shift_px).mean_cc;
    let mut scores: Vec<(f64, f64)> = (-n..=n)
        .map(|k| {
            let a = axis0 + k as f64 * step;
            (a, eval(a))
        })
        .collect();
    for _ in 0..3 {
        scores.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best = best_index(&scores);
        let extend = if best == 0 {
            scores[0].0 - step
        } else if best + 1 == scores.len() {
            scores[best].0 + step
        } else {
            break;
        };
        scores.push((extend, eval(extend)));
    }
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    let axis = refine_maximum(&scores, step);
    let shifts = neighbour_shifts(images, tilts_deg, axis, corr, max_shift_px);
    AxisSearch {
        axis_deg: axis,
        shifts,
        scores,
    }
}

fn best_index(scores: &[(f64, f64)]) -> usize {
    (0..scores.len())
        .max_by(|&a, &b| scores[a].1.total_cmp(&scores[b].1))
        .unwrap_or(0)
}

/// The maximum of sampled `(x, score)` pairs (sorted by x): a least-squares quadratic over the
/// best sample and up to two neighbours each side, clamped to ±`step` of the best sample;
/// the best sample itself when the fit has no maximum.
pub fn refine_maximum(scores: &[(f64, f64)], step: f64) -> f64 {
    let best = best_index(scores);
    let lo = best.saturating_sub(2);
    let hi = (best + 3).min(scores.len());
    let xs: Vec<f64> = scores[lo..hi].iter().map(|s| s.0).collect();
    let ys: Vec<f64> = scores[lo..hi].iter().map(|s| s.1).collect();
    let x0 = scores[best].0;
    match quadratic_max(&xs, &ys) {
        Some(v) => v.clamp(x0 - step, x0 + step),
        None => x0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::xcorr::Bandpass;
    use super::*;
    use crate::core::fourier::{fourier_shift_2d, Fft2};
    use crate::core::geometry::{apply, TiltImage};
    use ndarray::Array3;

    /// Gaussian blobs at specimen points projected with the core geometry: a textbook flat
    /// specimen, exactly the model of the module docs.
    fn series(axis: f64, shifts: &[[f64; 2]], tilts: &[f64], n: usize) -> Array3<f32> {
        let mut s = 3u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64) / ((1u64 << 53) as f64) - 0.5
        };
        let pts: Vec<[f64; 3]> = (0..60)
            .map(|_| [rnd() * 0.7 * n as f64, rnd() * 0.7 * n as f64, rnd() * 6.0])
            .collect();
        let mut out = Array3::zeros((tilts.len(), n, n));
        for (i, &t) in tilts.iter().enumerate() {
            let r = TiltImage::nominal(t, axis).rotation();
            let c = (n / 2) as f64;
            let uv: Vec<[f64; 2]> = pts
                .iter()
                .map(|&p| {
                    let q = apply(&r, p);
                    [c + q[0] + shifts[i][0], c + q[1] + shifts[i][1]]
                })
                .collect();
            for ((y, x), v) in out.index_axis_mut(Axis(0), i).indexed_iter_mut() {
                *v = uv
                    .iter()
                    .map(|q| {
                        let r2 = (x as f64 - q[0]).powi(2) + (y as f64 - q[1]).powi(2);
                        (-r2 / 4.5).exp() as f32
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn recovers_shifts_and_axis_of_a_flat_specimen() {
        let n = 96;
        let tilts: Vec<f64> = (-10..=10).map(|k| k as f64 * 5.0).collect();
        let shifts: Vec<[f64; 2]> = (0..tilts.len())
            .map(|i| [((i * 7) % 11) as f64 - 5.0, ((i * 5) % 9) as f64 - 4.0])
            .collect();
        let axis = 80.0;
        let imgs = series(axis, &shifts, &tilts, n);
        let bp = Bandpass {
            highpass_cycles: 2.0,
            lowpass_nyquist: 0.6,
        };
        let corr = Correlator::new(n, n, bp);
        let s = neighbour_shifts(imgs.view(), &tilts, axis, &corr, 20.0);
        let r = s.reference;
        for (i, sh) in s.shifts_px.iter().enumerate() {
            let want = [shifts[i][0] - shifts[r][0], shifts[i][1] - shifts[r][1]];
            let err = (sh[0] - want[0]).hypot(sh[1] - want[1]);
            assert!(err < 0.5, "tilt {i}: {sh:?} vs {want:?}");
        }
        let found = search_axis(imgs.view(), &tilts, axis + 3.0, 3.0, 1.0, &corr, 20.0);
        assert!(
            (found.axis_deg - axis).abs() < 1.0,
            "{} {:?}",
            found.axis_deg,
            found.scores
        );
        // sanity of the test data: a plain shift test of the correlator on one image
        let mut plan = Fft2::new(n, n);
        let a = imgs.index_axis(Axis(0), 3).to_owned();
        let b = fourier_shift_2d(a.view(), 1.5, -2.0, &mut plan);
        let mut c = corr.clone();
        let p = c.correlate(a.view(), b.view(), 10.0);
        assert!((p.dx + 2.0).abs() < 0.1 && (p.dy - 1.5).abs() < 0.1);
    }
}
