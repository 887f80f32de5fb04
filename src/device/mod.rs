//! Compute devices: CPU (rayon) and CUDA (cudarc + NVRTC, dynamically loaded).
//!
//! [`Device::select`] turns the user's [`DeviceChoice`] into a [`Device`]. The CUDA driver and
//! NVRTC are loaded at run time (cudarc `dynamic-loading`), so the binary builds and runs on
//! machines without CUDA; `auto` then falls back to the CPU with one log line. See
//! `docs/device.md`.

#[cfg(feature = "cuda")]
pub mod cuda;

/// The device the user asked for (`--device`, config `device = "auto"`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    Default,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when a driver, NVRTC and a device are present, else the CPU.
    #[default]
    Auto,
    /// The CPU (rayon threads).
    Cpu,
    /// A CUDA GPU; an error when none can be used.
    Cuda,
}

/// A compute device a stage runs its hot loops on.
#[derive(Debug)]
pub enum Device {
    /// The CPU, with rayon's thread pool.
    Cpu,
    /// One CUDA GPU (context, stream and the NVRTC-compiled kernel modules).
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaDevice),
}

impl Device {
    /// Choose the device for this process.
    ///
    /// - `Cpu`: the CPU.
    /// - `Auto`: CUDA when the driver library, NVRTC and at least one device exist (GPU
    ///   `local_rank % device_count`, one GPU per rank); otherwise the CPU, with one
    ///   `tracing::info` line saying why.
    /// - `Cuda`: as `Auto` but an [`crate::Error::Runtime`] naming what is missing and the
    ///   fix when CUDA cannot be used.
    pub fn select(choice: DeviceChoice, local_rank: usize) -> crate::Result<Device> {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => match open_cuda(local_rank) {
                Ok(d) => Ok(d),
                Err(why) => {
                    tracing::info!("device: using the CPU ({why})");
                    Ok(Device::Cpu)
                }
            },
            DeviceChoice::Cuda => open_cuda(local_rank).map_err(|why| {
                crate::Error::Runtime(format!(
                    "--device cuda: CUDA cannot be used: {why}. Run on a GPU node with the \
                     NVIDIA driver and the CUDA toolkit's NVRTC on LD_LIBRARY_PATH \
                     (e.g. `module load cuda`), or pass `--device cpu` / `--device auto`"
                ))
            }),
        }
    }

    /// Human-readable name: `cpu (N threads)` or `cuda:K (GPU name)`.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => d.name(),
        }
    }

    /// True for a CUDA device.
    pub fn is_cuda(&self) -> bool {
        !matches!(self, Device::Cpu)
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(local_rank: usize) -> Result<Device, String> {
    cuda::CudaDevice::open(local_rank).map(Device::Cuda)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_local_rank: usize) -> Result<Device, String> {
    Err("lamella was built without the `cuda` feature; rebuild with `--features cuda`".into())
}

/// One line per device for `lamella info`: `cpu: N threads (rayon)`, then each CUDA device
/// (`cuda:K: name, memory GiB, compute capability`) or `cuda: not available (reason)`.
pub fn describe_devices() -> Vec<String> {
    let mut out = vec![format!(
        "cpu: {} threads (rayon)",
        rayon::current_num_threads()
    )];
    #[cfg(feature = "cuda")]
    match cuda::list_devices() {
        Ok(devs) if !devs.is_empty() => out.extend(devs),
        Ok(_) => out.push("cuda: not available (no CUDA device visible)".into()),
        Err(why) => out.push(format!("cuda: not available ({why})")),
    }
    #[cfg(not(feature = "cuda"))]
    out.push("cuda: not available (built without the `cuda` feature)".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available() {
        let d = Device::select(DeviceChoice::Cpu, 3).unwrap();
        assert!(!d.is_cuda());
        assert!(d.name().starts_with("cpu"));
        // auto never fails: it falls back to the CPU
        assert!(Device::select(DeviceChoice::Auto, 0).is_ok());
        let lines = describe_devices();
        assert!(lines[0].starts_with("cpu: "));
        assert!(lines.iter().any(|l| l.starts_with("cuda")));
    }

    #[test]
    fn cuda_choice_errors_with_a_fix_when_unavailable() {
        match Device::select(DeviceChoice::Cuda, 0) {
            Ok(d) => assert!(d.is_cuda()),
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("--device cpu"), "{m}");
                assert_eq!(e.exit_code(), 4);
            }
        }
    }

    #[test]
    fn choice_parses_lowercase() {
        #[derive(serde::Deserialize)]
        struct C {
            device: DeviceChoice,
        }
        let c: C = toml::from_str("device = \"cuda\"").unwrap();
        assert_eq!(c.device, DeviceChoice::Cuda);
        assert_eq!(DeviceChoice::default(), DeviceChoice::Auto);
    }
}
