//! Cluster sanity check of lamella's communicator: every collective on every rank.
//!
//! ```text
//! cargo build --release --example comm_check
//! mpirun -n 4 target/release/examples/comm_check          # or: srun -n 4 ...
//! ```
//! Each rank prints `comm_check OK rank r/size name=mpi local_rank=… host=… …` and exits 0;
//! on a failure it prints what differed and exits 1. Pass a number to scale the gathered
//! buffer sizes (default 1); with the `mpi` feature the check also runs with 64-byte rounds
//! to exercise the multi-round paths used for buffers over 1 GiB.

fn main() {
    let scale: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let comm = lamella::comm::init();
    let mut ok = true;
    match lamella::comm::check::self_check(comm.as_ref(), scale) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("{e}");
            ok = false;
        }
    }
    #[cfg(feature = "mpi")]
    if comm.name() == "mpi" {
        // a second handle on the same world, moving at most 64 bytes per MPI call
        if let Some(small) = lamella::comm::MpiComm::init() {
            let small = small.with_chunk_bytes(64);
            match lamella::comm::check::self_check(&small, scale * 10) {
                Ok(_) => println!("comm_check chunked OK rank {}", comm.rank()),
                Err(e) => {
                    eprintln!("{e}");
                    ok = false;
                }
            }
        }
    }
    drop(comm); // finalises MPI
    std::process::exit(if ok { 0 } else { 1 });
}
