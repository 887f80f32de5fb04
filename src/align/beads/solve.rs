//! Least-squares bead model (as IMOD `tiltalign`): per-tilt shifts, a global tilt-axis
//! angle, per-tilt tilt angles and magnifications, and the 3D bead positions, fitted to the
//! tracked 2D bead positions by Levenberg–Marquardt with optional Tukey (bisquare)
//! re-weighting.
//!
//! Model, in UNBINNED PIXELS and RADIANS (internal units; `super` converts to Å/degrees):
//! bead `b` at specimen position `p_b` (pixels about the tomogram centre, `(x, y, z)`)
//! appears in tilt `i` at `m_i · [Rz(axis)·Ry(θ_i)·p_b]_xy + s_i` pixels from the image
//! centre `(nx/2, ny/2)`: the `core::geometry` projection with a magnification `m_i` about
//! the image centre applied before the shift.
//!
//! Gauge freedoms (directions the data cannot see) are pinned by constraints on every step:
//! - 3D specimen translation: the shift of the reference tilt is held, and the mean bead z
//!   is not changed by a step;
//! - global tilt offset (a rotation of the bead cloud about y): the mean step of the solved
//!   tilt angles is 0;
//! - global scale (bead cloud × c, magnifications / c): the mean step of the solved
//!   magnifications is 0.
//!
//! So the solution keeps the initial mean tilt (nominal), mean magnification (1) and the
//! initial z centre.

// small fixed-size matrix algebra reads best with explicit indices
#![allow(clippy::needless_range_loop)]

use crate::core::geometry::{apply, matmul, rot_y, rot_z, Mat3};

/// Fewest observations of a tilt for its tilt angle and magnification to be solved.
pub const MIN_OBS_ANGLE: usize = 6;

/// One tracked bead position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Obs {
    /// Bead index.
    pub bead: usize,
    /// Tilt index (stack order).
    pub tilt: usize,
    /// Observed position relative to the image centre `(nx/2, ny/2)`, unbinned pixels
    /// `(x, y)`.
    pub uv: [f64; 2],
    /// Robust weight in [0, 1] (0 = rejected).
    pub weight: f64,
}

/// The bead model, internal units (pixels, radians).
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Tilt-axis angle (one for the series), radians counter-clockwise from +Y.
    pub axis_rad: f64,
    /// Tilt angle per tilt, radians.
    pub tilt_rad: Vec<f64>,
    /// Magnification per tilt.
    pub mag: Vec<f64>,
    /// Shift per tilt, pixels `(x, y)`.
    pub shift: Vec<[f64; 2]>,
    /// Bead positions, pixels about the tomogram centre `(x, y, z)`.
    pub beads: Vec<[f64; 3]>,
}

/// Which parameters a solve may change.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveOptions {
    /// Solve the global tilt-axis angle.
    pub axis: bool,
    /// Solve per-tilt tilt angles (mean held).
    pub tilts: bool,
    /// Solve per-tilt magnifications (mean held).
    pub mag: bool,
    /// Tilt whose shift is held (translation gauge).
    pub ref_tilt: usize,
    /// Maximum Levenberg–Marquardt iterations.
    pub max_iter: usize,
}

/// Outcome of a solve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveStats {
    /// Weighted RMS residual after the solve, pixels (norm of the 2D residual).
    pub rms_px: f64,
    /// Iterations run.
    pub iterations: usize,
}

impl Model {
    /// Rotation `Rz(axis)·Ry(θ_i)` of tilt `i`.
    pub fn rotation(&self, tilt: usize) -> Mat3 {
        matmul(
            &rot_z(self.axis_rad.to_degrees()),
            &rot_y(self.tilt_rad[tilt].to_degrees()),
        )
    }

    /// Predicted position of bead `b` in tilt `i`, pixels from the image centre.
    pub fn predict(&self, bead: usize, tilt: usize) -> [f64; 2] {
        let r = self.rotation(tilt);
        self.predict_with(&r, bead, tilt)
    }

