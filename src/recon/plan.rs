//! One entry point for reconstruction ([`reconstruct`]): WBP or SIRT, several binnings from
//! one pre-processing pass, slabs along Y under a memory budget, SIRT checkpoints and resume,
//! one MRC per binning.
//!
//! Steps:
//! 1. validate the spec against the stack (refuse early: bad factors, outputs, parameters, a
//!    budget too small for the pre-processed images);
//! 2. pre-process once: one FFT per tilt, Fourier-cropped to every binning
//!    ([`crate::recon::multibin`]), normalised and tapered (`recon::wbp::preprocess_multi`);
//!    for WBP, the Fourier weighting per binning;
//! 3. per binning: plan slabs along Y ([`crate::recon::slab`]) so that the working set fits
//!    `max_memory_bytes`, log the split, reconstruct each slab (SIRT slabs padded with the
//!    halo that makes them exact) and write its core lines into the output MRC
//!    ([`crate::io::mrc::MrcSlabWriter`]; one piece: [`crate::io::mrc::write`]);
//! 4. SIRT saves a checkpoint every `checkpoint.every` iterations and when a stop is
//!    requested (SIGTERM/SIGUSR1/SIGINT, `pipeline::signals`), then returns
//!    [`ReconstructOutcome::Interrupted`]; with `checkpoint.resume` a later call continues
//!    from it (same inputs, checked by hash) and gives the same volume as an uninterrupted
//!    run.

use crate::core::geometry::TiltSeriesGeometry;
use crate::device::Device;
use crate::io::mrc::{self, MrcKind, MrcSlabWriter};
use crate::recon::checkpoint::{self, sirt_input_hash};
use crate::recon::ctfcorr::{check_defocus, correct_stack, wbp_3d, CtfCorrection};
use crate::recon::filter::Filter;
use crate::recon::sirt::{
    sirt_iterate, solver_fingerprint, validate_solver, SirtControl, SirtParams, SirtStart,
    SupportMask,
};
use crate::recon::slab::{
    fmt_bytes, plan_slabs, sirt_halo, slab_projections, MemoryModel, Slab, SlabPlan,
};
use crate::recon::wbp::{backproject_mean, preprocess_multi, weight};
use crate::{Error, Result};
use ndarray::{s, Array3, ArrayView3};
use std::path::{Path, PathBuf};

/// The reconstruction method and its parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    /// Weighted back-projection with a radial filter.
    Wbp { filter: Filter },
    /// SIRT (`recon::sirt`).
    Sirt {
        /// Iterations (≥ 1; typically 10–50).
        iterations: u32,
        /// Relaxation in (0, 2); 1 is ASTRA's default.
        #[serde(default = "one")]
        relaxation: f32,
        /// Clamp the volume to ≥ 0 after every iteration.
        #[serde(default)]
        positivity: bool,
        /// Support mask (voxels outside are 0 and never updated).
        #[serde(default)]
        mask: SupportMask,
    },
}

fn one() -> f32 {
    1.0
}
fn yes() -> bool {
    true
}

/// SIRT checkpoints: where, how often, and whether to continue from them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Directory of the checkpoint files (`<output stem>.slab<i>of<n>.sirt.ckpt`).
    pub dir: PathBuf,
    /// Save every this many iterations (0: only when a stop is requested or a slab ends).
    #[serde(default)]
    pub every: u32,
    /// Continue from existing checkpoints of the same inputs (others are ignored).
    #[serde(default)]
    pub resume: bool,
}

/// Everything [`reconstruct`] needs besides the data. Serde (de)serialisable: the pipeline's
/// TOML `[reconstruct]` embeds it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconstructSpec {
    pub method: Method,
    /// Binning factors (≥ 1, distinct); one tomogram per factor.
    pub binnings: Vec<usize>,
    /// Tomogram thickness, Å (`nz = round(thickness_a / voxel)` per binning, ≥ 1).
    pub thickness_a: f64,
    /// Optional cosine low-pass of WBP, fraction of the binned Nyquist in (0, 1].
    #[serde(default)]
    pub lowpass: Option<f64>,
    /// Negate the contrast so that dense matter becomes positive.
    #[serde(default = "yes")]
    pub invert_contrast: bool,
    /// Memory budget, bytes (default: [`default_max_memory_bytes`]).
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
    /// SIRT checkpoints (none: no checkpoint, a stop request still stops cleanly).
    #[serde(default)]
    pub checkpoint: Option<CheckpointSpec>,
    /// CTF correction of the tilts with the geometry's defocus (`recon::ctfcorr`): none,
    /// phaseflip, wiener (2D, strips along the axis) or 3d (per Z slab, WBP only).
    #[serde(default)]
    pub ctf_correction: CtfCorrection,
    /// Constant SNR of the Wiener filter (`ctf_correction = "wiener"`), > 0.
    #[serde(default = "default_wiener_snr")]
    pub wiener_snr: f64,
}

