//! Atoms -> electrostatic potential (volts) on a voxel grid, and resampling of given maps.
//!
//! Per atom the potential is the Fourier transform of the Peng (1996) five-Gaussian electron
//! scattering factor `f(s) = Σ a_i·exp(−b_i·s²)` (s = sin θ/λ, Å⁻¹; a_i in Å, b_i in Å²):
//! `V(r) = K·Σ a_i·(4π/b_i)^{3/2}·exp(−4π²r²/b_i)`, `K = h²/(2π·m0·e) = 47.878 V·Å²`, i.e. a
//! sum of 3D Gaussians of variance `b_i/(8π²)` and integral `K·a_i` (V·Å³). The atomic
//! B-factor adds to every `b_i` (Debye–Waller). Each Gaussian is integrated exactly over the
//! voxel (erf differences, the "pixel blur"), so the voxel value is the mean potential in the
//! voxel and the total integrated potential is exact at any pixel size.

use crate::core::interp::trilinear;
use crate::io::pdb::Atom;
use ndarray::{Array3, Axis};
use rayon::prelude::*;

/// `h²/(2π·m0·e)` in V·Å²: converts scattering factors (Å) into potential (V·Å³).
pub const POTENTIAL_PREFACTOR_V_A2: f64 = 47.878;

/// Peng et al. (1996) elastic electron scattering factors, s ≤ 2 Å⁻¹: (a_i Å, b_i Å²).
fn peng(element: &str) -> Option<([f64; 5], [f64; 5])> {
    Some(match element {
        "H" => (
            [0.0349, 0.1201, 0.1970, 0.0573, 0.1195],
            [0.5347, 3.5867, 12.3471, 18.9525, 38.6269],
        ),
        "C" => (
            [0.0893, 0.2563, 0.7570, 1.0487, 0.3575],
            [0.2465, 1.7100, 6.4094, 18.6113, 50.2523],
        ),
        "N" => (
            [0.1022, 0.3219, 0.7982, 0.8197, 0.1715],
            [0.2451, 1.7481, 6.1925, 17.3894, 48.1431],
        ),
        "O" => (
            [0.0974, 0.2921, 0.6910, 0.6990, 0.2039],
            [0.2067, 1.3815, 4.6943, 12.7105, 32.4726],
        ),
        "P" => (
            [0.2548, 0.6106, 1.4541, 2.3204, 0.8477],
            [0.2908, 1.8740, 8.5176, 24.3434, 63.2996],
        ),
        "S" => (
            [0.2497, 0.5628, 1.3899, 2.1865, 0.7715],
            [0.2681, 1.6711, 7.0267, 19.5377, 50.3888],
        ),
        "NA" => (
            [0.2142, 0.6853, 0.7692, 1.6589, 1.4482],
            [0.3334, 2.3446, 10.0830, 48.3037, 138.2700],
        ),
        "MG" => (
            [0.2314, 0.6866, 0.9677, 2.1882, 1.1339],
            [0.3278, 2.2720, 10.9241, 39.2898, 101.9748],
        ),
        "CL" => (
            [0.2443, 0.5397, 1.3919, 2.0197, 0.6621],
            [0.2468, 1.5242, 6.1537, 16.6687, 42.3086],
        ),
        _ => return None,
    })
}

/// Atomic number of common elements without Peng parameters here (approximated).
fn atomic_number(element: &str) -> f64 {
    match element {
        "LI" => 3.0,
        "B" => 5.0,
        "F" => 9.0,
        "K" => 19.0,
        "CA" => 20.0,
        "MN" => 25.0,
        "FE" => 26.0,
        "CO" => 27.0,
        "NI" => 28.0,
        "CU" => 29.0,
        "ZN" => 30.0,
        "SE" => 34.0,
        "BR" => 35.0,
        "MO" => 42.0,
        "AG" => 47.0,
        "CD" => 48.0,
        "I" => 53.0,
        "PT" => 78.0,
        "AU" => 79.0,
        "HG" => 80.0,
        "PB" => 82.0,
        "U" => 92.0,
        _ => 6.0,
    }
}

/// Scattering-factor Gaussians `(a_i, b_i)` of an element. Elements without tabulated Peng
/// parameters use carbon's profile scaled by `(Z/6)^0.74` (the trend of f(0) from C to S);
/// unknown symbols are treated as carbon.
pub fn scattering_gaussians(element: &str) -> ([f64; 5], [f64; 5]) {
    peng(element).unwrap_or_else(|| {
        let (a, b) = peng("C").expect("carbon");
        let k = (atomic_number(element) / 6.0).powf(0.74);
        (a.map(|x| x * k), b)
    })
}

/// Complementary error function (Numerical Recipes Chebyshev fit, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// A potential rendered on a cubic grid.
#[derive(Clone, Debug)]
pub struct RenderedMap {
    /// Voxel size, Å.
    pub pixel_a: f64,
    /// Mean potential per voxel, V, `[z, y, x]`; the structure's centre is voxel `n/2`.
    pub potential: Array3<f32>,
    /// Radius (Å) about the box centre of the sphere holding the structure (atoms + blur).
    pub radius_a: f64,
}

