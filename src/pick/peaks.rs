//! Peaks of a score map: the false-alarm threshold and non-maximum suppression.
//!
//! Threshold (as pytom-match-pick, Chaillet et al. 2023): if the scores of a search over
//! `N_voxels · N_rotations` independent trials were Gaussian with the σ of the score map,
//! the score that `N_fa` of them exceed by chance is
//! `σ · √2 · erfc⁻¹(2·N_fa / (N_voxels · N_rotations))`.

use ndarray::{Array3, Zip};

/// One picked peak.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    /// Voxel `(z, y, x)` of the tomogram.
    pub voxel: [usize; 3],
    /// Score (FLCF).
    pub score: f32,
    /// Index of the best rotation (into the searched list).
    pub rotation: usize,
}

/// Complementary error function, fractional error < 1.2·10⁻⁷ (Chebyshev fit, Numerical
/// Recipes §6.2).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Inverse of [`erfc`] on `(0, 2)` (bisection to 1e-12; `y` outside is clamped).
pub fn erfc_inv(y: f64) -> f64 {
    let y = y.clamp(1e-300, 2.0 - 1e-16);
    let (mut lo, mut hi) = (-27.0f64, 27.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        // erfc decreases
        if erfc(mid) > y {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// Standard deviation of `scores` over the voxels where `mask` is true (all when `None`).
pub fn score_sigma(scores: &Array3<f32>, mask: Option<&Array3<bool>>) -> f64 {
    let (mut n, mut s1, mut s2) = (0.0f64, 0.0f64, 0.0f64);
    let mut add = |v: f32| {
        n += 1.0;
        s1 += v as f64;
        s2 += (v as f64) * (v as f64);
    };
    match mask {
        Some(m) => Zip::from(scores).and(m).for_each(|&v, &k| {
            if k {
                add(v)
            }
        }),
        None => scores.iter().for_each(|&v| add(v)),
    }
    if n < 2.0 {
        return 0.0;
    }
    let mean = s1 / n;
    (s2 / n - mean * mean).max(0.0).sqrt()
}

/// The false-alarm threshold (module docs) for `n_false_alarms` expected false picks.
pub fn false_alarm_threshold(
    sigma: f64,
    n_false_alarms: f64,
    n_voxels: usize,
    n_rotations: usize,
) -> f64 {
    let trials = (n_voxels as f64) * (n_rotations.max(1) as f64);
    sigma * std::f64::consts::SQRT_2 * erfc_inv(2.0 * n_false_alarms / trials)
}

/// The number of peaks to keep of `scores` (strongest first) when the weakest ones are a
/// separate population: the largest drop `s[i] / s[i+1]` between neighbours, over
/// `i + 1 ≥ min_keep`, cuts the list when it is at least `ratio` (e.g. true particles at
/// 0.4 and density inside a vesicle at 0.2 give 2.0); otherwise all are kept. `ratio ≤ 1`
/// keeps all.
pub fn score_gap_keep(scores: &[f64], ratio: f64, min_keep: usize) -> usize {
    let n = scores.len();
    if ratio <= 1.0 || n < 2 {
        return n;
    }
    let mut best = (1.0f64, n);
    for i in min_keep.max(1).saturating_sub(1)..n - 1 {
        let (a, b) = (scores[i], scores[i + 1]);
        let r = if b > 0.0 { a / b } else { f64::INFINITY };
        if r > best.0 {
            best = (r, i + 1);
        }
    }
    if best.0 >= ratio {
        best.1
    } else {
        n
    }
}

/// Peaks of `scores` at or above `threshold`, strongest first, with non-maximum suppression:
/// a voxel is taken unless it lies within `radius_px` of a stronger peak already taken.
/// `mask` (when given) limits the voxels that may be picked; `index` gives each peak's
/// rotation; at most `max_peaks` are returned.
pub fn extract_peaks(
    scores: &Array3<f32>,
    index: &Array3<i32>,
    threshold: f64,
    radius_px: f64,
    mask: Option<&Array3<bool>>,
    max_peaks: usize,
) -> Vec<Peak> {
    let mut cand: Vec<([usize; 3], f32)> = scores
        .indexed_iter()
        .filter(|(p, &v)| {
            v as f64 >= threshold && mask.is_none_or(|m| m[[p.0, p.1, p.2]]) && index[*p] >= 0
        })
        .map(|((z, y, x), &v)| ([z, y, x], v))
        .collect();
    // strongest first; ties by position, so the order is deterministic
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let (nz, ny, nx) = scores.dim();
    let mut taken = Array3::<bool>::from_elem((nz, ny, nx), false);
    let r = radius_px.max(0.0);
    let ri = r.ceil() as isize;
    let mut out = Vec::new();
    for (p, v) in cand {
        if out.len() >= max_peaks {
            break;
        }
        if taken[p] {
            continue;
        }
        out.push(Peak {
            voxel: p,
            score: v,
            rotation: index[p] as usize,
        });
        for dz in -ri..=ri {
            for dy in -ri..=ri {
                for dx in -ri..=ri {
                    if ((dz * dz + dy * dy + dx * dx) as f64) > r * r {
                        continue;
                    }
                    let (z, y, x) = (p[0] as isize + dz, p[1] as isize + dy, p[2] as isize + dx);
                    if let Some(i) =
                        crate::core::interp::index3(z as i64, y as i64, x as i64, (nz, ny, nx))
                    {
                        taken[i] = true;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 1e-7);
        assert!((erfc(3.0) / 2.209_049_7e-5 - 1.0).abs() < 1e-6);
        for y in [1e-9, 1e-4, 0.3, 1.0, 1.7] {
            assert!((erfc(erfc_inv(y)) / y - 1.0).abs() < 1e-6, "{y}");
        }
    }

    #[test]
    fn threshold_grows_with_the_search_space() {
        let a = false_alarm_threshold(0.05, 1.0, 100_000, 100);
        let b = false_alarm_threshold(0.05, 1.0, 100_000, 1000);
        assert!(b > a && a > 0.05 * 5.0, "{a} {b}");
        // N_fa = half the trials: threshold 0 (the median)
        assert!(false_alarm_threshold(1.0, 50.0, 10, 10).abs() < 1e-6);
    }

    #[test]
    fn suppression_keeps_the_stronger_of_close_peaks() {
        let mut s = Array3::<f32>::zeros((10, 10, 10));
        s[[5, 5, 5]] = 1.0;
        s[[5, 5, 7]] = 0.9; // within 3 voxels: suppressed
        s[[5, 5, 9]] = 0.8; // 4 voxels away: kept
        s[[1, 1, 1]] = 0.2; // below the threshold
        let idx = Array3::<i32>::from_elem((10, 10, 10), 4);
        let p = extract_peaks(&s, &idx, 0.5, 3.0, None, 100);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].voxel, [5, 5, 5]);
        assert_eq!(p[1].voxel, [5, 5, 9]);
        assert_eq!(p[1].rotation, 4);
        let mut m = Array3::<bool>::from_elem((10, 10, 10), true);
        m[[5, 5, 5]] = false;
        let p = extract_peaks(&s, &idx, 0.5, 3.0, Some(&m), 100);
        assert_eq!(p[0].voxel, [5, 5, 7]);
    }

    #[test]
    fn score_gap_cuts_a_separate_weak_population() {
        let s = [0.44, 0.43, 0.42, 0.40, 0.38, 0.20, 0.18, 0.15];
        assert_eq!(score_gap_keep(&s, 1.5, 3), 5);
        // a continuum is kept whole
        let c: Vec<f64> = (0..20).map(|i| 0.5 - 0.01 * i as f64).collect();
        assert_eq!(score_gap_keep(&c, 1.5, 3), 20);
        // one strong outlier on top (a bead) does not cut the particles below it
        let b = [0.9, 0.4, 0.39, 0.38, 0.37];
        assert_eq!(score_gap_keep(&b, 1.5, 3), 5);
        assert_eq!(score_gap_keep(&s, 0.0, 3), s.len());
    }
}
