//! RELION-5 particle sets whose subtomograms are 2D tilt stacks (`rlnTomoSubTomosAre2DStacks 1`,
//! as WarpTools exports them), and their reconstruction by Fourier insertion
//! ([`crate::sta::insert`]).
//!
//! # Files
//!
//! - Particle STAR: `data_general/rlnTomoSubTomosAre2DStacks`, `data_optics`
//!   (`rlnImagePixelSize` Å, `rlnImageSize` px, `rlnCtfDataAreCtfPremultiplied`, voltage,
//!   Cs, amplitude contrast) and `data_particles` (`rlnTomoName`, `rlnImageName` = the stack
//!   of one particle, `[tilt, y, x]`, path relative to the STAR file's folder,
//!   `rlnAngleRot/Tilt/Psi`, `rlnOriginX/Y/ZAngst`, `rlnTomoVisibleFrames` = `[0,1,…]` one
//!   flag per stack frame, optional `rlnRandomSubset`). Positions come from
//!   [`crate::io::relion::read_particles_star`] (only used for the CTF at depth).
//! - Tomograms STAR (`<stem>_tomograms.star` beside the particles by default): `data_global`
//!   (hand, optics) and one block per tomogram, one row per stack frame, with the projection
//!   matrix `rlnTomoProjX/Y/Z/W` (rotation only for 2D stacks: about the tomogram centre →
//!   about the particle-centred image centre), `rlnDefocusU/V/Angle`, `rlnCtfScalefactor`
//!   (0 marks an excluded tilt) and `rlnMicrographPreExposure`.
//!
//! # Frames
//!
//! With `R` the 3×3 part of frame `f`'s projection matrix (tomogram → image frame) and `A` the
//! particle pose ([`crate::core::geometry::euler_zyz_to_matrix`], `particle(x) =
//! reference(Aᵀx)`), lamella's own convention puts image frequency `(k_x, k_y, 0)` at
//! reference frequency `(R·A)ᵀ·(k_x, k_y, 0)` ([`StackFrame::Lamella`]). RELION-5's map of
//! the WarpTools ribosome set (shared/data/real/warptools-ribosome-particles) is the mirror
//! image of that reconstruction through the reference `z = 0` plane: it is reproduced by
//! `M = Dz·(R·A)ᵀ`, `Dz = diag(1, 1, −1)` ([`StackFrame::Relion5`], the default): masked FSC
//! 0.89 mean over 256–70 Å against 0.44 without the mirror (tests/sta_real_warptools.rs). Both `R`
//! and `A` are proper rotations (det +1, checked in tests/geometry_relion.rs), so the mirror
//! is a convention of RELION-5's 2D-stack reconstruction, measured, not derived.
//!
//! The particle centre sits at image pixel `n/2 − (R·o)_{x,y} / pixel` (`o` the origin
//! offset `rlnOriginX/Y/ZAngst`, tomogram frame, Å; the coordinate minus the origin is the
//! particle centre). The CTF of frame `f` is its tilt's CTF with the mean defocus moved to
//! the particle's depth ([`TiltSeriesGeometry::defocus_at`], `rlnTomoHand` as `hand`) when
//! [`InsertOptions::depth`] is set, times `rlnCtfScalefactor`; the exposure is
//! `pre-exposure + dose/2` (dose = the step to the next pre-exposure).

use ndarray::Array3;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::core::geometry::{
    euler_zyz_to_matrix, matmul, transpose, Mat3, TiltImage, TiltSeriesGeometry,
};
use crate::ctf::correct::tilt_ctf;
use crate::error::{Error, Result};
use crate::io::mrc;
use crate::io::relion::{projection_matrices, read_particles_star, read_tomograms_global};
use crate::io::star::{StarFile, StarTable};
use crate::sta::insert::{CtfWeight, Reconstructor, Slice};