/// Default [`ReconstructSpec::wiener_snr`].
pub fn default_wiener_snr() -> f64 {
    DEFAULT_WIENER_SNR
}

/// Default constant SNR of the Wiener filter.
pub const DEFAULT_WIENER_SNR: f64 = 3.0;

/// One reconstructed tomogram.
#[derive(Clone, Debug)]
pub struct Tomogram {
    pub bin: usize,
    /// Voxel size, Å.
    pub pixel_a: f64,
    /// `(nz, ny, nx)`.
    pub shape: (usize, usize, usize),
    /// The MRC written.
    pub path: PathBuf,
    /// Slabs along Y it was computed in.
    pub slabs: usize,
    /// The volume `[z, y, x]`, when it was made in one piece and the volumes kept so far fit
    /// half the memory budget; otherwise read it from `path`.
    pub volume: Option<Array3<f32>>,
    /// SIRT residuals `‖b − A·x_k‖` (one-piece SIRT only; empty otherwise).
    pub residuals: Vec<f64>,
}

/// Where an interrupted SIRT stopped.
#[derive(Clone, Debug)]
pub struct Interruption {
    pub bin: usize,
    /// Slab index (0-based) and count.
    pub slab: usize,
    pub slabs: usize,
    /// Completed iterations and the total asked for.
    pub iteration: u32,
    pub iterations: u32,
    /// The checkpoint written (none when no checkpoint directory was configured).
    pub checkpoint: Option<PathBuf>,
    /// Tomograms finished before the stop (other binnings).
    pub completed: Vec<Tomogram>,
}

impl std::fmt::Display for Interruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SIRT interrupted at iteration {} of {} (bin {}, slab {} of {})",
            self.iteration,
            self.iterations,
            self.bin,
            self.slab + 1,
            self.slabs
        )?;
        match &self.checkpoint {
            Some(p) => write!(
                f,
                ": state saved to {}; run again with resume (--resume) to continue",
                p.display()
            ),
            None => write!(
                f,
                ": no checkpoint directory was set, so the next run starts afresh"
            ),
        }
    }
}

/// What [`reconstruct`] did.
#[derive(Clone, Debug)]
pub enum ReconstructOutcome {
    /// Every binning was written, in the order of `spec.binnings`.
    Complete(Vec<Tomogram>),
    /// A stop was requested during SIRT; the state is checkpointed.
    Interrupted(Interruption),
}

/// Default memory budget: 80 % of `MemAvailable` (`/proc/meminfo`) divided by the ranks on
/// this node ([`local_ranks`]); 4 GiB when `/proc/meminfo` cannot be read.
pub fn default_max_memory_bytes() -> u64 {
    let avail = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    match avail {
        Some(b) => (b as f64 * 0.8) as u64 / local_ranks() as u64,
        None => {
            tracing::warn!("cannot read MemAvailable from /proc/meminfo: memory budget 4 GiB");
            4 << 30
        }
    }
}

/// Ranks sharing this node: `OMPI_COMM_WORLD_LOCAL_SIZE` (Open MPI), `MPI_LOCALNRANKS`
/// (MPICH), `SLURM_NTASKS_PER_NODE` (leading number), else 1.
pub fn local_ranks() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS_PER_NODE",
    ]
    .iter()
    .find_map(|k| {
        let v = std::env::var(k).ok()?;
        let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<usize>().ok().filter(|&n| n > 0)
    })
    .unwrap_or(1)
}

/// Bytes of the pre-processed tilt images of every binning at once: `4·nt·(ny/b)·(nx/b)`
/// summed over `binnings`, for a stack `(nt, ny, nx)` (f32).
pub fn preprocessed_bytes(nt: usize, ny: usize, nx: usize, binnings: &[usize]) -> u64 {
    binnings
        .iter()
        .map(|&b| 4 * (nt * (ny / b) * (nx / b)) as u64)
        .sum()
}

