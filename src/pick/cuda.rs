//! CUDA twin of [`super::flcf::search`]: the per-rotation work on the tomogram grid
//! (placement of the template, forward FFT, product with the tomogram spectrum, inverse FFT,
//! local normalisation, best-score update) on one GPU with cuFFT and `kernels/pick.cu`.
//!
//! Split of the work. The [`Matcher`] is made on the CPU as for the CPU search (tomogram
//! FFT, local σ: once per tomogram). Per rotation, the `n³` template box is prepared on the
//! CPU by the same code as the CPU search ([`Matcher::prepared_template`]: rotation,
//! Fourier weight, mask, normalisation), so those numbers are identical, and only its values
//! at the mask support are sent (`P` floats); everything of tomogram size stays on the
//! device. The CPU prepares rotation `r + 1` while the GPU works on rotation `r` (the
//! launches are asynchronous).
//!
//! Device memory, for `N = nz·ny·nx` voxels and `H = nz·ny·(nx/2+1)` half-spectrum bins,
//! allocated once per search: tomogram spectrum and work spectrum (`2 × 8H` bytes), padded
//! template, correlation, inverse local norm, best score, rotation index (`5 × 4N`), the
//! support (`12P`), and cuFFT's two plan work areas (about `8H` each). R2C and C2R plans on
//! the grid are made once and reused for every rotation.
//!
//! Results equal the CPU search's to the rounding of the FFTs (cuFFT against rustfft, both
//! single precision): scores to ~1e-6 relative, rotation indices wherever the best rotation
//! beats the next by more than that (`tests/cuda_parity.rs`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::cufft::sys::{cufftType, float2};
use cudarc::cufft::CudaFft;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use ndarray::Array3;

use super::flcf::{combine_ranks, rotation_chunk, Matcher, ScoreMaps};
use crate::comm::Comm;
use crate::core::geometry::Mat3;
use crate::device::cuda::{drv, rt, CudaDevice};
use crate::Result;

/// Threads per block of the 1D grid-stride kernels.
const BLOCK: u32 = 256;

