//! Picks against a known truth (the simulator's particles): recall, precision and the
//! orientation error of the matched picks.

use crate::core::geometry::Mat3;
use crate::core::so3::{angle_between_deg, angle_between_sym_deg};
use crate::core::stats::median;

/// A particle position (Å about the tomogram centre, `(x, y, z)`) with its pose `A`.
#[derive(Clone, Debug, PartialEq)]
pub struct Posed {
    /// Position, Å, `(x, y, z)`.
    pub position_a: [f64; 3],
    /// Pose (`particle(x) = reference(Aᵀ·x)`).
    pub pose: Mat3,
}

/// How picks compare with the truth.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PickAccuracy {
    /// True particles considered.
    pub n_truth: usize,
    /// Picks.
    pub n_picked: usize,
    /// Picks matched one-to-one to a true particle within the tolerance.
    pub n_matched: usize,
    /// `n_matched / n_truth` (1 when there is no truth).
    pub recall: f64,
    /// `n_matched / n_picked` (1 when nothing was picked).
    pub precision: f64,
    /// Matching tolerance, Å.
    pub tolerance_a: f64,
    /// Median distance of the matched picks to their particle, Å.
    pub median_distance_a: f64,
    /// Median angle between picked and true pose over the matched picks, degrees (with the
    /// symmetry operators given, else raw C1).
    pub median_angle_deg: f64,
    /// Per matched pick, the angle to the true pose, degrees.
    pub angle_errors_deg: Vec<f64>,
    /// Per matched pick, the distance to its true particle, Å.
    #[serde(default)]
    pub distances_a: Vec<f64>,
    /// The matched pairs `(pick index, truth index)`, in the order of the errors.
    #[serde(skip)]
    pub matches: Vec<(usize, usize)>,
}

/// Match `picks` (strongest first) to `truth` one-to-one, closest pairs first, within
/// `tolerance_a`; the orientation error uses the reference-frame symmetry operators `sym`
/// (`&[]`: raw C1 angle).
pub fn evaluate(picks: &[Posed], truth: &[Posed], tolerance_a: f64, sym: &[Mat3]) -> PickAccuracy {
    let dist = |a: &[f64; 3], b: &[f64; 3]| {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    };
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, p) in picks.iter().enumerate() {
        for (j, t) in truth.iter().enumerate() {
            let d = dist(&p.position_a, &t.position_a);
            if d <= tolerance_a {
                pairs.push((d, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut used_p = vec![false; picks.len()];
    let mut used_t = vec![false; truth.len()];
    let mut dists = Vec::new();
    let mut angles = Vec::new();
    let mut matches = Vec::new();
    for (d, i, j) in pairs {
        if used_p[i] || used_t[j] {
            continue;
        }
        used_p[i] = true;
        used_t[j] = true;
        dists.push(d);
        matches.push((i, j));
        angles.push(if sym.is_empty() {
            angle_between_deg(&picks[i].pose, &truth[j].pose)
        } else {
            angle_between_sym_deg(&picks[i].pose, &truth[j].pose, sym)
        });
    }
    let m = dists.len();
    PickAccuracy {
        n_truth: truth.len(),
        n_picked: picks.len(),
        n_matched: m,
        recall: if truth.is_empty() {
            1.0
        } else {
            m as f64 / truth.len() as f64
        },
        precision: if picks.is_empty() {
            1.0
        } else {
            m as f64 / picks.len() as f64
        },
        tolerance_a,
        median_distance_a: if m > 0 { median(&dists) } else { f64::NAN },
        median_angle_deg: if m > 0 { median(&angles) } else { f64::NAN },
        angle_errors_deg: angles,
        distances_a: dists,
        matches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::euler_zyz_to_matrix;

    #[test]
    fn one_to_one_matching_counts_recall_and_precision() {
        let p = |x: f64, r: f64| Posed {
            position_a: [x, 0.0, 0.0],
            pose: euler_zyz_to_matrix(r, 0.0, 0.0),
        };
        let truth = vec![p(0.0, 0.0), p(100.0, 0.0), p(200.0, 0.0), p(300.0, 0.0)];
        // two picks near particle 0 (only one counts), one near 2, one far from all
        let picks = vec![p(5.0, 10.0), p(-8.0, 0.0), p(203.0, 20.0), p(500.0, 0.0)];
        let a = evaluate(&picks, &truth, 20.0, &[]);
        assert_eq!(a.n_matched, 2);
        assert!((a.recall - 0.5).abs() < 1e-12);
        assert!((a.precision - 0.5).abs() < 1e-12);
        assert!((a.median_distance_a - 4.0).abs() < 1e-9);
        assert!(
            (a.median_angle_deg - 15.0).abs() < 1e-9,
            "{:?}",
            a.angle_errors_deg
        );
    }
}
