//! The specimen: an ice slab holding particles (rendered structures at random non-overlapping
//! positions and uniformly random orientations), lipid vesicles and gold beads.
//!
//! The projector works on the EXCESS potential (object − ice it displaces, volts): the ice of
//! a laterally infinite slab projects to a constant, which is a uniform phase and invisible in
//! the weak-phase image, so it is handled analytically (dropped). The truth volume is
//! `excess + ice` inside the slab.

use super::potential::RenderedMap;
use super::{ParticleTruth, SphereTruth};
use crate::core::geometry::{apply, euler_zyz_to_matrix, matrix_to_euler_zyz, transpose, Mat3};
use crate::core::interp::trilinear;
use crate::error::{Error, Result};
use ndarray::{s, Array3, ArrayViewMut2, Axis};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// Mean potential of vitreous ice, V (the solvent potential of the independent simulator).
pub const ICE_POTENTIAL_V: f64 = 4.5;
/// Potential at which a voxel counts as fully occupied by protein (solvent fully displaced):
/// `47.878 V·Å² × ⟨f(0)⟩ ≈ 2.3 Å / ≈ 17 Å³ per non-hydrogen atom ≈ 6.5 V`.
pub const PROTEIN_FULL_V: f64 = 6.5;
/// Mean inner potential of gold, V.
pub const GOLD_POTENTIAL_V: f64 = 30.0;
/// Bilayer profile: headgroup peaks (V above ice) at ±`HEAD_OFFSET_A` from the mid-plane.
pub const HEAD_PEAK_V: f64 = 2.0;
/// Distance of each headgroup peak from the bilayer mid-plane, Å (peaks ~40 Å apart).
pub const HEAD_OFFSET_A: f64 = 20.0;
/// Gaussian width (σ) of a headgroup peak, Å.
pub const HEAD_SIGMA_A: f64 = 4.0;
/// Hydrocarbon tail region: potential below ice, V (Gaussian of σ `TAIL_SIGMA_A` at mid-plane).
pub const TAIL_DIP_V: f64 = -0.8;
/// σ of the tail dip, Å.
pub const TAIL_SIGMA_A: f64 = 9.0;
/// Half-thickness of the membrane mask (and of a vesicle's exclusion shell), Å.
pub const MEMBRANE_HALF_A: f64 = 25.0;

/// Excess potential (V) of the bilayer at signed distance `d` (Å) from its mid-plane.
pub fn bilayer_excess(d: f64) -> f64 {
    let g = |x: f64, s: f64| (-0.5 * x * x / (s * s)).exp();
    HEAD_PEAK_V * (g(d - HEAD_OFFSET_A, HEAD_SIGMA_A) + g(d + HEAD_OFFSET_A, HEAD_SIGMA_A))
        + TAIL_DIP_V * g(d, TAIL_SIGMA_A)
}

/// Excess over ice of a rendered potential `v` (V): the protein displaces ice in proportion
/// to its occupancy `clamp(v / PROTEIN_FULL_V, 0, 1)`.
pub fn protein_excess(v: f32) -> f32 {
    let occ = (v as f64 / PROTEIN_FULL_V).clamp(0.0, 1.0);
    (v as f64 - ICE_POTENTIAL_V * occ) as f32
}

/// Uniformly random rotation (uniform on SO(3)): a normalised 4D Gaussian quaternion.
pub fn random_rotation<R: Rng>(rng: &mut R) -> Mat3 {
    let mut q = [0.0f64; 4];
    loop {
        for v in q.iter_mut() {
            *v = StandardNormal.sample(rng);
        }
        let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
        if n > 1e-6 {
            q.iter_mut().for_each(|v| *v /= n);
            break;
        }
    }
    crate::core::so3::quaternion_to_matrix(q)
}

