//! MRC2014 reader and writer with hand-written header I/O.
//!
//! - Reads modes 0 (int8, signed as MRC2014 says; unsigned for IMOD files that declare it),
//!   1 (int16), 2 (float32), 6 (uint16) and 12 (float16) into `f32`, little- or big-endian,
//!   skipping any extended header (`nsymbt` bytes, whatever `exttyp` says). `.mrc`, `.mrcs`,
//!   `.st`, `.map`, `.rec`, `.ali` are all this one format.
//! - Data are returned as `Array3<f32>` indexed `[z, y, x]` (x fastest: the file order when
//!   `mapc/mapr/maps = 1 2 3`; other axis orders are permuted into `[z, y, x]` by [`read`]).
//! - [`read_sections`] reads sections `[z0, z1)` only (slabs of big files).
//! - [`write`] writes mode 2 (float32) little-endian MRC2014 that `mrcfile.validate` accepts,
//!   atomically (via [`crate::io::atomic`]).
//!
//! Bad files are refused with [`Error::BadInput`] naming the file, the header field and the fix:
//! truncated data, nonsense dimensions, unknown modes, extended headers beyond the file end,
//! NaN/Inf in float data.

use crate::io::atomic::write_atomic;
use crate::{Error, Result};
use ndarray::{Array3, ArrayView3, Axis};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Size of the fixed MRC header, bytes.
pub const HEADER_BYTES: usize = 1024;
/// Largest dimension accepted (2^20): anything bigger is a corrupt or misread header.
pub const MAX_DIM: usize = 1 << 20;
/// IMOD's header stamp (bytes 152..156), "IMOD" as an int: `imodFlags` is valid when present.
const IMOD_STAMP: i32 = 1_146_047_817;

/// The MRC header fields lamella uses. Dimensions are in `x, y, z` order (after undoing any
/// non-standard `mapc/mapr/maps` axis order); lengths in Å.
#[derive(Clone, Debug, PartialEq)]
pub struct MrcHeader {
    /// Columns (fastest axis), rows, sections.
    pub nx: usize,
    pub ny: usize,
    pub nz: usize,
    /// Data mode: 0 int8, 1 int16, 2 float32, 6 uint16, 12 float16.
    pub mode: i32,
    /// Sampling along the cell axes (pixel size = cell / m).
    pub mx: usize,
    pub my: usize,
    pub mz: usize,
    /// Cell lengths, Å.
    pub cell_a: [f32; 3],
    /// Origin (header words 50–52), Å.
    pub origin: [f32; 3],
    /// Space group: 0 image stack, 1 volume, 401+ volume stack.
    pub ispg: i32,
    /// Extended header length, bytes.
    pub nsymbt: usize,
    /// Extended header type (e.g. `FEI1`, `SERI`, `MRCO`; zeros when unset).
    pub exttyp: [u8; 4],
    /// MRC format version (20140 for MRC2014; 0 in older files).
    pub nversion: i32,
    /// Header statistics as written by the producer (not recomputed on read).
    pub dmin: f32,
    pub dmax: f32,
    pub dmean: f32,
    pub rms: f32,
    /// Text labels in use (trailing blanks removed).
    pub labels: Vec<String>,
    /// Byte order of the file.
    pub little_endian: bool,
}

impl MrcHeader {
    /// Pixel (voxel) size `(x, y, z)` in Å: `cell / m` per axis; 0.0 where unset (cell or m zero).
    pub fn pixel_size_a(&self) -> [f32; 3] {
        let f = |c: f32, m: usize| {
            if m > 0 && c > 0.0 && c.is_finite() {
                c / m as f32
            } else {
                0.0
            }
        };
        [
            f(self.cell_a[0], self.mx),
            f(self.cell_a[1], self.my),
            f(self.cell_a[2], self.mz),
        ]
    }

    /// Byte offset of the first voxel: 1024 + `nsymbt`.
    pub fn data_offset(&self) -> u64 {
        (HEADER_BYTES + self.nsymbt) as u64
    }

    /// Bytes per voxel of the stored mode (0 for a mode lamella cannot read).
    pub fn bytes_per_voxel(&self) -> usize {
        match self.mode {
            0 => 1,
            1 | 6 | 12 => 2,
            2 => 4,
            _ => 0,
        }
    }

    /// Bytes of the data block: `nx·ny·nz·bytes_per_voxel`.
    pub fn data_bytes(&self) -> u64 {
        (self.nx as u64) * (self.ny as u64) * (self.nz as u64) * self.bytes_per_voxel() as u64
    }
}

/// An MRC file in memory: its header and its data, `[z, y, x]`.
#[derive(Clone, Debug)]
pub struct MrcData {
    pub header: MrcHeader,
    /// Voxels, `[z, y, x]`, converted to `f32`.
    pub data: Array3<f32>,
}

/// How a 3D MRC file is labelled: a volume (ispg 1, `mz = nz`) or a stack of 2D images
/// (ispg 0, `mz = 1`, mrcfile's image-stack convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MrcKind {
    Volume,
    ImageStack,
}

/// Layout facts used to decode the data but not part of the public header.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// `mapc, mapr, maps` as stored (a permutation of 1, 2, 3).
    map_crs: [usize; 3],
    /// Dimensions as stored: columns, rows, sections.
    n_crs: [usize; 3],
    /// Mode 0 bytes are unsigned (IMOD files without the signed flag).
    unsigned_bytes: bool,
}