/// One tomogram's per-frame metadata.
#[derive(Clone, Debug)]
pub struct StackTomogram {
    /// `rlnTomoName`.
    pub name: String,
    /// Geometry per frame (angles from the projection matrices, defocus, pre-exposure,
    /// dose; `hand` from `rlnTomoHand`, optics from `data_global`).
    pub geometry: TiltSeriesGeometry,
    /// `rlnCtfScalefactor` per frame (1 when absent).
    pub ctf_scale: Vec<f64>,
}

/// One particle: its stack and pose.
#[derive(Clone, Debug)]
pub struct StackParticle {
    /// Index into [`StackSet::tomograms`].
    pub tomogram: usize,
    /// The particle's stack (`[frame, y, x]`), resolved against the STAR file's folder.
    pub stack: PathBuf,
    /// RELION Euler angles (rot, tilt, psi), degrees.
    pub euler_deg: [f64; 3],
    /// Particle centre about the tomogram centre, Å (coordinate minus origin).
    pub position_a: [f64; 3],
    /// `rlnOriginX/Y/ZAngst`, Å.
    pub origin_a: [f64; 3],
    /// Per frame: used or not (`rlnTomoVisibleFrames`; all when absent).
    pub visible: Vec<bool>,
    /// `rlnRandomSubset` (0 when absent).
    pub random_subset: usize,
}

/// A particle set of 2D tilt stacks.
#[derive(Clone, Debug)]
pub struct StackSet {
    /// The particles, in file order.
    pub particles: Vec<StackParticle>,
    /// The tomograms they refer to.
    pub tomograms: Vec<StackTomogram>,
    /// Image pixel size, Å (`rlnImagePixelSize`).
    pub pixel_a: f64,
    /// Image size, pixels (`rlnImageSize`).
    pub box_px: usize,
    /// `rlnCtfDataAreCtfPremultiplied`.
    pub premultiplied: bool,
}

/// The reference frame the slices are inserted in (module docs).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StackFrame {
    /// RELION-5's: `M = Dz·(R·A)ᵀ` (reproduces RELION's map of these files).
    Relion5,
    /// lamella's pose convention as it is: `M = (R·A)ᵀ` (the mirror image of RELION-5's).
    Lamella,
}

/// Options of [`reconstruct`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InsertOptions {
    /// Padding factor of the Fourier grid (2 as RELION).
    pub pad: usize,
    /// Wiener constant relative to the mean weight ([`Reconstructor::finish`]).
    pub wiener: f64,
    /// CTF weighting (premultiplied or not, from the file); off: no CTF at all.
    pub ctf: bool,
    /// Exposure (dose) filter.
    pub dose: bool,
    /// CTF at the particle's depth (else at the tilt's centre defocus).
    pub depth: bool,
    /// Reference frame.
    pub frame: StackFrame,
    /// Only particles of this random subset (1 or 2); `None`: all.
    pub subset: Option<usize>,
    /// Box of the map, pixels (even); 0: the image size. Images are cropped or zero-padded
    /// about their centre to it.
    pub box_px: usize,
}

impl Default for InsertOptions {
    fn default() -> Self {
        InsertOptions {
            pad: 2,
            wiener: 0.01,
            ctf: true,
            dose: true,
            depth: true,
            frame: StackFrame::Relion5,
            subset: None,
            box_px: 0,
        }
    }
}

fn opt_f64(t: &StarTable, name: &str, path: &Path, block: &str) -> Result<Option<Vec<f64>>> {
    if t.col(name).is_some() {
        Ok(Some(t.f64_column(name, path, block)?))
    } else {
        Ok(None)
    }
}

/// Parse `rlnTomoVisibleFrames` (`"[0,1,1]"`).
fn parse_visible(s: &str, path: &Path, row: usize) -> Result<Vec<bool>> {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter(|v| !v.trim().is_empty())
        .map(|v| match v.trim() {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(Error::bad_input(
                path,
                "data_particles/_rlnTomoVisibleFrames",
                format!(
                    "row {}: `{other}` is not 0 or 1; expected a list like [0,1,1]",
                    row + 1
                ),
            )),
        })
        .collect()
}

