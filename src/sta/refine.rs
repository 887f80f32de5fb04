//! The refinement loop: align every particle to its half's references, average per half and
//! class with one allreduce, FSC, new references low-passed at the FSC resolution; a state
//! after every iteration for checkpoints.
//!
//! Parallel model (DESIGN §4): particle `i` is handled by rank `i mod size`; the references
//! are the same on every rank because every rank reconstructs them from the same reduced sums,
//! so nothing is broadcast; the per-particle results travel with one all-gather. Every
//! particle's result depends only on the references and its own data, and the sums are f64,
//! so 1 and 3 ranks give the same maps to float tolerance.
//!
//! Gold standard: each particle belongs to half 0 or 1 for the whole run and is only ever
//! compared with references of its own half; the halves meet only in the FSC.

use ndarray::{Array3, ArrayView3};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::comm::{all_gather_serde, Comm};
use crate::core::fft3::Fft3;
use crate::core::geometry::{euler_zyz_to_matrix, matrix_to_euler_zyz, Mat3, TiltSeriesGeometry};
use crate::core::interp::rotate_volume;
use crate::core::so3::{angle_between_deg, local_rotations, uniform_rotations, Symmetry};
use crate::error::{Error, Result};
use crate::sta::align::{Aligner, Match, PreparedParticle, SearchBand};
use crate::sta::average::{shell_regulariser, to_reference_frame, Sums};
use crate::sta::extract::extract_box;
use crate::sta::fsc::{fsc_weighted_lowpass, gold_standard, lowpass, GoldStandard};
use crate::sta::mask::{normalise_background, soft_sphere};
use crate::sta::weight::{CtfMode, SubtomoTransfer};

/// One tomogram particles are cut from.
pub struct Tomogram {
    /// Name (matches the particles' `tomo_name`).
    pub name: String,
    /// The volume `[z, y, x]`, centre voxel `n/2` = tilt-axis centre.
    pub volume: Array3<f32>,
    /// Voxel size, Å.
    pub voxel_a: f64,
    /// The tilt-series geometry it was reconstructed from (for the transfer).
    pub geometry: TiltSeriesGeometry,
}

/// One particle's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Particle {
    /// Index into the tomogram list.
    pub tomo: usize,
    /// Centre, Å about the tomogram centre (x, y, z).
    pub position_a: [f64; 3],
    /// RELION Euler angles (rot, tilt, psi), degrees: the pose `A` (reference → particle).
    pub euler_deg: [f64; 3],
    /// Gold-standard half, 0 or 1.
    pub half: usize,
    /// Class, `0..classes`.
    pub class: usize,
    /// Score of the last alignment (NCC).
    pub score: f64,
}

impl Particle {
    /// The pose matrix `A`.
    pub fn pose(&self) -> Mat3 {
        euler_zyz_to_matrix(self.euler_deg[0], self.euler_deg[1], self.euler_deg[2])
    }
}

/// Settings of a refinement (lengths in Å unless `_px`, angles in degrees).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefineParams {
    /// Box edge, voxels.
    pub box_px: usize,
    /// Radius of the soft spherical mask (alignment and FSC), Å.
    pub mask_radius_a: f64,
    /// Number of iterations.
    pub iterations: usize,
    /// Point-group symmetry imposed on the maps ("C1", "D7", "O", ...).
    pub symmetry: String,
    /// Angular step of a global search in the first iteration (`None`: local only, from the
    /// particles' initial poses).
    pub global_step_deg: Option<f64>,
    /// Half-width of the local angular search.
    pub local_range_deg: f64,
    /// Step of the local angular search: the coarse pass over `local_range_deg` uses it in
    /// every iteration; iteration `i` refines about the best pose down to
    /// `local_step_deg / 2^(i−1)` (not below `min_step_deg`), halving the step each pass.
    pub local_step_deg: f64,
    /// Smallest local step.
    pub min_step_deg: f64,
    /// Width σ of the Gaussian prior on the angle from the current pose in local searches
    /// (RELION's `--sigma_ang`), degrees; `None` or ≤ 0: no prior (best score).
    pub sigma_angle_deg: Option<f64>,
    /// Largest offset from the current position, Å.
    pub max_shift_a: f64,
    /// Resolution of the initial reference(s) (low-pass), Å.
    pub initial_resolution_a: f64,
    /// How the CTF enters the transfer.
    pub ctf_mode: CtfMode,
    /// Exposure filter in the transfer.
    pub dose_weighting: bool,
    /// Multiply tomogram values by −1 (dense matter dark → positive).
    pub invert: bool,
    /// Seed of the phase randomisation.
    pub seed: u64,
}

