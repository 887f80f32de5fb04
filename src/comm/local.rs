//! The communicator of a single process: rank 0 of 1. Every collective is the identity.

use super::Comm;

/// A communicator of size 1 (no MPI): reductions leave the data as they are, gathers return
/// this rank's buffer alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalComm;

fn check_root(root: usize) {
    assert!(
        root == 0,
        "LocalComm: root rank {root} does not exist (size 1); the caller must pass a rank < size()"
    );
}

impl Comm for LocalComm {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn barrier(&self) {}

    fn broadcast_bytes(&self, root: usize, _data: &mut Vec<u8>) {
        check_root(root);
    }

    fn allreduce_sum_f32(&self, _data: &mut [f32]) {}

    fn allreduce_sum_f64(&self, _data: &mut [f64]) {}

    fn allreduce_max_f64(&self, _data: &mut [f64]) {}

    fn gather_bytes(&self, root: usize, data: &[u8]) -> Option<Vec<Vec<u8>>> {
        check_root(root);
        Some(vec![data.to_vec()])
    }

    fn all_gather_bytes(&self, data: &[u8]) -> Vec<Vec<u8>> {
        vec![data.to_vec()]
    }

    fn host(&self) -> String {
        super::hostname()
    }

    fn local_rank(&self) -> usize {
        0
    }

    fn name(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_collectives_are_identity() {
        let c = LocalComm;
        assert_eq!(
            (c.rank(), c.size(), c.local_rank(), c.name()),
            (0, 1, 0, "local")
        );
        c.barrier();
        let mut b = vec![1u8, 2, 3];
        c.broadcast_bytes(0, &mut b);
        assert_eq!(b, vec![1, 2, 3]);
        let mut f = [1.5f32, -2.0];
        c.allreduce_sum_f32(&mut f);
        assert_eq!(f, [1.5, -2.0]);
        let mut d = [0.25f64, 7.0];
        c.allreduce_sum_f64(&mut d);
        assert_eq!(d, [0.25, 7.0]);
        c.allreduce_max_f64(&mut d);
        assert_eq!(d, [0.25, 7.0]);
        assert_eq!(c.gather_bytes(0, b"abc"), Some(vec![b"abc".to_vec()]));
        assert_eq!(c.all_gather_bytes(b""), vec![Vec::<u8>::new()]);
        assert!(!c.host().is_empty());
    }

    #[test]
    #[should_panic(expected = "root rank 1 does not exist")]
    fn local_bad_root_panics() {
        LocalComm.gather_bytes(1, b"x");
    }
}
