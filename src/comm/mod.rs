//! Communicator: the only place that knows about MPI.
//!
//! Stage code and the pipeline talk to other ranks only through the [`Comm`] trait
//! (DESIGN §4). [`init`] returns an MPI communicator when the program was built with the
//! `mpi` feature and started by an MPI launcher (mpirun, srun, ...), else a [`LocalComm`]
//! of size 1. Records that are not plain numbers travel as JSON ([`gather_serde`],
//! [`broadcast_serde`]).
//!
//! Every collective must be called by every rank, in the same order, as in MPI.

pub mod check;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

#[cfg(feature = "mpi")]
pub use self::mpi::MpiComm;
pub use local::LocalComm;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A group of cooperating processes ("ranks"). Collectives block until every rank calls them.
pub trait Comm: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Wait until every rank has reached the barrier.
    fn barrier(&self);
    /// Copy `data` from `root` to every rank; on non-roots `data` is resized to the root's
    /// length and overwritten.
    fn broadcast_bytes(&self, root: usize, data: &mut Vec<u8>);
    /// Element-wise sum over ranks, in place; every rank gets the result. All ranks must
    /// pass slices of the same length.
    fn allreduce_sum_f32(&self, data: &mut [f32]);
    /// Element-wise sum over ranks (f64), in place; every rank gets the result.
    fn allreduce_sum_f64(&self, data: &mut [f64]);
    /// Element-wise maximum over ranks (f64), in place; every rank gets the result.
    fn allreduce_max_f64(&self, data: &mut [f64]);
    /// Gather byte buffers of any length on `root`: `Some(v)` on root with `v[r]` the
    /// buffer of rank `r`, `None` on the other ranks.
    fn gather_bytes(&self, root: usize, data: &[u8]) -> Option<Vec<Vec<u8>>>;
    /// Gather byte buffers of any length on every rank: `v[r]` is the buffer of rank `r`.
    fn all_gather_bytes(&self, data: &[u8]) -> Vec<Vec<u8>>;
    /// Host name of this process.
    fn host(&self) -> String;
    /// Rank among the ranks on the same host (`0..ranks on this host`), for picking a GPU.
    fn local_rank(&self) -> usize;
    /// `"mpi"` or `"local"`.
    fn name(&self) -> &'static str;
}

/// Host name of this machine (`"unknown"` when the OS does not say).
pub fn hostname() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// True when the environment says an MPI launcher started this process: `OMPI_COMM_WORLD_SIZE`
/// (Open MPI), `PMI_SIZE` (MPICH, Intel MPI, srun --mpi=pmi2), `PMIX_RANK` (PMIx launchers),
/// or `SLURM_NTASKS > 1` together with `SLURM_PROCID` (srun). `get` looks up a variable.
pub fn launched_by_mpi(get: impl Fn(&str) -> Option<String>) -> bool {
    if get("OMPI_COMM_WORLD_SIZE").is_some()
        || get("PMI_SIZE").is_some()
        || get("PMIX_RANK").is_some()
    {
        return true;
    }
    let ntasks = get("SLURM_NTASKS")
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(0);
    ntasks > 1 && get("SLURM_PROCID").is_some()
}

/// Start the communicator: an [`MpiComm`] when built with the `mpi` feature and started by an
/// MPI launcher ([`launched_by_mpi`]), else [`LocalComm`].
///
/// MPI is initialised here, once per process; it is finalised when the last `MpiComm` is
/// dropped, so keep the returned box alive until the end of `main`. A second call while the
/// first communicator lives returns another handle on the same MPI world; a call after MPI was
/// finalised returns a `LocalComm` (MPI cannot be initialised twice) and logs a warning.
pub fn init() -> Box<dyn Comm> {
    let launched = launched_by_mpi(|k| std::env::var(k).ok());
    #[cfg(feature = "mpi")]
    if launched {
        match MpiComm::init() {
            Some(c) => return Box::new(c),
            None => tracing::warn!(
                "MPI launcher detected but MPI was already finalised in this process; \
                 running as a single rank"
            ),
        }
    }
    #[cfg(not(feature = "mpi"))]
    if launched {
        tracing::warn!(
            "started by an MPI launcher but lamella was built without the `mpi` feature: every \
             process runs as rank 0 of 1 (rebuild with `--features mpi`)"
        );
    }
    Box::new(LocalComm)
}

