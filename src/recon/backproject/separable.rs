//! Fast CPU back- and forward projectors for *separable* geometry: the tilt axis lies along
//! an image axis and there is no x-tilt, so one image coordinate (`t`, along the axis)
//! depends only on the voxel's `iy` (`t = t0 + iy`, unit step) and the other (`s`, across the
//! axis) only on `(ix, iz)` (`s = s0 + iz·b + ix·a`). This is the geometry of an aligned stack
//! (IMOD, ASTRA's slice-by-slice parallel beam) and of `TiltImage`s with axis 0° (`t = v`) or
//! −90° (`t = u`).
//!
//! Then the bilinear sample of every voxel of a volume y line at `(ix, iz)` reads the same
//! two image columns `x0 = ⌊s⌋`, `x0 + 1` (in `s`), at consecutive rows `iy + k`,
//! `iy + k + 1` with the same weights (`k = ⌊t0⌋`, `fy = t0 − k` per tilt), so a run of
//! `YC` lines is a short SIMD loop over contiguous memory: no gathers, no per-voxel bounds
//! test (the in-range `iy` form an interval per tilt, the in-range `ix` an interval per
//! plane). The images are copied once per call as columns along `t` (`S[s][t]`, one zero
//! pad row), and the volume is worked in tiles transposed to `[z][x][y]` in cache.
//!
//! Both kernels evaluate the reference expressions of [`super::bilinear_f32`] and the splat
//! of `recon::project` with the same weights (`s` exactly as the reference; `t` to within
//! the ≤ 1e-5 px tolerance below), so they agree with the general kernels to f32 rounding,
//! and the forward projector is the adjoint of the back-projector to rounding.

use super::{inside_range, VoxelCoeffs};
use ndarray::{Array3, ArrayView3, Axis};
use rayon::prelude::*;

/// Which image coordinate runs along the volume's y axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Along {
    /// `t = u` (image x; tilt axis along image x, e.g. axis −90°).
    X,
    /// `t = v` (image y; tilt axis along image y, axis 0°).
    Y,
}

/// One tilt in separable form.
#[derive(Clone, Copy, Debug)]
struct SepTilt {
    /// `s` per voxel x step.
    a: f32,
    /// `s` per voxel z step.
    b: f32,
    /// `s` of voxel (0, ·, 0).
    s0: f32,
    /// `⌊t0⌋`: the image row (along `t`) of line `iy` is `iy + k`.
    k: isize,
    /// `t0 − k`, the weight of row `iy + k + 1`.
    fy: f32,
    /// Volume lines `ylo..yhi` map inside `[0, nl − 1]` along `t`.
    ylo: usize,
    yhi: usize,
}

/// A tilt series' coefficients in separable form (see [`detect`]).
#[derive(Clone, Debug)]
pub(crate) struct Separable {
    pub(crate) along: Along,
    tilts: Vec<SepTilt>,
    /// Image extent across the axis (`s`) and along it (`t`), pixels.
    ns: usize,
    nl: usize,
}

/// Largest coordinate error (pixels, over the whole volume) tolerated when a coefficient
/// that should vanish for separability is not exactly 0 (e.g. cos 90° in f64).
const TOL_PX: f64 = 1e-5;