/// The assembled specimen.
pub struct Specimen {
    /// Excess potential over ice, V, `[z, y, x]`.
    pub excess: Array3<f32>,
    /// 1 inside lipid bilayers, `[z, y, x]`.
    pub membrane: Array3<u8>,
    /// Particles placed (position Å about the tomogram centre, RELION ZYZ Euler).
    pub particles: Vec<ParticleTruth>,
    /// Vesicles: centre Å, mid-bilayer radius Å.
    pub vesicles: Vec<SphereTruth>,
    /// Gold beads: centre Å, radius Å.
    pub beads: Vec<SphereTruth>,
}

/// Frame of the specimen volume: shape and pixel.
#[derive(Clone, Copy, Debug)]
pub struct VolumeFrame {
    /// Voxels along x, y, z.
    pub n: [usize; 3],
    /// Voxel size, Å.
    pub pixel_a: f64,
    /// Ice thickness, Å (slab |z| < thickness/2).
    pub thickness_a: f64,
}

impl VolumeFrame {
    /// Å coordinate of voxel index `i` along axis `k`.
    fn coord(&self, k: usize, i: usize) -> f64 {
        (i as f64 - (self.n[k] / 2) as f64) * self.pixel_a
    }
    /// Allowed range of a centre along axis `k` for an object of radius `r` (Å).
    fn centre_range(&self, k: usize, r: f64) -> (f64, f64) {
        let m = self.pixel_a;
        let mut lo = self.coord(k, 0) + r + m;
        let mut hi = self.coord(k, self.n[k] - 1) - r - m;
        if k == 2 {
            lo = lo.max(-0.5 * self.thickness_a + r + m);
            hi = hi.min(0.5 * self.thickness_a - r - m);
        }
        (lo, hi)
    }
    /// Fraction of voxel plane `iz` inside the ice slab (linear partial volume).
    pub fn slab_fraction(&self, iz: usize) -> f64 {
        let z = self.coord(2, iz).abs();
        (0.5 + (0.5 * self.thickness_a - z) / self.pixel_a).clamp(0.0, 1.0)
    }
}

/// Add `f(p − centre)` (p in Å) to every voxel within `reach` Å of `centre`; parallel over z.
fn paint<T, F>(vol: &mut Array3<T>, frame: &VolumeFrame, centre: [f64; 3], reach: f64, f: F)
where
    T: Send + Sync + Copy,
    F: Fn([f64; 3], &mut T) + Sync,
{
    let px = frame.pixel_a;
    let mut lo = [0usize; 3];
    let mut hi = [0usize; 3];
    for k in 0..3 {
        let c = centre[k] / px + (frame.n[k] / 2) as f64;
        let r = reach / px + 1.0;
        lo[k] = (c - r).floor().max(0.0) as usize;
        hi[k] = ((c + r).ceil().max(0.0) as usize).min(frame.n[k] - 1);
        if lo[k] > hi[k] {
            return;
        }
    }
    let mut sub = vol.slice_mut(s![lo[2]..=hi[2], lo[1]..=hi[1], lo[0]..=hi[0]]);
    sub.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(dz, mut plane): (usize, ArrayViewMut2<T>)| {
            let z = frame.coord(2, lo[2] + dz) - centre[2];
            for ((dy, dx), v) in plane.indexed_iter_mut() {
                let y = frame.coord(1, lo[1] + dy) - centre[1];
                let x = frame.coord(0, lo[0] + dx) - centre[0];
                f([x, y, z], v);
            }
        });
}

struct Placer {
    objects: Vec<([f64; 3], f64)>,
}