fn bad(path: &Path, field: &str, msg: impl Into<String>) -> Error {
    Error::bad_input(path, field, msg)
}

/// Word `i` (4 bytes at `4 i`) of the header as raw bytes.
fn word(h: &[u8], i: usize) -> [u8; 4] {
    [h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]]
}

fn get_i32(h: &[u8], i: usize, le: bool) -> i32 {
    if le {
        i32::from_le_bytes(word(h, i))
    } else {
        i32::from_be_bytes(word(h, i))
    }
}

fn get_f32(h: &[u8], i: usize, le: bool) -> f32 {
    if le {
        f32::from_le_bytes(word(h, i))
    } else {
        f32::from_be_bytes(word(h, i))
    }
}

fn known_mode(mode: i32) -> bool {
    matches!(mode, 0 | 1 | 2 | 6 | 12)
}

/// Whether the dimensions and mode read with byte order `le` look like a real header.
fn plausible(h: &[u8], le: bool) -> bool {
    let dims_ok = (0..3).all(|i| {
        let n = get_i32(h, i, le);
        n > 0 && (n as usize) <= MAX_DIM
    });
    dims_ok && (0..=12).contains(&get_i32(h, 3, le))
}

/// Byte order from the machine stamp (word 54): 0x44 little-endian, 0x11 big-endian; when the
/// stamp is garbage (older writers leave zeros), the order in which nx/ny/nz/mode make sense.
fn byte_order(h: &[u8], path: &Path) -> Result<bool> {
    match h[212] {
        0x44 => return Ok(true),
        0x11 => return Ok(false),
        _ => {}
    }
    if plausible(h, true) {
        Ok(true)
    } else if plausible(h, false) {
        Ok(false)
    } else {
        Err(bad(
            path,
            "machst/nx/ny/nz/mode",
            format!(
                "not an MRC file: machine stamp {:02x} {:02x} {:02x} {:02x} is unknown and the \
                 dimensions make no sense in either byte order; check that this is an MRC \
                 file (.mrc/.mrcs/.st/.map/.rec/.ali) and that it was copied completely",
                h[212], h[213], h[214], h[215]
            ),
        ))
    }
}

/// Parse and sanity-check the 1024-byte header of a file of `file_len` bytes.
fn parse_header(h: &[u8], file_len: u64, path: &Path) -> Result<(MrcHeader, Layout)> {
    let le = byte_order(h, path)?;
    let i = |k| get_i32(h, k, le);
    let f = |k| get_f32(h, k, le);

    // Dimensions (stored order: columns, rows, sections).
    let mut n_crs = [0usize; 3];
    for (k, name) in ["nx", "ny", "nz"].iter().enumerate() {
        let v = i(k);
        if v <= 0 || v as usize > MAX_DIM {
            return Err(bad(
                path,
                name,
                format!(
                    "{name} = {v} is not a valid dimension (must be 1..={MAX_DIM}); the header \
                     is corrupt or this is not an MRC file: re-export the file"
                ),
            ));
        }
        n_crs[k] = v as usize;
    }
    let mode = i(3);
    if !known_mode(mode) {
        let what = match mode {
            3 | 4 => "complex data (modes 3/4) are not supported",
            101 => "4-bit data (mode 101) are not supported",
            _ => "unknown mode",
        };
        return Err(bad(
            path,
            "mode",
            format!(
                "mode = {mode}: {what}; lamella reads modes 0 (int8), 1 (int16), 2 (float32), \
                 6 (uint16) and 12 (float16): convert the file (e.g. IMOD `newstack -mode 2`)"
            ),
        ));
    }
    let nsymbt_raw = i(23);
    if nsymbt_raw < 0 || HEADER_BYTES as u64 + nsymbt_raw as u64 > file_len {
        return Err(bad(
            path,
            "nsymbt",
            format!(
                "extended header length nsymbt = {nsymbt_raw} is negative or runs past the end \
                 of the {file_len}-byte file; the header is corrupt or the file truncated: \
                 re-copy or re-export it"
            ),
        ));
    }

    // Axis order: mapc/mapr/maps should be a permutation of 1,2,3; anything else (zeros in some
    // old files) is taken as the standard order.
    let m = [i(16), i(17), i(18)];
    let mut sorted = m;
    sorted.sort_unstable();
    let map_crs = if sorted == [1, 2, 3] {
        [m[0] as usize, m[1] as usize, m[2] as usize]
    } else {
        [1, 2, 3]
    };
    // Dimensions along x, y, z: the stored axis k holds map_crs[k].
    let mut n_xyz = [0usize; 3];
    for k in 0..3 {
        n_xyz[map_crs[k] - 1] = n_crs[k];
    }

    let mut exttyp = [0u8; 4];
    exttyp.copy_from_slice(&h[104..108]);
    let nlabl = i(55).clamp(0, 10) as usize;
    let labels = (0..nlabl)
        .map(|k| {
            let raw = &h[224 + 80 * k..224 + 80 * (k + 1)];
            String::from_utf8_lossy(raw)
                .trim_end_matches(['\0', ' '])
                .to_string()
        })
        .collect();
    let dim = |k: usize| i(k).max(0) as usize;
    let imod_stamp = i(38);
    let imod_flags = i(39);
    let header = MrcHeader {
        nx: n_xyz[0],
        ny: n_xyz[1],
        nz: n_xyz[2],
        mode,
        mx: dim(7),
        my: dim(8),
        mz: dim(9),
        cell_a: [f(10), f(11), f(12)],
        origin: [f(49), f(50), f(51)],
        ispg: i(22),
        nsymbt: nsymbt_raw as usize,
        exttyp,
        nversion: i(27),
        dmin: f(19),
        dmax: f(20),
        dmean: f(21),
        rms: f(54),
        labels,
        little_endian: le,
    };
    let layout = Layout {
        map_crs,
        n_crs,
        unsigned_bytes: imod_stamp == IMOD_STAMP && imod_flags & 1 == 0,
    };
    Ok((header, layout))
}