/// Read the per-frame metadata of every tomogram of `path` (module docs).
fn read_stack_tomograms(path: &Path) -> Result<Vec<StackTomogram>> {
    let globals = read_tomograms_global(path)?;
    let file = StarFile::read(path)?;
    let mut out = Vec::with_capacity(globals.len());
    for g in globals {
        let (block_file, bpath);
        let block = match &g.tilt_series_star {
            Some(rel) => {
                bpath = path.parent().unwrap_or(Path::new("")).join(rel);
                block_file = StarFile::read(&bpath)?;
                block_file
                    .blocks
                    .iter()
                    .find(|b| b.table.is_some())
                    .ok_or_else(|| {
                        Error::bad_input(&bpath, "loop_", "no per-tilt table in this file")
                    })?
                    .clone()
            }
            None => {
                bpath = path.to_path_buf();
                file.block(&g.name)
                    .ok_or_else(|| {
                        Error::bad_input(
                            path,
                            format!("data_{}", g.name),
                            "no per-tilt block named like the tomogram and no \
                             rlnTomoTiltSeriesStarFile in data_global; add one of them",
                        )
                    })?
                    .clone()
            }
        };
        let b = block.name.as_str();
        let t = block.require_table(&bpath)?;
        let mats = projection_matrices(&block, &bpath)?;
        let n = mats.len();
        let zero = vec![0.0; n];
        let du = opt_f64(t, "rlnDefocusU", &bpath, b)?.ok_or_else(|| {
            Error::bad_input(
                &bpath,
                format!("data_{b}/_rlnDefocusU"),
                "column missing: the per-tilt CTF is needed (or run without CTF weighting)",
            )
        })?;
        let dv = opt_f64(t, "rlnDefocusV", &bpath, b)?.unwrap_or_else(|| du.clone());
        let da = opt_f64(t, "rlnDefocusAngle", &bpath, b)?.unwrap_or_else(|| zero.clone());
        let pre =
            opt_f64(t, "rlnMicrographPreExposure", &bpath, b)?.unwrap_or_else(|| zero.clone());
        let scale = opt_f64(t, "rlnCtfScalefactor", &bpath, b)?.unwrap_or_else(|| vec![1.0; n]);
        let mut tilts = Vec::with_capacity(n);
        for (i, m) in mats.iter().enumerate() {
            let mut ti = TiltImage::nominal(0.0, 0.0);
            // 2D-stack matrices are rotation-only (centred frame); a general matrix is read
            // in the centred frame too: its translation only places the particle, which the
            // stack has already done.
            ti.set_from_relion_matrix(m, g.pixel_a, [0, 0, 0], [0, 0])
                .map_err(|e| {
                    Error::bad_input(
                        &bpath,
                        format!("data_{b}/_rlnTomoProjX row {}", i + 1),
                        format!("{e}; expected a rotation in the 3×3 part"),
                    )
                })?;
            ti.defocus_u_a = du[i];
            ti.defocus_v_a = dv[i];
            ti.astig_angle_deg = da[i];
            ti.pre_exposure_e_a2 = pre[i];
            tilts.push(ti);
        }
        // Dose per frame: the step to the next larger pre-exposure.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| pre[a].total_cmp(&pre[b]));
        for (rank, w) in order.iter().enumerate() {
            tilts[*w].acquisition_index = rank;
            let next = order.get(rank + 1).map(|&j| pre[j]);
            let prev = rank.checked_sub(1).map(|r| pre[order[r]]);
            tilts[*w].dose_e_a2 = match (next, prev) {
                (Some(nx), _) => nx - pre[*w],
                (None, Some(pv)) => pre[*w] - pv,
                _ => 0.0,
            };
        }
        out.push(StackTomogram {
            name: g.name.clone(),
            geometry: TiltSeriesGeometry {
                nx: 0,
                ny: 0,
                pixel_a: g.pixel_a,
                hand: g.hand,
                optics: g.optics.clone(),
                tilts,
            },
            ctf_scale: scale,
        });
    }
    Ok(out)
}

