//! Bead tracking through the series, outward from the tilt nearest 0°.
//!
//! Seeds are the well-separated strong candidates of the reference tilt (flat bead model,
//! `z = 0`). Tilts are then added alternately on the two sides (`+1, −1, +2, −2, …` steps from
//! the reference). For each new tilt:
//! 1. predict every bead from the current 3D model with the new tilt's nominal angle and the
//!    shift of its already-tracked neighbour;
//! 2. find the tilt's unknown shift change by voting: every (bead, candidate) pair within the
//!    search radius proposes an offset, scored by the number of beads that then have a
//!    candidate within the matching tolerance (robust to lost beads, neighbouring beads and
//!    false candidates); the winner is refined to the mean of its matched offsets;
//! 3. assign each bead its nearest candidate within the tolerance, refusing ambiguous matches
//!    (a second candidate within twice the tolerance) and candidates claimed twice;
//! 4. re-solve the model (shifts and bead positions; axis and tilt angles once the tracked
//!    range spans 20°) so the next prediction includes the new bead depths.
//!
//! A final pass re-predicts every bead in every tilt from the full model and fills the gaps.
//! Positions are pixels from the image centre (`solve` units).

use super::detect::Candidate;
use super::solve::{solve, Model, Obs, SolveOptions};

/// Tracking settings, unbinned pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackParams {
    /// Bead diameter, pixels.
    pub diameter_px: f64,
    /// Largest shift change between neighbouring tilts, pixels.
    pub search_px: f64,
    /// Most beads to seed.
    pub max_beads: usize,
}

/// Tracking result: observations, the model fitted to them, and a log.
pub struct Tracking {
    /// Observations (weights 1).
    pub obs: Vec<Obs>,
    /// Model after tracking (nominal-start angles refined where enabled).
    pub model: Model,
    /// Reference tilt (nearest 0°), whose shift is the translation gauge.
    pub ref_tilt: usize,
    /// Number of seeds at the reference tilt.
    pub n_seeds: usize,
    /// Tilts where no consistent offset was found (no observations).
    pub skipped: Vec<usize>,
}

/// Matching tolerance for a bead of `diameter_px`: 0.4 diameters, at least 3 pixels.
pub fn tolerance_px(diameter_px: f64) -> f64 {
    (0.4 * diameter_px).max(3.0)
}

/// Track beads through the series. `cands[i]` are the candidates of tilt `i` (image pixel
/// indices), `nominal_rad` the nominal tilts (ascending), `axis_rad` the initial axis.
pub fn track(
    cands: &[Vec<Candidate>],
    nx: usize,
    ny: usize,
    nominal_rad: &[f64],
    axis_rad: f64,
    p: &TrackParams,
) -> Tracking {
    let nt = nominal_rad.len();
    let (cx, cy) = ((nx / 2) as f64, (ny / 2) as f64);
    let rel: Vec<Vec<[f64; 2]>> = cands
        .iter()
        .map(|v| v.iter().map(|c| [c.x - cx, c.y - cy]).collect())
        .collect();
    let ref_tilt = (0..nt)
        .min_by(|&a, &b| nominal_rad[a].abs().total_cmp(&nominal_rad[b].abs()))
        .unwrap_or(0);
    let seeds = select_seeds(&cands[ref_tilt], p);
    let (sa, ca) = axis_rad.sin_cos();
    let ct = nominal_rad[ref_tilt].cos();
    let mut model = Model {
        axis_rad,
        tilt_rad: nominal_rad.to_vec(),
        mag: vec![1.0; nt],
        shift: vec![[0.0; 2]; nt],
        // invert u = Rz·Ry·(x, y, 0): rotate back by the axis, undo the cos(tilt) on x
        beads: seeds
            .iter()
            .map(|&k| {
                let [u, v] = rel[ref_tilt][k];
                let (xr, yr) = (ca * u + sa * v, -sa * u + ca * v);
                [xr / ct.max(0.1), yr, 0.0]
            })
            .collect(),
    };
    let mut obs: Vec<Obs> = seeds
        .iter()
        .enumerate()
        .map(|(b, &k)| Obs {
            bead: b,
            tilt: ref_tilt,
            uv: rel[ref_tilt][k],
            weight: 1.0,
        })
        .collect();
    let tol = tolerance_px(p.diameter_px);
    let margin = 0.5 * p.diameter_px;
    let inside = |q: [f64; 2]| q[0].abs() < cx - margin && q[1].abs() < cy - margin;
    let mut order = Vec::new();
    for k in 1..nt {
        if ref_tilt + k < nt {
            order.push((ref_tilt + k, ref_tilt + k - 1));
        }
        if k <= ref_tilt {
            order.push((ref_tilt - k, ref_tilt - k + 1));
        }
    }
    let mut done = vec![false; nt];
    done[ref_tilt] = true;
    let mut skipped = Vec::new();
    for (i, j) in order {
        model.shift[i] = model.shift[j];
        let pred: Vec<(usize, [f64; 2])> = (0..model.beads.len())
            .map(|b| (b, model.predict(b, i)))
            .filter(|(_, q)| inside(*q))
            .collect();
        let Some(d) = vote_offset(&pred, &rel[i], tol, p.search_px) else {
            skipped.push(i);
            done[i] = true;
            continue;
        };
        let shifted: Vec<(usize, [f64; 2])> = pred
            .iter()
            .map(|&(b, q)| (b, [q[0] + d[0], q[1] + d[1]]))
            .collect();
        let matches = assign(&shifted, &rel[i], tol);
        if matches.is_empty() {
            skipped.push(i);
            done[i] = true;
            continue;
        }
        model.shift[i] = [model.shift[i][0] + d[0], model.shift[i][1] + d[1]];
        for (b, k) in matches {
            obs.push(Obs {
                bead: b,
                tilt: i,
                uv: rel[i][k],
                weight: 1.0,
            });
        }
        done[i] = true;
        let range = span(nominal_rad, &done);
        let wide = range > 20f64.to_radians();
        solve(
            &mut model,
            &obs,
            &SolveOptions {
                axis: wide,
                tilts: wide,
                mag: false,
                ref_tilt,
                max_iter: 8,
            },
        );
    }
    // gap filling with the full model
    let mut have = vec![vec![false; nt]; model.beads.len()];
    for o in &obs {
        have[o.bead][o.tilt] = true;
    }
    for i in 0..nt {
        let missing: Vec<(usize, [f64; 2])> = (0..model.beads.len())
            .filter(|&b| !have[b][i])
            .map(|b| (b, model.predict(b, i)))
            .filter(|(_, q)| inside(*q))
            .collect();
        let taken: Vec<[f64; 2]> = obs.iter().filter(|o| o.tilt == i).map(|o| o.uv).collect();
        for (b, k) in assign(&missing, &rel[i], tol) {
            let c = rel[i][k];
            // a candidate already used by another bead is not reused
            if taken
                .iter()
                .any(|t| (t[0] - c[0]).hypot(t[1] - c[1]) < 1e-9)
            {
                continue;
            }
            obs.push(Obs {
                bead: b,
                tilt: i,
                uv: c,
                weight: 1.0,
            });
        }
    }
    Tracking {
        obs,
        model,
        ref_tilt,
        n_seeds: seeds.len(),
        skipped,
    }
}