    fn predict_with(&self, r: &Mat3, bead: usize, tilt: usize) -> [f64; 2] {
        let p = self.beads[bead];
        let m = self.mag[tilt];
        let s = self.shift[tilt];
        [
            m * (r[0][0] * p[0] + r[0][1] * p[1] + r[0][2] * p[2]) + s[0],
            m * (r[1][0] * p[0] + r[1][1] * p[1] + r[1][2] * p[2]) + s[1],
        ]
    }

    /// Residual (predicted − observed) of one observation, pixels.
    pub fn residual(&self, o: &Obs) -> [f64; 2] {
        let q = self.predict(o.bead, o.tilt);
        [q[0] - o.uv[0], q[1] - o.uv[1]]
    }

    /// Put the gauge freedoms exactly where the module docs say, leaving every prediction
    /// unchanged: mean magnification 1 (beads scaled), mean tilt angle equal to the mean of
    /// `tilt_ref_rad` (bead cloud rotated about y), mean bead z 0 (specimen translated along
    /// z, shifts compensated).
    pub fn normalise_gauge(&mut self, tilt_ref_rad: &[f64]) {
        let nt = self.mag.len() as f64;
        let c = self.mag.iter().sum::<f64>() / nt;
        if c > 0.0 {
            self.mag.iter_mut().for_each(|m| *m /= c);
            self.beads
                .iter_mut()
                .for_each(|p| p.iter_mut().for_each(|v| *v *= c));
        }
        // Rz·Ry(θ − off)·(Ry(off)·p) = Rz·Ry(θ)·p
        let off = self
            .tilt_rad
            .iter()
            .zip(tilt_ref_rad)
            .map(|(a, b)| a - b)
            .sum::<f64>()
            / nt;
        self.tilt_rad.iter_mut().for_each(|t| *t -= off);
        let ry = rot_y(off.to_degrees());
        for p in self.beads.iter_mut() {
            *p = apply(&ry, *p);
        }
        // p − t, s + m·[R·t]_xy with t = (0, 0, mean z)
        if !self.beads.is_empty() {
            let tz = self.beads.iter().map(|p| p[2]).sum::<f64>() / self.beads.len() as f64;
            self.beads.iter_mut().for_each(|p| p[2] -= tz);
            for i in 0..self.shift.len() {
                let r = self.rotation(i);
                for row in 0..2 {
                    self.shift[i][row] += self.mag[i] * r[row][2] * tz;
                }
            }
        }
    }

    /// Move the specimen origin in x/y (z unchanged) so that the per-tilt shifts are as small
    /// as possible (least squares over tilts): `p_b −= t`, `s_i += m_i·[R_i·t]_xy`, which
    /// leaves every prediction unchanged.
    pub fn recentre_xy(&mut self) {
        // minimise Σ_i |s_i + m_i·A_i·t|², A_i = first two columns of the top 2×3 of R_i
        let (mut ata, mut atb) = ([[0.0f64; 2]; 2], [0.0f64; 2]);
        for i in 0..self.shift.len() {
            let r = self.rotation(i);
            let m = self.mag[i];
            for row in 0..2 {
                let a = [m * r[row][0], m * r[row][1]];
                for c in 0..2 {
                    atb[c] -= a[c] * self.shift[i][row];
                    for d in 0..2 {
                        ata[c][d] += a[c] * a[d];
                    }
                }
            }
        }
        let det = ata[0][0] * ata[1][1] - ata[0][1] * ata[1][0];
        if det.abs() < 1e-12 {
            return;
        }
        let t = [
            (ata[1][1] * atb[0] - ata[0][1] * atb[1]) / det,
            (ata[0][0] * atb[1] - ata[1][0] * atb[0]) / det,
        ];
        for p in self.beads.iter_mut() {
            p[0] -= t[0];
            p[1] -= t[1];
        }
        for i in 0..self.shift.len() {
            let r = self.rotation(i);
            let m = self.mag[i];
            for row in 0..2 {
                self.shift[i][row] += m * (r[row][0] * t[0] + r[row][1] * t[1]);
            }
        }
    }
}

