//! CUDA device: cudarc context and stream on one GPU, kernels from `kernels/*.cu` compiled by
//! NVRTC at run time (once per device, cached), and the GPU twins of the CPU hot loops.
//!
//! Everything is loaded dynamically: before touching the driver we check that
//! `libcuda` and `libnvrtc` can be opened (`is_culib_present`), because cudarc panics when a
//! library is missing. The probe additionally runs under `catch_unwind` so that an unusual
//! installation (e.g. a driver lacking a symbol) degrades to "CUDA not available".

use crate::core::geometry::Projection;
use crate::recon::backproject::voxel_to_pixel_coeffs;
use crate::recon::project::validate_forward_inputs;
use cudarc::driver::{CudaContext, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use ndarray::{Array3, ArrayView3};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// CUDA C sources of the kernels, by file name (compiled on first use).
const KERNELS: &[(&str, &str)] = &[
    (
        "backproject.cu",
        include_str!("../../kernels/backproject.cu"),
    ),
    ("project.cu", include_str!("../../kernels/project.cu")),
    ("pick.cu", include_str!("../../kernels/pick.cu")),
];

/// One GPU: context, a stream, and the compiled kernel modules.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice(cuda:{} {})", self.ordinal, self.name)
    }
}

pub(crate) fn rt(msg: String) -> crate::Error {
    crate::Error::Runtime(msg)
}

/// Why CUDA cannot be used, or `Ok(device count)`.
fn probe() -> Result<usize, String> {
    // SAFETY: only tries to dlopen the libraries.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(
            "no CUDA driver library (libcuda.so) found: no NVIDIA driver on this \
                    machine"
                .into(),
        );
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "the CUDA driver is present but NVRTC (libnvrtc.so) is not: load the CUDA \
                    toolkit (e.g. `module load cuda`) or add its lib64 to LD_LIBRARY_PATH"
                .into(),
        );
    }
    let n = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| "the CUDA driver library could not be used (panic while loading it)")?
        .map_err(|e| format!("cuInit / cuDeviceGetCount failed: {e:?}"))?;
    if n <= 0 {
        let vis = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into());
        return Err(format!(
            "no CUDA device visible (CUDA_VISIBLE_DEVICES={vis})"
        ));
    }
    Ok(n as usize)
}

/// One line per visible device: `cuda:K: name, X.Y GiB, compute M.m`.
pub fn list_devices() -> Result<Vec<String>, String> {
    let n = probe()?;
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let line = std::panic::catch_unwind(|| -> Result<String, String> {
            let ctx = CudaContext::new(k).map_err(|e| format!("{e:?}"))?;
            let name = ctx.name().map_err(|e| format!("{e:?}"))?;
            let mem = ctx.total_mem().map_err(|e| format!("{e:?}"))?;
            let (ma, mi) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
            Ok(format!(
                "cuda:{k}: {name}, {:.1} GiB, compute {ma}.{mi}",
                mem as f64 / (1u64 << 30) as f64
            ))
        })
        .unwrap_or_else(|_| Err("panic while querying the device".into()));
        out.push(line.unwrap_or_else(|e| format!("cuda:{k}: unusable ({e})")));
    }
    Ok(out)
}

/// NVRTC options of every kernel file: no FMA contraction, IEEE division and square root,
/// no flush to zero (so CPU and GPU evaluate the same roundings), for the virtual
/// architecture `compute_XY` of `arch = (X, Y)` or NVRTC's default when `None`.
fn compile_options(file: &str, arch: Option<(i32, i32)>) -> CompileOptions {
    CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        name: Some(file.to_string()),
        options: arch
            .map(|(major, minor)| vec![format!("--gpu-architecture=compute_{major}{minor}")])
            .unwrap_or_default(),
        ..Default::default()
    }
}