/// Read a 2D-stack particle set (module docs). `tomograms`: the tomograms STAR; `None` looks
/// beside the particles (`<stem>_tomograms.star`, the optimisation set, `tomograms.star`).
/// Errors name the file, the field and the fix.
pub fn read_stack_set(particles: &Path, tomograms: Option<&Path>) -> Result<StackSet> {
    let file = StarFile::read(particles)?;
    let stacks2d = file
        .block("general")
        .and_then(|g| g.get("rlnTomoSubTomosAre2DStacks"))
        .map(|v| v.trim() == "1")
        .unwrap_or(false);
    if !stacks2d {
        return Err(Error::bad_input(
            particles,
            "data_general/_rlnTomoSubTomosAre2DStacks",
            "not 1: these particles are not 2D tilt stacks (export them as 2D stacks, \
             e.g. WarpTools ts_export_particles --2d)",
        ));
    }
    let tomo_path = match tomograms {
        Some(p) => p.to_path_buf(),
        None => crate::io::relion::find_tomograms_star(particles).ok_or_else(|| {
            Error::bad_input(
                particles,
                "rlnTomoName",
                "no tomograms STAR found beside the particles (looked for \
                 <stem>_tomograms.star, <stem>_optimisation_set.star, tomograms.star); \
                 pass --tomograms",
            )
        })?,
    };
    let tomograms = read_stack_tomograms(&tomo_path)?;
    let index: HashMap<&str, usize> = tomograms
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();

    // Optics: image pixel, size, premultiplication (one value for the set).
    let optics = file
        .block("optics")
        .and_then(|b| b.table())
        .ok_or_else(|| {
            Error::bad_input(
                particles,
                "data_optics",
                "missing: the image pixel size and size are needed",
            )
        })?;
    let px = optics.f64_column("rlnImagePixelSize", particles, "optics")?;
    let size = optics.f64_column("rlnImageSize", particles, "optics")?;
    let premult = opt_f64(optics, "rlnCtfDataAreCtfPremultiplied", particles, "optics")?
        .map(|v| v.iter().any(|x| *x != 0.0))
        .unwrap_or(false);
    let (pixel_a, box_px) = (px[0], size[0] as usize);
    if px.iter().any(|p| (p - pixel_a).abs() > 1e-6) || size.iter().any(|s| *s as usize != box_px) {
        return Err(Error::bad_input(
            particles,
            "data_optics/_rlnImagePixelSize",
            "optics groups differ in pixel or image size; reconstruct them separately",
        ));
    }

    let records = read_particles_star(particles)?;
    let block = file
        .block("particles")
        .and_then(|b| b.table())
        .ok_or_else(|| Error::bad_input(particles, "data_particles", "no particle table"))?;
    let names = block.str_column("rlnImageName").ok_or_else(|| {
        Error::bad_input(
            particles,
            "data_particles/_rlnImageName",
            "column missing: each particle's 2D stack file is needed",
        )
    })?;
    let vis = block.str_column("rlnTomoVisibleFrames");
    let n = block.len();
    let zero = vec![0.0; n];
    let ox =
        opt_f64(block, "rlnOriginXAngst", particles, "particles")?.unwrap_or_else(|| zero.clone());
    let oy =
        opt_f64(block, "rlnOriginYAngst", particles, "particles")?.unwrap_or_else(|| zero.clone());
    let oz = opt_f64(block, "rlnOriginZAngst", particles, "particles")?.unwrap_or(zero);
    let dir = particles.parent().unwrap_or(Path::new(""));
    let mut out = Vec::with_capacity(n);
    for (i, r) in records.iter().enumerate() {
        let ti = *index.get(r.tomo_name.as_str()).ok_or_else(|| {
            Error::bad_input(
                &tomo_path,
                "data_global/_rlnTomoName",
                format!(
                    "no tomogram `{}` (particle row {} of {}); add it",
                    r.tomo_name,
                    i + 1,
                    particles.display()
                ),
            )
        })?;
        let nframes = tomograms[ti].geometry.len();
        let visible = match &vis {
            Some(v) => parse_visible(v[i], particles, i)?,
            None => vec![true; nframes],
        };
        if visible.len() != nframes {
            return Err(Error::bad_input(
                particles,
                "data_particles/_rlnTomoVisibleFrames",
                format!(
                    "row {}: {} flags but tomogram `{}` has {nframes} tilts",
                    i + 1,
                    visible.len(),
                    r.tomo_name
                ),
            ));
        }
        let name = names[i];
        let stack = name.rsplit('@').next().unwrap_or(name);
        out.push(StackParticle {
            tomogram: ti,
            stack: dir.join(stack),
            euler_deg: r.euler_deg,
            position_a: r.centered_coordinate_a,
            origin_a: [ox[i], oy[i], oz[i]],
            visible,
            random_subset: r.random_subset,
        });
    }
    Ok(StackSet {
        particles: out,
        tomograms,
        pixel_a,
        box_px,
        premultiplied: premult,
    })
}