/// What the loop knows after an iteration (a checkpoint).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// Iterations done (0 = initial references only).
    pub iteration: usize,
    /// All particles.
    pub particles: Vec<Particle>,
    /// Per class, per half: the current map `[z, y, x]` flattened (box³), unfiltered (the
    /// references of the next iteration are these low-passed at `resolution_a`).
    pub half_maps: Vec<[Vec<f32>; 2]>,
    /// Per class: FSC curves of the last iteration (None before the first).
    pub fsc: Vec<Option<GoldStandard>>,
    /// Per class: the references' resolution, Å.
    pub resolution_a: Vec<f64>,
}

impl State {
    /// The map of (class, half) as a volume.
    pub fn half_map(&self, class: usize, half: usize, n: usize) -> Array3<f32> {
        Array3::from_shape_vec((n, n, n), self.half_maps[class][half].clone())
            .expect("state maps are box³")
    }

    /// The average of both halves of `class`.
    pub fn full_map(&self, class: usize, n: usize) -> Array3<f32> {
        (self.half_map(class, 0, n) + self.half_map(class, 1, n)) * 0.5
    }
}

/// Average `map` over the group `sym` (`map(Sᵀ·x)` for every `S`).
pub fn symmetrise(map: ArrayView3<f32>, sym: &Symmetry) -> Array3<f32> {
    let ops = sym.matrices();
    if ops.len() == 1 {
        return map.to_owned();
    }
    let mut acc = Array3::<f32>::zeros(map.dim());
    for s in &ops {
        acc += &rotate_volume(map, s, [0.0; 3]);
    }
    acc / ops.len() as f32
}

/// Cut, normalise and weight one particle of tomogram `t` as the refinement sees it: the
/// box `[z, y, x]` (`params.box_px`³, values × −1 when `params.invert`, background outside
/// `mask` (`mask < 0.5`, box³) at mean 0 and sd 1), its transfer model (wedge, CTF at the
/// particle's depth, dose; evaluate with the identity frame for the box's own frame, the
/// tomogram's) and the sub-voxel residual of the particle from the box centre `n/2`, voxels
/// `(x, y, z)` ([`crate::sta::extract::extract_box`]).
pub fn particle_box(
    t: &Tomogram,
    p: &Particle,
    params: &RefineParams,
    mask: &Array3<f32>,
) -> (Array3<f32>, SubtomoTransfer, [f64; 3]) {
    let sign = if params.invert { -1.0 } else { 1.0 };
    let mut b = extract_box(
        t.volume.view(),
        t.voxel_a,
        p.position_a,
        params.box_px,
        sign,
    );
    normalise_background(&mut b.data, mask.view());
    let tr = SubtomoTransfer::at_particle(
        &t.geometry,
        p.position_a,
        params.ctf_mode,
        params.dose_weighting,
    );
    (b.data, tr, b.residual_px)
}

/// The rank that aligns and averages each particle (`particles` order) among `size` ranks:
/// the particles sorted by tomogram (then index) and cut into `size` runs of equal length
/// (±1), so a rank needs the volumes of few tomograms (about `tomograms / size + 1`) and
/// every rank has the same work.
pub fn particle_ranks(particles: &[Particle], size: usize) -> Vec<usize> {
    let size = size.max(1);
    let n = particles.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (particles[i].tomo, i));
    let mut ranks = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        ranks[i] = pos * size / n.max(1);
    }
    ranks
}

/// The indices of the particles that rank `rank` of `size` handles ([`particle_ranks`]).
fn my_particles(particles: &[Particle], rank: usize, size: usize) -> Vec<usize> {
    particle_ranks(particles, size)
        .into_iter()
        .enumerate()
        .filter(|(_, r)| *r == rank)
        .map(|(i, _)| i)
        .collect()
}

