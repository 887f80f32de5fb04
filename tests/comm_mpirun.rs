//! The communicator under a real MPI launcher: `mpirun -n 3 --oversubscribe`.
//!
//! MPI can be initialised only once per process, so the check cannot run in the test
//! harness process itself. Instead `comm_under_mpirun` re-runs THIS test executable under
//! `mpirun`, selecting only `mpi_child` (`--exact mpi_child`) with `LAMELLA_COMM_CHILD=1`;
//! each of the 3 child processes runs `lamella::comm::check::self_check` (every collective,
//! checked against the values it must give for 3 ranks) once with the default MPI chunking
//! and once with 64-byte rounds, and prints one line per check. This needs no example binary
//! and no cargo-inside-cargo build. Skipped (with a SKIP line) when `mpirun` is not on PATH
//! or the crate is built without the `mpi` feature.

use std::process::Command;

const CHILD_ENV: &str = "LAMELLA_COMM_CHILD";

#[test]
fn mpi_child() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("1") {
        return; // only meaningful when started by `comm_under_mpirun`
    }
    let comm = lamella::comm::init();
    assert_eq!(comm.name(), "mpi", "child not started by an MPI launcher");
    let line = lamella::comm::check::self_check(comm.as_ref(), 1).unwrap();
    println!("{line}");
    #[cfg(feature = "mpi")]
    {
        let small = lamella::comm::MpiComm::init()
            .expect("second handle on the live MPI world")
            .with_chunk_bytes(64);
        lamella::comm::check::self_check(&small, 50).unwrap();
        println!("comm_check chunked OK rank {}/{}", comm.rank(), comm.size());
    }
}

fn mpirun_available() -> bool {
    Command::new("mpirun")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn comm_under_mpirun() {
    if !cfg!(feature = "mpi") {
        eprintln!("SKIP: comm_under_mpirun: built without the `mpi` feature");
        return;
    }
    if std::env::var(CHILD_ENV).is_ok() {
        return; // never recurse
    }
    if !mpirun_available() {
        eprintln!("SKIP: comm_under_mpirun: no `mpirun` on PATH (install openmpi-bin)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("mpirun")
        .args(["-n", "3", "--oversubscribe"])
        .arg(&exe)
        .args(["--exact", "mpi_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("start mpirun");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mpirun failed:\n{stdout}\n{stderr}");
    for r in 0..3 {
        // 3 ranks: sum of (r + 1) = 6, max of r = 2
        let want = format!("comm_check OK rank {r}/3 name=mpi");
        // libtest's own output may interleave with the ranks' lines: search, do not split
        let at = stdout
            .find(&want)
            .unwrap_or_else(|| panic!("no line {want:?} in:\n{stdout}\n{stderr}"));
        let line = stdout[at..].lines().next().unwrap();
        assert!(line.contains("sum_f64=6 max_f64=2"), "{line}");
        assert!(
            stdout.contains(&format!("comm_check chunked OK rank {r}/3")),
            "{stdout}"
        );
    }
    // all three ranks run on this host: local ranks 0, 1, 2
    for lr in 0..3 {
        assert!(stdout.contains(&format!("local_rank={lr} ")), "{stdout}");
    }
}
