//! SIRT checkpoints: the iterate `x_k`, the iteration count `k`, the residual history and a
//! hash of everything the iteration depends on, in one little-endian binary file written
//! atomically (`io::atomic`).
//!
//! Layout: magic `LAMSIRT1` (8 bytes); input hash (64 ASCII hex bytes, SHA-256);
//! `k` (u32); `nz, ny, nx` (u64 each); residual count `n` (u64); `n` residuals and `n`
//! weighted residuals (f64); `nz·ny·nx` voxels (f32, `[z, y, x]`, x fastest).

use crate::core::geometry::Projection;
use crate::io::atomic::write_atomic;
use crate::io::container::input_hash;
use crate::{Error, Result};
use ndarray::{Array3, ArrayView3, Axis};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"LAMSIRT1";

/// The state of a SIRT run after `iteration` completed updates.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// SHA-256 (hex, 64 characters) of the inputs, see [`sirt_input_hash`].
    pub hash: String,
    /// Completed iterations `k` (the volume is `x_k`).
    pub iteration: u32,
    /// `‖b − A·x_j‖` for `j < k`.
    pub residuals: Vec<f64>,
    /// `‖R^{1/2}(b − A·x_j)‖` for `j < k`.
    pub weighted_residuals: Vec<f64>,
    /// `x_k`, `[z, y, x]`.
    pub volume: Array3<f32>,
}

/// Hash of a SIRT problem: the prepared images `b` `[tilt, y, x]` (per tilt, so no copy of
/// the whole stack is made), the projections, the volume shape and voxel size, and a text
/// describing the solver parameters that change the iterates (relaxation, positivity,
/// mask; not the iteration count, so a run can be extended).
pub fn sirt_input_hash(
    b: ArrayView3<f32>,
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
    solver: &str,
) -> String {
    let tilt_hashes: Vec<String> = b
        .axis_iter(Axis(0))
        .map(|img| {
            let bytes: Vec<u8> = img.iter().flat_map(|v| v.to_le_bytes()).collect();
            input_hash(&[&bytes])
        })
        .collect();
    let geom: Vec<u8> = projections
        .iter()
        .flat_map(|p| p.m.iter().flatten().flat_map(|v| v.to_le_bytes()))
        .collect();
    let shape = format!("{:?} {:?} {voxel_a:e} {:?}", b.dim(), vol_shape, solver);
    let mut parts: Vec<&[u8]> = vec![b"sirt-v1", shape.as_bytes(), &geom];
    parts.extend(tilt_hashes.iter().map(|h| h.as_bytes()));
    input_hash(&parts)
}

/// Write a checkpoint to `path` atomically (temp name, fsync, rename): `hash`, completed
/// iterations, residual histories (same length) and the volume `x_k` `[z, y, x]`.
pub fn write(
    path: &Path,
    hash: &str,
    iteration: u32,
    residuals: &[f64],
    weighted_residuals: &[f64],
    volume: ArrayView3<f32>,
) -> Result<()> {
    let (nz, ny, nx) = volume.dim();
    write_atomic(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(hash.as_bytes())?;
        w.write_all(&iteration.to_le_bytes())?;
        for n in [nz, ny, nx, residuals.len()] {
            w.write_all(&(n as u64).to_le_bytes())?;
        }
        for v in residuals.iter().chain(weighted_residuals) {
            w.write_all(&v.to_le_bytes())?;
        }
        let mut buf = Vec::with_capacity(4 * nx);
        for row in volume.lanes(Axis(2)) {
            buf.clear();
            buf.extend(row.iter().flat_map(|v| v.to_le_bytes()));
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Read a checkpoint written by [`write`]. Errors ([`Error::BadInput`]) name the file and
/// say to delete it when it is not a complete lamella checkpoint.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: &str| {
        Error::bad_input(
            path,
            what,
            "not a complete lamella SIRT checkpoint (truncated or another file): delete it to \
             start the reconstruction afresh",
        )
    };
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    if take(8) != Some(MAGIC.as_slice()) {
        return Err(bad("magic"));
    }
    let hash = String::from_utf8(take(64).ok_or_else(|| bad("hash"))?.to_vec())
        .map_err(|_| bad("hash"))?;
    let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
    let u64_at = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    let iteration = u32_at(take(4).ok_or_else(|| bad("iteration"))?);
    let mut dims = [0usize; 4];
    for d in dims.iter_mut() {
        *d = usize::try_from(u64_at(take(8).ok_or_else(|| bad("shape"))?))
            .map_err(|_| bad("shape"))?;
    }
    let [nz, ny, nx, nres] = dims;
    let mut f64s = |n: usize| -> Option<Vec<f64>> {
        let s = take(n.checked_mul(8)?)?;
        Some(
            s.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        )
    };
    let residuals = f64s(nres).ok_or_else(|| bad("residuals"))?;
    let weighted_residuals = f64s(nres).ok_or_else(|| bad("residuals"))?;
    let n = nz
        .checked_mul(ny)
        .and_then(|v| v.checked_mul(nx))
        .ok_or_else(|| bad("shape"))?;
    let data = take(n.checked_mul(4).ok_or_else(|| bad("shape"))?).ok_or_else(|| bad("volume"))?;
    let vox: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    if take(1).is_some() {
        return Err(bad("length"));
    }
    let volume = Array3::from_shape_vec((nz, ny, nx), vox).map_err(|_| bad("shape"))?;
    Ok(Checkpoint {
        hash,
        iteration,
        residuals,
        weighted_residuals,
        volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::TiltImage;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.ckpt");
        let ck = Checkpoint {
            hash: "ab".repeat(32),
            iteration: 7,
            residuals: vec![3.0, 2.0],
            weighted_residuals: vec![1.5, 1.0],
            volume: Array3::from_shape_fn((2, 3, 4), |(z, y, x)| (z * 12 + y * 4 + x) as f32 - 0.5),
        };
        write(
            &p,
            &ck.hash,
            ck.iteration,
            &ck.residuals,
            &ck.weighted_residuals,
            ck.volume.view(),
        )
        .unwrap();
        assert_eq!(read(&p).unwrap(), ck);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let e = read(&p).unwrap_err();
        assert!(e.to_string().contains("delete it"), "{e}");
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn hash_changes_with_any_input() {
        let b = Array3::from_shape_fn((2, 4, 4), |(t, y, x)| (t + y + x) as f32);
        let p = vec![TiltImage::nominal(0.0, 85.0).projection(2.0, 4, 4); 2];
        let h = sirt_input_hash(b.view(), &p, (2, 4, 4), 2.0, "r1");
        assert_eq!(h, sirt_input_hash(b.view(), &p, (2, 4, 4), 2.0, "r1"));
        let mut b2 = b.clone();
        b2[[1, 2, 3]] += 1e-3;
        assert_ne!(h, sirt_input_hash(b2.view(), &p, (2, 4, 4), 2.0, "r1"));
        assert_ne!(h, sirt_input_hash(b.view(), &p, (3, 4, 4), 2.0, "r1"));
        assert_ne!(h, sirt_input_hash(b.view(), &p, (2, 4, 4), 2.0, "r2"));
        let q = vec![TiltImage::nominal(1.0, 85.0).projection(2.0, 4, 4); 2];
        assert_ne!(h, sirt_input_hash(b.view(), &q, (2, 4, 4), 2.0, "r1"));
    }
}
