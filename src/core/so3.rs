//! Rotations: uniform and local samplings of SO(3), point-group symmetry, distances.
//!
//! Matrices are [`Mat3`] that left-multiply column vectors `(x, y, z)`; a particle pose `A`
//! rotates the reference onto the particle (`particle(x) = reference(Aᵀ·x)`, DESIGN §2).
//!
//! - [`uniform_rotations`]: `N = ⌈8π²/Δ³⌉` rotations (Δ the step in radians, the count a
//!   Healpix-times-psi grid of the same step has) from a super-Fibonacci spiral on the unit
//!   quaternions (Alexa, CVPR 2022): low-discrepancy, no pole clustering, deterministic.
//! - [`local_rotations`]: small rotations `exp([ω]ₓ)` on a cubic grid of rotation vectors
//!   `|ω| ≤ range`, composed as `exp([ω]ₓ)·A` (perturbations in the tomogram frame).
//! - [`Symmetry`]: Cn, Dn, T, O, I as the full list of group matrices (conventions on the type).

use super::geometry::{matmul, transpose, Mat3};
use crate::error::{Error, Result};
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// Rotation matrix of the unit quaternion `(w, x, y, z)` (normalised here).
pub fn quaternion_to_matrix(q: [f64; 4]) -> Mat3 {
    let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    let [w, x, y, z] = [q[0] / n, q[1] / n, q[2] / n, q[3] / n];
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

/// Rotation by `angle_deg` about the axis `axis` (normalised here; right-handed).
pub fn axis_angle(axis: [f64; 3], angle_deg: f64) -> Mat3 {
    let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
    if n == 0.0 || angle_deg == 0.0 {
        return identity();
    }
    let h = 0.5 * angle_deg.to_radians();
    let s = h.sin() / n;
    quaternion_to_matrix([h.cos(), axis[0] * s, axis[1] * s, axis[2] * s])
}

/// The identity matrix.
pub fn identity() -> Mat3 {
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
}

/// Number of rotations [`uniform_rotations`] returns for a step of `step_deg` degrees.
pub fn uniform_count(step_deg: f64) -> usize {
    let d = step_deg.to_radians();
    ((8.0 * PI * PI / (d * d * d)).ceil() as usize).max(1)
}

/// Near-uniform sampling of SO(3) with angular step `step_deg` (module docs):
/// [`uniform_count`] rotations. Deterministic; the first one is not the identity in
/// general, so callers that need it add it.
pub fn uniform_rotations(step_deg: f64) -> Vec<Mat3> {
    let n = uniform_count(step_deg);
    // Super-Fibonacci spiral: two incommensurate irrational steps.
    let phi = std::f64::consts::SQRT_2;
    let psi = 1.533_751_168_755_204_3_f64;
    (0..n)
        .map(|i| {
            let s = i as f64 + 0.5;
            let t = s / n as f64;
            let r = t.sqrt();
            let rr = (1.0 - t).sqrt();
            let a = 2.0 * PI * s / phi;
            let b = 2.0 * PI * s / psi;
            quaternion_to_matrix([r * a.sin(), r * a.cos(), rr * b.sin(), rr * b.cos()])
        })
        .collect()
}

/// Rotations within `range_deg` of `centre`: `exp([ω]ₓ)·centre` for rotation vectors `ω` on
/// a cubic grid of spacing `step_deg` with `|ω| ≤ range_deg` (the identity perturbation,
/// i.e. `centre` itself, comes first). `step_deg > 0`.
pub fn local_rotations(centre: &Mat3, range_deg: f64, step_deg: f64) -> Vec<Mat3> {
    let m = (range_deg / step_deg).floor().max(0.0) as i64;
    let mut out = vec![*centre];
    for i in -m..=m {
        for j in -m..=m {
            for k in -m..=m {
                if i == 0 && j == 0 && k == 0 {
                    continue;
                }
                let w = [
                    i as f64 * step_deg,
                    j as f64 * step_deg,
                    k as f64 * step_deg,
                ];
                let a = (w[0] * w[0] + w[1] * w[1] + w[2] * w[2]).sqrt();
                if a <= range_deg + 1e-9 {
                    out.push(matmul(&axis_angle(w, a), centre));
                }
            }
        }
    }
    out
}

/// Angle (degrees, `[0, 180]`) of the rotation `a·bᵀ` that takes `b` to `a`.
pub fn angle_between_deg(a: &Mat3, b: &Mat3) -> f64 {
    let m = matmul(a, &transpose(b));
    let tr = m[0][0] + m[1][1] + m[2][2];
    ((tr - 1.0) * 0.5).clamp(-1.0, 1.0).acos().to_degrees()
}

/// A point group. Conventions (RELION's): Cn about z; Dn adds a 2-fold about x; T, O and I
/// in the "222" setting (2-folds about x, y, z): T adds the 3-folds about the cube diagonals,
/// O has 4-folds about x, y, z, I (RELION's I2, Crowther) has 5-folds about
/// `(0, ±1, ±φ)` and its cyclic permutations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symmetry {
    /// Cyclic, n-fold about z.
    C(u32),
    /// Dihedral: Cn plus a 2-fold about x.
    D(u32),
    /// Tetrahedral (order 12).
    T,
    /// Octahedral (order 24).
    O,
    /// Icosahedral (order 60).
    I,
}