/// A 1D launch of grid-stride kernels over `len` elements.
fn launch_1d(len: usize) -> LaunchConfig {
    let blocks = len.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A cuFFT plan of `kind` (R2C or C2R) on the real grid `(nz, ny, nx)` (`[z, y, x]`
/// row-major; half spectrum `(nz, ny, nx/2+1)`, the layout of [`crate::core::fft3`]),
/// running on the device's stream. Unnormalised in both directions, as cuFFT always is.
fn grid_plan(dev: &CudaDevice, shape: (usize, usize, usize), kind: cufftType) -> Result<CudaFft> {
    let (nz, ny, nx) = shape;
    let dim = |v: usize| {
        i32::try_from(v).map_err(|_| rt(format!("template matching: grid size {v} exceeds i32")))
    };
    let (z, y, x) = (dim(nz)?, dim(ny)?, dim(nx)?);
    // cufftPlan3d takes the slowest-varying dimension first: z, y, x for [z, y, x]
    let stream = dev.stream().clone();
    match catch_unwind(AssertUnwindSafe(|| CudaFft::plan_3d(z, y, x, kind, stream))) {
        Ok(Ok(plan)) => Ok(plan),
        Ok(Err(e)) => Err(rt(format!(
            "{}: cuFFT plan {kind:?} of {nx}×{ny}×{nz} (x×y×z) failed: {e} (CUFFT_ALLOC_FAILED: \
             not enough device memory: bin the tomogram more or use `--device cpu`)",
            dev.name()
        ))),
        Err(_) => Err(rt(format!(
            "{}: libcufft could not be used (panic while creating a plan; a cuFFT older than \
             CUDA 12.8?): load a matching CUDA toolkit or use `--device cpu`",
            dev.name()
        ))),
    }
}

/// The device state of one search on the grid of a [`Matcher`].
struct GridSearch<'d> {
    dev: &'d CudaDevice,
    stream: Arc<CudaStream>,
    r2c: CudaFft,
    c2r: CudaFft,
    place_fn: CudaFunction,
    conj_mul_fn: CudaFunction,
    update_fn: CudaFunction,
    /// Tomogram linear index of each support voxel.
    targets: CudaSlice<u64>,
    /// Template values at the support (host staging and device copy).
    host_values: Vec<f32>,
    values: CudaSlice<f32>,
    padded: CudaSlice<f32>,
    tomo_ft: CudaSlice<float2>,
    spec: CudaSlice<float2>,
    corr: CudaSlice<f32>,
    inv_norm: CudaSlice<f32>,
    best: CudaSlice<f32>,
    index: CudaSlice<i32>,
    /// The CPU inverse FFT's normalisation `1/N` (f32, as [`crate::core::fft3::Fft3`]).
    scale: f32,
}

impl<'d> GridSearch<'d> {
    /// Plans, kernels and buffers for `matcher`'s grid: the tomogram spectrum, inverse local
    /// norm and support placement uploaded; best score `−∞` and index `−1` everywhere.
    fn new(dev: &'d CudaDevice, matcher: &Matcher) -> Result<GridSearch<'d>> {
        let shape = matcher.shape();
        let (nz, ny, nx) = shape;
        let n = nz * ny * nx;
        let h = nz * ny * (nx / 2 + 1);
        let p = matcher.support_len();
        // SAFETY: only tries to dlopen the library.
        if !unsafe { cudarc::cufft::sys::is_culib_present() } {
            return Err(rt(format!(
                "{}: cuFFT (libcufft.so) not found: load the CUDA toolkit (e.g. `module load \
                 cuda`) or add its lib64 to LD_LIBRARY_PATH, or use `--device cpu`",
                dev.name()
            )));
        }
        let need = 2 * 8 * h + 5 * 4 * n + 12 * p + 2 * 8 * h;
        let (free, _) = dev.mem_info()?;
        if need as f64 > 0.9 * free as f64 {
            return Err(rt(format!(
                "template matching on {}: the {nx}×{ny}×{nz} grid needs about {:.2} GiB of \
                 device memory, {:.2} GiB free: bin the tomogram more or use `--device cpu`",
                dev.name(),
                need as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64
            )));
        }
        let module = dev.module("pick.cu")?;
        let load = |name: &str| drv(&format!("loading {name}"), dev, module.load_function(name));
        let (place_fn, conj_mul_fn, update_fn) = (
            load("place_template_kernel")?,
            load("conj_mul_kernel")?,
            load("score_update_kernel")?,
        );
        let r2c = grid_plan(dev, shape, cufftType::CUFFT_R2C)?;
        let c2r = grid_plan(dev, shape, cufftType::CUFFT_C2R)?;
        let s = dev.stream().clone();
        let host_targets: Vec<u64> = matcher.support_targets().map(|t| t as u64).collect();
        let targets = drv("copying the support", dev, s.clone_htod(&host_targets))?;
        let host_ft: Vec<float2> = matcher
            .tomogram_spectrum()
            .iter()
            .map(|c| float2 { x: c.re, y: c.im })
            .collect();
        let tomo_ft = drv("copying the tomogram spectrum", dev, s.clone_htod(&host_ft))?;
        drop(host_ft);
        let inv = matcher.inverse_local_norm();
        let inv = inv.as_slice().expect("contiguous local norm");
        let inv_norm = drv("copying the local norm", dev, s.clone_htod(inv))?;
        let best = drv(
            "initialising the best scores",
            dev,
            s.clone_htod(&vec![f32::NEG_INFINITY; n]),
        )?;
        let index = drv(
            "initialising the rotation index",
            dev,
            s.clone_htod(&vec![-1i32; n]),
        )?;
        let alloc = |what: &str, len: usize| drv(what, dev, s.alloc_zeros::<f32>(len));
        let values = alloc("allocating the template values", p.max(1))?;
        let padded = alloc("allocating the padded template", n)?;
        let corr = alloc("allocating the correlation", n)?;
        let spec = drv("allocating the spectrum", dev, s.alloc_zeros::<float2>(h))?;
        Ok(GridSearch {
            dev,
            stream: s,
            r2c,
            c2r,
            place_fn,
            conj_mul_fn,
            update_fn,
            targets,
            host_values: vec![0.0; p],
            values,
            padded,
            tomo_ft,
            spec,
            corr,
            inv_norm,
            best,
            index,
            scale: 1.0 / n as f32,
        })
    }

    /// Queue rotation number `rotation` (pose `a`) on the stream: its scores update the
    /// best score and index per voxel.
    fn score(&mut self, matcher: &mut Matcher, a: &Mat3, rotation: usize) -> Result<()> {
        let dev = self.dev;
        let s = &self.stream;
        let rotation = i32::try_from(rotation).map_err(|_| {
            rt(format!(
                "template matching: rotation {rotation} exceeds i32"
            ))
        })?;
        matcher.support_values(a, &mut self.host_values);
        let p = self.host_values.len();
        let (n, h) = (self.padded.len(), self.spec.len());
        if p > 0 {
            drv(
                "copying the template",
                dev,
                s.memcpy_htod(&self.host_values, &mut self.values),
            )?;
            let count = p as u64;
            let mut b = s.launch_builder(&self.place_fn);
            b.arg(&self.values)
                .arg(&self.targets)
                .arg(&count)
                .arg(&mut self.padded);
            // SAFETY: argument types and order match `place_template_kernel`; `values` and
            // `targets` hold `count` elements and every target is < N = len(padded).
            drv("launching place_template_kernel", dev, unsafe {
                b.launch(launch_1d(p))
            })?;
        }
        self.r2c
            .exec_r2c(&self.padded, &mut self.spec)
            .map_err(|e| rt(format!("{}: cufftExecR2C failed: {e}", dev.name())))?;
        let bins = h as u64;
        let mut b = s.launch_builder(&self.conj_mul_fn);
        b.arg(&mut self.spec).arg(&self.tomo_ft).arg(&bins);
        // SAFETY: matches `conj_mul_kernel`; both spectra hold `bins` complex values.
        drv("launching conj_mul_kernel", dev, unsafe {
            b.launch(launch_1d(h))
        })?;
        // C2R overwrites its input (`spec`), which the next rotation recomputes anyway
        self.c2r
            .exec_c2r(&mut self.spec, &mut self.corr)
            .map_err(|e| rt(format!("{}: cufftExecC2R failed: {e}", dev.name())))?;
        let voxels = n as u64;
        let mut b = s.launch_builder(&self.update_fn);
        b.arg(&self.corr)
            .arg(&self.inv_norm)
            .arg(&self.scale)
            .arg(&mut self.best)
            .arg(&mut self.index)
            .arg(&rotation)
            .arg(&voxels);
        // SAFETY: matches `score_update_kernel`; the five grids hold `voxels` elements.
        drv("launching score_update_kernel", dev, unsafe {
            b.launch(launch_1d(n))
        })?;
        Ok(())
    }

    /// Wait for the queued rotations and copy the best score and index back, `shape`.
    fn finish(self, shape: (usize, usize, usize)) -> Result<(Array3<f32>, Array3<i32>)> {
        let dev = self.dev;
        let s = &self.stream;
        let mut best = Array3::<f32>::zeros(shape);
        let mut index = Array3::<i32>::zeros(shape);
        drv(
            "copying the best scores back",
            dev,
            s.memcpy_dtoh(&self.best, best.as_slice_mut().expect("contiguous")),
        )?;
        drv(
            "copying the rotation index back",
            dev,
            s.memcpy_dtoh(&self.index, index.as_slice_mut().expect("contiguous")),
        )?;
        drv("synchronising", dev, s.synchronize())?;
        Ok((best, index))
    }
}

/// GPU twin of [`super::flcf::search`]: search `rotations` with `matcher` (made on the CPU
/// for the tomogram, `[z, y, x]`), this rank taking its [`rotation_chunk`], on `dev`, and
/// combine the ranks by the same max-reduction; `progress(done, total)` after every rotation
/// is queued. Collective over `comm`. The result has the CPU search's shapes and meaning
/// (best FLCF score per voxel, index into `rotations`; ties keep the lowest index).
///
/// Errors ([`crate::Error::Runtime`]): cuFFT missing, not enough device memory for the grid
/// (module docs), a failed CUDA call. An error on one rank of several leaves the others
/// waiting in the reduction; the process then ends with the error (MPI aborts the job).
pub fn search_cuda(
    dev: &CudaDevice,
    matcher: &mut Matcher,
    rotations: &[Mat3],
    comm: &dyn Comm,
    mut progress: impl FnMut(usize, usize),
) -> Result<ScoreMaps> {
    let shape = matcher.shape();
    let (lo, hi) = rotation_chunk(rotations.len(), comm.size(), comm.rank());
    let (best, index) = if lo < hi {
        let mut grid = GridSearch::new(dev, matcher)?;
        for (k, r) in (lo..hi).enumerate() {
            grid.score(matcher, &rotations[r], r)?;
            progress(k + 1, hi - lo);
        }
        grid.finish(shape)?
    } else {
        (
            Array3::from_elem(shape, f32::NEG_INFINITY),
            Array3::from_elem(shape, -1),
        )
    };
    Ok(combine_ranks(best, index, comm))
}

/// Compare [`search_cuda`] with the CPU [`super::flcf::search`] on a small random case
/// (`20 × 22 × 19` tomogram, `8³` template, 3 rotations, one rank): `Err` with the reason
/// when the GPU fails or its scores differ by more than 1e-3 of the largest. Run once per
/// process before the first GPU search ([`super::flcf::search_on`] falls back to the CPU on
/// `Err`), so a kernel or cuFFT problem on some site's GPU never gives wrong picks silently.
pub fn self_check(dev: &CudaDevice) -> std::result::Result<(), String> {
    use crate::comm::LocalComm;
    use crate::core::geometry::euler_zyz_to_matrix;
    use crate::pick::template::Template;
    use rand::{Rng, SeedableRng};

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let n = 8;
    let template = Template {
        volume: Array3::from_shape_fn((n, n, n), |_| rng.random_range(0.0f32..1.0)),
        pixel_a: 10.0,
        radius_a: 30.0,
    };
    let mask = crate::sta::mask::soft_sphere(n, 3.0, 1.0);
    let weight = Array3::from_shape_fn((n, n, n / 2 + 1), |_| rng.random_range(0.2f32..1.0));
    let tomo = Array3::from_shape_fn((20, 22, 19), |_| rng.random_range(-1.0f32..1.0));
    let rotations = [
        crate::core::so3::identity(),
        euler_zyz_to_matrix(30.0, 50.0, -20.0),
        euler_zyz_to_matrix(-75.0, 120.0, 160.0),
    ];
    let mut m = Matcher::new(tomo.view(), &template, &mask, weight).map_err(|e| e.to_string())?;
    let cpu = super::flcf::search(&mut m, &rotations, &LocalComm, |_, _| {});
    let gpu =
        search_cuda(dev, &mut m, &rotations, &LocalComm, |_, _| {}).map_err(|e| e.to_string())?;
    let scale = cpu
        .scores
        .iter()
        .fold(0.0f32, |a, v| a.max(v.abs()))
        .max(1e-12);
    let err = cpu
        .scores
        .iter()
        .zip(gpu.scores.iter())
        .fold(0.0f32, |a, (c, g)| a.max((c - g).abs()))
        / scale;
    if err.is_finite() && err <= 1e-3 {
        Ok(())
    } else {
        Err(format!(
            "GPU scores differ from the CPU's by {err:.2e} of the maximum"
        ))
    }
}