/// Check the inputs before any heavy work.
fn validate(
    tomos: &[Tomogram],
    particles: &[Particle],
    params: &RefineParams,
    classes: usize,
) -> Result<()> {
    if params.box_px < 8 || params.box_px % 2 == 1 {
        return Err(Error::Config(format!(
            "box_px = {}: the box must be even and at least 8 voxels",
            params.box_px
        )));
    }
    let sym: Symmetry = params.symmetry.parse()?;
    let _ = sym;
    for (i, p) in particles.iter().enumerate() {
        if p.tomo >= tomos.len() || p.half > 1 || p.class >= classes {
            return Err(Error::Config(format!(
                "particle {i}: tomogram {} / half {} / class {} out of range ({} tomograms, halves 0-1, {classes} classes)",
                p.tomo, p.half, p.class, tomos.len()
            )));
        }
    }
    for h in 0..2 {
        if !particles.iter().any(|p| p.half == h) {
            return Err(Error::Config(format!(
                "no particle in half {}: the gold-standard FSC needs particles in both halves",
                h + 1
            )));
        }
    }
    Ok(())
}

/// The initial state: references per class (both halves) low-passed to
/// `initial_resolution_a`, either given (`references`, one per class, box³ in the reference
/// frame, dense positive) or, when `references` is empty, the per-half averages of the
/// particles at their initial poses.
pub fn initial_state(
    comm: &dyn Comm,
    tomos: &[Tomogram],
    particles: Vec<Particle>,
    references: &[Array3<f32>],
    classes: usize,
    params: &RefineParams,
) -> Result<State> {
    validate(tomos, &particles, params, classes)?;
    let n = params.box_px;
    let voxel_a = tomos[0].voxel_a;
    let maps: Vec<[Vec<f32>; 2]> = if references.is_empty() {
        let sums = accumulate(comm, tomos, &particles, params, classes)?;
        let plan = Fft3::new(n, n, n);
        (0..classes)
            .map(|c| {
                let l = |h| shell_regulariser(&sums.shell_mean_den(c, h), None);
                [0, 1].map(|h| {
                    let m = sums.reconstruct(c, h, &l(h), &plan);
                    lowpass(m.view(), voxel_a, params.initial_resolution_a, 2.0)
                        .into_raw_vec_and_offset()
                        .0
                })
            })
            .collect()
    } else {
        if references.len() != classes {
            return Err(Error::Config(format!(
                "{} reference(s) for {classes} classes: give one per class or none",
                references.len()
            )));
        }
        references
            .iter()
            .map(|r| {
                if r.dim() != (n, n, n) {
                    return Err(Error::Config(format!(
                        "reference is {:?} voxels, the box is {n}³: resample or re-box the reference",
                        r.dim()
                    )));
                }
                let m = lowpass(r.view(), voxel_a, params.initial_resolution_a, 2.0)
                    .into_raw_vec_and_offset()
                    .0;
                Ok([m.clone(), m])
            })
            .collect::<Result<_>>()?
    };
    Ok(State {
        iteration: 0,
        particles,
        half_maps: maps,
        fsc: vec![None; classes],
        resolution_a: vec![params.initial_resolution_a; classes],
    })
}

/// The soft spherical mask of a refinement (`box_px³`, `[z, y, x]`, centre voxel n/2):
/// radius `params.mask_radius_a` at voxel `voxel_a` Å, 3-voxel raised-cosine edge.
pub fn refinement_mask(params: &RefineParams, voxel_a: f64) -> Array3<f32> {
    soft_sphere(params.box_px, params.mask_radius_a / voxel_a, 3.0)
}

/// Sums of the particles at their current poses (this rank's share, then reduced).
fn accumulate(
    comm: &dyn Comm,
    tomos: &[Tomogram],
    particles: &[Particle],
    params: &RefineParams,
    classes: usize,
) -> Result<Sums> {
    let n = params.box_px;
    let voxel_a = tomos[0].voxel_a;
    let mask = refinement_mask(params, voxel_a);
    let plan = Fft3::new(n, n, n);
    let mine = my_particles(particles, comm.rank(), comm.size());
    let mut sums = Sums::new(n, classes);
    for &i in &mine {
        let p = &particles[i];
        let t = &tomos[p.tomo];
        let (b, tr, res) = particle_box(t, p, params, &mask);
        let a = p.pose();
        add_particle(&mut sums, p, &b, &tr, &a, res, t.voxel_a, &plan);
    }
    comm.allreduce_sum_f64(sums.as_mut_slice());
    Ok(sums)
}