/// Mirror through the reference `z = 0` plane (left factor of `M`).
fn mirror_z(m: &Mat3) -> Mat3 {
    [m[0], m[1], [-m[2][0], -m[2][1], -m[2][2]]]
}

impl StackSet {
    /// The slices of particle `p`: `(frame, slice)` for every visible frame with a non-zero
    /// CTF scale (module docs for the frames and the CTF).
    pub fn slices(&self, p: usize, opts: &InsertOptions) -> Vec<(usize, Slice)> {
        let part = &self.particles[p];
        let tomo = &self.tomograms[part.tomogram];
        let g = &tomo.geometry;
        let e = part.euler_deg;
        let a = euler_zyz_to_matrix(e[0], e[1], e[2]);
        let n = self.box_px;
        (0..g.len())
            .filter(|&f| part.visible[f] && tomo.ctf_scale[f] != 0.0)
            .map(|f| {
                let t = &g.tilts[f];
                let r = t.rotation();
                let m = transpose(&matmul(&r, &a));
                let m = match opts.frame {
                    StackFrame::Relion5 => mirror_z(&m),
                    StackFrame::Lamella => m,
                };
                let o = part.origin_a;
                let ro = [
                    r[0][0] * o[0] + r[0][1] * o[1] + r[0][2] * o[2],
                    r[1][0] * o[0] + r[1][1] * o[1] + r[1][2] * o[2],
                ];
                let mut ctf = tilt_ctf(g, f);
                if opts.depth {
                    let off = g.defocus_at(f, part.position_a) - t.defocus_mean_a();
                    ctf.defocus_u_a += off;
                    ctf.defocus_v_a += off;
                }
                let ctf = match (opts.ctf, self.premultiplied) {
                    (false, _) => CtfWeight::None,
                    (true, true) => CtfWeight::Premultiplied(ctf),
                    (true, false) => CtfWeight::Multiply(ctf),
                };
                (
                    f,
                    Slice {
                        to_reference: m,
                        centre_px: [
                            (n / 2) as f64 - ro[0] / self.pixel_a,
                            (n / 2) as f64 - ro[1] / self.pixel_a,
                        ],
                        pixel_a: self.pixel_a,
                        ctf,
                        ctf_scale: if opts.ctf { tomo.ctf_scale[f] } else { 1.0 },
                        exposure_e_a2: opts.dose.then_some(t.pre_exposure_e_a2 + 0.5 * t.dose_e_a2),
                        voltage_kv: g.optics.voltage_kv,
                    },
                )
            })
            .collect()
    }

    /// Indices of the particles `opts.subset` selects.
    pub fn selected(&self, opts: &InsertOptions) -> Vec<usize> {
        (0..self.particles.len())
            .filter(|&i| {
                opts.subset
                    .is_none_or(|s| self.particles[i].random_subset == s)
            })
            .collect()
    }