impl Symmetry {
    /// The group's matrices (the identity first), `order()` of them. Applying symmetry to a
    /// map is averaging `map(Rᵀ·x)` over them.
    pub fn matrices(&self) -> Vec<Mat3> {
        let z = [0.0, 0.0, 1.0];
        let gens: Vec<Mat3> = match *self {
            Symmetry::C(n) => vec![axis_angle(z, 360.0 / n.max(1) as f64)],
            Symmetry::D(n) => vec![
                axis_angle(z, 360.0 / n.max(1) as f64),
                axis_angle([1.0, 0.0, 0.0], 180.0),
            ],
            Symmetry::T => vec![
                axis_angle(z, 180.0),
                axis_angle([1.0, 0.0, 0.0], 180.0),
                axis_angle([1.0, 1.0, 1.0], 120.0),
            ],
            Symmetry::O => vec![axis_angle(z, 90.0), axis_angle([1.0, 1.0, 1.0], 120.0)],
            Symmetry::I => {
                let g = 0.5 * (1.0 + 5f64.sqrt());
                vec![
                    axis_angle(z, 180.0),
                    axis_angle([1.0, 1.0, 1.0], 120.0),
                    axis_angle([0.0, 1.0, g], 72.0),
                ]
            }
        };
        close_group(&gens)
    }

    /// Number of elements.
    pub fn order(&self) -> usize {
        match *self {
            Symmetry::C(n) => n.max(1) as usize,
            Symmetry::D(n) => 2 * n.max(1) as usize,
            Symmetry::T => 12,
            Symmetry::O => 24,
            Symmetry::I => 60,
        }
    }
}

/// The smallest set of matrices closed under multiplication that holds `gens` and the identity.
fn close_group(gens: &[Mat3]) -> Vec<Mat3> {
    let same = |a: &Mat3, b: &Mat3| super::geometry::max_abs_diff(a, b) < 1e-6;
    let mut g = vec![identity()];
    let mut i = 0;
    while i < g.len() {
        for h in gens {
            let p = matmul(h, &g[i]);
            if !g.iter().any(|q| same(q, &p)) {
                g.push(p);
            }
        }
        i += 1;
        assert!(
            g.len() <= 120,
            "close_group: generators do not form a point group"
        );
    }
    g
}

impl FromStr for Symmetry {
    type Err = Error;
    /// `C1`, `C7`, `D2`, `T`, `O`, `I` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_uppercase();
        let bad = || {
            Error::Config(format!(
                "symmetry {s:?} is not a point group; use Cn, Dn (n ≥ 1), T, O or I, e.g. \"C1\", \"D7\", \"O\""
            ))
        };
        let num = |r: &str| r.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(bad);
        match t.as_str() {
            "T" => Ok(Symmetry::T),
            "O" => Ok(Symmetry::O),
            "I" | "I2" => Ok(Symmetry::I),
            _ if t.starts_with('C') => Ok(Symmetry::C(num(&t[1..])?)),
            _ if t.starts_with('D') => Ok(Symmetry::D(num(&t[1..])?)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Symmetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Symmetry::C(n) => write!(f, "C{n}"),
            Symmetry::D(n) => write!(f, "D{n}"),
            Symmetry::T => f.write_str("T"),
            Symmetry::O => f.write_str("O"),
            Symmetry::I => f.write_str("I"),
        }
    }
}

/// Smallest angle (degrees) between poses `a` and `b` of a particle with symmetry `sym`:
/// `min over S of angle(a, b·S)` (a pose and the pose composed with a symmetry operation
/// of the reference describe the same particle).
pub fn angle_between_sym_deg(a: &Mat3, b: &Mat3, sym: &[Mat3]) -> f64 {
    sym.iter()
        .map(|s| angle_between_deg(a, &matmul(b, s)))
        .fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::{apply, euler_zyz_to_matrix};

    #[test]
    fn group_orders() {
        for (s, n) in [
            ("C1", 1),
            ("C5", 5),
            ("D7", 14),
            ("T", 12),
            ("O", 24),
            ("I", 60),
        ] {
            let g: Symmetry = s.parse().unwrap();
            assert_eq!(g.matrices().len(), n, "{s}");
            assert_eq!(g.order(), n);
            assert_eq!(g.to_string(), s);
        }
        assert!("X3".parse::<Symmetry>().is_err());
        assert!("C0".parse::<Symmetry>().is_err());
    }

    #[test]
    fn uniform_sampling_covers_so3() {
        let step = 20.0;
        let rs = uniform_rotations(step);
        assert_eq!(rs.len(), uniform_count(step));
        // Every random rotation has a sample within about the step.
        let mut worst: f64 = 0.0;
        for i in 0..200 {
            let t = i as f64;
            let a = euler_zyz_to_matrix(t * 37.1 % 360.0, (t * 13.7) % 180.0, t * 71.3 % 360.0);
            let best = rs
                .iter()
                .map(|r| angle_between_deg(r, &a))
                .fold(f64::INFINITY, f64::min);
            worst = worst.max(best);
        }
        assert!(worst < step, "worst covering angle {worst}");
        assert!(worst > 0.3 * step, "suspiciously dense: {worst}");
    }

    #[test]
    fn local_sampling_stays_within_range() {
        let c = euler_zyz_to_matrix(30.0, 60.0, -20.0);
        let rs = local_rotations(&c, 6.0, 2.0);
        assert_eq!(rs[0], c);
        assert!(rs.len() > 100);
        for r in &rs {
            assert!(angle_between_deg(r, &c) <= 6.0 + 1e-6);
        }
    }

    #[test]
    fn axis_angle_and_symmetric_distance() {
        let r = axis_angle([0.0, 0.0, 1.0], 90.0);
        let v = apply(&r, [1.0, 0.0, 0.0]);
        assert!((v[1] - 1.0).abs() < 1e-12);
        let sym = Symmetry::C(4).matrices();
        let a = euler_zyz_to_matrix(10.0, 20.0, 30.0);
        let b = matmul(&a, &sym[2]);
        assert!(angle_between_deg(&a, &b) > 80.0);
        assert!(angle_between_sym_deg(&a, &b, &sym) < 1e-6);
    }
}
