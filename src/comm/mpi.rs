//! [`Comm`] over MPI (rsmpi): `MPI_COMM_WORLD`.
//!
//! - MPI is initialised once per process (`MPI_Init_thread`, `MPI_THREAD_SERIALIZED`) by
//!   [`MpiComm::init`] and finalised when the last `MpiComm` handle is dropped (the rsmpi
//!   `Universe` lives in an `Arc` shared by the handles). Keep the communicator returned by
//!   [`super::init`] alive until the end of `main`.
//! - Calls are serialised by a mutex, so the communicator may be shared between threads, but
//!   collectives must still be issued in the same order on every rank: call them from one
//!   thread per rank.
//! - MPI counts are 32-bit: large buffers are moved in rounds of at most
//!   [`DEFAULT_CHUNK_BYTES`] bytes per collective call, so any length works.

use super::Comm;
use ::mpi::collective::SystemOperation;
use ::mpi::datatype::{Equivalence, PartitionMut};
use ::mpi::environment::Universe;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use ::mpi::{Count, Threading};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Largest number of bytes moved by one MPI call (1 GiB; MPI counts are `i32`).
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 30;

/// The MPI universe of this process while some `MpiComm` holds it.
static UNIVERSE: Mutex<Weak<Universe>> = Mutex::new(Weak::new());

/// A handle on `MPI_COMM_WORLD`.
pub struct MpiComm {
    _universe: Arc<Universe>,
    rank: usize,
    size: usize,
    local_rank: usize,
    host: String,
    chunk_bytes: usize,
    lock: Mutex<()>,
}

impl MpiComm {
    /// Initialise MPI (or share the universe of a live `MpiComm`) and describe the world.
    /// Returns `None` when MPI was initialised and already finalised in this process (it
    /// cannot be started twice) or was initialised by someone else.
    pub fn init() -> Option<MpiComm> {
        let mut slot = UNIVERSE.lock().unwrap_or_else(|e| e.into_inner());
        let universe = match slot.upgrade() {
            Some(u) => u,
            None => {
                let (u, provided) = ::mpi::initialize_with_threading(Threading::Serialized)?;
                if provided < Threading::Serialized {
                    tracing::warn!(
                        "MPI provides thread level {provided:?} < Serialized; call collectives \
                         from the main thread only"
                    );
                }
                let u = Arc::new(u);
                *slot = Arc::downgrade(&u);
                u
            }
        };
        let world = SimpleCommunicator::world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        // ranks that share memory with this one (same node), ordered by world rank
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Some(MpiComm {
            _universe: universe,
            rank,
            size,
            local_rank,
            host: super::hostname(),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            lock: Mutex::new(()),
        })
    }

    /// Use rounds of at most `bytes` bytes per MPI call (at least 8; for tests of the
    /// multi-round paths). Every rank must use the same value.
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.clamp(8, DEFAULT_CHUNK_BYTES);
        self
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_root(&self, root: usize) {
        assert!(
            root < self.size,
            "MpiComm: root rank {root} does not exist (size {}); pass a rank < size()",
            self.size
        );
    }

    /// In-place all-reduce of `data` with `op`, in rounds of at most `chunk_bytes`.
    fn allreduce<T: Equivalence + Copy>(&self, data: &mut [T], op: SystemOperation) {
        let _g = self.guard();
        let world = SimpleCommunicator::world();
        let per = (self.chunk_bytes / std::mem::size_of::<T>()).max(1);
        let mut send = Vec::with_capacity(per.min(data.len()));
        for chunk in data.chunks_mut(per) {
            send.clear();
            send.extend_from_slice(chunk);
            world.all_reduce_into(&send[..], chunk, op);
        }
    }

    /// Lengths of every rank's buffer, known on every rank.
    fn all_lengths(world: &SimpleCommunicator, len: usize, size: usize) -> Vec<u64> {
        let mut lens = vec![0u64; size];
        world.all_gather_into(&(len as u64), &mut lens[..]);
        lens
    }

    /// Variable-length gather in rounds: in round `k` rank `r` sends bytes
    /// `[k·q, (k+1)·q)` of its buffer (clipped), with `q = chunk_bytes / size`, so one MPI call
    /// never moves more than `chunk_bytes`. `root = None` gathers on every rank.
    fn gather_rounds(&self, root: Option<usize>, data: &[u8]) -> Option<Vec<Vec<u8>>> {
        let _g = self.guard();
        let world = SimpleCommunicator::world();
        let lens = Self::all_lengths(&world, data.len(), self.size);
        let q = (self.chunk_bytes / self.size).max(1);
        let max_len = lens.iter().copied().max().unwrap_or(0) as usize;
        let rounds = max_len.div_ceil(q);
        let receives = root.is_none_or(|r| r == self.rank);
        let mut out: Vec<Vec<u8>> = if receives {
            lens.iter()
                .map(|&l| Vec::with_capacity(l as usize))
                .collect()
        } else {
            Vec::new()
        };
        let piece = |len: usize, k: usize| (k * q).min(len)..((k + 1) * q).min(len);
        let mut buf = Vec::new();
        for k in 0..rounds {
            let send = &data[piece(data.len(), k)];
            if !receives {
                let r = root.expect("non-receiving rank implies a root");
                world.process_at_rank(r as i32).gather_varcount_into(send);
                continue;
            }
            let counts: Vec<Count> = lens
                .iter()
                .map(|&l| piece(l as usize, k).len() as Count)
                .collect();
            let displs: Vec<Count> = counts
                .iter()
                .scan(0, |acc, &c| {
                    let d = *acc;
                    *acc += c;
                    Some(d)
                })
                .collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            buf.clear();
            buf.resize(total, 0u8);
            {
                let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                match root {
                    Some(r) => world
                        .process_at_rank(r as i32)
                        .gather_varcount_into_root(send, &mut part),
                    None => world.all_gather_varcount_into(send, &mut part),
                }
            }
            for (r, o) in out.iter_mut().enumerate() {
                let d = displs[r] as usize;
                o.extend_from_slice(&buf[d..d + counts[r] as usize]);
            }
        }
        receives.then_some(out)
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn barrier(&self) {
        let _g = self.guard();
        SimpleCommunicator::world().barrier();
    }

    fn broadcast_bytes(&self, root: usize, data: &mut Vec<u8>) {
        self.check_root(root);
        let _g = self.guard();
        let world = SimpleCommunicator::world();
        let proc = world.process_at_rank(root as i32);
        let mut len = data.len() as u64;
        proc.broadcast_into(&mut len);
        if self.rank != root {
            data.clear();
            data.resize(len as usize, 0);
        }
        for chunk in data.chunks_mut(self.chunk_bytes) {
            proc.broadcast_into(chunk);
        }
    }

    fn allreduce_sum_f32(&self, data: &mut [f32]) {
        self.allreduce(data, SystemOperation::sum());
    }

    fn allreduce_sum_f64(&self, data: &mut [f64]) {
        self.allreduce(data, SystemOperation::sum());
    }

    fn allreduce_max_f64(&self, data: &mut [f64]) {
        self.allreduce(data, SystemOperation::max());
    }

    fn gather_bytes(&self, root: usize, data: &[u8]) -> Option<Vec<Vec<u8>>> {
        self.check_root(root);
        self.gather_rounds(Some(root), data)
    }

    fn all_gather_bytes(&self, data: &[u8]) -> Vec<Vec<u8>> {
        self.gather_rounds(None, data)
            .expect("all-gather receives on every rank")
    }

    fn host(&self) -> String {
        self.host.clone()
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn name(&self) -> &'static str {
        "mpi"
    }
}
