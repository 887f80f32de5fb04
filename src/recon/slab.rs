//! Slabs along Y (the tilt axis): split a volume that does not fit a memory budget into
//! pieces of whole `[z, ·, x]` planes, each reconstructed on its own.
//!
//! Frames: voxel `(iz, iy, ix)` of the full volume `(nz, ny, nx)` of `v` Å is the specimen
//! point `((ix − nx/2)·v, (iy − ny/2)·v, (iz − nz/2)·v)` Å (`recon::backproject`). A slab of
//! `h` lines starting at line `y0` is a volume `(nz, h, nx)` whose own centre is line `h/2`,
//! so its voxel `j` is the full volume's line `y0 + j` when every projection is translated by
//! `dy = (y0 + h/2 − ny/2)·v` Å along specimen Y ([`slab_projections`]).
//!
//! WBP is voxel-wise, so slabs need no overlap. SIRT couples neighbouring voxels through the
//! projector: two voxels interact in one iteration when their bilinear footprints share a
//! pixel of some tilt. [`sirt_hop_lines`] bounds how far apart in Y such voxels can be; after
//! `k` iterations a voxel depends only on data within `k` hops, so a slab padded with a halo
//! of `(k + 1)` hops on each side (one more for the ray-length weights `R`) reproduces the
//! one-piece SIRT exactly in its core lines, for any geometry (axis angle, x-tilt, shifts).

use crate::core::geometry::Projection;
use crate::{Error, Result};

/// One slab: the core lines `[y0, y1)` it delivers and the padded lines `[py0, py1)` it
/// reconstructs (core plus halo, clipped to the volume).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slab {
    pub y0: usize,
    pub y1: usize,
    pub py0: usize,
    pub py1: usize,
}

impl Slab {
    /// Padded height `py1 − py0`.
    pub fn padded_height(&self) -> usize {
        self.py1 - self.py0
    }
    /// Offset of the core inside the padded slab, lines.
    pub fn core_offset(&self) -> usize {
        self.y0 - self.py0
    }
}

/// How a volume of `ny` lines is split along Y.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlabPlan {
    pub ny: usize,
    /// Halo lines on each side of every slab (0 for one slab or for WBP).
    pub halo: usize,
    pub slabs: Vec<Slab>,
}

/// Memory of a reconstruction as a function of the slab height: `fixed_bytes` that do not
/// depend on it (images, weights) plus `bytes_per_line` for every padded Y line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryModel {
    pub fixed_bytes: u64,
    pub bytes_per_line: u64,
}

impl MemoryModel {
    /// Bytes needed for a slab of `lines` padded lines.
    pub fn bytes(&self, lines: usize) -> u64 {
        self.fixed_bytes + self.bytes_per_line * lines as u64
    }
}

/// Split `ny` lines so that each padded slab fits `budget_bytes` under `mem`, with `halo`
/// lines of overlap on each side of every slab when there is more than one.
///
/// One slab when the whole volume fits. Otherwise the core height is
/// `max lines − 2·halo`, evened out over the slab count. Errors ([`Error::Runtime`]) when
/// not even a slab of one core line fits, naming the budget and what to change.
pub fn plan_slabs(ny: usize, mem: MemoryModel, budget_bytes: u64, halo: usize) -> Result<SlabPlan> {
    if ny == 0 {
        return Err(Error::Runtime("slab plan: the volume has no Y line".into()));
    }
    if mem.bytes(ny) <= budget_bytes {
        return Ok(SlabPlan {
            ny,
            halo: 0,
            slabs: vec![Slab {
                y0: 0,
                y1: ny,
                py0: 0,
                py1: ny,
            }],
        });
    }
    let max_lines = budget_bytes.saturating_sub(mem.fixed_bytes) / mem.bytes_per_line.max(1);
    let max_lines = max_lines.min(ny as u64) as usize;
    if max_lines < 2 * halo + 1 {
        return Err(Error::Runtime(format!(
            "memory budget {} is too small for this reconstruction: {} fixed plus {} per Y \
             line, and a slab needs at least {} lines ({halo}-line halo on each side for an \
             exact SIRT): raise max_memory to at least {}, use fewer SIRT iterations (the \
             halo grows with them), a larger binning or WBP",
            fmt_bytes(budget_bytes),
            fmt_bytes(mem.fixed_bytes),
            fmt_bytes(mem.bytes_per_line),
            2 * halo + 1,
            fmt_bytes(mem.bytes(2 * halo + 1)),
        )));
    }
    let core_max = max_lines - 2 * halo;
    let n = ny.div_ceil(core_max);
    let core = ny.div_ceil(n);
    let slabs = (0..n)
        .map(|i| {
            let y0 = i * core;
            let y1 = ((i + 1) * core).min(ny);
            Slab {
                y0,
                y1,
                py0: y0.saturating_sub(halo),
                py1: (y1 + halo).min(ny),
            }
        })
        .filter(|s| s.y1 > s.y0)
        .collect();
    Ok(SlabPlan { ny, halo, slabs })
}