/// Angular span (radians) of the tracked tilts.
fn span(nominal: &[f64], done: &[bool]) -> f64 {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (a, &d) in nominal.iter().zip(done) {
        if d {
            lo = lo.min(*a);
            hi = hi.max(*a);
        }
    }
    (hi - lo).max(0.0)
}

/// Seeds: candidates of the reference tilt at least 0.4× as strong as the median of the ten
/// strongest, with no comparable candidate (≥ half its score) within 1.5 diameters;
/// strongest first, at most `max_beads`. Returns indices into `cands`.
fn select_seeds(cands: &[Candidate], p: &TrackParams) -> Vec<usize> {
    let mut top: Vec<f64> = cands.iter().take(10).map(|c| c.score).collect();
    top.sort_by(|a, b| a.total_cmp(b));
    let reference = top.get(top.len() / 2).copied().unwrap_or(0.0);
    let sep = 1.5 * p.diameter_px;
    let mut out = Vec::new();
    for (k, c) in cands.iter().enumerate() {
        if c.score < 0.4 * reference {
            continue;
        }
        let crowded = cands
            .iter()
            .enumerate()
            .any(|(j, o)| j != k && o.score >= 0.5 * c.score && (o.x - c.x).hypot(o.y - c.y) < sep);
        if !crowded {
            out.push(k);
        }
        if out.len() >= p.max_beads {
            break;
        }
    }
    out
}

/// The shift change `d` that makes the most predicted beads `pred` land within `tol` of a
/// candidate, searched over the offsets between any bead and any candidate within `search`;
/// `None` when fewer than `max(3, 1/4 of the predicted beads)` agree. The winner is refined
/// to the mean offset of its matches.
fn vote_offset(
    pred: &[(usize, [f64; 2])],
    cands: &[[f64; 2]],
    tol: f64,
    search: f64,
) -> Option<[f64; 2]> {
    let matched = |d: [f64; 2]| {
        let (mut n, mut sx, mut sy, mut e) = (0usize, 0.0, 0.0, 0.0);
        for (_, q) in pred {
            let target = [q[0] + d[0], q[1] + d[1]];
            let best = cands
                .iter()
                .map(|c| (c, (c[0] - target[0]).hypot(c[1] - target[1])))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((c, dist)) = best {
                if dist < tol {
                    n += 1;
                    sx += c[0] - q[0];
                    sy += c[1] - q[1];
                    e += dist;
                }
            }
        }
        (n, [sx / n.max(1) as f64, sy / n.max(1) as f64], e)
    };
    let mut best: Option<(usize, f64, [f64; 2])> = None;
    for (_, q) in pred.iter().take(15) {
        for c in cands {
            let d = [c[0] - q[0], c[1] - q[1]];
            if d[0].hypot(d[1]) > search {
                continue;
            }
            let (n, mean, e) = matched(d);
            let better = match best {
                None => true,
                Some((bn, be, _)) => n > bn || (n == bn && e < be),
            };
            if better {
                best = Some((n, e, mean));
            }
        }
    }
    let need = 3.max(pred.len().div_ceil(4));
    let (n, _, d) = best?;
    if n < need {
        return None;
    }
    // refine: re-match around the mean offset
    let (n2, d2, _) = matched(d);
    Some(if n2 >= n { d2 } else { d })
}

