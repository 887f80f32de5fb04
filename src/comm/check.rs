//! A collective self-test of a [`Comm`]: every rank runs it; each collective is checked
//! against the value it must produce for the world size. Used by `examples/comm_check.rs`
//! (a cluster sanity check: `mpirun -n 4 target/release/examples/comm_check`) and by the
//! `mpirun` integration test.

use super::{broadcast_serde, gather_serde, Comm};
use crate::{Error, Result};

/// Byte buffer that rank `r` contributes to the gathers: `17·r + 3·r²` bytes (rank 0 sends
/// nothing), byte `i` = `(31·r + i) mod 251`.
fn rank_bytes(r: usize, scale: usize) -> Vec<u8> {
    (0..(17 * r + 3 * r * r) * scale)
        .map(|i| ((31 * r + i) % 251) as u8)
        .collect()
}

fn fail(comm: &dyn Comm, what: &str, detail: String) -> Error {
    Error::Runtime(format!(
        "comm self-check ({}, rank {}/{}): {what}: {detail}",
        comm.name(),
        comm.rank(),
        comm.size()
    ))
}

/// Run every collective of `comm` and check the results. `scale` multiplies the gathered
/// buffer lengths (use a large value together with a small chunk size to exercise the
/// multi-round paths). Returns a one-line summary,
/// `comm_check OK rank r/size name=… local_rank=… host=… sum_f64=… max_f64=…`.
///
/// Must be called by every rank (it is collective).
pub fn self_check(comm: &dyn Comm, scale: usize) -> Result<String> {
    let (r, n) = (comm.rank(), comm.size());
    let nf = n as f64;
    comm.barrier();

    // allreduce: rank r contributes r + 1 (+ the element index)
    let mut f = vec![0f32; 1000];
    for (i, v) in f.iter_mut().enumerate() {
        *v = (r + 1) as f32 + i as f32;
    }
    comm.allreduce_sum_f32(&mut f);
    let tri = nf * (nf + 1.0) / 2.0;
    for (i, &v) in f.iter().enumerate() {
        let want = tri + nf * i as f64;
        if (v as f64 - want).abs() > 1e-6 * want.abs().max(1.0) {
            return Err(fail(
                comm,
                "allreduce_sum_f32",
                format!("[{i}] = {v}, want {want}"),
            ));
        }
    }
    let mut d = vec![(r + 1) as f64, -0.5 * r as f64, 1e-300];
    comm.allreduce_sum_f64(&mut d);
    let want = [tri, -0.25 * nf * (nf - 1.0), nf * 1e-300];
    if d.iter()
        .zip(&want)
        .any(|(a, b)| (a - b).abs() > 1e-12 * b.abs().max(1e-300))
    {
        return Err(fail(
            comm,
            "allreduce_sum_f64",
            format!("{d:?}, want {want:?}"),
        ));
    }
    let mut m = vec![r as f64, -(r as f64)];
    comm.allreduce_max_f64(&mut m);
    if m != [nf - 1.0, 0.0] {
        return Err(fail(
            comm,
            "allreduce_max_f64",
            format!("{m:?}, want [{}, 0]", nf - 1.0),
        ));
    }

    // broadcast from the last rank, of a buffer other ranks must resize
    let root = n - 1;
    let mut b = if r == root {
        rank_bytes(root + 1, scale)
    } else {
        vec![9u8; 3]
    };
    comm.broadcast_bytes(root, &mut b);
    if b != rank_bytes(root + 1, scale) {
        return Err(fail(
            comm,
            "broadcast_bytes",
            format!("{} bytes differ", b.len()),
        ));
    }

    // gathers of variable lengths, rank 0 empty
    let mine = rank_bytes(r, scale);
    let g = comm.gather_bytes(0, &mine);
    match (r, g) {
        (0, Some(all)) => {
            for (k, v) in all.iter().enumerate() {
                if *v != rank_bytes(k, scale) {
                    return Err(fail(
                        comm,
                        "gather_bytes",
                        format!("entry of rank {k} differs"),
                    ));
                }
            }
            if all.len() != n {
                return Err(fail(comm, "gather_bytes", format!("{} entries", all.len())));
            }
        }
        (0, None) => return Err(fail(comm, "gather_bytes", "None on the root".into())),
        (_, Some(_)) => return Err(fail(comm, "gather_bytes", "Some on a non-root".into())),
        (_, None) => {}
    }
    let all = comm.all_gather_bytes(&mine);
    if all.len() != n
        || all
            .iter()
            .enumerate()
            .any(|(k, v)| *v != rank_bytes(k, scale))
    {
        return Err(fail(comm, "all_gather_bytes", "entries differ".into()));
    }

    // serde helpers and host / local rank consistency
    let host = comm.host();
    let recs = gather_serde(comm, 0, &(r, host.clone(), comm.local_rank()));
    let recs: Vec<(usize, String, usize)> = broadcast_serde(comm, 0, recs);
    if recs.len() != n || recs.iter().enumerate().any(|(k, rec)| rec.0 != k) {
        return Err(fail(
            comm,
            "gather_serde/broadcast_serde",
            format!("{recs:?}"),
        ));
    }
    let same_host: Vec<usize> = recs
        .iter()
        .filter(|rec| rec.1 == host)
        .map(|rec| rec.2)
        .collect();
    let mut sorted = same_host.clone();
    sorted.sort_unstable();
    if sorted != (0..same_host.len()).collect::<Vec<_>>() {
        return Err(fail(
            comm,
            "local_rank",
            format!(
                "local ranks on {host} are {same_host:?}, want 0..{}",
                same_host.len()
            ),
        ));
    }
    comm.barrier();
    Ok(format!(
        "comm_check OK rank {r}/{n} name={} local_rank={} host={host} sum_f64={} max_f64={}",
        comm.name(),
        comm.local_rank(),
        d[0],
        m[0]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::LocalComm;

    #[test]
    fn self_check_passes_on_local_comm() {
        let s = self_check(&LocalComm, 3).unwrap();
        assert!(
            s.starts_with("comm_check OK rank 0/1 name=local local_rank=0"),
            "{s}"
        );
        assert!(s.contains("sum_f64=1 max_f64=0"), "{s}");
    }

    /// A size-1 communicator whose all-gather appends a byte: the check must notice.
    struct Lossy;
    impl Comm for Lossy {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            1
        }
        fn barrier(&self) {}
        fn broadcast_bytes(&self, _: usize, _: &mut Vec<u8>) {}
        fn allreduce_sum_f32(&self, _: &mut [f32]) {}
        fn allreduce_sum_f64(&self, _: &mut [f64]) {}
        fn allreduce_max_f64(&self, _: &mut [f64]) {}
        fn gather_bytes(&self, _: usize, d: &[u8]) -> Option<Vec<Vec<u8>>> {
            Some(vec![d.to_vec()])
        }
        fn all_gather_bytes(&self, d: &[u8]) -> Vec<Vec<u8>> {
            vec![[d, b"x"].concat()]
        }
        fn host(&self) -> String {
            "h".into()
        }
        fn local_rank(&self) -> usize {
            0
        }
        fn name(&self) -> &'static str {
            "lossy"
        }
    }

    #[test]
    fn self_check_detects_a_wrong_collective() {
        let e = self_check(&Lossy, 1).unwrap_err().to_string();
        assert!(e.contains("all_gather_bytes"), "{e}");
    }
}