impl Placer {
    fn fits(&self, c: [f64; 3], r: f64, gap: f64) -> bool {
        self.objects.iter().all(|(o, ro)| {
            let d2: f64 = (0..3).map(|k| (c[k] - o[k]).powi(2)).sum();
            d2.sqrt() >= r + ro + gap
        })
    }
    /// Random centre for a sphere of radius `r`, z drawn by `z_draw` (or uniform).
    fn place<R: Rng>(
        &mut self,
        rng: &mut R,
        frame: &VolumeFrame,
        r: f64,
        what: &str,
        z_draw: Option<&dyn Fn(&mut R) -> f64>,
    ) -> Result<[f64; 3]> {
        let ranges: Vec<(f64, f64)> = (0..3).map(|k| frame.centre_range(k, r)).collect();
        if ranges.iter().any(|(lo, hi)| lo > hi) {
            return Err(Error::Config(format!(
                "a {what} of radius {r:.0} Å does not fit in the {:.0} Å slab / {}×{} px field at {} Å/px; \
                 enlarge thickness_a/nx/ny or remove the {what}",
                frame.thickness_a, frame.n[0], frame.n[1], frame.pixel_a
            )));
        }
        for _ in 0..5000 {
            let mut c = [0.0; 3];
            for k in 0..3 {
                let (lo, hi) = ranges[k];
                c[k] = lo + (hi - lo) * rng.random::<f64>();
            }
            if let Some(zd) = z_draw {
                c[2] = zd(rng).clamp(ranges[2].0, ranges[2].1);
            }
            if self.fits(c, r, frame.pixel_a) {
                self.objects.push((c, r));
                return Ok(c);
            }
        }
        Err(Error::Config(format!(
            "could not place a {what} of radius {r:.0} Å without overlap after 5000 tries: the specimen is \
             too crowded; reduce copies/vesicles/gold_beads or enlarge nx/ny/thickness_a"
        )))
    }
}

/// A structure to place: its name, rendered potential and the number of copies.
pub struct PlacedStructure<'a> {
    /// Name recorded in the truth.
    pub name: String,
    /// Rendered potential at the volume pixel.
    pub map: &'a RenderedMap,
    /// Number of copies.
    pub copies: usize,
}