/// Tomogram planes along Z for a thickness of `thickness_a` Å at `voxel_a` Å (≥ 1).
pub fn tomogram_planes(thickness_a: f64, voxel_a: f64) -> usize {
    ((thickness_a / voxel_a).round() as usize).max(1)
}

/// The working set of one binning `bin` of a reconstruction of a stack `(nt, ny, nx)` as
/// `spec` says, with `nz` planes ([`tomogram_planes`]): every binning's pre-processed images
/// plus, per padded Y line of the slab, the volume line `4·nz·(nx/bin)` bytes (SIRT: four
/// volume-sized arrays, and three image-sized buffers); the 3D CTF correction adds one copy
/// of the images. [`reconstruct`] plans its slabs with it and `lamella plan` estimates with it.
pub fn memory_model(
    spec: &ReconstructSpec,
    (nt, ny, nx): (usize, usize, usize),
    bin: usize,
    nz: usize,
) -> MemoryModel {
    let all_images = preprocessed_bytes(nt, ny, nx, &spec.binnings);
    let image = preprocessed_bytes(nt, ny, nx, &[bin]);
    let line = 4 * (nz * (nx / bin)) as u64;
    match &spec.method {
        Method::Wbp { .. } => MemoryModel {
            // the 3D correction flips a copy of the images per Z slab
            fixed_bytes: all_images
                + if spec.ctf_correction == CtfCorrection::ThreeD {
                    image
                } else {
                    0
                },
            bytes_per_line: line,
        },
        Method::Sirt { .. } => MemoryModel {
            fixed_bytes: all_images + 3 * image,
            bytes_per_line: 4 * line,
        },
    }
}

/// Reconstruct `stack` `[tilt, y, x]` (pixel `geom.pixel_a` Å, one image per `geom.tilts`
/// entry, aligned in the sense that `geom` holds the shifts) as `spec` says, writing one MRC
/// volume per binning to `outputs[i]` (voxel `geom.pixel_a·binnings[i]` Å in the header,
/// shape `(round(thickness_a/voxel), ny/b, nx/b)`, centred on the tomogram centre of
/// `core::geometry`). Back-projections run on `device`. See the module docs for the steps;
/// a stop request is `pipeline::signals::stop_requested`.
///
/// Errors: [`Error::Config`] for a bad spec or output list, [`Error::BadInput`] for
/// inconsistent or non-finite data, [`Error::Runtime`] for a budget too small or device
/// failures, [`Error::Io`] for files.
pub fn reconstruct(
    stack: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    spec: &ReconstructSpec,
    device: &Device,
    outputs: &[PathBuf],
) -> Result<ReconstructOutcome> {
    reconstruct_with_stop(
        stack,
        geom,
        spec,
        device,
        outputs,
        &crate::pipeline::signals::stop_requested,
    )
}