    /// Read particle `p`'s stack and check its shape against the set and its tomogram.
    pub fn read_stack(&self, p: usize) -> Result<Array3<f32>> {
        let part = &self.particles[p];
        let d = mrc::read(&part.stack)?.data;
        let nf = self.tomograms[part.tomogram].geometry.len();
        let n = self.box_px;
        if d.dim() != (nf, n, n) {
            return Err(Error::bad_input(
                &part.stack,
                "header nx/ny/nz",
                format!(
                    "stack is {:?} ([frames, y, x]) but the particle STAR says {n}×{n} images \
                     and tomogram `{}` has {nf} tilts",
                    d.dim(),
                    self.tomograms[part.tomogram].name
                ),
            ));
        }
        Ok(d)
    }
}

/// Window an `n × n` image to `m × m` about its centre (pixel `n/2` → `m/2`): crop or
/// zero-pad.
fn window(img: ndarray::ArrayView2<f32>, m: usize) -> ndarray::Array2<f32> {
    let n = img.dim().0;
    let off = (m / 2) as isize - (n / 2) as isize;
    let mut out = ndarray::Array2::zeros((m, m));
    for y in 0..m {
        let sy = y as isize - off;
        if sy < 0 || sy >= n as isize {
            continue;
        }
        for x in 0..m {
            let sx = x as isize - off;
            if sx >= 0 && sx < n as isize {
                out[[y, x]] = img[[sy as usize, sx as usize]];
            }
        }
    }
    out
}

impl InsertOptions {
    /// The map box for images of `n` pixels.
    pub fn map_box(&self, n: usize) -> usize {
        if self.box_px == 0 {
            n
        } else {
            self.box_px
        }
    }
}

/// Insert particles `which` (indices into `set.particles`) into a new reconstructor
/// (parallel over particles with rayon: one reconstructor per worker, summed at the end;
/// memory ≈ workers × the padded grid, 12 bytes per half-grid sample). Each MPI rank
/// inserts its share; the sums are then allreduced ([`Reconstructor::data_mut`],
/// [`Reconstructor::weight_mut`]).
pub fn accumulate_particles(
    set: &StackSet,
    opts: &InsertOptions,
    which: &[usize],
) -> Result<Reconstructor> {
    let n = set.box_px;
    let m = opts.map_box(n);
    if m < 2 || m % 2 != 0 {
        return Err(Error::Config(format!(
            "box {m}: the map box must be even and at least 2 (images are {n} px)"
        )));
    }
    let off = (m / 2) as f64 - (n / 2) as f64;
    // One contiguous chunk per worker, so only as many grids are made (and summed) as there
    // are workers.
    let chunk = which.len().div_ceil(rayon::current_num_threads()).max(1);
    let total = which
        .par_iter()
        .with_min_len(chunk)
        .try_fold(
            || {
                let r = Reconstructor::new(m, opts.pad);
                let ws = r.inserter();
                (r, ws)
            },
            |(mut r, mut ws), &p| -> Result<_> {
                let stack = set.read_stack(p)?;
                for (f, mut s) in set.slices(p, opts) {
                    let img = stack.index_axis(ndarray::Axis(0), f);
                    if m == n {
                        r.insert(&mut ws, img, &s);
                    } else {
                        s.centre_px = [s.centre_px[0] + off, s.centre_px[1] + off];
                        r.insert(&mut ws, window(img, m).view(), &s);
                    }
                }
                Ok((r, ws))
            },
        )
        .map(|r| r.map(|(rec, _)| rec))
        .try_reduce(
            || Reconstructor::new(m, opts.pad),
            |mut a, b| {
                a.add(&b);
                Ok(a)
            },
        )?;
    Ok(total)
}

/// [`accumulate_particles`] over the particles `opts.subset` selects.
pub fn accumulate(set: &StackSet, opts: &InsertOptions) -> Result<Reconstructor> {
    accumulate_particles(set, opts, &set.selected(opts))
}

/// Reconstruct the map (`box³`, `[z, y, x]`, pixel [`StackSet::pixel_a`]) of the selected
/// particles: [`accumulate`] then [`Reconstructor::finish`] with `opts.wiener`.
pub fn reconstruct(set: &StackSet, opts: &InsertOptions) -> Result<Array3<f32>> {
    Ok(accumulate(set, opts)?.finish(opts.wiener))
}