/// Nearest-candidate assignment within `tol`; a bead whose second-nearest candidate is
/// within `2·tol` is ambiguous and skipped; a candidate claimed by two beads goes to the
/// nearer. Returns `(bead, candidate index)` pairs.
fn assign(pred: &[(usize, [f64; 2])], cands: &[[f64; 2]], tol: f64) -> Vec<(usize, usize)> {
    let mut picks: Vec<(usize, usize, f64)> = Vec::new();
    for &(b, q) in pred {
        let (mut k1, mut d1, mut d2) = (usize::MAX, f64::INFINITY, f64::INFINITY);
        for (k, c) in cands.iter().enumerate() {
            let d = (c[0] - q[0]).hypot(c[1] - q[1]);
            if d < d1 {
                d2 = d1;
                (k1, d1) = (k, d);
            } else if d < d2 {
                d2 = d;
            }
        }
        if d1 < tol && d2 >= 2.0 * tol {
            picks.push((b, k1, d1));
        }
    }
    picks.sort_by(|a, b| a.2.total_cmp(&b.2));
    let mut used = vec![false; cands.len()];
    let mut out = Vec::new();
    for (b, k, _) in picks {
        if !used[k] {
            used[k] = true;
            out.push((b, k));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Exact projections of a random bead model as candidates (+ false candidates, some
    /// beads missing), tracked from nominal angles and an axis 2° off.
    #[test]
    fn tracks_synthetic_candidates() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let nt = 41;
        let nominal: Vec<f64> = (0..nt)
            .map(|k| (-60.0 + 3.0 * k as f64).to_radians())
            .collect();
        let truth = Model {
            axis_rad: 85f64.to_radians(),
            tilt_rad: nominal
                .iter()
                .map(|a| a + rng.random_range(-0.8..0.8f64).to_radians())
                .collect(),
            mag: vec![1.0; nt],
            shift: (0..nt)
                .map(|_| [rng.random_range(-30.0..30.0), rng.random_range(-30.0..30.0)])
                .collect(),
            beads: (0..25)
                .map(|_| {
                    [
                        rng.random_range(-220.0..220.0),
                        rng.random_range(-220.0..220.0),
                        rng.random_range(-60.0..60.0),
                    ]
                })
                .collect(),
        };
        let cands: Vec<Vec<Candidate>> = (0..nt)
            .map(|i| {
                let mut v: Vec<Candidate> = (0..25)
                    .filter(|&b| (b + i) % 9 != 0) // lost now and then
                    .map(|b| {
                        let q = truth.predict(b, i);
                        Candidate {
                            x: q[0] + 256.0 + rng.random_range(-0.3..0.3),
                            y: q[1] + 256.0 + rng.random_range(-0.3..0.3),
                            score: 20.0,
                        }
                    })
                    .collect();
                for _ in 0..5 {
                    v.push(Candidate {
                        x: rng.random_range(20.0..490.0),
                        y: rng.random_range(20.0..490.0),
                        score: 8.0,
                    });
                }
                v
            })
            .collect();
        let p = TrackParams {
            diameter_px: 12.0,
            search_px: 80.0,
            max_beads: 40,
        };
        let t = track(&cands, 512, 512, &nominal, 87f64.to_radians(), &p);
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        // every observation is of the right bead: residual vs the truth projection of its seed
        // is checked through the fitted model — the fit must be near-exact
        let mut bad = 0;
        for o in &t.obs {
            let r = t.model.residual(o);
            if r[0].hypot(r[1]) > 2.0 {
                bad += 1;
            }
        }
        assert!(bad * 100 <= t.obs.len(), "{bad} of {}", t.obs.len());
        let per_tilt: Vec<usize> = (0..nt)
            .map(|i| t.obs.iter().filter(|o| o.tilt == i).count())
            .collect();
        let axis_dbg = (t.model.axis_rad - truth.axis_rad).to_degrees();
        // 25 beads, 1 in 9 lost per tilt, some leave the field or come too close to a
        // neighbour to be matched unambiguously
        assert!(
            per_tilt.iter().all(|&c| c >= 10),
            "{per_tilt:?} axis {axis_dbg}"
        );
        let axis_err = (t.model.axis_rad - truth.axis_rad).to_degrees();
        assert!(axis_err.abs() < 0.2, "{axis_err}");
    }
}