/// One atom's separable voxel weights: per Gaussian component, integrated 1D profiles.
struct AtomStamp {
    start: [isize; 3], // first voxel (x, y, z)
    width: usize,
    amp: [f64; 5], // K·a_i·occ / voxel volume, V
    fx: Vec<f32>,  // [5 × width]
    fy: Vec<f32>,
    fz: Vec<f32>,
}

/// Render atoms (Å, any frame) into a cubic box of `pixel_a` voxels centred on the atoms'
/// mean position (at voxel `n/2`). Returns the potential in volts. Each atom touches only a
/// `±(4σ + 1)` voxel neighbourhood; planes are rendered in parallel, so the result does not
/// depend on the thread count.
pub fn render_atoms(atoms: &[Atom], pixel_a: f64) -> RenderedMap {
    let n_atoms = atoms.len().max(1) as f64;
    let mut centre = [0.0; 3];
    for a in atoms {
        for (c, x) in centre.iter_mut().zip(a.xyz_a) {
            *c += x / n_atoms;
        }
    }
    let mut rmax: f64 = 0.0;
    let mut sig_max: f64 = 0.0;
    for a in atoms {
        let d2: f64 = (0..3).map(|k| (a.xyz_a[k] - centre[k]).powi(2)).sum();
        rmax = rmax.max(d2.sqrt());
        let (_, b) = scattering_gaussians(&a.element);
        sig_max = sig_max
            .max(((b[4] + a.b_factor.max(0.0)) / (8.0 * std::f64::consts::PI.powi(2))).sqrt());
    }
    let reach = rmax + 4.0 * sig_max + pixel_a;
    let half = (reach / pixel_a).ceil() as usize + 1;
    let n = 2 * half;
    let c = (n / 2) as f64;
    let vox_vol = pixel_a.powi(3);
    let pi2 = std::f64::consts::PI.powi(2);

    // stamps (parallel, collected in atom order)
    let stamps: Vec<AtomStamp> = atoms
        .par_iter()
        .map(|a| {
            let (ag, bg) = scattering_gaussians(&a.element);
            let b_extra = a.b_factor.max(0.0);
            let sig: Vec<f64> = bg
                .iter()
                .map(|&b| ((b + b_extra) / (8.0 * pi2)).sqrt() / pixel_a)
                .collect();
            let smax = sig.iter().cloned().fold(0.0, f64::max);
            let w = (4.0 * smax + 1.0).ceil() as isize;
            let width = (2 * w + 1) as usize;
            let pos: Vec<f64> = (0..3)
                .map(|k| (a.xyz_a[k] - centre[k]) / pixel_a + c)
                .collect();
            let start = [
                pos[0].round() as isize - w,
                pos[1].round() as isize - w,
                pos[2].round() as isize - w,
            ];
            let mut f = [
                vec![0f32; 5 * width],
                vec![0f32; 5 * width],
                vec![0f32; 5 * width],
            ];
            for (k, fk) in f.iter_mut().enumerate() {
                for (g, &s) in sig.iter().enumerate() {
                    let inv = 1.0 / (std::f64::consts::SQRT_2 * s);
                    for j in 0..width {
                        let v = (start[k] + j as isize) as f64;
                        let lo = (v - 0.5 - pos[k]) * inv;
                        let hi = (v + 0.5 - pos[k]) * inv;
                        fk[g * width + j] = (0.5 * (erfc(lo) - erfc(hi))) as f32;
                    }
                }
            }
            let occ = a.occupancy.clamp(0.0, 1.0);
            let [fx, fy, fz] = f;
            AtomStamp {
                start,
                width,
                amp: ag.map(|x| POTENTIAL_PREFACTOR_V_A2 * x * occ / vox_vol),
                fx,
                fy,
                fz,
            }
        })
        .collect();

    // index stamps by first z plane
    let mut order: Vec<usize> = (0..stamps.len()).collect();
    order.sort_by_key(|&i| (stamps[i].start[2], i));
    let max_w = stamps.iter().map(|s| s.width).max().unwrap_or(1) as isize;

    let mut vol = Array3::<f32>::zeros((n, n, n));
    vol.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(z, mut plane)| {
            let z = z as isize;
            // stamps whose z window [start, start + width) contains z
            let lo = order.partition_point(|&i| stamps[i].start[2] < z - max_w + 1);
            for &i in &order[lo..] {
                let s = &stamps[i];
                if s.start[2] > z {
                    break;
                }
                let jz = z - s.start[2];
                if jz >= s.width as isize {
                    continue;
                }
                let w = s.width;
                for g in 0..5 {
                    let wz = s.amp[g] as f32 * s.fz[g * w + jz as usize];
                    if wz == 0.0 {
                        continue;
                    }
                    for jy in 0..w {
                        let y = s.start[1] + jy as isize;
                        if y < 0 || y >= n as isize {
                            continue;
                        }
                        let wzy = wz * s.fy[g * w + jy];
                        let mut row = plane.row_mut(y as usize);
                        for jx in 0..w {
                            let x = s.start[0] + jx as isize;
                            if x < 0 || x >= n as isize {
                                continue;
                            }
                            row[x as usize] += wzy * s.fx[g * w + jx];
                        }
                    }
                }
            }
        });
    RenderedMap {
        pixel_a,
        potential: vol,
        radius_a: rmax + 2.0 * sig_max + 0.5 * pixel_a,
    }
}

