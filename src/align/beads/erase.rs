//! Bead erasure before reconstruction (as IMOD `ccderaser -fid`): every solved bead is
//! projected into every tilt, and the disk it covers is replaced by the background around it
//! (a plane fitted to a ring outside the disk) plus Gaussian noise with the ring's residual
//! standard deviation, so the reconstruction sees neither the dark bead nor a flat patch.

use super::super::AlignReport;
use crate::core::geometry::apply;
use crate::{Error, Result};
use ndarray::{Array3, ArrayViewMut2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// Radius (pixels) of the disk erased for a bead of `diameter_px`: 1.2 bead radii + 1 pixel
/// (soft edge, blur and the first CTF fringe).
pub fn erase_radius_px(diameter_px: f64) -> f64 {
    0.6 * diameter_px + 1.0
}

/// Erase the beads of `report` from `stack` `[tilt, y, x]` (the stack the report was made
/// from, unbinned, pixel `report.geometry.pixel_a` Å). Bead `b` is projected into tilt `i`
/// at `(nx/2, ny/2) + (m_i·[R_i·p_b]_xy + s_i)/pixel` (`m_i` =
/// `report.tilts[i].magnification`), its disk of radius [`erase_radius_px`] of
/// `diameter_a / pixel` is replaced by the plane fitted to the ring `r .. r + max(3, r/2)`
/// (pixels inside other beads' disks excluded) plus noise of the ring's residual σ.
/// Deterministic (noise seeded per tilt and bead).
///
/// Errors: [`Error::Config`] when the stack does not match the report's geometry or the
/// diameter is not positive.
pub fn erase(stack: &mut Array3<f32>, report: &AlignReport, diameter_a: f64) -> Result<()> {
    let g = &report.geometry;
    let (nt, ny, nx) = stack.dim();
    if nt != g.len() || ny != g.ny || nx != g.nx || report.tilts.len() != nt {
        return Err(Error::Config(format!(
            "bead erasure: stack is {nt}×{ny}×{nx} but the alignment report describes {} tilts \
             of {}×{}; erase the stack the alignment was run on",
            g.len(),
            g.ny,
            g.nx
        )));
    }
    if !(diameter_a.is_finite() && diameter_a > 0.0 && g.pixel_a > 0.0) {
        return Err(Error::Config(format!(
            "bead erasure: bead diameter {diameter_a} Å (pixel {} Å): set a positive \
             bead_diameter_a",
            g.pixel_a
        )));
    }
    let px = g.pixel_a;
    let r = erase_radius_px(diameter_a / px);
    stack
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut img)| {
            let t = &g.tilts[i];
            let rot = t.rotation();
            let m = report.tilts[i].magnification;
            let centres: Vec<[f64; 2]> = report
                .beads
                .iter()
                .map(|b| {
                    let q = apply(&rot, b.position_a);
                    [
                        (nx / 2) as f64 + (m * q[0] + t.shift_x_a) / px,
                        (ny / 2) as f64 + (m * q[1] + t.shift_y_a) / px,
                    ]
                })
                .collect();
            for (b, c) in centres.iter().enumerate() {
                let seed = ((i as u64) << 32) ^ b as u64 ^ 0x5eed_bead;
                erase_one(
                    &mut img,
                    *c,
                    r,
                    &centres,
                    &mut ChaCha8Rng::seed_from_u64(seed),
                );
            }
        });
    Ok(())
}

/// Replace the disk of radius `r` around `c` `(x, y)` by the ring-fitted plane + noise;
/// `others` (including `c`) are the disks whose pixels the ring must avoid.
fn erase_one(
    img: &mut ArrayViewMut2<f32>,
    c: [f64; 2],
    r: f64,
    others: &[[f64; 2]],
    rng: &mut ChaCha8Rng,
) {
    let (ny, nx) = img.dim();
    let r1 = r + (0.5 * r).max(3.0);
    let lo = |v: f64| (v - r1).floor().max(0.0) as usize;
    let hi = |v: f64, n: usize| ((v + r1).ceil() as usize).min(n - 1);
    if c[0] + r1 < 0.0
        || c[1] + r1 < 0.0
        || c[0] - r1 > (nx - 1) as f64
        || c[1] - r1 > (ny - 1) as f64
    {
        return;
    }
    let (x0, x1, y0, y1) = (lo(c[0]), hi(c[0], nx), lo(c[1]), hi(c[1], ny));
    // plane fit v ≈ a + b·dx + c·dy on the ring (normal equations, centred coordinates)
    let mut ata = [[0.0f64; 3]; 3];
    let mut atb = [0.0f64; 3];
    let mut ring = Vec::new();
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f64 - c[0], y as f64 - c[1]);
            let d = dx.hypot(dy);
            if d < r || d >= r1 {
                continue;
            }
            let in_other = others
                .iter()
                .any(|o| (x as f64 - o[0]).hypot(y as f64 - o[1]) < r);
            if in_other {
                continue;
            }
            let v = img[[y, x]] as f64;
            let f = [1.0, dx, dy];
            for a in 0..3 {
                atb[a] += f[a] * v;
                for b in 0..3 {
                    ata[a][b] += f[a] * f[b];
                }
            }
            ring.push((dx, dy, v));
        }
    }
    if ring.len() < 8 {
        return;
    }
    let coef = solve3_or_mean(ata, atb, &ring);
    let plane = |dx: f64, dy: f64| coef[0] + coef[1] * dx + coef[2] * dy;
    let var = ring
        .iter()
        .map(|&(dx, dy, v)| (v - plane(dx, dy)).powi(2))
        .sum::<f64>()
        / (ring.len() as f64 - 3.0).max(1.0);
    let sd = var.sqrt();
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f64 - c[0], y as f64 - c[1]);
            if dx.hypot(dy) < r {
                let n: f64 = StandardNormal.sample(rng);
                img[[y, x]] = (plane(dx, dy) + sd * n) as f32;
            }
        }
    }
}