/// [`reconstruct`] with the stop test given (`stop()` is asked after every SIRT iteration).
pub fn reconstruct_with_stop(
    stack: ArrayView3<f32>,
    geom: &TiltSeriesGeometry,
    spec: &ReconstructSpec,
    device: &Device,
    outputs: &[PathBuf],
    stop: &dyn Fn() -> bool,
) -> Result<ReconstructOutcome> {
    validate_spec(spec, stack.dim(), outputs)?;
    if spec.ctf_correction != CtfCorrection::None {
        check_defocus(geom)?;
    }
    let budget = spec
        .max_memory_bytes
        .unwrap_or_else(default_max_memory_bytes);
    let (nt, ny, nx) = stack.dim();
    let all_images = preprocessed_bytes(nt, ny, nx, &spec.binnings);
    if all_images >= budget {
        return Err(Error::Runtime(format!(
            "memory budget {} is smaller than the pre-processed tilt images ({} for binnings \
             {:?}): raise max_memory (--max-memory) or reconstruct fewer binnings at once",
            fmt_bytes(budget),
            fmt_bytes(all_images),
            spec.binnings
        )));
    }

    // every binning's slab plan before any heavy work (refuse early)
    let mut plans = Vec::with_capacity(spec.binnings.len());
    for &bin in &spec.binnings {
        let (by, bx) = (ny / bin, nx / bin);
        let voxel_a = geom.pixel_a * bin as f64;
        let nz = tomogram_planes(spec.thickness_a, voxel_a);
        let shape = (nz, by, bx);
        let projections = geom.projections(bin);
        let mem = memory_model(spec, (nt, ny, nx), bin, nz);
        let halo = match &spec.method {
            Method::Wbp { .. } => 0,
            Method::Sirt { iterations, .. } => sirt_halo(&projections, shape, voxel_a, *iterations),
        };
        let plan = plan_slabs(by, mem, budget, halo)?;
        log_plan(&plan, shape, bin, budget, &mem);
        plans.push((shape, voxel_a, projections, plan));
    }

    let mut images = preprocess_multi(stack, geom, &spec.binnings, spec.invert_contrast)?;
    let filter2d = match spec.ctf_correction {
        CtfCorrection::Phaseflip => Some(crate::ctf::correct::Filter::PhaseFlip),
        CtfCorrection::Wiener => Some(crate::ctf::correct::Filter::Wiener {
            snr: spec.wiener_snr,
        }),
        CtfCorrection::None | CtfCorrection::ThreeD => None,
    };
    if let Some(f) = filter2d {
        for (im, &bin) in images.iter_mut().zip(&spec.binnings) {
            let strips = correct_stack(im, geom, bin, f, 0.0);
            tracing::info!("bin {bin}: CTF {f:?} per tilt, up to {strips} strips");
        }
    }
    if let Method::Wbp { filter } = spec.method {
        for im in images.iter_mut() {
            weight(im, geom, filter, spec.lowpass);
        }
    }

    let mut done: Vec<Tomogram> = Vec::new();
    let mut kept_bytes = 0u64;
    for (((&bin, b), out), (shape, voxel_a, projections, plan)) in
        spec.binnings.iter().zip(&images).zip(outputs).zip(&plans)
    {
        let (shape, voxel_a) = (*shape, *voxel_a);
        let job = BinJob {
            bin,
            geom,
            ctf: spec.ctf_correction,
            b: b.view(),
            shape,
            voxel_a,
            projections,
            out,
            plan,
        };
        match run_bin(&job, spec, device, stop)? {
            BinResult::Interrupted(mut i) => {
                i.completed = done;
                return Ok(ReconstructOutcome::Interrupted(i));
            }
            BinResult::Done(mut t) => {
                if let Some(v) = &t.volume {
                    let bytes = 4 * v.len() as u64;
                    if kept_bytes + bytes <= budget / 2 {
                        kept_bytes += bytes;
                    } else {
                        t.volume = None;
                    }
                }
                done.push(t);
            }
        }
    }
    Ok(ReconstructOutcome::Complete(done))
}

/// One binning's inputs.
struct BinJob<'a> {
    bin: usize,
    geom: &'a TiltSeriesGeometry,
    ctf: CtfCorrection,
    /// Prepared images (weighted for WBP) `[tilt, y, x]`.
    b: ArrayView3<'a, f32>,
    shape: (usize, usize, usize),
    voxel_a: f64,
    projections: &'a [crate::core::geometry::Projection],
    out: &'a Path,
    plan: &'a SlabPlan,
}

enum BinResult {
    Done(Tomogram),
    Interrupted(Interruption),
}

enum SlabResult {
    Done(Array3<f32>, Vec<f64>),
    Interrupted(Interruption),
}

fn log_plan(
    plan: &SlabPlan,
    (nz, ny, nx): (usize, usize, usize),
    bin: usize,
    budget: u64,
    mem: &MemoryModel,
) {
    let vol = 4 * (nz * ny * nx) as u64;
    let n = plan.slabs.len();
    if n == 1 {
        tracing::info!(
            "bin {bin}: volume {nx}×{ny}×{nz} ({}) in one piece (working set {} ≤ budget {})",
            fmt_bytes(vol),
            fmt_bytes(mem.bytes(ny)),
            fmt_bytes(budget)
        );
    } else {
        let core = plan.slabs[0].y1 - plan.slabs[0].y0;
        let halo = if plan.halo > 0 {
            format!(
                " (+ {}-line halo on each side so that each SIRT slab is exact)",
                plan.halo
            )
        } else {
            String::new()
        };
        tracing::info!(
            "bin {bin}: volume {nx}×{ny}×{nz} ({}, working set {}) > budget {}: {n} slabs of \
             {core} lines along Y{halo}",
            fmt_bytes(vol),
            fmt_bytes(mem.bytes(ny)),
            fmt_bytes(budget)
        );
    }
}