/// The projections of lines `[py0, py0 + h)` of a full volume of `ny` lines of `voxel_a` Å,
/// for a slab volume `(nz, h, nx)` centred on its own line `h/2` (module docs): every
/// projection translated by `dy = (py0 + h/2 − ny/2)·voxel_a` Å along specimen Y.
pub fn slab_projections(
    projections: &[Projection],
    ny: usize,
    py0: usize,
    h: usize,
    voxel_a: f64,
) -> Vec<Projection> {
    let dy = (py0 as f64 + (h / 2) as f64 - (ny / 2) as f64) * voxel_a;
    projections
        .iter()
        .map(|p| p.translated([0.0, dy, 0.0]))
        .collect()
}

/// Upper bound, in Y lines, on the distance between two voxels of a `(nz, ny, nx)` volume
/// of `voxel_a` Å whose bilinear footprints share a pixel in some tilt: the largest `|Δy|`
/// with `|Δu| ≤ 2`, `|Δv| ≤ 2` (pixels), `|Δx| < nx`, `|Δz| < nz`, `|Δy| < ny` (voxels),
/// found exactly by enumerating the vertices of that polytope (a 3-variable linear
/// programme) for every tilt. With no x-tilt the rays stay in planes of constant Y and the
/// bound is `2·(|sin a| + |cos a|)` for an in-plane axis `a`; an x-tilt adds the Y drift of a
/// ray through the thickness.
pub fn sirt_hop_lines(
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
) -> f64 {
    let (nz, ny, nx) = vol_shape;
    let mut hop: f64 = 0.0;
    for p in projections {
        // linear part on voxel offsets (Δx, Δy, Δz)
        let a = [
            p.m[0][0] * voxel_a,
            p.m[0][1] * voxel_a,
            p.m[0][2] * voxel_a,
        ];
        let b = [
            p.m[1][0] * voxel_a,
            p.m[1][1] * voxel_a,
            p.m[1][2] * voxel_a,
        ];
        let planes: [([f64; 3], f64); 5] = [
            (a, 2.0),
            (b, 2.0),
            ([1.0, 0.0, 0.0], nx as f64),
            ([0.0, 0.0, 1.0], nz as f64),
            ([0.0, 1.0, 0.0], ny as f64),
        ];
        let feasible = |d: [f64; 3]| {
            planes
                .iter()
                .all(|(n, r)| (n[0] * d[0] + n[1] * d[1] + n[2] * d[2]).abs() <= r * (1.0 + 1e-9))
        };
        for i in 0..5 {
            for j in i + 1..5 {
                for k in j + 1..5 {
                    for s in 0..8 {
                        let sg = |bit: usize| if s >> bit & 1 == 1 { -1.0 } else { 1.0 };
                        let rows = [planes[i].0, planes[j].0, planes[k].0];
                        let rhs = [
                            sg(0) * planes[i].1,
                            sg(1) * planes[j].1,
                            sg(2) * planes[k].1,
                        ];
                        if let Some(d) = solve3(rows, rhs) {
                            if feasible(d) {
                                hop = hop.max(d[1].abs());
                            }
                        }
                    }
                }
            }
        }
    }
    hop
}

/// Solve the 3×3 system `rows·d = rhs` (Cramer's rule); `None` when (nearly) singular.
fn solve3(r: [[f64; 3]; 3], rhs: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(r);
    let scale = r.iter().flatten().map(|v| v.abs()).fold(0.0, f64::max);
    if d.abs() <= 1e-12 * scale.powi(3).max(1e-300) {
        return None;
    }
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut m = r;
        for (row, &v) in m.iter_mut().zip(&rhs) {
            row[c] = v;
        }
        *o = det(m) / d;
    }
    Some(out)
}