/// Solve the 3×3 plane normal equations by Cramer's rule; the ring mean (flat plane) when
/// they are singular.
fn solve3_or_mean(a: [[f64; 3]; 3], b: [f64; 3], ring: &[(f64, f64, f64)]) -> [f64; 3] {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&a);
    if d.abs() > 1e-9 * a[0][0].powi(3).max(1e-300) {
        let mut x = [0.0; 3];
        for (k, xk) in x.iter_mut().enumerate() {
            let mut m = a;
            for row in 0..3 {
                m[row][k] = b[row];
            }
            *xk = det(&m) / d;
        }
        x
    } else {
        let mean = ring.iter().map(|r| r.2).sum::<f64>() / ring.len() as f64;
        [mean, 0.0, 0.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::{AlignMethod, BeadResidual, TiltResidual};
    use crate::core::geometry::TiltSeriesGeometry;
    use ndarray::Array2;
    use rand_distr::Normal;

    /// Contrast (ring mean − disk mean) and pixel σ of the ring around `c`.
    fn contrast(img: &Array2<f32>, c: [f64; 2], r: f64) -> (f64, f64) {
        let (mut si, mut ni, mut so, mut so2, mut no) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for ((y, x), &v) in img.indexed_iter() {
            let d = (x as f64 - c[0]).hypot(y as f64 - c[1]);
            let v = v as f64;
            if d < r {
                si += v;
                ni += 1.0;
            } else if d < 2.0 * r {
                so += v;
                so2 += v * v;
                no += 1.0;
            }
        }
        let mo = so / no;
        (mo - si / ni, (so2 / no - mo * mo).sqrt())
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn erased_beads_drop_to_the_noise_level() {
        let (n, px, diam_a) = (128usize, 10.0, 100.0);
        let mut g = TiltSeriesGeometry::from_angles(n, n, px, &[-30.0, 0.0, 30.0], 80.0);
        g.tilts[0].shift_x_a = 40.0;
        g.tilts[2].shift_y_a = -25.0;
        let beads = [
            [-200.0, 150.0, 80.0],
            [250.0, -100.0, -90.0],
            [0.0, 0.0, 0.0],
        ];
        let report = AlignReport {
            method: AlignMethod::Beads,
            geometry: g.clone(),
            tilts: (0..3)
                .map(|i| TiltResidual {
                    index: i,
                    tilt_deg: g.tilts[i].tilt_deg,
                    shift_x_px: 0.0,
                    shift_y_px: 0.0,
                    magnification: 1.0,
                    residual_px: 0.0,
                    n_obs: 3,
                })
                .collect(),
            beads: beads
                .iter()
                .enumerate()
                .map(|(id, p)| BeadResidual {
                    id,
                    position_a: *p,
                    residual_px: 0.0,
                    n_obs: 3,
                })
                .collect(),
            rms_residual_px: 0.0,
            thickness_a: None,
            pitch_deg: None,
            z_offset_a: None,
            log: vec![],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let noise = Normal::new(0.0f64, 4.0).unwrap();
        let rb = 0.5 * diam_a / px;
        let mut centres = vec![];
        let mut stack = Array3::<f32>::zeros((3, n, n));
        for i in 0..3 {
            let pr = g.tilts[i].projection(px, n, n);
            let cs: Vec<[f64; 2]> = beads.iter().map(|p| pr.project(*p)).collect();
            for ((y, x), v) in stack.index_axis_mut(Axis(0), i).indexed_iter_mut() {
                let mut val = 100.0 + 0.05 * x as f64 - 0.03 * y as f64;
                for c in &cs {
                    let d2 = (x as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2);
                    val -= 8.0 * (rb * rb - d2).max(0.0).sqrt();
                }
                *v = (val + noise.sample(&mut rng)) as f32;
            }
            centres.push(cs);
        }
        let before = stack.clone();
        erase(&mut stack, &report, diam_a).unwrap();
        for i in 0..3 {
            let (b_img, a_img) = (
                before.index_axis(Axis(0), i).to_owned(),
                stack.index_axis(Axis(0), i).to_owned(),
            );
            for c in &centres[i] {
                let (cb, _) = contrast(&b_img, *c, rb);
                let (ca, sd) = contrast(&a_img, *c, rb);
                assert!(
                    cb > 20.0 * sd / (rb * rb * 3.0).sqrt(),
                    "before {cb} sd {sd}"
                );
                // after: within 3 standard errors of the disk mean (≈ π r² pixels)
                let se = sd / (std::f64::consts::PI * rb * rb).sqrt();
                assert!(
                    ca.abs() < 3.0 * se + 0.5,
                    "tilt {i}: contrast {ca} (se {se})"
                );
                assert!((sd - 4.0).abs() < 1.0, "ring σ {sd}");
            }
        }
        // a mismatched stack is refused
        let mut small = Array3::<f32>::zeros((2, n, n));
        assert!(erase(&mut small, &report, diam_a).is_err());
    }
}