/// Reconstruct every slab of one binning and write the MRC.
fn run_bin(
    job: &BinJob<'_>,
    spec: &ReconstructSpec,
    device: &Device,
    stop: &dyn Fn() -> bool,
) -> Result<BinResult> {
    let n = job.plan.slabs.len();
    let (nz, ny, nx) = job.shape;
    let pixel = job.voxel_a as f32;
    let mut ckpts = Vec::new();
    if n == 1 {
        let slab = job.plan.slabs[0];
        let (vol, residuals) = match run_slab(job, spec, device, stop, 0, slab, &mut ckpts)? {
            SlabResult::Done(v, r) => (v, r),
            SlabResult::Interrupted(i) => return Ok(BinResult::Interrupted(i)),
        };
        mrc::write(job.out, vol.view(), pixel, MrcKind::Volume)?;
        remove_checkpoints(&ckpts);
        return Ok(BinResult::Done(Tomogram {
            bin: job.bin,
            pixel_a: job.voxel_a,
            shape: job.shape,
            path: job.out.to_path_buf(),
            slabs: 1,
            volume: Some(vol),
            residuals,
        }));
    }
    let mut writer = MrcSlabWriter::create(job.out, (nz, ny, nx), pixel, MrcKind::Volume)?;
    for (i, &slab) in job.plan.slabs.iter().enumerate() {
        tracing::info!(
            "bin {}: slab {} of {n}: lines {}..{} (computed {}..{})",
            job.bin,
            i + 1,
            slab.y0,
            slab.y1,
            slab.py0,
            slab.py1
        );
        let vol = match run_slab(job, spec, device, stop, i, slab, &mut ckpts)? {
            SlabResult::Done(v, _) => v,
            SlabResult::Interrupted(int) => return Ok(BinResult::Interrupted(int)),
        };
        let off = slab.core_offset();
        writer.write_lines(
            slab.y0,
            vol.slice(s![.., off..off + (slab.y1 - slab.y0), ..]),
        )?;
    }
    writer.finish()?;
    remove_checkpoints(&ckpts);
    Ok(BinResult::Done(Tomogram {
        bin: job.bin,
        pixel_a: job.voxel_a,
        shape: job.shape,
        path: job.out.to_path_buf(),
        slabs: n,
        volume: None,
        residuals: Vec::new(),
    }))
}

fn remove_checkpoints(paths: &[PathBuf]) {
    for p in paths {
        if p.exists() {
            if let Err(e) = std::fs::remove_file(p) {
                tracing::warn!("could not remove checkpoint {}: {e}", p.display());
            }
        }
    }
}

/// Checkpoint file of slab `i` of `n` for output `out`.
fn checkpoint_path(dir: &Path, out: &Path, i: usize, n: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tomogram".into());
    dir.join(format!("{stem}.slab{}of{n}.sirt.ckpt", i + 1))
}