/// Halo (lines on each side) that makes a slab SIRT of `iterations` exact: `(iterations + 1)`
/// hops of [`sirt_hop_lines`], rounded up.
pub fn sirt_halo(
    projections: &[Projection],
    vol_shape: (usize, usize, usize),
    voxel_a: f64,
    iterations: u32,
) -> usize {
    let hop = sirt_hop_lines(projections, vol_shape, voxel_a);
    ((iterations as f64 + 1.0) * hop).ceil() as usize
}

/// Human-readable bytes: `512 MiB`, `1.2 GiB`.
pub fn fmt_bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let v = b as f64;
    if v >= K * K * K {
        format!("{:.1} GiB", v / (K * K * K))
    } else if v >= K * K {
        format!("{:.0} MiB", v / (K * K))
    } else if v >= K {
        format!("{:.0} KiB", v / K)
    } else {
        format!("{b} B")
    }
}

/// Parse a byte count: a plain number of bytes or one with a suffix `K`, `M`, `G`, `T`
/// (powers of 1024, optional `B`/`iB`, case-insensitive): `512M`, `2GiB`, `1.5G`.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then_some((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::geometry::TiltImage;

    #[test]
    fn plan_covers_every_line_once_and_fits() {
        let mem = MemoryModel {
            fixed_bytes: 1000,
            bytes_per_line: 100,
        };
        let p = plan_slabs(50, mem, 1_000_000, 3).unwrap();
        assert_eq!(p.slabs.len(), 1);
        assert_eq!(p.halo, 0);
        // room for 20 lines: core 14 → 4 slabs of 13
        let p = plan_slabs(50, mem, 1000 + 100 * 20, 3).unwrap();
        assert_eq!(p.slabs.len(), 4);
        let mut next = 0;
        for s in &p.slabs {
            assert_eq!(s.y0, next);
            next = s.y1;
            assert!(mem.bytes(s.padded_height()) <= 3000);
            assert_eq!(s.py0, s.y0.saturating_sub(3));
        }
        assert_eq!(next, 50);
        let e = plan_slabs(50, mem, 1000 + 100 * 6, 3).unwrap_err();
        assert!(e.to_string().contains("raise max_memory"), "{e}");
    }

    #[test]
    fn slab_projection_maps_slab_voxels_to_full_volume_pixels() {
        let mut t = TiltImage::nominal(37.0, 85.0);
        t.x_tilt_deg = 4.0;
        t.shift_x_a = 7.0;
        let p = t.projection(3.0, 40, 30);
        let (ny, py0, h, v) = (30usize, 9usize, 7usize, 3.0);
        let s = &slab_projections(&[p], ny, py0, h, v)[0];
        for j in 0..h {
            let full = [(5.0 - 20.0) * v, ((py0 + j) as f64 - 15.0) * v, -2.0 * v];
            let slab = [full[0], (j as f64 - (h / 2) as f64) * v, full[2]];
            let (a, b) = (p.project(full), s.project(slab));
            assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn hop_matches_the_closed_form_without_x_tilt() {
        for axis in [0.0f64, 85.0, -30.0] {
            let projs: Vec<_> = [-60.0, 0.0, 45.0]
                .iter()
                .map(|&a| TiltImage::nominal(a, axis).projection(2.0, 64, 64))
                .collect();
            let hop = sirt_hop_lines(&projs, (16, 64, 64), 2.0);
            let want = 2.0 * (axis.to_radians().sin().abs() + axis.to_radians().cos().abs());
            assert!((hop - want).abs() < 1e-6, "axis {axis}: {hop} vs {want}");
        }
        // an x-tilt makes rays drift in Y through the thickness
        let mut t = TiltImage::nominal(30.0, 0.0);
        t.x_tilt_deg = 10.0;
        let hop = sirt_hop_lines(&[t.projection(2.0, 64, 64)], (16, 64, 64), 2.0);
        assert!(hop > 2.0 + 16.0 * 0.1, "{hop}");
    }

    #[test]
    fn bytes_parse_and_format() {
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(fmt_bytes(512 << 20), "512 MiB");
        assert_eq!(fmt_bytes(1_288_490_189), "1.2 GiB");
    }
}