/// Refuse a file shorter than its header says.
fn check_size(header: &MrcHeader, file_len: u64, path: &Path) -> Result<()> {
    let need = header.data_offset() + header.data_bytes();
    if file_len < need {
        return Err(bad(
            path,
            "file size",
            format!(
                "truncated: the header (nx={} ny={} nz={} mode={} nsymbt={}) needs {need} bytes \
                 but the file has {file_len} ({} missing); the copy or the export was \
                 incomplete: re-copy or re-export the file",
                header.nx,
                header.ny,
                header.nz,
                header.mode,
                header.nsymbt,
                need - file_len
            ),
        ));
    }
    Ok(())
}

fn open(path: &Path) -> Result<(File, u64)> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok((f, len))
}

fn read_header_from(file: &mut File, len: u64, path: &Path) -> Result<(MrcHeader, Layout)> {
    if len < HEADER_BYTES as u64 {
        return Err(bad(
            path,
            "header",
            format!(
                "file has {len} bytes, fewer than the 1024-byte MRC header: it is not an MRC \
                 file or it is truncated; re-copy or re-export it"
            ),
        ));
    }
    let mut h = [0u8; HEADER_BYTES];
    file.read_exact(&mut h).map_err(|e| Error::io(path, e))?;
    let (header, layout) = parse_header(&h, len, path)?;
    check_size(&header, len, path)?;
    Ok((header, layout))
}

/// Read and check the header of an MRC file (also checks that the file is long enough).
pub fn read_header(path: &Path) -> Result<MrcHeader> {
    let (mut f, len) = open(path)?;
    Ok(read_header_from(&mut f, len, path)?.0)
}

/// IEEE 754 binary16 bits -> f32 (exact: every half is representable as a float).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let frac = (h & 0x3ff) as u32;
    match exp {
        // Zero and subnormals: frac · 2^-24.
        0 => sign * frac as f32 * (1.0 / 16_777_216.0),
        // Inf / NaN: keep the class, the payload does not matter here.
        31 => {
            if frac == 0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            }
        }
        // Normal: rebias the exponent from 15 to 127 and widen the fraction from 10 to 23 bits.
        _ => {
            f32::from_bits(((h as u32 & 0x8000) << 16) | ((exp as u32 + 112) << 23) | (frac << 13))
        }
    }
}

/// Decode `raw` (whole voxels of `mode`) into `out` (same voxel count).
fn decode(raw: &[u8], mode: i32, le: bool, unsigned_bytes: bool, out: &mut [f32]) {
    macro_rules! conv {
        ($n:expr, $f:expr) => {
            for (o, c) in out.iter_mut().zip(raw.chunks_exact($n)) {
                let b: [u8; $n] = c.try_into().unwrap();
                *o = $f(b);
            }
        };
    }
    match (mode, le) {
        (0, _) if unsigned_bytes => conv!(1, |b: [u8; 1]| b[0] as f32),
        (0, _) => conv!(1, |b: [u8; 1]| b[0] as i8 as f32),
        (1, true) => conv!(2, |b| i16::from_le_bytes(b) as f32),
        (1, false) => conv!(2, |b| i16::from_be_bytes(b) as f32),
        (6, true) => conv!(2, |b| u16::from_le_bytes(b) as f32),
        (6, false) => conv!(2, |b| u16::from_be_bytes(b) as f32),
        (12, true) => conv!(2, |b| f16_to_f32(u16::from_le_bytes(b))),
        (12, false) => conv!(2, |b| f16_to_f32(u16::from_be_bytes(b))),
        (2, true) => conv!(4, f32::from_le_bytes),
        (2, false) => conv!(4, f32::from_be_bytes),
        _ => unreachable!("mode checked in parse_header"),
    }
}

/// Read `n_vox` voxels from the current position of `file`, decoding in 16 MiB chunks.
fn read_voxels(
    file: &mut File,
    header: &MrcHeader,
    layout: &Layout,
    n_vox: usize,
    path: &Path,
) -> Result<Vec<f32>> {
    let bpv = header.bytes_per_voxel();
    let mut out = vec![0f32; n_vox];
    let chunk_vox = (16 << 20) / bpv;
    let mut buf = vec![0u8; chunk_vox.min(n_vox) * bpv];
    for dst in out.chunks_mut(chunk_vox) {
        let raw = &mut buf[..dst.len() * bpv];
        file.read_exact(raw).map_err(|e| Error::io(path, e))?;
        decode(
            raw,
            header.mode,
            header.little_endian,
            layout.unsigned_bytes,
            dst,
        );
    }
    if matches!(header.mode, 2 | 12) {
        check_finite(&out, header, path)?;
    }
    Ok(out)
}