/// Where each free parameter sits in the parameter vector.
struct Layout {
    bead: Vec<Option<usize>>,
    shift: Vec<Option<usize>>,
    tilt: Vec<Option<usize>>,
    mag: Vec<Option<usize>>,
    axis: Option<usize>,
    n: usize,
}

impl Layout {
    /// Free parameters: beads seen (weight > 0) in ≥ 2 tilts; shifts of tilts with ≥ 1
    /// observation except the reference; angles and magnifications of tilts with ≥
    /// [`MIN_OBS_ANGLE`] (fewer beads would let them absorb mis-tracked positions).
    fn new(model: &Model, obs: &[Obs], opt: &SolveOptions) -> Layout {
        let (nb, nt) = (model.beads.len(), model.tilt_rad.len());
        let mut per_bead = vec![0usize; nb];
        let mut per_tilt = vec![0usize; nt];
        for o in obs.iter().filter(|o| o.weight > 0.0) {
            per_bead[o.bead] += 1;
            per_tilt[o.tilt] += 1;
        }
        let mut n = 0;
        let mut next = |k: usize, on: bool| {
            if on {
                n += k;
                Some(n - k)
            } else {
                None
            }
        };
        let bead = per_bead.iter().map(|&c| next(3, c >= 2)).collect();
        let shift = (0..nt)
            .map(|i| next(2, per_tilt[i] >= 1 && i != opt.ref_tilt))
            .collect();
        let tilt = (0..nt)
            .map(|i| next(1, opt.tilts && per_tilt[i] >= MIN_OBS_ANGLE))
            .collect();
        let mag = (0..nt)
            .map(|i| next(1, opt.mag && per_tilt[i] >= MIN_OBS_ANGLE))
            .collect();
        let axis = next(1, opt.axis);
        Layout {
            bead,
            shift,
            tilt,
            mag,
            axis,
            n,
        }
    }

    /// Gauge constraint vectors (rows `a` with `a·step = 0`).
    fn constraints(&self) -> Vec<Vec<(usize, f64)>> {
        let mut rows = Vec::new();
        let z: Vec<(usize, f64)> = self.bead.iter().flatten().map(|&k| (k + 2, 1.0)).collect();
        let t: Vec<(usize, f64)> = self.tilt.iter().flatten().map(|&k| (k, 1.0)).collect();
        let m: Vec<(usize, f64)> = self.mag.iter().flatten().map(|&k| (k, 1.0)).collect();
        for r in [z, t, m] {
            if r.len() > 1 {
                let s = 1.0 / r.len() as f64;
                rows.push(r.into_iter().map(|(k, _)| (k, s)).collect());
            }
        }
        rows
    }

    fn apply(&self, model: &Model, step: &[f64], scale: f64) -> Model {
        let mut m = model.clone();
        for (b, k) in self.bead.iter().enumerate() {
            if let Some(k) = *k {
                for c in 0..3 {
                    m.beads[b][c] += scale * step[k + c];
                }
            }
        }
        for i in 0..m.tilt_rad.len() {
            if let Some(k) = self.shift[i] {
                m.shift[i][0] += scale * step[k];
                m.shift[i][1] += scale * step[k + 1];
            }
            if let Some(k) = self.tilt[i] {
                m.tilt_rad[i] += scale * step[k];
            }
            if let Some(k) = self.mag[i] {
                m.mag[i] += scale * step[k];
            }
        }
        if let Some(k) = self.axis {
            m.axis_rad += scale * step[k];
        }
        m
    }
}

/// Weighted cost `Σ w·|r|²`.
fn cost(model: &Model, obs: &[Obs]) -> f64 {
    obs.iter()
        .filter(|o| o.weight > 0.0)
        .map(|o| {
            let r = model.residual(o);
            o.weight * (r[0] * r[0] + r[1] * r[1])
        })
        .sum()
}