/// The separable form of `coeffs` for a volume `(nz, ny, nx)` and images `(iny, inx)`, or
/// `None` when the geometry is not separable (tilt axis off the image axes, x-tilt, voxel ≠
/// pixel along the axis, axis direction reversed) or degenerate.
pub(crate) fn detect(
    coeffs: &[VoxelCoeffs],
    (nz, ny, nx): (usize, usize, usize),
    (iny, inx): (usize, usize),
) -> Option<Separable> {
    if coeffs.is_empty() || nx == 0 || ny == 0 || nz == 0 || iny < 2 || inx < 2 {
        return None;
    }
    if coeffs.iter().flatten().any(|c| !c.is_finite()) {
        return None;
    }
    let zero = |c: f32, n: usize| (c as f64).abs() * (n - 1) as f64 <= TOL_PX;
    let one = |c: f32, n: usize| (c as f64 - 1.0).abs() * (n - 1) as f64 <= TOL_PX;
    // u = c3 + iy·c1 + iz·c2 + ix·c0,  v = c7 + iy·c5 + iz·c6 + ix·c4
    let along = if coeffs
        .iter()
        .all(|c| zero(c[1], ny) && zero(c[4], nx) && zero(c[6], nz) && one(c[5], ny))
    {
        Along::Y
    } else if coeffs
        .iter()
        .all(|c| zero(c[5], ny) && zero(c[0], nx) && zero(c[2], nz) && one(c[1], ny))
    {
        Along::X
    } else {
        return None;
    };
    let (ns, nl) = match along {
        Along::Y => (inx, iny),
        Along::X => (iny, inx),
    };
    let tmax = (nl - 1) as f32;
    let tilts = coeffs
        .iter()
        .map(|c| {
            let (a, b, s0, t0, dt) = match along {
                Along::Y => (c[0], c[2], c[3], c[7], c[5]),
                Along::X => (c[4], c[6], c[7], c[3], c[1]),
            };
            // the reference's in-range test along t (monotone in iy)
            let inside = |iy: usize| {
                let t = t0 + iy as f32 * dt;
                t >= 0.0 && t <= tmax
            };
            let kf = t0.floor();
            let k = kf as isize;
            let ylo = (0..ny).find(|&i| inside(i)).unwrap_or(ny);
            let yhi = (ylo..ny).find(|&i| !inside(i)).unwrap_or(ny);
            // rows iy + k and iy + k + 1 must lie in 0..=nl (row nl is the zero pad)
            let ylo = ylo.max((-k).max(0) as usize);
            let yhi = yhi.min((nl as isize - k).max(0) as usize);
            SepTilt {
                a,
                b,
                s0,
                k,
                fy: t0 - kf,
                ylo,
                yhi: yhi.max(ylo),
            }
        })
        .collect();
    Some(Separable {
        along,
        tilts,
        ns,
        nl,
    })
}

/// Volume lines per SIMD run (the lanes) and planes per back-projection task.
const YC: usize = 16;
const ZT: usize = 8;
/// Voxels along x per block of the back-projector's tile loop.
const XB: usize = 128;
/// Planes per block of the forward projector's transposed volume copy.
const ZB: usize = 8;
/// Rows of one forward-projection column segment: the `YC` lanes and the row below.
const LD: usize = YC + 1;
/// Stride of a transposed volume line in the forward projector: a zero, the `YC` lanes,
/// a zero (so that every output row reads lanes `r − 1` and `r` without a branch).
const VS: usize = YC + 2;

/// The images as columns along `t`: `S[tilt][s][t]`, `t` contiguous, column length
/// `nl + 1` (a zero pad row). Blocked copy (a transpose when `t` is image y).
fn columns(images: ArrayView3<f32>, sep: &Separable) -> Vec<f32> {
    const B: usize = 32;
    let ld = sep.nl + 1;
    let plane = sep.ns * ld;
    let images = images.as_standard_layout();
    let (_, iny, inx) = images.dim();
    let src = images.as_slice().expect("standard layout");
    let mut store = vec![0.0f32; images.len_of(Axis(0)) * plane];
    store
        .par_chunks_mut(plane)
        .zip(src.par_chunks(iny * inx))
        .for_each(|(dst, im)| match sep.along {
            // s = x, t = y: transpose in B × B blocks
            Along::Y => {
                for y0 in (0..iny).step_by(B) {
                    for x0 in (0..inx).step_by(B) {
                        for y in y0..(y0 + B).min(iny) {
                            let row = &im[y * inx..(y + 1) * inx];
                            for x in x0..(x0 + B).min(inx) {
                                dst[x * ld + y] = row[x];
                            }
                        }
                    }
                }
            }
            // s = y, t = x: row copies
            Along::X => {
                for y in 0..iny {
                    dst[y * ld..y * ld + inx].copy_from_slice(&im[y * inx..(y + 1) * inx]);
                }
            }
        });
    store
}