impl CudaDevice {
    /// Open GPU `local_rank % device_count`. `Err` says why CUDA cannot be used.
    pub fn open(local_rank: usize) -> Result<CudaDevice, String> {
        let n = probe()?;
        let ordinal = local_rank % n;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| format!("panic while creating a context on cuda:{ordinal}"))?
            .map_err(|e| format!("cannot create a context on cuda:{ordinal}: {e:?}"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let stream = ctx.default_stream();
        Ok(CudaDevice {
            ctx,
            stream,
            ordinal,
            name,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// `cuda:K (name)`.
    pub fn name(&self) -> String {
        format!("cuda:{} ({})", self.ordinal, self.name)
    }

    /// Device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The stream every kernel, copy and cuFFT plan of this device runs on.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Free and total device memory, bytes.
    pub fn mem_info(&self) -> crate::Result<(usize, usize)> {
        self.ctx
            .mem_get_info()
            .map_err(|e| rt(format!("{}: cuMemGetInfo failed: {e:?}", self.name())))
    }

    /// The module compiled from `kernels/<file>`, compiling it with NVRTC on first use.
    pub fn module(&self, file: &'static str) -> crate::Result<Arc<CudaModule>> {
        let mut cache = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cache.get(file) {
            return Ok(m.clone());
        }
        let src = KERNELS
            .iter()
            .find(|(n, _)| *n == file)
            .map(|(_, s)| *s)
            .ok_or_else(|| rt(format!("kernels/{file}: no such kernel file in this build")))?;
        let (major, minor) = self
            .ctx
            .compute_capability()
            .map_err(|e| rt(format!("{}: compute capability: {e:?}", self.name())))?;
        // NVRTC older than the GPU does not know its architecture: fall back to its default
        // virtual architecture, which the driver JIT-compiles for the GPU.
        let ptx = compile_ptx_with_opts(src, compile_options(file, Some((major, minor))))
            .or_else(|_| compile_ptx_with_opts(src, compile_options(file, None)))
            .map_err(|e| {
                rt(format!(
                    "kernels/{file}: NVRTC compilation failed for {}: {e}",
                    self.name()
                ))
            })?;
        let module = self.ctx.load_module(ptx).map_err(|e| {
            rt(format!(
                "kernels/{file}: loading the PTX on {} failed: {e:?}. If this says \
                 UNSUPPORTED_PTX_VERSION, NVRTC is newer than the driver: load a CUDA toolkit \
                 no newer than the driver's CUDA version (nvidia-smi)",
                self.name()
            ))
        })?;
        cache.insert(file, module.clone());
        Ok(module)
    }
}

/// A driver result as [`crate::Error::Runtime`] naming the device and `what` failed.
pub(crate) fn drv<T>(
    what: &str,
    dev: &CudaDevice,
    r: Result<T, cudarc::driver::DriverError>,
) -> crate::Result<T> {
    r.map_err(|e| rt(format!("{}: {what} failed: {e:?}", dev.name())))
}

/// GPU twin of [`crate::recon::backproject::backproject_cpu`]: same shapes, frames, units and
/// single-precision arithmetic (`kernels/backproject.cu`). The volume is computed in z slabs
/// that fit in free device memory. Errors when the device runs out of memory or a CUDA call
/// fails.
pub fn backproject(
    dev: &CudaDevice,
    images: ArrayView3<f32>,
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
) -> crate::Result<Array3<f32>> {
    let (nt, iny, inx) = images.dim();
    let (nz, ny, nx) = vol_shape;
    if nt != projections.len() || inx < 2 || iny < 2 {
        return Err(rt(format!(
            "backproject on {}: {nt} images of {inx}×{iny} for {} projections (need one \
             projection per image, images ≥ 2×2)",
            dev.name(),
            projections.len()
        )));
    }
    let mut vol = Array3::<f32>::zeros(vol_shape);
    if nt == 0 || nx == 0 || ny == 0 || nz == 0 {
        return Ok(vol);
    }
    let shared = nt * 8 * std::mem::size_of::<f32>();
    if shared > 48 * 1024 {
        return Err(rt(format!(
            "backproject on {}: {nt} tilts exceed the kernel's limit of {} (shared memory); \
             reconstruct on the CPU (`--device cpu`)",
            dev.name(),
            48 * 1024 / 32
        )));
    }
    let i32_of = |v: usize, what: &str| {
        i32::try_from(v).map_err(|_| rt(format!("backproject: {what} = {v} exceeds i32")))
    };
    let coeffs: Vec<f32> = voxel_to_pixel_coeffs(projections, vol_shape, voxel_a)
        .into_iter()
        .flatten()
        .collect();
    let module = dev.module("backproject.cu")?;
    let func = drv(
        "loading backproject_kernel",
        dev,
        module.load_function("backproject_kernel"),
    )?;
    let s = &dev.stream;

    // memory plan: images + coefficients resident, the volume in z slabs
    let images = images.as_standard_layout();
    let img_host = images.as_slice().expect("standard layout");
    let plane_bytes = nx * ny * 4;
    let (free, _) = dev.mem_info()?;
    let budget = (free as f64 * 0.8) as usize;
    let need_img = img_host.len() * 4 + coeffs.len() * 4;
    let slab_nz = budget.saturating_sub(need_img) / plane_bytes;
    if slab_nz == 0 {
        return Err(rt(format!(
            "backproject on {}: not enough device memory ({:.2} GiB free; the images need \
             {:.2} GiB plus {:.1} MiB per z plane): bin more or use `--device cpu`",
            dev.name(),
            free as f64 / (1u64 << 30) as f64,
            need_img as f64 / (1u64 << 30) as f64,
            plane_bytes as f64 / (1u64 << 20) as f64
        )));
    }
    let slab_nz = slab_nz.min(nz).min(65_535);

    let d_img = drv("copying the images", dev, s.clone_htod(img_host))?;
    let d_coef = drv("copying the coefficients", dev, s.clone_htod(&coeffs))?;
    let mut d_vol = drv(
        "allocating the volume slab",
        dev,
        s.alloc_zeros::<f32>(slab_nz * ny * nx),
    )?;
    let (n_tilt, img_ny, img_nx) = (
        i32_of(nt, "tilts")?,
        i32_of(iny, "image ny")?,
        i32_of(inx, "image nx")?,
    );
    let (ny_i, nx_i) = (i32_of(ny, "ny")?, i32_of(nx, "nx")?);
    let (bx, by) = (32u32, 8u32);
    let out = vol.as_slice_mut().expect("fresh array is contiguous");
    let mut z0 = 0usize;
    while z0 < nz {
        let dz = slab_nz.min(nz - z0);
        let z0_i = i32_of(z0, "z0")?;
        let cfg = LaunchConfig {
            grid_dim: (
                (nx as u32).div_ceil(bx),
                (ny as u32).div_ceil(by),
                dz as u32,
            ),
            block_dim: (bx, by, 1),
            shared_mem_bytes: shared as u32,
        };
        let mut b = s.launch_builder(&func);
        b.arg(&d_img)
            .arg(&n_tilt)
            .arg(&img_ny)
            .arg(&img_nx)
            .arg(&d_coef)
            .arg(&mut d_vol)
            .arg(&z0_i)
            .arg(&ny_i)
            .arg(&nx_i);
        // SAFETY: argument types and order match `backproject_kernel`; the slab holds
        // dz·ny·nx floats and the grid covers exactly dz planes of ny×nx.
        drv("launching backproject_kernel", dev, unsafe {
            b.launch(cfg)
        })?;
        let n = dz * ny * nx;
        let dst = &mut out[z0 * ny * nx..z0 * ny * nx + n];
        drv(
            "copying the volume back",
            dev,
            s.memcpy_dtoh(&d_vol.slice(0..n), dst),
        )?;
        z0 += dz;
    }
    drv("synchronising", dev, s.synchronize())?;
    Ok(vol)
}

/// GPU twin of [`crate::recon::project::forward_project_cpu`] (`kernels/project.cu`): same
/// shapes (`vol` `[z, y, x]` of `voxel_a` Å; result `[tilt, y, x]` of `image_shape = (ny,
/// nx)` pixels of `voxel_a` Å), frames and single-precision weights; the sums are
/// accumulated with atomics, so the result equals the CPU's to rounding of the sums (not
/// bit for bit). The images stay resident on the device; the volume is sent in z slabs that
/// fit in free device memory. Errors when the device runs out of memory or a CUDA call fails.
pub fn forward_project(
    dev: &CudaDevice,
    vol: ArrayView3<f32>,
    projections: &[Projection],
    image_shape: (usize, usize),
    voxel_a: f64,
) -> crate::Result<Array3<f32>> {
    validate_forward_inputs(image_shape, voxel_a)
        .map_err(|e| rt(format!("forward_project on {}: {e}", dev.name())))?;
    let nt = projections.len();
    let (iny, inx) = image_shape;
    let (nz, ny, nx) = vol.dim();
    let mut out = Array3::<f32>::zeros((nt, iny, inx));
    if nt == 0 || nx == 0 || ny == 0 || nz == 0 {
        return Ok(out);
    }
    let shared = nt * 8 * std::mem::size_of::<f32>();
    if shared > 48 * 1024 {
        return Err(rt(format!(
            "forward_project on {}: {nt} tilts exceed the kernel's limit of {} (shared \
             memory); use `--device cpu`",
            dev.name(),
            48 * 1024 / 32
        )));
    }
    let i32_of = |v: usize, what: &str| {
        i32::try_from(v).map_err(|_| rt(format!("forward_project: {what} = {v} exceeds i32")))
    };
    let coeffs: Vec<f32> = voxel_to_pixel_coeffs(projections, (nz, ny, nx), voxel_a)
        .into_iter()
        .flatten()
        .collect();
    let module = dev.module("project.cu")?;
    let func = drv(
        "loading project_kernel",
        dev,
        module.load_function("project_kernel"),
    )?;
    let s = &dev.stream;

    // memory plan: images + coefficients resident, the volume in z slabs
    let vol = vol.as_standard_layout();
    let vol_host = vol.as_slice().expect("standard layout");
    let plane_bytes = nx * ny * 4;
    let (free, _) = dev.mem_info()?;
    let budget = (free as f64 * 0.8) as usize;
    let need_img = nt * iny * inx * 4 + coeffs.len() * 4;
    let slab_nz = budget.saturating_sub(need_img) / plane_bytes;
    if slab_nz == 0 {
        return Err(rt(format!(
            "forward_project on {}: not enough device memory ({:.2} GiB free; the images \
             need {:.2} GiB plus {:.1} MiB per z plane): bin more or use `--device cpu`",
            dev.name(),
            free as f64 / (1u64 << 30) as f64,
            need_img as f64 / (1u64 << 30) as f64,
            plane_bytes as f64 / (1u64 << 20) as f64
        )));
    }
    let slab_nz = slab_nz.min(nz).min(65_535);

    let d_coef = drv("copying the coefficients", dev, s.clone_htod(&coeffs))?;
    let mut d_img = drv(
        "allocating the images",
        dev,
        s.alloc_zeros::<f32>(nt * iny * inx),
    )?;
    let mut d_vol = drv(
        "allocating the volume slab",
        dev,
        s.alloc_zeros::<f32>(slab_nz * ny * nx),
    )?;
    let (n_tilt, img_ny, img_nx) = (
        i32_of(nt, "tilts")?,
        i32_of(iny, "image ny")?,
        i32_of(inx, "image nx")?,
    );
    let (ny_i, nx_i) = (i32_of(ny, "ny")?, i32_of(nx, "nx")?);
    let (bx, by) = (32u32, 8u32);
    let mut z0 = 0usize;
    while z0 < nz {
        let dz = slab_nz.min(nz - z0);
        let n = dz * ny * nx;
        let src = &vol_host[z0 * ny * nx..z0 * ny * nx + n];
        drv(
            "copying a volume slab",
            dev,
            s.memcpy_htod(src, &mut d_vol.slice_mut(0..n)),
        )?;
        let z0_i = i32_of(z0, "z0")?;
        let cfg = LaunchConfig {
            grid_dim: (
                (nx as u32).div_ceil(bx),
                (ny as u32).div_ceil(by),
                dz as u32,
            ),
            block_dim: (bx, by, 1),
            shared_mem_bytes: shared as u32,
        };
        let mut b = s.launch_builder(&func);
        b.arg(&d_vol)
            .arg(&z0_i)
            .arg(&ny_i)
            .arg(&nx_i)
            .arg(&d_coef)
            .arg(&mut d_img)
            .arg(&n_tilt)
            .arg(&img_ny)
            .arg(&img_nx);
        // SAFETY: argument types and order match `project_kernel`; the slab holds dz·ny·nx
        // floats, the grid covers exactly dz planes of ny×nx, and the images hold
        // n_tilt·img_ny·img_nx floats.
        drv("launching project_kernel", dev, unsafe { b.launch(cfg) })?;
        z0 += dz;
    }
    let dst = out.as_slice_mut().expect("fresh array is contiguous");
    drv("copying the images back", dev, s.memcpy_dtoh(&d_img, dst))?;
    drv("synchronising", dev, s.synchronize())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel file compiles with NVRTC (no GPU or driver needed, only libnvrtc; the
    /// test says SKIP and passes without it), for the default architecture and for sm_90,
    /// and its PTX has no fused multiply-add (the twins' roundings rely on that).
    #[test]
    fn kernels_compile_with_nvrtc_without_fma() {
        // SAFETY: only tries to dlopen the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            println!("SKIP: kernels_compile_with_nvrtc: no libnvrtc.so");
            return;
        }
        for &(file, src) in KERNELS {
            for arch in [None, Some((9, 0))] {
                let ptx = compile_ptx_with_opts(src, compile_options(file, arch))
                    .unwrap_or_else(|e| panic!("kernels/{file} ({arch:?}): {e}"))
                    .to_src();
                assert!(ptx.contains(".visible .entry"), "kernels/{file}: no entry");
                assert!(
                    !ptx.contains("fma."),
                    "kernels/{file} ({arch:?}): FMA in the PTX"
                );
            }
        }
    }
}