/// Add one particle box (pose `a`, at offset `shift_px` from the box centre) to its sums.
#[allow(clippy::too_many_arguments)]
fn add_particle(
    sums: &mut Sums,
    p: &Particle,
    b: &Array3<f32>,
    tr: &SubtomoTransfer,
    a: &Mat3,
    shift_px: [f64; 3],
    voxel_a: f64,
    plan: &Fft3,
) {
    let n = sums.box_size();
    let q = to_reference_frame(b.view(), a, shift_px);
    let c = tr.grid(n, voxel_a, a);
    sums.add(p.class, p.half, &plan.forward(q.view()), &c);
}

/// Result of aligning one particle.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Aligned {
    index: usize,
    particle: Particle,
}

/// One iteration: align, average, FSC, new references. `state` is replaced by the next one.
pub fn iterate(
    comm: &dyn Comm,
    tomos: &[Tomogram],
    state: &mut State,
    params: &RefineParams,
) -> Result<()> {
    let n = params.box_px;
    let classes = state.half_maps.len();
    let voxel_a = tomos[0].voxel_a;
    let sym: Symmetry = params.symmetry.parse()?;
    let it = state.iteration + 1;
    // Compare up to the references' resolution (the worst class).
    let res = state.resolution_a.iter().copied().fold(0.0f64, f64::max);
    let hi = (voxel_a / res).clamp(2.0 / n as f64, 0.5);
    let band = SearchBand {
        n,
        lo: 1.0 / n as f64,
        hi,
        mask_radius_px: params.mask_radius_a / voxel_a,
        max_shift_px: params.max_shift_a / voxel_a,
    };
    let aligner = Aligner::new(band);
    let refs: Vec<[Array3<f32>; 2]> = (0..classes)
        .map(|c| {
            [0, 1].map(|h| {
                let m = state.half_map(c, h, n);
                let r = match &state.fsc[c] {
                    Some(g) => fsc_weighted_lowpass(m.view(), g, state.resolution_a[c], 2.0),
                    None => lowpass(m.view(), voxel_a, state.resolution_a[c], 2.0),
                };
                aligner.prepare_reference(r.view())
            })
        })
        .collect();
    let mask = refinement_mask(params, voxel_a);
    let step = (params.local_step_deg / 2f64.powi(it as i32 - 1)).max(params.min_step_deg);
    let global = if it == 1 {
        params.global_step_deg
    } else {
        None
    };
    let coarse = global.map(uniform_rotations);
    let mine = my_particles(&state.particles, comm.rank(), comm.size());
    // Align this rank's particles (in parallel over particles).
    let results: Vec<Aligned> = mine
        .par_iter()
        .map(|&i| {
            let p = &state.particles[i];
            let t = &tomos[p.tomo];
            let (b, tr, res) = particle_box(t, p, params, &mask);
            let c = tr.grid(n, voxel_a, &crate::core::so3::identity());
            let prepared = aligner.prepare_particle(b.view(), &c);
            let half_refs: Vec<Array3<f32>> = refs.iter().map(|r| r[p.half].clone()).collect();
            let best: Posed = match &coarse {
                Some(rots) => {
                    let m = aligner.search(&prepared, &half_refs, rots);
                    let local = local_rotations(&rots[m.rotation], global.unwrap_or(10.0), step);
                    let m2 = aligner.search(&prepared, &half_refs, &local);
                    m2.with_rotations(&local)
                }
                None => local_search(&aligner, &prepared, &half_refs, &p.pose(), params, step),
            };
            let a = best.pose;
            let (rot, tilt, psi) = matrix_to_euler_zyz(&a);
            // The box centre is the particle position minus its residual; the new position is
            // the box centre plus the found offset.
            let mut q = p.clone();
            for (k, r) in res.iter().enumerate() {
                q.position_a[k] = p.position_a[k] + (best.m.shift_px[k] - r) * voxel_a;
            }
            q.euler_deg = [rot, tilt, psi];
            q.class = best.m.reference;
            q.score = best.m.score;
            Aligned {
                index: i,
                particle: q,
            }
        })
        .collect();
    // Everyone gets every particle's new state.
    let all: Vec<Vec<Aligned>> = all_gather_serde(comm, &results);
    let mut particles = state.particles.clone();
    for a in all.into_iter().flatten() {
        particles[a.index] = a.particle;
    }
    let sums = accumulate(comm, tomos, &particles, params, classes)?;
    let plan = Fft3::new(n, n, n);
    let mut half_maps = Vec::with_capacity(classes);
    let mut fscs = Vec::with_capacity(classes);
    let mut resolution = Vec::with_capacity(classes);
    for c in 0..classes {
        let prev = state.fsc[c].as_ref().map(|g| g.corrected.clone());
        let maps = [0, 1].map(|h| {
            let l = shell_regulariser(&sums.shell_mean_den(c, h), prev.as_deref());
            symmetrise(sums.reconstruct(c, h, &l, &plan).view(), &sym)
        });
        let g = gold_standard(
            maps[0].view(),
            maps[1].view(),
            mask.view(),
            voxel_a,
            params.seed,
        );
        let r = g.resolution_a.max(2.0 * voxel_a);
        // The next iteration's references are these half maps low-passed at `r`.
        half_maps.push(maps.map(|m| m.into_raw_vec_and_offset().0));
        resolution.push(r);
        fscs.push(Some(g));
    }
    *state = State {
        iteration: it,
        particles,
        half_maps,
        fsc: fscs,
        resolution_a: resolution,
    };
    Ok(())
}