/// Build the specimen. Objects are placed largest first (vesicles, particles, beads); each
/// lies wholly inside the slab and the volume, at least one voxel from every other object.
/// Vesicles: mid-bilayer radius uniform in [0.6, 1]·R_max, `R_max = min(thickness/2 − 25 Å −
/// margin, 0.3·field, 600 Å)`; beads: on a random slab surface, up to 20 Å inside.
pub fn build_specimen<R: Rng>(
    frame: &VolumeFrame,
    structures: &[PlacedStructure],
    vesicles: usize,
    gold_beads: usize,
    gold_diameter_a: f64,
    rng: &mut R,
) -> Result<Specimen> {
    let [nx, ny, nz] = frame.n;
    let px = frame.pixel_a;
    let mut excess = Array3::<f32>::zeros((nz, ny, nx));
    let mut membrane = Array3::<u8>::zeros((nz, ny, nx));
    let mut placer = Placer {
        objects: Vec::new(),
    };
    let mut out_ves = Vec::new();
    let mut out_particles = Vec::new();
    let mut out_beads = Vec::new();

    // vesicles
    let field = (nx.min(ny) as f64) * px;
    let r_max = (0.5 * frame.thickness_a - MEMBRANE_HALF_A - 2.0 * px)
        .min(0.3 * field)
        .min(600.0);
    for _ in 0..vesicles {
        if r_max < 60.0 {
            return Err(Error::Config(format!(
                "vesicles: the slab ({:.0} Å) or field ({field:.0} Å) is too small for a vesicle; \
                 set vesicles = 0 or enlarge thickness_a/nx/ny",
                frame.thickness_a
            )));
        }
        let r_mid = r_max * (0.6 + 0.4 * rng.random::<f64>());
        let c = placer.place(rng, frame, r_mid + MEMBRANE_HALF_A, "vesicle", None)?;
        let reach = r_mid + MEMBRANE_HALF_A + 2.0 * px;
        paint(&mut excess, frame, c, reach, |p, v| {
            let d = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() - r_mid;
            if d.abs() <= 2.0 * MEMBRANE_HALF_A {
                *v += bilayer_excess(d) as f32;
            }
        });
        paint(&mut membrane, frame, c, reach, |p, v| {
            let d = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() - r_mid;
            if d.abs() <= MEMBRANE_HALF_A {
                *v = 1;
            }
        });
        out_ves.push(SphereTruth {
            centre_a: c,
            radius_a: r_mid,
        });
    }

    // particles
    for (si, st) in structures.iter().enumerate() {
        let map = st.map;
        let ex = map.potential.mapv(protein_excess);
        let mc = (map.potential.dim().0 / 2) as f64;
        for _ in 0..st.copies {
            let c = placer.place(rng, frame, map.radius_a, "particle", None)?;
            let (rot, tilt, psi) = matrix_to_euler_zyz(&random_rotation(rng));
            let a = euler_zyz_to_matrix(rot, tilt, psi);
            let at = transpose(&a);
            let view = ex.view();
            let inv = 1.0 / map.pixel_a;
            // particle(x) = reference(Aᵀ·(x − pos))
            paint(&mut excess, frame, c, map.radius_a, |p, v| {
                let q = apply(&at, p);
                let (qx, qy, qz) = (q[0] * inv + mc, q[1] * inv + mc, q[2] * inv + mc);
                *v += trilinear(&view, qz, qy, qx);
            });
            out_particles.push(ParticleTruth {
                structure: st.name.clone(),
                structure_index: si,
                position_a: c,
                rot_deg: rot,
                tilt_deg: tilt,
                psi_deg: psi,
                radius_a: map.radius_a,
            });
        }
    }

    // gold beads
    let rb = 0.5 * gold_diameter_a;
    let half_t = 0.5 * frame.thickness_a;
    for _ in 0..gold_beads {
        let zd = |r: &mut R| {
            let side = if r.random::<bool>() { 1.0 } else { -1.0 };
            side * (half_t - rb - px - 20.0 * r.random::<f64>())
        };
        let c = placer.place(rng, frame, rb, "gold bead", Some(&zd))?;
        let contrast = (GOLD_POTENTIAL_V - ICE_POTENTIAL_V) as f32;
        paint(&mut excess, frame, c, rb + 2.0 * px, |p, v| {
            let d = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            let f = (0.5 + (rb - d) / px).clamp(0.0, 1.0) as f32;
            *v += contrast * f;
        });
        out_beads.push(SphereTruth {
            centre_a: c,
            radius_a: rb,
        });
    }

    Ok(Specimen {
        excess,
        membrane,
        particles: out_particles,
        vesicles: out_ves,
        beads: out_beads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_rotations_are_rotations_and_uniform() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut mean_z = [0.0; 3];
        let n = 20000;
        for _ in 0..n {
            let r = random_rotation(&mut rng);
            let rrt = crate::core::geometry::matmul(&r, &transpose(&r));
            assert!(
                crate::core::geometry::max_abs_diff(&rrt, &crate::core::geometry::IDENTITY) < 1e-9
            );
            let z = apply(&r, [0.0, 0.0, 1.0]);
            for k in 0..3 {
                mean_z[k] += z[k] / n as f64;
            }
        }
        // a uniform rotation sends +z uniformly over the sphere: mean ≈ 0 (sd 1/sqrt(3n))
        for m in mean_z {
            assert!(m.abs() < 0.02, "{mean_z:?}");
        }
    }

    #[test]
    fn bilayer_has_two_peaks_40_a_apart() {
        let best = (-300..=0)
            .map(|i| i as f64 * 0.1)
            .max_by(|a, b| bilayer_excess(*a).total_cmp(&bilayer_excess(*b)))
            .unwrap();
        assert!((best + 20.0).abs() < 1.0, "{best}");
        assert!(bilayer_excess(0.0) < 0.0);
    }

    #[test]
    fn protein_excess_displaces_ice() {
        assert_eq!(protein_excess(0.0), 0.0);
        assert!((protein_excess(10.0) - 5.5).abs() < 1e-6);
        assert!(protein_excess(3.0) > 0.0);
    }
}