/// Refuse NaN/Inf in float data, naming the first bad voxel.
fn check_finite(v: &[f32], header: &MrcHeader, path: &Path) -> Result<()> {
    let bad_count = v.iter().filter(|x| !x.is_finite()).count();
    if bad_count == 0 {
        return Ok(());
    }
    let first = v.iter().position(|x| !x.is_finite()).unwrap();
    let plane = header.nx * header.ny;
    Err(bad(
        path,
        "data",
        format!(
            "{bad_count} voxels are NaN or Inf (first at stored section {}, row {}, column {}: \
             {}); the file was written by a failed computation: regenerate it, or replace the \
             bad values before using it",
            first / plane,
            (first % plane) / header.nx,
            first % header.nx,
            v[first]
        ),
    ))
}

/// Read a whole MRC file: header and data `[z, y, x]` as `f32`.
///
/// Files with `mapc/mapr/maps` other than `1 2 3` are permuted into `[z, y, x]`.
pub fn read(path: &Path) -> Result<MrcData> {
    let (mut f, len) = open(path)?;
    let (header, layout) = read_header_from(&mut f, len, path)?;
    f.seek(SeekFrom::Start(header.data_offset()))
        .map_err(|e| Error::io(path, e))?;
    let [nc, nr, ns] = layout.n_crs;
    let v = read_voxels(&mut f, &header, &layout, nc * nr * ns, path)?;
    let stored = Array3::from_shape_vec((ns, nr, nc), v).expect("size checked");
    let data = if layout.map_crs == [1, 2, 3] {
        stored
    } else {
        // Stored array axis 0 = sections (axis maps), 1 = rows (mapr), 2 = columns (mapc).
        // Output axis 0 = z (3), 1 = y (2), 2 = x (1): pick the stored axis holding each.
        let axis_of = |xyz: usize| {
            [layout.map_crs[2], layout.map_crs[1], layout.map_crs[0]]
                .iter()
                .position(|&m| m == xyz)
                .unwrap()
        };
        let p = stored.permuted_axes([axis_of(3), axis_of(2), axis_of(1)]);
        p.as_standard_layout().into_owned()
    };
    Ok(MrcData { header, data })
}

/// Read sections `[z0, z1)` (`[z1 − z0, ny, nx]`) without reading the rest of the file.
///
/// Requires the standard axis order (`mapc/mapr/maps = 1 2 3`, as every cryo-ET program
/// writes); refuses `z0 >= z1` or `z1 > nz`.
pub fn read_sections(path: &Path, z0: usize, z1: usize) -> Result<Array3<f32>> {
    let (mut f, len) = open(path)?;
    let (header, layout) = read_header_from(&mut f, len, path)?;
    if z0 >= z1 || z1 > header.nz {
        return Err(bad(
            path,
            "sections",
            format!(
                "requested sections [{z0}, {z1}) but the file has nz = {}: ask for 0 <= z0 < z1 \
                 <= nz",
                header.nz
            ),
        ));
    }
    if layout.map_crs != [1, 2, 3] {
        return Err(bad(
            path,
            "mapc/mapr/maps",
            format!(
                "axis order {:?} is not 1 2 3, so sections are not contiguous; use `read` for \
                 this file or reorder it (e.g. IMOD `clip flipyz`)",
                layout.map_crs
            ),
        ));
    }
    let plane = header.nx * header.ny;
    let off = header.data_offset() + (z0 * plane * header.bytes_per_voxel()) as u64;
    f.seek(SeekFrom::Start(off))
        .map_err(|e| Error::io(path, e))?;
    let v = read_voxels(&mut f, &header, &layout, (z1 - z0) * plane, path)?;
    Ok(Array3::from_shape_vec((z1 - z0, header.ny, header.nx), v).expect("size checked"))
}

/// Statistics mrcfile checks: (min, max, mean, rms) with rms the standard deviation about the
/// mean (population), accumulated in f64.
fn stats(data: &ArrayView3<f32>) -> (f32, f32, f32, f32) {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    let mut sum = 0f64;
    for &v in data.iter() {
        lo = lo.min(v);
        hi = hi.max(v);
        sum += v as f64;
    }
    let n = data.len().max(1) as f64;
    let mean = sum / n;
    let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (lo, hi, mean as f32, var.sqrt() as f32)
}

/// The 1024-byte MRC2014 header of a little-endian mode-2 file holding `data` (`[z, y, x]`).
fn build_header(data: &ArrayView3<f32>, pixel_a: f32, kind: MrcKind) -> Vec<u8> {
    header_for(data.dim(), stats(data), pixel_a, kind)
}