/// Gather one serialisable record per rank on `root` (JSON over [`Comm::gather_bytes`]):
/// `Some(records in rank order)` on root, `None` elsewhere.
///
/// Panics only if a rank's JSON cannot be read back as `T`, which means the ranks run
/// different builds (a programming / deployment error, not bad input).
pub fn gather_serde<T: Serialize + DeserializeOwned>(
    comm: &dyn Comm,
    root: usize,
    value: &T,
) -> Option<Vec<T>> {
    let bytes = to_json(value);
    comm.gather_bytes(root, &bytes)
        .map(|all| all.iter().map(|b| from_json(b)).collect())
}

/// Gather one serialisable record per rank on every rank (JSON over
/// [`Comm::all_gather_bytes`]), in rank order. Panics as [`gather_serde`].
pub fn all_gather_serde<T: Serialize + DeserializeOwned>(comm: &dyn Comm, value: &T) -> Vec<T> {
    let bytes = to_json(value);
    comm.all_gather_bytes(&bytes)
        .iter()
        .map(|b| from_json(b))
        .collect()
}

/// Send a serialisable value from `root` to every rank (JSON over [`Comm::broadcast_bytes`]).
/// The root passes `Some(value)`, the other ranks `None` (their argument is ignored); every
/// rank returns the root's value.
///
/// Panics if the root passes `None` (a programming error).
pub fn broadcast_serde<T: Serialize + DeserializeOwned>(
    comm: &dyn Comm,
    root: usize,
    value: Option<T>,
) -> T {
    let mut bytes = if comm.rank() == root {
        to_json(&value)
    } else {
        Vec::new()
    };
    comm.broadcast_bytes(root, &mut bytes);
    let v: Option<T> = from_json(&bytes);
    v.unwrap_or_else(|| panic!("broadcast_serde: the root rank {root} passed None"))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| panic!("comm: cannot serialise record: {e}"))
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> T {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("comm: a rank sent a record this build cannot read ({e}); do all ranks run the same lamella?")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        name: String,
        seconds: f64,
        tilts: Vec<u32>,
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn launcher_detection() {
        assert!(!launched_by_mpi(env(&[])));
        assert!(launched_by_mpi(env(&[("OMPI_COMM_WORLD_SIZE", "3")])));
        assert!(launched_by_mpi(env(&[("PMI_SIZE", "2")])));
        assert!(launched_by_mpi(env(&[("PMIX_RANK", "0")])));
        // a batch script under sbatch has SLURM_NTASKS but no SLURM_PROCID
        assert!(!launched_by_mpi(env(&[("SLURM_NTASKS", "4")])));
        assert!(!launched_by_mpi(env(&[
            ("SLURM_NTASKS", "1"),
            ("SLURM_PROCID", "0")
        ])));
        assert!(launched_by_mpi(env(&[
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "2")
        ])));
    }

    #[test]
    fn serde_helpers_on_local_comm() {
        let c = LocalComm;
        let r = Rec {
            name: "ts_01".into(),
            seconds: 1.25,
            tilts: vec![1, 2, 3],
        };
        let all = gather_serde(&c, 0, &r).unwrap();
        assert_eq!(all, vec![r]);
        let b: Rec = broadcast_serde(
            &c,
            0,
            Some(Rec {
                name: "x".into(),
                seconds: -3.5e-7,
                tilts: vec![],
            }),
        );
        assert_eq!(b.name, "x");
        assert_eq!(b.seconds, -3.5e-7);
        let n: Vec<f64> = broadcast_serde(&c, 0, Some(vec![0.1, 1e300]));
        assert_eq!(n, vec![0.1, 1e300]);
    }

    #[test]
    #[should_panic(expected = "passed None")]
    fn broadcast_serde_root_none_panics() {
        let _: u32 = broadcast_serde(&LocalComm, 0, None);
    }

    #[test]
    fn init_without_launcher_is_local() {
        // cargo test is not started by mpirun (unless someone does so on purpose)
        if launched_by_mpi(|k| std::env::var(k).ok()) {
            return;
        }
        let c = init();
        assert_eq!(c.name(), "local");
        assert_eq!((c.rank(), c.size(), c.local_rank()), (0, 1, 0));
    }
}