/// Resample a map (`[z, y, x]`, voxel `map_pixel_a` Å, centre voxel `n/2`) to `pixel_a` with
/// trilinear interpolation (no anti-alias prefilter: downsampling by more than ~2× aliases).
/// Values are kept as they are (taken to be volts). The radius is that of the sphere about
/// the centre that holds every voxel above 1% of the maximum.
pub fn resample_map(map: &Array3<f32>, map_pixel_a: f64, pixel_a: f64) -> RenderedMap {
    let (mz, my, mx) = map.dim();
    let big = mz.max(my).max(mx) as f64 * map_pixel_a;
    let n = ((big / pixel_a).ceil() as usize).max(2);
    let n = n + n % 2;
    let c = (n / 2) as f64;
    let mc = [(mx / 2) as f64, (my / 2) as f64, (mz / 2) as f64];
    let view = map.view();
    let ratio = pixel_a / map_pixel_a;
    let mut out = Array3::<f32>::zeros((n, n, n));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(z, mut plane)| {
            for ((y, x), v) in plane.indexed_iter_mut() {
                let q = [
                    (x as f64 - c) * ratio + mc[0],
                    (y as f64 - c) * ratio + mc[1],
                    (z as f64 - c) * ratio + mc[2],
                ];
                *v = trilinear(&view, q[2], q[1], q[0]);
            }
        });
    let vmax = out.iter().cloned().fold(0.0f32, f32::max);
    let mut r2max: f64 = 0.0;
    for ((z, y, x), &v) in out.indexed_iter() {
        if v > 0.01 * vmax {
            let d2 = (x as f64 - c).powi(2) + (y as f64 - c).powi(2) + (z as f64 - c).powi(2);
            r2max = r2max.max(d2);
        }
    }
    RenderedMap {
        pixel_a,
        potential: out,
        radius_a: (r2max.sqrt() + 1.0) * pixel_a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(el: &str, xyz: [f64; 3]) -> Atom {
        Atom {
            element: el.into(),
            xyz_a: xyz,
            occupancy: 1.0,
            b_factor: 0.0,
        }
    }

    #[test]
    fn erfc_accuracy() {
        assert!((erfc(0.0) - 1.0).abs() < 2e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 2e-7);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 2e-7);
    }

    #[test]
    fn integrated_potential_is_exact() {
        // one carbon: ∫V = K·Σa = 47.878·2.5088 V·Å³, for any pixel size
        for &px in &[0.7, 2.0, 8.0] {
            let m = render_atoms(&[atom("C", [1.3, -2.0, 0.4])], px);
            let total: f64 = m.potential.iter().map(|&v| v as f64).sum::<f64>() * px.powi(3);
            let want = POTENTIAL_PREFACTOR_V_A2 * 2.5088;
            assert!(
                (total - want).abs() / want < 1e-4,
                "px {px}: {total} vs {want}"
            );
        }
    }

    #[test]
    fn peak_at_atom_position() {
        let m = render_atoms(&[atom("O", [0.0; 3]), atom("O", [10.0, 0.0, 0.0])], 1.0);
        // centre is the mean (5, 0, 0): atoms at box centre ± 5 voxels along x
        let n = m.potential.dim().0;
        let c = n / 2;
        let row: Vec<f32> = (0..n).map(|x| m.potential[[c, c, x]]).collect();
        let imax = (0..n).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert!(imax == c - 5 || imax == c + 5);
        assert!((row[c - 5] - row[c + 5]).abs() < 1e-5);
    }

    #[test]
    fn unknown_elements_scale_with_z() {
        let (a_fe, _) = scattering_gaussians("FE");
        let (a_c, _) = scattering_gaussians("C");
        assert!(a_fe.iter().sum::<f64>() > 2.0 * a_c.iter().sum::<f64>());
        assert_eq!(scattering_gaussians("XX").0, a_c);
    }

    #[test]
    fn resampling_keeps_centre() {
        let mut a = atom("S", [0.0; 3]);
        a.b_factor = 300.0; // σ ≈ 2 Å: smooth enough to be sampled at 2 Å
        let m = render_atoms(&[a], 1.0);
        let r = resample_map(&m.potential, 1.0, 2.0);
        let n = r.potential.dim().0;
        let c = n / 2;
        let vmax = r.potential.iter().cloned().fold(0.0f32, f32::max);
        assert_eq!(r.potential[[c, c, c]], vmax);
        // mass is preserved up to the sampling change (values are means per voxel)
        let m1: f64 = m.potential.iter().map(|&v| v as f64).sum();
        let m2: f64 = r.potential.iter().map(|&v| v as f64).sum::<f64>() * 8.0;
        assert!((m1 - m2).abs() / m1 < 0.05, "{m1} {m2}");
    }
}