/// Coarse-to-fine local search about `current` (the pose `A`, reference → particle):
/// first over the whole `local_range_deg` at `local_step_deg`, then, while the step is
/// above `step_deg` (this iteration's), halving the step over a ball of the previous step
/// about the best pose so far. With the defaults (range 12°, step 4° → 2°) that is
/// 123 + 33 rotations instead of the 925 of one pass at 2°. The Gaussian prior of
/// `sigma_angle_deg` (angle from `current`) is applied in every pass.
fn local_search(
    aligner: &Aligner,
    prepared: &PreparedParticle,
    refs: &[Array3<f32>],
    current: &Mat3,
    params: &RefineParams,
    step_deg: f64,
) -> Posed {
    let sigma = params.sigma_angle_deg.filter(|s| *s > 0.0);
    let search = |rots: &[Mat3]| -> Posed {
        let m = match sigma {
            Some(sigma) => {
                let prior: Vec<f64> = rots
                    .iter()
                    .map(|r| -0.5 * (angle_between_deg(r, current) / sigma).powi(2))
                    .collect();
                aligner.search_with_prior(prepared, refs, rots, &prior)
            }
            None => aligner.search(prepared, refs, rots),
        };
        m.with_rotations(rots)
    };
    let mut step = params.local_step_deg.max(step_deg);
    let mut best = search(&local_rotations(current, params.local_range_deg, step));
    while step > step_deg * (1.0 + 1e-9) {
        let range = step;
        step = (step / 2.0).max(step_deg);
        best = search(&local_rotations(&best.pose, range, step));
    }
    best
}

/// A search result with the pose it stands for.
struct Posed {
    m: Match,
    pose: Mat3,
}

impl Match {
    fn with_rotations(self, rots: &[Mat3]) -> Posed {
        Posed {
            pose: rots[self.rotation],
            m: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn particle(tomo: usize) -> Particle {
        Particle {
            tomo,
            position_a: [0.0; 3],
            euler_deg: [0.0; 3],
            half: 0,
            class: 0,
            score: 0.0,
        }
    }

    #[test]
    fn ranks_get_equal_runs_of_few_tomograms() {
        // 4 tomograms, particles interleaved, 12 particles over 3 ranks
        let ps: Vec<Particle> = (0..12).map(|i| particle(i % 4)).collect();
        let r = particle_ranks(&ps, 3);
        for rank in 0..3 {
            let mine: Vec<usize> = (0..12).filter(|&i| r[i] == rank).collect();
            assert_eq!(mine.len(), 4, "rank {rank}: {mine:?}");
            let mut tomos: Vec<usize> = mine.iter().map(|&i| ps[i].tomo).collect();
            tomos.sort();
            tomos.dedup();
            assert!(tomos.len() <= 2, "rank {rank} reads {tomos:?}");
        }
        assert_eq!(particle_ranks(&ps, 1), vec![0; 12]);
        assert!(particle_ranks(&[], 3).is_empty());
    }
}