/// Normal equations `JᵀWJ` (dense, row-major `n × n`) and gradient `JᵀW·r`.
fn normal_equations(model: &Model, obs: &[Obs], lay: &Layout) -> (Vec<f64>, Vec<f64>) {
    let n = lay.n;
    let mut jtj = vec![0.0f64; n * n];
    let mut g = vec![0.0f64; n];
    let nt = model.tilt_rad.len();
    // per-tilt rotations and their derivatives
    let (sa, ca) = model.axis_rad.sin_cos();
    let rz = rot_z(model.axis_rad.to_degrees());
    let drz: Mat3 = [[-sa, -ca, 0.0], [ca, -sa, 0.0], [0.0, 0.0, 0.0]];
    let mut rots = Vec::with_capacity(nt);
    for i in 0..nt {
        let (st, ct) = model.tilt_rad[i].sin_cos();
        let ry = rot_y(model.tilt_rad[i].to_degrees());
        let dry: Mat3 = [[-st, 0.0, ct], [0.0, 0.0, 0.0], [-ct, 0.0, -st]];
        rots.push((matmul(&rz, &ry), matmul(&rz, &dry), matmul(&drz, &ry)));
    }
    let mut entries: Vec<(usize, [f64; 2])> = Vec::with_capacity(8);
    for o in obs.iter().filter(|o| o.weight > 0.0) {
        let (r, dr_tilt, dr_axis) = &rots[o.tilt];
        let p = model.beads[o.bead];
        let m = model.mag[o.tilt];
        let q = [
            r[0][0] * p[0] + r[0][1] * p[1] + r[0][2] * p[2],
            r[1][0] * p[0] + r[1][1] * p[1] + r[1][2] * p[2],
        ];
        let s = model.shift[o.tilt];
        let res = [m * q[0] + s[0] - o.uv[0], m * q[1] + s[1] - o.uv[1]];
        entries.clear();
        if let Some(k) = lay.bead[o.bead] {
            for c in 0..3 {
                entries.push((k + c, [m * r[0][c], m * r[1][c]]));
            }
        }
        if let Some(k) = lay.shift[o.tilt] {
            entries.push((k, [1.0, 0.0]));
            entries.push((k + 1, [0.0, 1.0]));
        }
        let dot = |a: &Mat3, row: usize| a[row][0] * p[0] + a[row][1] * p[1] + a[row][2] * p[2];
        if let Some(k) = lay.tilt[o.tilt] {
            entries.push((k, [m * dot(dr_tilt, 0), m * dot(dr_tilt, 1)]));
        }
        if let Some(k) = lay.mag[o.tilt] {
            entries.push((k, q));
        }
        if let Some(k) = lay.axis {
            entries.push((k, [m * dot(dr_axis, 0), m * dot(dr_axis, 1)]));
        }
        let w = o.weight;
        for &(a, da) in &entries {
            g[a] += w * (da[0] * res[0] + da[1] * res[1]);
            for &(b, db) in &entries {
                jtj[a * n + b] += w * (da[0] * db[0] + da[1] * db[1]);
            }
        }
    }
    (jtj, g)
}

/// In-place Cholesky solve of the symmetric positive definite `a` (`n × n`, row-major) for
/// `b`; `None` when `a` is not positive definite.
pub(crate) fn cholesky_solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    Some(b)
}