/// Reconstruct the padded lines `[slab.py0, slab.py1)` of one binning.
#[allow(clippy::too_many_arguments)]
fn run_slab(
    job: &BinJob<'_>,
    spec: &ReconstructSpec,
    device: &Device,
    stop: &dyn Fn() -> bool,
    i: usize,
    slab: Slab,
    ckpts: &mut Vec<PathBuf>,
) -> Result<SlabResult> {
    let (nz, ny, nx) = job.shape;
    let h = slab.padded_height();
    let shape = (nz, h, nx);
    let projs = if h == ny {
        job.projections.to_vec()
    } else {
        slab_projections(job.projections, ny, slab.py0, h, job.voxel_a)
    };
    let (iterations, relaxation, positivity, mask) = match &spec.method {
        Method::Wbp { .. } => {
            let v = if job.ctf == CtfCorrection::ThreeD {
                wbp_3d(device, job.b, job.geom, job.bin, &projs, shape, job.voxel_a)?
            } else {
                backproject_mean(device, job.b, &projs, shape, job.voxel_a)?
            };
            return Ok(SlabResult::Done(v, Vec::new()));
        }
        Method::Sirt {
            iterations,
            relaxation,
            positivity,
            mask,
        } => (*iterations, *relaxation, *positivity, *mask),
    };
    let params = SirtParams {
        iterations,
        relaxation,
        positivity,
        mask,
        ..SirtParams::default()
    };
    let n = job.plan.slabs.len();
    let ck = spec.checkpoint.as_ref();
    let ck_path = ck.map(|c| checkpoint_path(&c.dir, job.out, i, n));
    let hash = ck.map(|_| {
        sirt_input_hash(
            job.b,
            &projs,
            shape,
            job.voxel_a,
            &solver_fingerprint(&params),
        )
    });
    let mut start = SirtStart::default();
    if let (Some(c), Some(p), Some(hash)) = (ck, &ck_path, &hash) {
        ckpts.push(p.clone());
        if c.resume && p.exists() {
            match checkpoint::read(p) {
                Ok(saved)
                    if &saved.hash == hash
                        && saved.volume.dim() == shape
                        && saved.iteration <= iterations =>
                {
                    tracing::info!(
                        "bin {}: slab {} of {n}: resuming SIRT at iteration {} from {}",
                        job.bin,
                        i + 1,
                        saved.iteration,
                        p.display()
                    );
                    start = SirtStart {
                        volume: Some(saved.volume),
                        iteration: saved.iteration,
                        residuals: saved.residuals,
                        weighted_residuals: saved.weighted_residuals,
                    };
                }
                Ok(_) => tracing::warn!(
                    "checkpoint {} was made from other inputs or parameters, or with more \
                     iterations than asked for: ignored, starting afresh",
                    p.display()
                ),
                Err(e) => tracing::warn!("{e}: ignored, starting afresh"),
            }
        }
    }
    if start.iteration >= iterations {
        if let Some(v) = start.volume {
            // a slab finished before the interruption
            return Ok(SlabResult::Done(v, start.residuals));
        }
    }
    let every = ck.map_or(0, |c| c.every);
    let mut stopped_at: Option<u32> = None;
    let save = |k: u32, vol: &Array3<f32>, r: &[f64], w: &[f64]| -> Result<()> {
        if let (Some(p), Some(hash)) = (&ck_path, &hash) {
            checkpoint::write(p, hash, k, r, w, vol.view())?;
        }
        Ok(())
    };
    let out = sirt_iterate(
        job.b,
        &projs,
        shape,
        job.voxel_a,
        &params,
        device,
        start,
        &mut |p| {
            let want_stop = stop() && p.iteration < iterations;
            if want_stop || (every > 0 && p.iteration % every == 0 && p.iteration < iterations) {
                save(p.iteration, p.volume, p.residuals, p.weighted_residuals)?;
            }
            if want_stop {
                stopped_at = Some(p.iteration);
                return Ok(SirtControl::Stop);
            }
            Ok(SirtControl::Continue)
        },
    )?;
    if let Some(k) = stopped_at {
        tracing::warn!(
            "bin {}: slab {} of {n}: stop requested: SIRT interrupted at iteration {k} of \
             {iterations}",
            job.bin,
            i + 1
        );
        return Ok(SlabResult::Interrupted(Interruption {
            bin: job.bin,
            slab: i,
            slabs: n,
            iteration: k,
            iterations,
            checkpoint: ck_path,
            completed: Vec::new(),
        }));
    }
    // a finished slab of several is kept as a final checkpoint, so that a resumed run skips it
    if n > 1 && out.iterations_done == iterations {
        save(
            iterations,
            &out.volume,
            &out.residuals,
            &out.weighted_residuals,
        )?;
    }
    Ok(SlabResult::Done(out.volume, out.residuals))
}