/// Back-project with a separable geometry (same result as the general kernel to f32
/// rounding). `images` `[tilt, y, x]`, one [`SepTilt`] per image.
pub(crate) fn backproject(
    images: ArrayView3<f32>,
    sep: &Separable,
    vol_shape: (usize, usize, usize),
    simd: bool,
) -> Array3<f32> {
    assert_eq!(images.len_of(Axis(0)), sep.tilts.len());
    let (nz, ny, nx) = vol_shape;
    let mut vol = Array3::<f32>::zeros(vol_shape);
    if nz == 0 || ny == 0 || nx == 0 {
        return vol;
    }
    let store = columns(images, sep);
    let out = vol.as_slice_mut().expect("fresh array is contiguous");
    let tasks = super::tiles_mut(out, vol_shape, ZT, YC);
    tasks.into_par_iter().for_each(|(z0, y0, mut chunks)| {
        let nzt = chunks.len();
        let nyt = chunks[0].len() / nx;
        let mut acc = vec![0.0f32; nzt * nx * YC];
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is set only after detecting AVX2 and FMA.
            unsafe { bp_tile_avx2(&mut acc, &store, sep, (z0, nzt), (y0, nyt), nx) };
        } else {
            bp_tile(&mut acc, &store, sep, (z0, nzt), (y0, nyt), nx);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = simd;
            bp_tile(&mut acc, &store, sep, (z0, nzt), (y0, nyt), nx);
        }
        for (dz, chunk) in chunks.iter_mut().enumerate() {
            for (j, line) in chunk.chunks_mut(nx).enumerate() {
                for (ix, v) in line.iter_mut().enumerate() {
                    *v = acc[(dz * nx + ix) * YC + j];
                }
            }
        }
    });
    vol
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bp_tile_avx2(
    acc: &mut [f32],
    store: &[f32],
    sep: &Separable,
    z: (usize, usize),
    y: (usize, usize),
    nx: usize,
) {
    bp_tile(acc, store, sep, z, y, nx)
}

/// The `ix` of one plane whose `s = sl + ix·a` lies inside `[0, smax]`: `(lo, hi, check)`,
/// where `check` says that the range is the whole line and each voxel must be tested (the
/// interval estimate failed). Callers loop without closures, so that the loop body is
/// compiled inside their `target_feature` function.
#[inline(always)]
fn inside(nx: usize, sl: f32, a: f32, smax: f32) -> (usize, usize, bool) {
    match inside_range(nx, (sl, a), (0.0, 0.0), (smax, 1.0)) {
        Some((lo, hi)) => (lo, hi, false),
        None => (0, nx, true),
    }
}

/// Lanes `jlo..jhi` of one tile line set (relative to the tile's first line) that tilt `st`
/// sees, or `None`.
#[inline(always)]
fn lanes(st: &SepTilt, y0: usize, nyt: usize) -> Option<(usize, usize)> {
    let jlo = st.ylo.max(y0) - y0;
    let jhi = st.yhi.min(y0 + nyt).saturating_sub(y0);
    (jlo < jhi).then_some((jlo, jhi))
}

#[inline(always)]
fn bp_tile(
    acc: &mut [f32],
    store: &[f32],
    sep: &Separable,
    (z0, nzt): (usize, usize),
    (y0, nyt): (usize, usize),
    nx: usize,
) {
    let ld = sep.nl + 1;
    let ns = sep.ns;
    let plane = ns * ld;
    let smax = (ns - 1) as f32;
    // x blocks: each tilt's image band for XB voxels stays in L1 across the tile's planes
    for xb in (0..nx).step_by(XB) {
        for (t, st) in sep.tilts.iter().enumerate() {
            let Some((jlo, jhi)) = lanes(st, y0, nyt) else {
                continue;
            };
            let img = &store[t * plane..(t + 1) * plane];
            // row of lane j is y0 + j + k ≥ 0 for j ≥ jlo
            let row0 = (y0 as isize + st.k + jlo as isize) as usize;
            let (gy, fy) = (1.0 - st.fy, st.fy);
            let n = jhi - jlo;
            for dz in 0..nzt {
                let sl = st.s0 + (z0 + dz) as f32 * st.b;
                let a = &mut acc[dz * nx * YC..(dz + 1) * nx * YC];
                let (lo, hi, check) = inside(nx, sl, st.a, smax);
                for ix in lo.max(xb)..hi.min(xb + XB) {
                    let s = sl + ix as f32 * st.a;
                    if check && !(s >= 0.0 && s <= smax) {
                        continue;
                    }
                    // s ≥ 0: truncation is floor (as the reference)
                    let x0 = (s as usize).min(ns - 2);
                    let wx = s - x0 as f32;
                    let gx = 1.0 - wx;
                    let c0 = &img[x0 * ld + row0..x0 * ld + row0 + n + 1];
                    let c1 = &img[(x0 + 1) * ld + row0..(x0 + 1) * ld + row0 + n + 1];
                    let dst = &mut a[ix * YC + jlo..ix * YC + jhi];
                    if n == YC {
                        bp_lanes_full(dst, c0, c1, (gx, wx), (gy, fy));
                    } else {
                        bp_lanes(dst, c0, c1, (gx, wx), (gy, fy));
                    }
                }
            }
        }
    }
}