/// Levenberg–Marquardt fit of `model` to the weighted observations. Parameters without
/// enough observations are held (see [`Layout`]); gauge directions are pinned (module docs).
pub fn solve(model: &mut Model, obs: &[Obs], opt: &SolveOptions) -> SolveStats {
    let lay = Layout::new(model, obs, opt);
    let wsum: f64 = obs
        .iter()
        .map(|o| o.weight.max(0.0))
        .sum::<f64>()
        .max(1e-300);
    let mut c0 = cost(model, obs);
    let mut lambda = 1e-3;
    let mut it = 0;
    if lay.n == 0 {
        return SolveStats {
            rms_px: (c0 / wsum).sqrt(),
            iterations: 0,
        };
    }
    let cons = lay.constraints();
    while it < opt.max_iter {
        it += 1;
        let (jtj, g) = normal_equations(model, obs, &lay);
        let n = lay.n;
        let mean_diag = (0..n).map(|k| jtj[k * n + k]).sum::<f64>() / n as f64;
        let mut accepted = false;
        while lambda < 1e12 {
            let mut a = jtj.clone();
            for k in 0..n {
                // Marquardt scaling, floored so parameters no observation moves stay put
                a[k * n + k] += lambda * a[k * n + k].max(1e-9 * mean_diag) + 1e-12 * mean_diag;
            }
            for row in &cons {
                let w = 1e3 * mean_diag;
                for &(i, ai) in row {
                    for &(j, aj) in row {
                        a[i * n + j] += w * ai * aj;
                    }
                }
            }
            let rhs: Vec<f64> = g.iter().map(|v| -v).collect();
            let Some(step) = cholesky_solve(a, rhs, n) else {
                lambda *= 10.0;
                continue;
            };
            let trial = lay.apply(model, &step, 1.0);
            let c1 = cost(&trial, obs);
            if c1 <= c0 {
                *model = trial;
                let rel = (c0 - c1) / c0.max(1e-300);
                c0 = c1;
                lambda = (lambda / 3.0).max(1e-9);
                accepted = true;
                if rel < 1e-10 {
                    return SolveStats {
                        rms_px: (c0 / wsum).sqrt(),
                        iterations: it,
                    };
                }
                break;
            }
            lambda *= 4.0;
        }
        if !accepted {
            break;
        }
    }
    SolveStats {
        rms_px: (c0 / wsum).sqrt(),
        iterations: it,
    }
}