/// Check a spec for a stack of `(tilts, ny, nx)` and its outputs.
fn validate_spec(
    spec: &ReconstructSpec,
    (_, ny, nx): (usize, usize, usize),
    outputs: &[PathBuf],
) -> Result<()> {
    let err = |m: String| Err(Error::Config(format!("reconstruct: {m}")));
    if spec.binnings.is_empty() {
        return err("binnings is empty: give one or more factors (e.g. [2, 4])".into());
    }
    for (i, &b) in spec.binnings.iter().enumerate() {
        if b == 0 || nx / b < 2 || ny / b < 2 {
            return err(format!(
                "binning {b} for {nx}×{ny} images: factors must be ≥ 1 and leave at least 2×2 \
                 pixels"
            ));
        }
        if spec.binnings[..i].contains(&b) {
            return err(format!("binning {b} is given twice: list each factor once"));
        }
    }
    if outputs.len() != spec.binnings.len() {
        return err(format!(
            "{} output files for {} binnings {:?}: give one output per binning",
            outputs.len(),
            spec.binnings.len(),
            spec.binnings
        ));
    }
    if !(spec.thickness_a.is_finite() && spec.thickness_a > 0.0) {
        return err(format!(
            "thickness_a = {}: give the tomogram thickness in Å (> 0)",
            spec.thickness_a
        ));
    }
    if let Some(l) = spec.lowpass {
        if !(l > 0.0 && l <= 1.0) {
            return err(format!(
                "lowpass = {l}: give a fraction of Nyquist in (0, 1], or none"
            ));
        }
    }
    if !(spec.wiener_snr.is_finite() && spec.wiener_snr > 0.0) {
        return err(format!(
            "wiener_snr = {}: give a positive signal-to-noise constant (e.g. 3)",
            spec.wiener_snr
        ));
    }
    if spec.ctf_correction == CtfCorrection::ThreeD && matches!(spec.method, Method::Sirt { .. }) {
        return err(
            "ctf_correction = \"3d\" needs method wbp (SIRT takes \"phaseflip\" or \"wiener\")"
                .into(),
        );
    }
    if spec.max_memory_bytes == Some(0) {
        return err("max_memory_bytes = 0: give a budget in bytes, or none for the default".into());
    }
    match &spec.method {
        Method::Wbp {
            filter: Filter::SirtLike { iterations: 0 },
        } => err("SIRT-like filter with 0 iterations: use ≥ 1 (typically 5–30)".into()),
        Method::Wbp { .. } => Ok(()),
        Method::Sirt {
            iterations,
            relaxation,
            positivity,
            mask,
        } => validate_solver(&SirtParams {
            iterations: *iterations,
            relaxation: *relaxation,
            positivity: *positivity,
            mask: *mask,
            ..SirtParams::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_toml_with_defaults() {
        let text = r#"
binnings = [2, 4]
thickness_a = 600.0
max_memory_bytes = 1000000

[method]
kind = "sirt"
iterations = 20
positivity = true
mask = { kind = "cylinder", radius_a = 300.0 }

[checkpoint]
dir = "ckpt"
every = 5
"#;
        let s: ReconstructSpec = toml::from_str(text).unwrap();
        assert_eq!(
            s.method,
            Method::Sirt {
                iterations: 20,
                relaxation: 1.0,
                positivity: true,
                mask: SupportMask::Cylinder { radius_a: 300.0 }
            }
        );
        assert!(s.invert_contrast);
        assert_eq!(s.checkpoint.as_ref().unwrap().every, 5);
        assert!(!s.checkpoint.as_ref().unwrap().resume);
        let back: ReconstructSpec = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let w: ReconstructSpec = toml::from_str(
            "binnings = [1]\nthickness_a = 100.0\n[method]\nkind = \"wbp\"\nfilter = { sirt-like = { iterations = 10 } }\n",
        )
        .unwrap();
        assert_eq!(
            w.method,
            Method::Wbp {
                filter: Filter::SirtLike { iterations: 10 }
            }
        );
    }

    #[test]
    fn bad_specs_are_refused_with_a_fix() {
        let spec = ReconstructSpec {
            method: Method::Wbp {
                filter: Filter::Ramp,
            },
            binnings: vec![2, 2],
            thickness_a: 100.0,
            lowpass: None,
            invert_contrast: true,
            max_memory_bytes: None,
            checkpoint: None,
            ctf_correction: CtfCorrection::None,
            wiener_snr: DEFAULT_WIENER_SNR,
        };
        let outs = vec![PathBuf::from("a.mrc"), PathBuf::from("b.mrc")];
        let e = validate_spec(&spec, (3, 32, 32), &outs).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let mut s2 = spec.clone();
        s2.binnings = vec![2];
        let e = validate_spec(&s2, (3, 32, 32), &outs).unwrap_err();
        assert!(e.to_string().contains("one output per binning"), "{e}");
        s2.method = Method::Sirt {
            iterations: 5,
            relaxation: 3.0,
            positivity: false,
            mask: SupportMask::None,
        };
        let e = validate_spec(&s2, (3, 32, 32), &outs[..1]).unwrap_err();
        assert!(e.to_string().contains("0 < relaxation < 2"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn local_ranks_reads_the_launcher() {
        // only the parsing; the environment of the test process is left alone
        let digits: String = "4(x2)".chars().take_while(|c| c.is_ascii_digit()).collect();
        assert_eq!(digits.parse::<usize>().unwrap(), 4);
        assert!(local_ranks() >= 1);
        assert!(default_max_memory_bytes() > 0);
    }
}