/// `dst[j] += (c0[j]·gx + c1[j]·wx)·gy + (c0[j+1]·gx + c1[j+1]·wx)·fy`: the reference
/// bilinear expression, for `YC` lanes (fixed length: vectorised; both rows are loaded from
/// the columns, not from a stored temporary, which would stall store forwarding).
#[inline(always)]
fn bp_lanes_full(
    dst: &mut [f32],
    c0: &[f32],
    c1: &[f32],
    (gx, wx): (f32, f32),
    (gy, fy): (f32, f32),
) {
    let dst: &mut [f32; YC] = dst.try_into().expect("YC lanes");
    let c0: &[f32; YC + 1] = c0.try_into().expect("YC + 1 rows");
    let c1: &[f32; YC + 1] = c1.try_into().expect("YC + 1 rows");
    for j in 0..YC {
        let a = c0[j] * gx + c1[j] * wx;
        let b = c0[j + 1] * gx + c1[j + 1] * wx;
        dst[j] += a * gy + b * fy;
    }
}

/// [`bp_lanes_full`] for any number of lanes (`c0.len() = c1.len() = dst.len() + 1`).
#[inline(always)]
fn bp_lanes(dst: &mut [f32], c0: &[f32], c1: &[f32], (gx, wx): (f32, f32), (gy, fy): (f32, f32)) {
    for (j, d) in dst.iter_mut().enumerate() {
        let a = c0[j] * gx + c1[j] * wx;
        let b = c0[j + 1] * gx + c1[j + 1] * wx;
        *d += a * gy + b * fy;
    }
}