/// The 1024-byte MRC2014 header of a little-endian mode-2 file of shape `(nz, ny, nx)` with
/// statistics `(min, max, mean, rms)`.
fn header_for(
    (nz, ny, nx): (usize, usize, usize),
    (lo, hi, mean, rms): (f32, f32, f32, f32),
    pixel_a: f32,
    kind: MrcKind,
) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_BYTES];
    let mut put_i = |k: usize, v: i32| h[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
    let (mz, ispg) = match kind {
        MrcKind::Volume => (nz, 1),
        MrcKind::ImageStack => (1, 0),
    };
    put_i(0, nx as i32);
    put_i(1, ny as i32);
    put_i(2, nz as i32);
    put_i(3, 2);
    put_i(7, nx as i32);
    put_i(8, ny as i32);
    put_i(9, mz as i32);
    put_i(16, 1);
    put_i(17, 2);
    put_i(18, 3);
    put_i(22, ispg);
    put_i(23, 0);
    put_i(27, 20140);
    put_i(55, 1);
    let mut put_f = |k: usize, v: f32| h[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
    put_f(10, nx as f32 * pixel_a);
    put_f(11, ny as f32 * pixel_a);
    put_f(12, mz as f32 * pixel_a);
    put_f(13, 90.0);
    put_f(14, 90.0);
    put_f(15, 90.0);
    put_f(19, lo);
    put_f(20, hi);
    put_f(21, mean);
    put_f(54, rms);
    h[208..212].copy_from_slice(b"MAP ");
    h[212..216].copy_from_slice(&[0x44, 0x44, 0, 0]);
    let label = format!("lamella {}", crate::VERSION);
    let mut lab = [b' '; 80];
    lab[..label.len()].copy_from_slice(label.as_bytes());
    h[224..304].copy_from_slice(&lab);
    h
}

/// Refuse a shape `(nz, ny, nx)` or pixel size that cannot be written (the checks of
/// [`write`] and [`MrcSlabWriter::create`]).
fn check_writable(path: &Path, shape: (usize, usize, usize), pixel_a: f32) -> Result<()> {
    let (nz, ny, nx) = shape;
    if nx == 0 || ny == 0 || nz == 0 || nx.max(ny).max(nz) > MAX_DIM {
        return Err(bad(
            path,
            "data shape",
            format!("cannot write an MRC file of shape [z={nz}, y={ny}, x={nx}]: every dimension must be 1..={MAX_DIM}"),
        ));
    }
    if !(pixel_a.is_finite() && pixel_a >= 0.0) {
        return Err(bad(
            path,
            "pixel size",
            format!("pixel size {pixel_a} Å is not a finite non-negative number: pass the real pixel size"),
        ));
    }
    Ok(())
}

/// Write `data` (`[z, y, x]`, `pixel_a` Å per voxel) as a little-endian mode-2 MRC2014 file,
/// atomically. `kind` sets the space group (Volume: ispg 1, `mz = nz`, cell z = nz·pixel;
/// ImageStack: ispg 0, `mz = 1`, cell z = pixel). Header statistics are computed from the data.
/// Refuses NaN/Inf (they would make the statistics, and the file, useless).
pub fn write(path: &Path, data: ArrayView3<f32>, pixel_a: f32, kind: MrcKind) -> Result<()> {
    check_writable(path, data.dim(), pixel_a)?;
    let nx = data.dim().2;
    if let Some(v) = data.iter().find(|v| !v.is_finite()) {
        return Err(bad(
            path,
            "data",
            format!("refusing to write non-finite voxel value {v}: the computation that produced it failed"),
        ));
    }
    let header = build_header(&data, pixel_a, kind);
    write_atomic(path, |w| {
        w.write_all(&header)?;
        let mut buf = Vec::with_capacity(nx * 4 * 256);
        for row in data.lanes(Axis(2)) {
            for &v in row.iter() {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            if buf.len() >= nx * 4 * 255 {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        w.write_all(&buf)
    })
}

/// An MRC volume written piece by piece: slabs of whole `[z, ·, x]` planes along Y (or any
/// block of lines) in any order, for volumes that are never in memory at once.
///
/// [`MrcSlabWriter::create`] writes a provisional header and sizes the file at
/// [`crate::io::atomic::partial_path`]; [`MrcSlabWriter::write_lines`] writes the rows of a
/// block `[z, y0..y0+h, x]` into each plane; [`MrcSlabWriter::finish`] checks that every line
/// was written, writes the header with the statistics accumulated on the way (min, max,
/// mean, rms about the mean), fsyncs and renames onto the final name. Dropping the writer
/// without `finish` removes the partial file. The result is the file [`write`] makes for the
/// assembled volume (statistics to f64 rounding).
pub struct MrcSlabWriter {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    file: Option<File>,
    shape: (usize, usize, usize),
    pixel_a: f32,
    kind: MrcKind,
    written: Vec<bool>,
    lo: f32,
    hi: f32,
    sum: f64,
    sum2: f64,
}

impl MrcSlabWriter {
    /// Start writing a mode-2 volume of `shape = (nz, ny, nx)` voxels of `pixel_a` Å to
    /// `path` (see [`write`] for `kind`). Errors name the file.
    pub fn create(
        path: &Path,
        shape: (usize, usize, usize),
        pixel_a: f32,
        kind: MrcKind,
    ) -> Result<Self> {
        let (nz, ny, nx) = shape;
        check_writable(path, shape, pixel_a)?;
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
        }
        let tmp = crate::io::atomic::partial_path(path);
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let header = header_for(shape, (0.0, 0.0, 0.0, 0.0), pixel_a, kind);
        file.write_all(&header).map_err(|e| Error::io(&tmp, e))?;
        let len = HEADER_BYTES as u64 + 4 * (nz as u64) * (ny as u64) * (nx as u64);
        file.set_len(len).map_err(|e| Error::io(&tmp, e))?;
        Ok(MrcSlabWriter {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            shape,
            pixel_a,
            kind,
            written: vec![false; ny],
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
            sum: 0.0,
            sum2: 0.0,
        })
    }

    /// Write `block` `[nz, h, nx]` as lines `[y0, y0 + h)` of every plane. Refuses a block
    /// that does not fit, lines already written, and non-finite values.
    pub fn write_lines(&mut self, y0: usize, block: ArrayView3<f32>) -> Result<()> {
        let (nz, ny, nx) = self.shape;
        let (bz, h, bx) = block.dim();
        if bz != nz || bx != nx || y0 + h > ny || h == 0 {
            return Err(Error::Runtime(format!(
                "{}: block [z={bz}, y={h}, x={bx}] at line {y0} does not fit a volume [z={nz}, \
                 y={ny}, x={nx}] (a lamella bug: please report it)",
                self.path.display()
            )));
        }
        if let Some(y) = (y0..y0 + h).find(|&y| self.written[y]) {
            return Err(Error::Runtime(format!(
                "{}: line {y} written twice (a lamella bug: please report it)",
                self.path.display()
            )));
        }
        if let Some(v) = block.iter().find(|v| !v.is_finite()) {
            return Err(bad(
                &self.path,
                "data",
                format!("refusing to write non-finite voxel value {v}: the computation that produced it failed"),
            ));
        }
        let file = self.file.as_mut().expect("open until finish");
        let mut buf = Vec::with_capacity(4 * h * nx);
        for (z, plane) in block.axis_iter(Axis(0)).enumerate() {
            buf.clear();
            for &v in plane.iter() {
                self.lo = self.lo.min(v);
                self.hi = self.hi.max(v);
                self.sum += v as f64;
                self.sum2 += (v as f64) * (v as f64);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            let off = HEADER_BYTES as u64 + 4 * ((z * ny + y0) as u64) * nx as u64;
            file.seek(SeekFrom::Start(off))
                .and_then(|_| file.write_all(&buf))
                .map_err(|e| Error::io(&self.tmp, e))?;
        }
        for w in &mut self.written[y0..y0 + h] {
            *w = true;
        }
        Ok(())
    }

    /// Finish: every line must have been written; write the final header, fsync, rename.
    pub fn finish(mut self) -> Result<()> {
        if let Some(y) = self.written.iter().position(|w| !w) {
            return Err(Error::Runtime(format!(
                "{}: line {y} was never written (a lamella bug: please report it)",
                self.path.display()
            )));
        }
        let n = self.written.len() as f64 * (self.shape.0 * self.shape.2) as f64;
        let mean = self.sum / n;
        let rms = (self.sum2 / n - mean * mean).max(0.0).sqrt();
        let header = header_for(
            self.shape,
            (self.lo, self.hi, mean as f32, rms as f32),
            self.pixel_a,
            self.kind,
        );
        let mut file = self.file.take().expect("open until finish");
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header))
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        crate::io::atomic::commit_partial(&self.path)
    }
}

impl Drop for MrcSlabWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod slab_writer_tests {
    use super::*;
    use ndarray::s;

    #[test]
    fn slabs_in_any_order_equal_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Array3::from_shape_fn((3, 10, 7), |(z, y, x)| {
            (z * 70 + y * 7 + x) as f32 * 0.25 - 9.0
        });
        let one = dir.path().join("one.mrc");
        write(&one, vol.view(), 2.5, MrcKind::Volume).unwrap();
        let pieces = dir.path().join("pieces.mrc");
        let mut w = MrcSlabWriter::create(&pieces, vol.dim(), 2.5, MrcKind::Volume).unwrap();
        for (y0, y1) in [(6, 10), (0, 4), (4, 6)] {
            w.write_lines(y0, vol.slice(s![.., y0..y1, ..])).unwrap();
        }
        assert!(!pieces.exists(), "final name appears only at finish");
        w.finish().unwrap();
        let (a, b) = (
            std::fs::read(&one).unwrap(),
            std::fs::read(&pieces).unwrap(),
        );
        assert_eq!(a.len(), b.len());
        assert_eq!(a[HEADER_BYTES..], b[HEADER_BYTES..]);
        let (ha, hb) = (read_header(&one).unwrap(), read_header(&pieces).unwrap());
        assert_eq!((ha.dmin, ha.dmax), (hb.dmin, hb.dmax));
        assert!((ha.dmean - hb.dmean).abs() < 1e-4 && (ha.rms - hb.rms).abs() < 1e-4);
        assert_eq!(ha.pixel_size_a(), hb.pixel_size_a());
    }

    #[test]
    fn missing_lines_and_drop_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.mrc");
        let vol = Array3::<f32>::zeros((2, 4, 3));
        let mut w = MrcSlabWriter::create(&p, (2, 4, 3), 1.0, MrcKind::Volume).unwrap();
        w.write_lines(0, vol.slice(s![.., 0..2, ..])).unwrap();
        assert!(w.write_lines(1, vol.slice(s![.., 0..2, ..])).is_err());
        let e = w.finish().unwrap_err();
        assert!(e.to_string().contains("line 2 was never written"), "{e}");
        assert!(!p.exists() && !crate::io::atomic::partial_path(&p).exists());
        let w = MrcSlabWriter::create(&p, (2, 4, 3), 1.0, MrcKind::Volume).unwrap();
        drop(w);
        assert!(!crate::io::atomic::partial_path(&p).exists());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::s;

    fn ramp(nz: usize, ny: usize, nx: usize) -> Array3<f32> {
        Array3::from_shape_fn((nz, ny, nx), |(z, y, x)| {
            (z * 100 + y * 10 + x) as f32 * 0.5 - 7.0
        })
    }

    /// A raw MRC file: our header with mode/byte order patched, then `payload`.
    fn raw_file(
        dir: &Path,
        name: &str,
        dims: [usize; 3],
        mode: i32,
        payload: &[u8],
    ) -> std::path::PathBuf {
        let arr = Array3::<f32>::zeros((dims[2], dims[1], dims[0]));
        let mut h = build_header(&arr.view(), 1.0, MrcKind::Volume);
        h[12..16].copy_from_slice(&mode.to_le_bytes());
        // Statistics undetermined.
        h[76..80].copy_from_slice(&0f32.to_le_bytes());
        h[80..84].copy_from_slice(&(-1f32).to_le_bytes());
        let p = dir.join(name);
        let mut bytes = h;
        bytes.extend_from_slice(payload);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn f16_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3800), 0.5);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000), 0.0);
    }

    #[test]
    fn round_trip_mode2_volume_and_stack() {
        let dir = tempfile::tempdir().unwrap();
        let a = ramp(5, 7, 9);
        for kind in [MrcKind::Volume, MrcKind::ImageStack] {
            let p = dir.path().join(format!("{kind:?}.mrc"));
            write(&p, a.view(), 2.5, kind).unwrap();
            let m = read(&p).unwrap();
            assert_eq!(m.data, a);
            let h = &m.header;
            assert_eq!((h.nx, h.ny, h.nz, h.mode), (9, 7, 5, 2));
            assert_eq!(h.pixel_size_a(), [2.5, 2.5, 2.5]);
            assert_eq!(h.ispg, if kind == MrcKind::Volume { 1 } else { 0 });
            assert_eq!(h.dmin, -7.0);
            assert_eq!(h.dmax, (400 + 60 + 8) as f32 * 0.5 - 7.0);
            assert_eq!(h.labels, vec![format!("lamella {}", crate::VERSION)]);
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 1024 + 5 * 7 * 9 * 4);
            let sec = read_sections(&p, 1, 4).unwrap();
            assert_eq!(sec, a.slice(s![1..4, .., ..]));
        }
    }

    #[test]
    fn integer_modes_and_big_endian() {
        let dir = tempfile::tempdir().unwrap();
        let vals: [i32; 4] = [-128, -1, 0, 127];
        let p = raw_file(
            dir.path(),
            "m0.mrc",
            [2, 2, 1],
            0,
            &vals.map(|v| v as i8 as u8),
        );
        assert_eq!(
            read(&p).unwrap().data.iter().copied().collect::<Vec<_>>(),
            vec![-128.0, -1.0, 0.0, 127.0]
        );

        let i16s: [i16; 4] = [-32768, -5, 7, 32767];
        let b: Vec<u8> = i16s.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = raw_file(dir.path(), "m1.mrc", [4, 1, 1], 1, &b);
        assert_eq!(
            read(&p).unwrap().data.as_slice().unwrap(),
            &[-32768.0, -5.0, 7.0, 32767.0]
        );

        let u16s: [u16; 4] = [0, 1, 40000, 65535];
        let b: Vec<u8> = u16s.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = raw_file(dir.path(), "m6.mrc", [1, 4, 1], 6, &b);
        let d = read(&p).unwrap().data;
        assert_eq!(d.dim(), (1, 4, 1));
        assert_eq!(d.as_slice().unwrap(), &[0.0, 1.0, 40000.0, 65535.0]);

        let h16: [u16; 4] = [0x3c00, 0xc000, 0x3800, 0x0001];
        let b: Vec<u8> = h16.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = raw_file(dir.path(), "m12.mrc", [1, 1, 4], 12, &b);
        let d = read(&p).unwrap().data;
        assert_eq!(d.dim(), (4, 1, 1));
        assert_eq!(d.as_slice().unwrap(), &[1.0, -2.0, 0.5, 2f32.powi(-24)]);

        // Big-endian float32, machine stamp 0x11 0x11.
        let a = ramp(2, 3, 4);
        let mut h = build_header(&a.view(), 3.0, MrcKind::Volume);
        for k in (0..56).filter(|&k| k != 52 && k != 53) {
            h[4 * k..4 * k + 4].reverse();
        }
        h[212..216].copy_from_slice(&[0x11, 0x11, 0, 0]);
        for v in a.iter() {
            h.extend_from_slice(&v.to_be_bytes());
        }
        let p = dir.path().join("be.mrc");
        std::fs::write(&p, &h).unwrap();
        let m = read(&p).unwrap();
        assert!(!m.header.little_endian);
        assert_eq!(m.data, a);
        assert_eq!(m.header.pixel_size_a(), [3.0; 3]);
        // Same with a garbage machine stamp: the byte order comes from nx/mode sanity.
        h[212..216].copy_from_slice(&[0, 0, 0, 0]);
        std::fs::write(&p, &h).unwrap();
        assert_eq!(read(&p).unwrap().data, a);
    }

    #[test]
    fn imod_unsigned_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = raw_file(dir.path(), "u8.mrc", [2, 1, 1], 0, &[200, 5]);
        let mut b = std::fs::read(&p).unwrap();
        b[152..156].copy_from_slice(&IMOD_STAMP.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        assert_eq!(read(&p).unwrap().data.as_slice().unwrap(), &[200.0, 5.0]);
        b[156] = 1; // imodFlags bit 0: signed bytes
        std::fs::write(&p, &b).unwrap();
        assert_eq!(read(&p).unwrap().data.as_slice().unwrap(), &[-56.0, 5.0]);
    }

    #[test]
    fn axis_permutation() {
        // Stored with mapc=3 (columns are z), mapr=2, maps=1 (sections are x).
        let dir = tempfile::tempdir().unwrap();
        let a = ramp(2, 3, 4); // [z, y, x]
        let stored = a.view().permuted_axes([2, 1, 0]); // [x, y, z]: x sections, z columns
        let mut h = build_header(&stored.as_standard_layout().view(), 1.0, MrcKind::Volume);
        h[64..68].copy_from_slice(&3i32.to_le_bytes());
        h[72..76].copy_from_slice(&1i32.to_le_bytes());
        for v in stored.as_standard_layout().iter() {
            h.extend_from_slice(&v.to_le_bytes());
        }
        let p = dir.path().join("perm.mrc");
        std::fs::write(&p, &h).unwrap();
        let m = read(&p).unwrap();
        assert_eq!((m.header.nx, m.header.ny, m.header.nz), (4, 3, 2));
        assert_eq!(m.data, a);
        assert!(read_sections(&p, 0, 1).is_err());
    }

    #[test]
    fn refusals() {
        let dir = tempfile::tempdir().unwrap();
        let a = ramp(3, 4, 5);
        let p = dir.path().join("ok.mrc");
        write(&p, a.view(), 1.0, MrcKind::Volume).unwrap();
        let good = std::fs::read(&p).unwrap();

        let check = |name: &str, bytes: &[u8], field: &str, words: &[&str]| {
            let q = dir.path().join(name);
            std::fs::write(&q, bytes).unwrap();
            let e = read(&q).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(name), "{msg}");
            assert!(msg.contains(field), "{msg}");
            for w in words {
                assert!(msg.contains(w), "{msg} lacks {w}");
            }
            assert_eq!(e.exit_code(), 3);
        };
        check(
            "trunc.mrc",
            &good[..good.len() - 10],
            "file size",
            &["1264", "1254", "truncated"],
        );
        check("tiny.mrc", &good[..100], "header", &["100 bytes"]);
        let mut b = good.clone();
        b[12..16].copy_from_slice(&99i32.to_le_bytes());
        check("mode99.mrc", &b, "mode", &["99"]);
        let mut b = good.clone();
        b[0..4].copy_from_slice(&0i32.to_le_bytes());
        check("nx0.mrc", &b, "nx", &["nx = 0"]);
        let mut b = good.clone();
        b[4..8].copy_from_slice(&((1i32 << 20) + 1).to_le_bytes());
        check("nyhuge.mrc", &b, "ny", &["1048577"]);
        let mut b = good.clone();
        b[92..96].copy_from_slice(&(-4i32).to_le_bytes());
        check("nsneg.mrc", &b, "nsymbt", &["-4"]);
        let mut b = good.clone();
        b[92..96].copy_from_slice(&100_000i32.to_le_bytes());
        check("nsbig.mrc", &b, "nsymbt", &["100000"]);
        let mut b = good.clone();
        b[1024 + 4 * 7..1024 + 4 * 8].copy_from_slice(&f32::NAN.to_le_bytes());
        check("nan.mrc", &b, "data", &["NaN", "row 1, column 2"]);

        let mut bad_arr = a.clone();
        bad_arr[[0, 0, 0]] = f32::INFINITY;
        assert!(write(
            &dir.path().join("w.mrc"),
            bad_arr.view(),
            1.0,
            MrcKind::Volume
        )
        .is_err());
        assert!(read_sections(&p, 2, 2).is_err());
        assert!(read_sections(&p, 0, 4).is_err());
    }

    #[test]
    fn extended_header_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = ramp(2, 2, 3);
        let mut h = build_header(&a.view(), 1.0, MrcKind::Volume);
        h[92..96].copy_from_slice(&128i32.to_le_bytes());
        h[104..108].copy_from_slice(b"FEI1");
        h.extend(std::iter::repeat_n(0xABu8, 128));
        for v in a.iter() {
            h.extend_from_slice(&v.to_le_bytes());
        }
        let p = dir.path().join("ext.mrc");
        std::fs::write(&p, &h).unwrap();
        let m = read(&p).unwrap();
        assert_eq!(m.header.nsymbt, 128);
        assert_eq!(&m.header.exttyp, b"FEI1");
        assert_eq!(m.header.data_offset(), 1152);
        assert_eq!(m.data, a);
        assert_eq!(read_sections(&p, 1, 2).unwrap(), a.slice(s![1..2, .., ..]));
    }
}
