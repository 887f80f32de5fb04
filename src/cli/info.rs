//! `lamella info`.

use crate::comm::Comm;

/// Print devices, MPI ranks, threads and library versions.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  mpirun -n 2 lamella info")]
pub struct Args {}

/// Execute: every rank reports its host and device; rank 0 prints.
pub fn run(_a: &Args, comm: &dyn Comm) -> anyhow::Result<i32> {
    let line = format!(
        "rank {}/{} on {} (local rank {}), {} threads, device {}",
        comm.rank(),
        comm.size(),
        comm.host(),
        comm.local_rank(),
        rayon::current_num_threads(),
        crate::device::Device::select(crate::device::DeviceChoice::Auto, comm.local_rank())
            .map(|d| d.name())
            .unwrap_or_else(|e| format!("none ({e})"))
    );
    // what the launcher set for this rank (GPU binding and threads come from these)
    let env: Vec<String> = [
        "CUDA_VISIBLE_DEVICES",
        "SLURM_LOCALID",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "SLURM_CPUS_PER_TASK",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
    .collect();
    let line = if env.is_empty() {
        line
    } else {
        format!("{line} [{}]", env.join(" "))
    };
    let lines = comm.gather_bytes(0, line.as_bytes());
    if let Some(lines) = lines {
        let (maj, min, rel) = hdf5::library_version();
        println!("lamella {}", crate::VERSION);
        println!(
            "features: mpi={} cuda={}",
            cfg!(feature = "mpi"),
            cfg!(feature = "cuda")
        );
        println!("communicator: {} with {} rank(s)", comm.name(), comm.size());
        println!("HDF5 library: {maj}.{min}.{rel}");
        println!("devices:");
        for d in crate::device::describe_devices() {
            println!("  {d}");
        }
        println!("ranks:");
        for l in lines {
            println!("  {}", String::from_utf8_lossy(&l));
        }
    }
    Ok(0)
}