/// Tukey bisquare weights from the current residuals: `σ` = median residual norm / 1.1774
/// (the median of a 2D Gaussian residual norm is 1.1774 σ), floored at `min_sigma_px`;
/// `w = (1 − (|r|/(4.685 σ))²)²` inside `4.685 σ`, 0 outside. All observations are re-scored,
/// so a rejected one can come back. Returns `σ`.
pub fn reweight(model: &Model, obs: &mut [Obs], min_sigma_px: f64) -> f64 {
    let norms: Vec<f64> = obs
        .iter()
        .map(|o| {
            let r = model.residual(o);
            r[0].hypot(r[1])
        })
        .collect();
    let mut sorted = norms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let med = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let sigma = (med / 1.1774).max(min_sigma_px);
    let c = 4.685 * sigma;
    for (o, r) in obs.iter_mut().zip(norms) {
        o.weight = if r < c {
            let u = r / c;
            (1.0 - u * u).powi(2)
        } else {
            0.0
        };
    }
    sigma
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    /// A random true model and its exact observations (+ Gaussian noise).
    fn truth(seed: u64, noise: f64, mag_var: f64) -> (Model, Vec<Obs>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nt = 31;
        let tilt_rad: Vec<f64> = (0..nt)
            .map(|k| (-60.0 + 4.0 * k as f64 + rng.random_range(-0.5..0.5)).to_radians())
            .collect();
        let beads: Vec<[f64; 3]> = (0..20)
            .map(|_| {
                [
                    rng.random_range(-200.0..200.0),
                    rng.random_range(-200.0..200.0),
                    if rng.random::<bool>() { 50.0 } else { -50.0 } + rng.random_range(-5.0..5.0),
                ]
            })
            .collect();
        let model = Model {
            axis_rad: 85f64.to_radians(),
            mag: (0..nt)
                .map(|_| 1.0 + mag_var * rng.random_range(-1.0..1.0))
                .collect(),
            shift: (0..nt)
                .map(|_| [rng.random_range(-30.0..30.0), rng.random_range(-30.0..30.0)])
                .collect(),
            tilt_rad,
            beads,
        };
        let nd = Normal::new(0.0, noise.max(1e-12)).unwrap();
        let mut obs = Vec::new();
        for t in 0..nt {
            for b in 0..model.beads.len() {
                let q = model.predict(b, t);
                obs.push(Obs {
                    bead: b,
                    tilt: t,
                    uv: [q[0] + nd.sample(&mut rng), q[1] + nd.sample(&mut rng)],
                    weight: 1.0,
                });
            }
        }
        (model, obs)
    }

    /// Start from nominal angles, axis 2° off, zero shifts and flat beads.
    fn start(t: &Model) -> Model {
        Model {
            axis_rad: t.axis_rad + 2f64.to_radians(),
            tilt_rad: (0..t.tilt_rad.len())
                .map(|k| (-60.0 + 4.0 * k as f64).to_radians())
                .collect(),
            mag: vec![1.0; t.mag.len()],
            shift: vec![[0.0; 2]; t.shift.len()],
            beads: t
                .beads
                .iter()
                .map(|p| [p[0] + 3.0, p[1] - 2.0, 0.0])
                .collect(),
        }
    }

    fn opts(mag: bool) -> SolveOptions {
        SolveOptions {
            axis: true,
            tilts: true,
            mag,
            ref_tilt: 15,
            max_iter: 100,
        }
    }

    #[test]
    fn recovers_the_model_from_exact_observations() {
        let (t, obs) = truth(1, 0.0, 0.01);
        let mut m = start(&t);
        let st = solve(&mut m, &obs, &opts(true));
        assert!(st.rms_px < 1e-5, "{st:?}");
        let nominal: Vec<f64> = start(&t).tilt_rad;
        let before: Vec<[f64; 2]> = (0..31).map(|i| m.predict(3, i)).collect();
        m.normalise_gauge(&nominal);
        for (i, b) in before.iter().enumerate() {
            let a = m.predict(3, i);
            assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
        }
        let mean_dt: f64 = m
            .tilt_rad
            .iter()
            .zip(&nominal)
            .map(|(a, b)| a - b)
            .sum::<f64>();
        assert!(mean_dt.abs() < 1e-12);
        // axis exactly; tilts up to the gauge (mean offset), differences exact
        assert!((m.axis_rad - t.axis_rad).to_degrees().abs() < 1e-6);
        let off: f64 = m
            .tilt_rad
            .iter()
            .zip(&t.tilt_rad)
            .map(|(a, b)| a - b)
            .sum::<f64>()
            / 31.0;
        for (a, b) in m.tilt_rad.iter().zip(&t.tilt_rad) {
            assert!((a - b - off).to_degrees().abs() < 1e-5);
        }
        // magnification ratios exact (mean held)
        let mean_m: f64 = m.mag.iter().sum::<f64>() / 31.0;
        assert!((mean_m - 1.0).abs() < 1e-9);
        let ratio = m.mag[0] / t.mag[0];
        for (a, b) in m.mag.iter().zip(&t.mag) {
            assert!((a / b - ratio).abs() < 1e-7);
        }
    }

    #[test]
    fn noisy_observations_and_outliers() {
        let (t, mut obs) = truth(2, 0.3, 0.0);
        // 3% gross outliers
        for (k, o) in obs.iter_mut().enumerate() {
            if k % 33 == 7 {
                o.uv[0] += 15.0;
            }
        }
        let mut m = start(&t);
        let o = SolveOptions {
            tilts: true,
            ..opts(false)
        };
        solve(&mut m, &obs, &o);
        for _ in 0..3 {
            reweight(&m, &mut obs, 0.05);
            solve(&mut m, &obs, &o);
        }
        let rejected = obs.iter().filter(|o| o.weight == 0.0).count();
        assert!(rejected >= obs.len() / 33, "{rejected}");
        let axis_err = (m.axis_rad - t.axis_rad).to_degrees();
        assert!(axis_err.abs() < 0.05, "{axis_err}");
        let st = solve(&mut m, &obs, &o);
        assert!(st.rms_px < 0.5, "{st:?}");
    }

    #[test]
    fn recentring_keeps_predictions() {
        let (t, _) = truth(3, 0.0, 0.01);
        let mut m = t.clone();
        m.recentre_xy();
        for b in 0..t.beads.len() {
            for i in [0, 10, 30] {
                let (a, c) = (m.predict(b, i), t.predict(b, i));
                assert!((a[0] - c[0]).abs() < 1e-9 && (a[1] - c[1]).abs() < 1e-9);
            }
        }
        let ss = |m: &Model| {
            m.shift
                .iter()
                .map(|s| s[0] * s[0] + s[1] * s[1])
                .sum::<f64>()
        };
        assert!(ss(&m) <= ss(&t) + 1e-9);
    }
}