/// A raw pointer that may be shared between rayon tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: used only by `forward_project`, whose concurrent tasks write disjoint rows.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Forward-project with a separable geometry: the adjoint of [`backproject`] (same weights),
/// equal to the general splatting kernel to f32 rounding. `vol` is `[z, y, x]` contiguous;
/// returns `[tilt, iny, inx]`.
///
/// Parallel over runs of `YC` volume lines: run `c` writes image rows `c·YC + k ..= c·YC +
/// YC + k` (along `t`) of every tilt, so runs two apart never share a row; even runs go
/// first, then odd runs (deterministic).
pub(crate) fn forward_project(
    vol: &[f32],
    (nz, ny, nx): (usize, usize, usize),
    sep: &Separable,
    (iny, inx): (usize, usize),
    simd: bool,
) -> Array3<f32> {
    let nt = sep.tilts.len();
    let mut out = Array3::<f32>::zeros((nt, iny, inx));
    if nz == 0 || ny == 0 || nx == 0 || nt == 0 {
        return out;
    }
    assert_eq!(vol.len(), nz * ny * nx);
    let (ns, nl) = (sep.ns, sep.nl);
    // pixel (s, t) of an image: index s·ss + t·st
    let (ss, st_) = match sep.along {
        Along::Y => (1, inx),
        Along::X => (inx, 1),
    };
    let plane = iny * inx;
    let shared = SharedOut(out.as_mut_ptr());
    let runs = ny.div_ceil(YC);
    for phase in 0..2 {
        let mine: Vec<usize> = (phase..runs).step_by(2).collect();
        mine.into_par_iter().for_each(|c| {
            let y0 = c * YC;
            let nyt = YC.min(ny - y0);
            let mut lacc = vec![0.0f32; nt * ns * LD];
            let mut vb = vec![0.0f32; ZB * nx * VS];
            let mut zb = 0;
            while zb < nz {
                let nzb = ZB.min(nz - zb);
                for dz in 0..nzb {
                    for j in 0..nyt {
                        let line = &vol[((zb + dz) * ny + y0 + j) * nx..][..nx];
                        for (ix, &v) in line.iter().enumerate() {
                            vb[(dz * nx + ix) * VS + 1 + j] = v;
                        }
                    }
                }
                let blk = &vb[..nzb * nx * VS];
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: `simd` is set only after detecting AVX2 and FMA.
                    unsafe { fp_block_avx2(&mut lacc, blk, sep, (zb, nzb), (y0, nyt), nx) };
                } else {
                    fp_block(&mut lacc, blk, sep, (zb, nzb), (y0, nyt), nx);
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = simd;
                    fp_block(&mut lacc, blk, sep, (zb, nzb), (y0, nyt), nx);
                }
                zb += nzb;
            }
            // flush: row r of the run is image row y0 + k + r along t
            let out = shared;
            for (t, st) in sep.tilts.iter().enumerate() {
                let l = &lacc[t * ns * LD..(t + 1) * ns * LD];
                for r in 0..LD {
                    let row = y0 as isize + st.k + r as isize;
                    if row < 0 || row >= nl as isize {
                        continue;
                    }
                    let base = t * plane + row as usize * st_;
                    for s in 0..ns {
                        // SAFETY: base + s·ss < nt·plane (row < nl, s < ns); concurrent
                        // runs write disjoint rows (see the doc comment).
                        unsafe { *out.0.add(base + s * ss) += l[s * LD + r] };
                    }
                }
            }
        });
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fp_block_avx2(
    lacc: &mut [f32],
    blk: &[f32],
    sep: &Separable,
    z: (usize, usize),
    y: (usize, usize),
    nx: usize,
) {
    fp_block(lacc, blk, sep, z, y, nx)
}

/// Splat a block of `nzb` planes × the run's lines (transposed: lane `j` of voxel column
/// `(dz, ix)` at `blk[(dz·nx + ix)·VS + 1 + j]`, zeros at both ends)
/// into every tilt's run accumulator `lacc[tilt][s][r]`.
#[inline(always)]
fn fp_block(
    lacc: &mut [f32],
    blk: &[f32],
    sep: &Separable,
    (zb, nzb): (usize, usize),
    (y0, nyt): (usize, usize),
    nx: usize,
) {
    let ns = sep.ns;
    let smax = (ns - 1) as f32;
    for (t, st) in sep.tilts.iter().enumerate() {
        let Some((jlo, jhi)) = lanes(st, y0, nyt) else {
            continue;
        };
        let full = jlo == 0 && jhi == YC;
        let l = &mut lacc[t * ns * LD..(t + 1) * ns * LD];
        let (gy, fy) = (1.0 - st.fy, st.fy);
        for dz in 0..nzb {
            let sl = st.s0 + (zb + dz) as f32 * st.b;
            let (lo, hi, check) = inside(nx, sl, st.a, smax);
            for ix in lo..hi {
                let s = sl + ix as f32 * st.a;
                if check && !(s >= 0.0 && s <= smax) {
                    continue;
                }
                let x0 = (s as usize).min(ns - 2);
                let wx = s - x0 as f32;
                let gx = 1.0 - wx;
                let v: &[f32; VS] = blk[(dz * nx + ix) * VS..(dz * nx + ix + 1) * VS]
                    .try_into()
                    .expect("VS entries");
                // row r gets lane r (weight gy) and lane r − 1 (weight fy)
                let mut col = [0.0f32; LD];
                if full {
                    for r in 0..LD {
                        col[r] = v[r + 1] * gy + v[r] * fy;
                    }
                } else {
                    for j in jlo..jhi {
                        col[j] += v[j + 1] * gy;
                        col[j + 1] += v[j + 1] * fy;
                    }
                }
                let (l0, l1) = l[x0 * LD..(x0 + 2) * LD].split_at_mut(LD);
                for r in 0..LD {
                    l0[r] += col[r] * gx;
                    l1[r] += col[r] * wx;
                }
            }
        }
    }
}
