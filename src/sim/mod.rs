//! Simulator: phantom (atoms -> potential, membranes, gold beads), tilt series + movies, truth.
//!
//! [`simulate_series`] is the test oracle of the project: deterministic for a seed (and
//! independent of the thread count), physically motivated (docs/simulator.md), and it
//! returns the full ground truth. It does no file I/O; the CLI writes the outputs.
//!
//! Frames and units: volume voxel `(nx/2, ny/2, nz/2)` is the tomogram centre (tilt-axis
//! centre, slab mid-plane); specimen point `p` (Å) = `((ix − nx/2)·px, (iy − ny/2)·px,
//! (iz − nz/2)·px)`; images follow [`crate::core::geometry`].

pub mod acquisition;
pub mod image;
pub mod phantom;
pub mod potential;
pub mod project;

use crate::core::fourier::Fft2;
use crate::core::geometry::{TiltImage, TiltSeriesGeometry};
use crate::ctf::interaction_constant;
use crate::error::{Error, Result};
use ndarray::{Array3, Axis};
use potential::RenderedMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

/// A structure to simulate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Structure {
    /// An atomic model (PDB or mmCIF) rendered with Peng scattering factors.
    Pdb(PathBuf),
    /// A density map already in memory (e.g. read with `io::mrc` by the CLI): values are
    /// taken as potential in volts (positive = dense), voxel `pixel_a` Å, `[z, y, x]`, the
    /// particle centre at voxel `n/2`. The voxels are not serialised (only the label and pixel):
    /// a deserialised `Map` has an empty array and must be filled again before simulating.
    Map {
        /// Label recorded in the truth as the structure name (e.g. the file name).
        path_label: String,
        /// Voxel size, Å.
        pixel_a: f64,
        /// The map, `[z, y, x]`.
        #[serde(skip)]
        voxels: Arc<Array3<f32>>,
    },
}

impl Structure {
    /// A structure from a file: an atomic model (`.pdb`, `.ent`, `.cif`) or a density map
    /// (`.mrc`, `.map`: potential in volts, `[z, y, x]`, centre at voxel n/2). A relative
    /// path that does not exist is looked up in `shared_data/structures/` and then
    /// `shared_data/templates/`.
    pub fn from_file(path: &Path, shared_data: &Path) -> Result<Structure> {
        let found = std::iter::once(path.to_path_buf())
            .chain(
                ["structures", "templates"]
                    .iter()
                    .filter(|_| path.is_relative())
                    .map(|d| shared_data.join(d).join(path)),
            )
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::bad_input(
                    path,
                    "structures",
                    format!(
                        "no such file (also looked in {}/structures and /templates); give a PDB/mmCIF \
                         model or an MRC map",
                        shared_data.display()
                    ),
                )
            })?;
        let ext = found
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "mrc" | "map" => {
                let m = crate::io::mrc::read(&found)?;
                Ok(Structure::Map {
                    path_label: found
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    pixel_a: m.header.pixel_size_a()[0] as f64,
                    voxels: Arc::new(m.data),
                })
            }
            "pdb" | "ent" | "cif" => Ok(Structure::Pdb(found)),
            _ => Err(Error::bad_input(
                &found,
                "structures",
                "unknown structure format: use .pdb/.ent/.cif (atomic model) or .mrc/.map (density)",
            )),
        }
    }

    /// Name recorded in the truth: the file stem of a model, the label of a map.
    pub fn name(&self) -> String {
        match self {
            Structure::Pdb(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            Structure::Map { path_label, .. } => path_label.clone(),
        }
    }

    /// Render (or resample) this structure at `pixel_a`: the reference of the particles
    /// (`particle(x) = reference(Aᵀ·(x − pos))`, reference centre at voxel `n/2`).
    ///
    /// Atomic models are rendered once per (path, pixel) and process: later calls reuse the
    /// result (rendering is deterministic, so this changes no output).
    pub fn render(&self, pixel_a: f64) -> Result<Arc<RenderedMap>> {
        match self {
            Structure::Pdb(p) => {
                type Cache = Mutex<HashMap<(PathBuf, u64), Arc<RenderedMap>>>;
                static CACHE: OnceLock<Cache> = OnceLock::new();
                let key = (p.clone(), pixel_a.to_bits());
                let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
                if let Some(m) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
                    return Ok(m);
                }
                let atoms = crate::io::pdb::read_atoms(p)?;
                let m = Arc::new(potential::render_atoms(&atoms, pixel_a));
                if let Ok(mut c) = cache.lock() {
                    c.insert(key, m.clone());
                }
                Ok(m)
            }
            Structure::Map {
                path_label,
                pixel_a: mp,
                voxels,
            } => {
                if voxels.is_empty() || !mp.is_finite() || *mp <= 0.0 {
                    return Err(Error::bad_input(
                        path_label,
                        "voxels",
                        "map is empty or its pixel size is not positive; read the map again (io::mrc) \
                         and pass its voxels and pixel size",
                    ));
                }
                if voxels.iter().any(|v| !v.is_finite()) {
                    return Err(Error::bad_input(
                        path_label,
                        "voxels",
                        "map contains NaN/Inf; fix the map",
                    ));
                }
                Ok(Arc::new(potential::resample_map(voxels, *mp, pixel_a)))
            }
        }
    }
}

/// Order in which the tilts are acquired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TiltScheme {
    /// Hagen dose-symmetric: 0, +s, −s, −2s, +2s, +3s, −3s, …
    DoseSymmetric,
    /// From `start_deg` up to the maximum, then from below the start down to the minimum.
    Bidirectional {
        /// Starting tilt, degrees.
        start_deg: f64,
    },
}

/// Everything that defines one simulated tilt series. Lengths in Å, angles in degrees,
/// dose in e/Å², voltage kV, Cs mm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesParams {
    /// Tilt-series name (also mixed into the seed, so series of one preset differ).
    pub name: String,
    /// Image (and volume) width, pixels.
    pub nx: usize,
    /// Image (and volume) height, pixels.
    pub ny: usize,
    /// Pixel size, Å.
    pub pixel_a: f64,
    /// Ice thickness, Å (the volume has nz = round(thickness/pixel)).
    pub thickness_a: f64,
    /// Structures and their number of copies.
    pub structures: Vec<(Structure, usize)>,
    /// Number of lipid vesicles.
    pub vesicles: usize,
    /// Number of gold beads.
    pub gold_beads: usize,
    /// Gold bead diameter, Å.
    pub gold_diameter_a: f64,
    /// Lowest nominal tilt, degrees.
    pub tilt_min_deg: f64,
    /// Highest nominal tilt, degrees.
    pub tilt_max_deg: f64,
    /// Nominal tilt increment, degrees.
    pub tilt_step_deg: f64,
    /// Acquisition scheme.
    pub scheme: TiltScheme,
    /// Tilt-axis angle, degrees counter-clockwise from +Y.
    pub axis_deg: f64,
    /// Standard deviation of the per-tilt image shifts, Å.
    pub shift_sigma_a: f64,
    /// Standard deviation of the per-tilt tilt-angle error, degrees.
    pub angle_error_sigma_deg: f64,
    /// Total dose over the series, e/Å².
    pub total_dose_e_a2: f64,
    /// Acceleration voltage, kV.
    pub voltage_kv: f64,
    /// Spherical aberration, mm.
    pub cs_mm: f64,
    /// Amplitude contrast fraction.
    pub amplitude_contrast: f64,
    /// Mean defocus, Å (underfocus positive).
    pub defocus_a: f64,
    /// Per-tilt defocus standard deviation, Å.
    pub defocus_sigma_a: f64,
    /// Astigmatism U − V, Å (angle random per tilt).
    pub astigmatism_a: f64,
    /// Movie frames per tilt (0 = no movies).
    pub frames_per_tilt: usize,
    /// Drift per frame, Å.
    pub drift_a_per_frame: f64,
    /// Local (beam-induced) deformation of the movies on top of the drift: its largest
    /// displacement at the last frame, Å ([`image::LocalDeformation`], truth per tilt in
    /// [`TiltTruth::local_deformation`]). 0 = none (left out of the serialised parameters, so
    /// existing configs, presets and their hashes are unchanged).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_motion_a: f64,
    /// Depth layers of the image formation ([`image::layered_counts`]): each Z slab of the
    /// specimen is imaged with the defocus at its height. 0 = automatic: as many as keep the
    /// defocus range of a layer along the beam (at the largest tilt) within the π/4 CTF phase
    /// tolerance at Nyquist (1 for the presets); 1 = the mid-plane defocus for the whole
    /// depth. Left out of the serialised parameters when 0.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub depth_layers: usize,
    /// Poisson noise on/off.
    pub noise: bool,
    /// Amorphous-ice texture: effective structure factor `S` of the ice at the image's
    /// spatial frequencies (0 = uniform ice, no texture; 1 = molecules placed independently).
    /// Per tilt a white random projected potential of variance ∝ `S`·path length through the
    /// ice is added before the CTF ([`image::ice_texture_sigma`], docs/simulator.md).
    #[serde(default)]
    pub ice_structure_factor: f64,
}

/// Named parameter sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Two 96×96 series at 10 Å/px: seconds in a debug build (tests, CI).
    Tiny,
    /// Three 256×256 apoferritin series at 8 Å/px (the demo).
    Demo,
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tiny" => Ok(Preset::Tiny),
            "demo" => Ok(Preset::Demo),
            _ => Err(Error::Config(format!(
                "unknown simulation preset {s:?}; use \"tiny\" or \"demo\""
            ))),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Tiny => "tiny",
            Preset::Demo => "demo",
        })
    }
}

/// Effective ice structure factor of the presets (see [`SeriesParams::ice_structure_factor`]
/// and docs/simulator.md). The physical value is ≈ 0.1 (a little above the compressibility
/// limit of water, S(0) ≈ 0.06); the presets keep it at 0 (uniform ice, the data every
/// alignment and reconstruction bound was measured on) until those bounds are re-measured
/// with the texture on. Tests of CTF estimation set it explicitly.
pub const PRESET_ICE_STRUCTURE_FACTOR: f64 = 0.0;

/// Parameters of a preset. `shared_data` is the `shared/data` folder (structures are read
/// from `shared_data/structures/`).
pub fn preset(p: Preset, shared_data: &Path) -> Vec<SeriesParams> {
    let apo = Structure::Pdb(shared_data.join("structures").join("6z6u.pdb"));
    let base = SeriesParams {
        name: String::new(),
        nx: 96,
        ny: 96,
        pixel_a: 10.0,
        thickness_a: 500.0,
        structures: vec![(apo.clone(), 3)],
        vesicles: 1,
        gold_beads: 2,
        gold_diameter_a: 100.0,
        tilt_min_deg: -60.0,
        tilt_max_deg: 60.0,
        tilt_step_deg: 4.0,
        scheme: TiltScheme::DoseSymmetric,
        axis_deg: 0.0,
        shift_sigma_a: 15.0,
        angle_error_sigma_deg: 0.2,
        total_dose_e_a2: 100.0,
        voltage_kv: 300.0,
        cs_mm: 2.7,
        amplitude_contrast: 0.07,
        defocus_a: 30000.0,
        defocus_sigma_a: 1000.0,
        astigmatism_a: 300.0,
        frames_per_tilt: 0,
        drift_a_per_frame: 0.0,
        local_motion_a: 0.0,
        depth_layers: 0,
        noise: true,
        ice_structure_factor: PRESET_ICE_STRUCTURE_FACTOR,
    };
    match p {
        Preset::Tiny => vec![
            SeriesParams {
                name: "tiny_01".into(),
                ..base.clone()
            },
            SeriesParams {
                name: "tiny_02".into(),
                axis_deg: 85.0,
                scheme: TiltScheme::Bidirectional { start_deg: -20.0 },
                frames_per_tilt: 4,
                drift_a_per_frame: 3.0,
                ..base
            },
        ],
        Preset::Demo => (1..=3)
            .map(|k| SeriesParams {
                name: format!("demo_{k:02}"),
                nx: 256,
                ny: 256,
                pixel_a: 8.0,
                thickness_a: 800.0,
                structures: vec![(apo.clone(), 12)],
                vesicles: 1,
                gold_beads: 4,
                tilt_step_deg: 3.0,
                axis_deg: 85.0,
                shift_sigma_a: 20.0,
                angle_error_sigma_deg: 0.3,
                total_dose_e_a2: 120.0,
                defocus_a: 25000.0 + 5000.0 * k as f64,
                ..base.clone()
            })
            .collect(),
    }
}

/// Truth for one tilt (stack order): the true [`TiltImage`] (true tilt angle, axis, shifts,
/// defocus, dose, pre-exposure, acquisition index; flattened into the JSON object) plus the
/// nominal angle and the movie drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TiltTruth {
    /// Index in the stack (ascending nominal tilt).
    pub stack_index: usize,
    /// Nominal (stage) tilt, degrees.
    pub nominal_tilt_deg: f64,
    /// The true geometry of this tilt (`tilt_deg` is the true tilt used for the projection).
    #[serde(flatten)]
    pub geometry: TiltImage,
    /// Per movie frame, the drift `[dx, dy]` in Å of the frame content relative to the stack
    /// image (frame 0 = [0, 0]); empty without movies.
    pub frame_drift_a: Vec<[f64; 2]>,
    /// The local deformation of the movie on top of `frame_drift_a` (absent without one):
    /// `shift_a(x, y, frame)` is the extra displacement (Å) of the content at pixel `(x, y)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_deformation: Option<image::LocalDeformation>,
}

/// `skip_serializing_if` helper: exactly 0.
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

/// The depth layers used for `p` ([`SeriesParams::depth_layers`], 0 resolved).
pub fn depth_layer_count(p: &SeriesParams) -> usize {
    if p.depth_layers > 0 {
        return p.depth_layers;
    }
    let tol = crate::ctf::correct::defocus_tolerance_a(
        p.voltage_kv,
        0.5 / p.pixel_a,
        std::f64::consts::FRAC_PI_4,
    );
    let cos_max = p
        .tilt_min_deg
        .abs()
        .max(p.tilt_max_deg.abs())
        .min(80.0)
        .to_radians()
        .cos();
    ((p.thickness_a / (tol * cos_max)).ceil() as usize).max(1)
}

/// One placed particle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticleTruth {
    /// Structure name ([`Structure::name`]).
    pub structure: String,
    /// Index into `SeriesParams::structures`.
    pub structure_index: usize,
    /// Centre (the reference's box centre), Å about the tomogram centre, (x, y, z).
    pub position_a: [f64; 3],
    /// RELION rot, degrees: `particle(x) = reference(Aᵀ·(x − pos))`,
    /// `A = core::geometry::euler_zyz_to_matrix(rot, tilt, psi)`.
    pub rot_deg: f64,
    /// RELION tilt, degrees.
    pub tilt_deg: f64,
    /// RELION psi, degrees.
    pub psi_deg: f64,
    /// Bounding radius used for the non-overlap test, Å.
    pub radius_a: f64,
}

/// A spherical object: vesicle (radius of the bilayer mid-plane) or gold bead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SphereTruth {
    /// Centre, Å about the tomogram centre, (x, y, z).
    pub centre_a: [f64; 3],
    /// Radius, Å.
    pub radius_a: f64,
}

/// Everything known about one simulated series.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesTruth {
    /// Series name.
    pub name: String,
    /// The parameters it was made with.
    pub params: SeriesParams,
    /// The seed passed to [`simulate_series`].
    pub seed: u64,
    /// The derived per-series seed (seed mixed with the name).
    pub series_seed: u64,
    /// Truth volume size (x, y, z), voxels.
    pub volume_shape_xyz: [usize; 3],
    /// Pixel size of stack and volume, Å.
    pub pixel_a: f64,
    /// Interaction constant used, rad/(V·Å).
    pub interaction_constant_rad_per_v_a: f64,
    /// Mean ice potential in the truth volume, V.
    pub ice_potential_v: f64,
    /// Conventions, in words.
    pub conventions: String,
    /// Per tilt, in stack order.
    pub tilts: Vec<TiltTruth>,
    /// Particles.
    pub particles: Vec<ParticleTruth>,
    /// Vesicles.
    pub vesicles: Vec<SphereTruth>,
    /// Gold beads.
    pub beads: Vec<SphereTruth>,
}

/// Truth of a whole simulation run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Truth {
    /// Seed of the run.
    pub seed: u64,
    /// Preset name ("tiny", "demo") or "custom".
    pub preset: String,
    /// One entry per series.
    pub series: Vec<SeriesTruth>,
}

/// A simulated tilt series with its ground truth.
pub struct SimulatedSeries {
    /// Series name.
    pub name: String,
    /// `[tilt, y, x]` electron counts per pixel, sorted by nominal tilt (ascending).
    pub stack: Array3<f32>,
    /// TRUE geometry (true angles, shifts, defocus, dose, pre-exposure, acquisition index).
    pub geometry: TiltSeriesGeometry,
    /// Nominal tilts, degrees, stack order.
    pub nominal_tilts_deg: Vec<f64>,
    /// `[z, y, x]` clean potential (V) at the stack pixel: ice (4.5 V) in the slab, objects
    /// above it; positive = dense. nz = round(thickness / pixel).
    pub truth_volume: Array3<f32>,
    /// `[z, y, x]` 1 inside lipid bilayers.
    pub membrane_mask: Array3<u8>,
    /// Per tilt `[frame, y, x]` counts; empty when `frames_per_tilt = 0`.
    pub frames: Vec<Array3<f32>>,
    /// Ground truth.
    pub truth: SeriesTruth,
}

const CONVENTIONS: &str = "volume [z,y,x], voxel (nx/2,ny/2,nz/2) = tomogram centre = tilt-axis centre = slab mid-plane; \
specimen p (Å) = ((ix-nx/2)px, (iy-ny/2)px, (iz-nz/2)px); image pixel = (nx/2,ny/2) + [Rz(axis)Ry(tilt)p]_xy/px + shift/px \
(core::geometry::TiltImage::projection); beam along -z, depth = [R p]_z towards the source, defocus at a point = defocus - depth \
(underfocus positive); particle(x) = reference(A^T (x - pos)), A = euler_zyz_to_matrix(rot, tilt, psi) (RELION); stack in \
electron counts, dense matter dark; frame f content = stack content shifted by frame_drift_a[f]";

/// SplitMix64 finaliser: mixes a seed and a stream id into a new seed.
pub fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

const STREAM_PLACEMENT: u64 = 1;
const STREAM_ACQUISITION: u64 = 2;
const STREAM_NOISE: u64 = 1 << 20;
const STREAM_DRIFT: u64 = 2 << 20;
const STREAM_ICE: u64 = 3 << 20;

/// Padding (pixels per side) of the simulated images before cropping to the camera size:
/// 12.5% of the larger side, at least 16, even.
pub fn image_pad(n: usize) -> usize {
    let p = (n / 8).max(16);
    p + p % 2
}

fn validate(p: &SeriesParams) -> Result<()> {
    let bad = |field: &str, msg: &str| {
        Err(Error::Config(format!(
            "series {:?}: {field}: {msg}",
            p.name
        )))
    };
    if p.nx < 8 || p.ny < 8 {
        return bad("nx/ny", "image must be at least 8×8 pixels");
    }
    let finite_pos = |v: f64| v.is_finite() && v > 0.0;
    if !finite_pos(p.pixel_a) {
        return bad("pixel_a", "pixel size must be > 0 Å");
    }
    if !finite_pos(p.thickness_a) || p.thickness_a < 2.0 * p.pixel_a {
        return bad("thickness_a", "ice thickness must be at least two pixels");
    }
    if !finite_pos(p.voltage_kv) {
        return bad("voltage_kv", "voltage must be > 0 kV");
    }
    if !(0.0..1.0).contains(&p.amplitude_contrast) {
        return bad("amplitude_contrast", "must be in [0, 1)");
    }
    if !(p.ice_structure_factor.is_finite() && p.ice_structure_factor >= 0.0) {
        return bad("ice_structure_factor", "must be >= 0 (0 = uniform ice)");
    }
    if !(p.total_dose_e_a2.is_finite() && p.total_dose_e_a2 >= 0.0) {
        return bad("total_dose_e_a2", "dose must be >= 0");
    }
    if p.tilt_min_deg < -89.0 || p.tilt_max_deg > 89.0 {
        return bad("tilt_min_deg/tilt_max_deg", "tilts must lie within ±89°");
    }
    if p.gold_beads > 0 && !finite_pos(p.gold_diameter_a) {
        return bad("gold_diameter_a", "must be > 0 Å when gold_beads > 0");
    }
    for v in [
        p.shift_sigma_a,
        p.angle_error_sigma_deg,
        p.defocus_sigma_a,
        p.astigmatism_a,
        p.defocus_a,
        p.cs_mm,
        p.axis_deg,
        p.drift_a_per_frame,
        p.local_motion_a,
    ] {
        if !v.is_finite() {
            return bad("optics/errors", "all parameters must be finite numbers");
        }
    }
    let vox = p.nx as f64 * p.ny as f64 * (p.thickness_a / p.pixel_a);
    if vox > 4.0e9 {
        return bad(
            "nx/ny/thickness_a",
            "volume over 4·10⁹ voxels; bin (larger pixel_a) or crop",
        );
    }
    Ok(())
}

/// Simulate one tilt series. Deterministic for (`params`, `seed`), independent of the rayon
/// thread count: every random stream is seeded from `seed` mixed with the series name and a
/// stream id (placement, acquisition, per-tilt noise and drift).
pub fn simulate_series(params: &SeriesParams, seed: u64) -> Result<SimulatedSeries> {
    validate(params)?;
    let px = params.pixel_a;
    let series_seed = mix_seed(seed, fnv1a(&params.name));
    let nz = ((params.thickness_a / px).round() as usize).max(2);
    let frame = phantom::VolumeFrame {
        n: [params.nx, params.ny, nz],
        pixel_a: px,
        thickness_a: params.thickness_a,
    };

    // 1. structures, rendered once each
    let mut maps = Vec::new();
    for (s, copies) in &params.structures {
        if *copies > 0 {
            maps.push((s.name(), s.render(px)?, *copies));
        } else {
            let empty = RenderedMap {
                pixel_a: px,
                potential: Array3::zeros((2, 2, 2)),
                radius_a: 0.0,
            };
            maps.push((s.name(), Arc::new(empty), 0));
        }
    }
    let placed: Vec<phantom::PlacedStructure> = maps
        .iter()
        .map(|(n, m, c)| phantom::PlacedStructure {
            name: n.clone(),
            map: m.as_ref(),
            copies: *c,
        })
        .collect();

    // 2. specimen
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(series_seed, STREAM_PLACEMENT));
    let spec = phantom::build_specimen(
        &frame,
        &placed,
        params.vesicles,
        params.gold_beads,
        params.gold_diameter_a,
        &mut rng,
    )?;

    // 3. acquisition
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(series_seed, STREAM_ACQUISITION));
    let (geometry, nominal) = acquisition::true_geometry(params, &mut rng)?;

    // 4. per tilt: project, form the image, noise, movies. Images are made `pad` pixels larger
    //    on every side and cropped, so CTF delocalisation and frame drift do not wrap around.
    let pad = image_pad(params.nx.max(params.ny));
    let (pnx, pny) = (params.nx + 2 * pad, params.ny + 2 * pad);
    let mut padded_geom = geometry.clone();
    padded_geom.nx = pnx;
    padded_geom.ny = pny;
    let crop = |a: &ndarray::Array2<f32>| {
        a.slice(ndarray::s![pad..pad + params.ny, pad..pad + params.nx])
            .to_owned()
    };
    let plan = Fft2::new(pny, pnx);
    let projector = project::RayProjector::new(spec.excess.view());
    let vz = spec.excess.dim().0;
    let n_layers = depth_layer_count(params).min(vz);
    type TiltOut = (
        ndarray::Array2<f32>,
        Option<Array3<f32>>,
        Vec<[f64; 2]>,
        Option<image::LocalDeformation>,
    );
    let per_tilt: Vec<TiltOut> = (0..geometry.len())
        .into_par_iter()
        .map(|i| {
            let mut plan = plan.clone();
            let ice = |proj: &mut ndarray::Array2<f32>| {
                if params.ice_structure_factor > 0.0 {
                    let sd = image::ice_texture_sigma(
                        &geometry.tilts[i],
                        params.thickness_a,
                        px,
                        params.ice_structure_factor,
                    );
                    let mut ice_rng =
                        ChaCha8Rng::seed_from_u64(mix_seed(series_seed, STREAM_ICE + i as u64));
                    image::add_ice_texture(proj, sd, &mut ice_rng);
                }
            };
            let mean = if n_layers == 1 {
                let mut proj = projector.project(px, &geometry.tilts[i], pnx, pny);
                ice(&mut proj);
                image::expected_counts(&proj, &padded_geom, i, &mut plan)
            } else {
                // the ice texture goes into the middle layer (its variance is that of the
                // whole path)
                let layers: Vec<(ndarray::Array2<f32>, f64)> = (0..n_layers)
                    .map(|k| {
                        let (z0, z1) = (k * vz / n_layers, (k + 1) * vz / n_layers);
                        let mut p =
                            projector.project_layer(px, &geometry.tilts[i], pnx, pny, (z0, z1));
                        if k == n_layers / 2 {
                            ice(&mut p);
                        }
                        let zc = ((z0 + z1) as f64 / 2.0 - (vz / 2) as f64) * px;
                        (p, zc)
                    })
                    .collect();
                image::layered_counts(&layers, &padded_geom, i, &mut plan)
            };
            let mut noise_rng =
                ChaCha8Rng::seed_from_u64(mix_seed(series_seed, STREAM_NOISE + i as u64));
            if params.frames_per_tilt > 0 {
                let mut drift_rng =
                    ChaCha8Rng::seed_from_u64(mix_seed(series_seed, STREAM_DRIFT + i as u64));
                let drift = image::drift_trajectory(
                    params.frames_per_tilt,
                    params.drift_a_per_frame,
                    &mut drift_rng,
                );
                // drawn after the drift, so series without local motion are unchanged
                let local = (params.local_motion_a != 0.0).then(|| {
                    image::LocalDeformation::random(
                        params.local_motion_a,
                        params.nx,
                        params.ny,
                        params.frames_per_tilt,
                        &mut drift_rng,
                    )
                });
                let (frames, sum) = image::movie_frames_local(
                    &mean,
                    &drift,
                    local.as_ref().map(|l| (l, pad)),
                    px,
                    params.noise,
                    &mut plan,
                    &mut noise_rng,
                );
                let frames = frames
                    .slice(ndarray::s![.., pad..pad + params.ny, pad..pad + params.nx])
                    .to_owned();
                (crop(&sum), Some(frames), drift, local)
            } else if params.noise {
                (
                    image::poisson_image(&crop(&mean), &mut noise_rng),
                    None,
                    Vec::new(),
                    None,
                )
            } else {
                (crop(&mean), None, Vec::new(), None)
            }
        })
        .collect();

    let mut stack = Array3::<f32>::zeros((geometry.len(), params.ny, params.nx));
    let mut frames = Vec::new();
    let mut tilts = Vec::new();
    for (i, ((img, fr, drift, local), mut slot)) in per_tilt
        .into_iter()
        .zip(stack.axis_iter_mut(Axis(0)))
        .enumerate()
    {
        slot.assign(&img);
        if let Some(f) = fr {
            frames.push(f);
        }
        tilts.push(TiltTruth {
            stack_index: i,
            nominal_tilt_deg: nominal[i],
            geometry: geometry.tilts[i].clone(),
            frame_drift_a: drift,
            local_deformation: local,
        });
    }

    // 5. truth volume = excess + ice in the slab
    let mut truth_volume = spec.excess;
    truth_volume
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(iz, mut plane)| {
            let ice = (phantom::ICE_POTENTIAL_V * frame.slab_fraction(iz)) as f32;
            plane.mapv_inplace(|v| v + ice);
        });

    let truth = SeriesTruth {
        name: params.name.clone(),
        params: params.clone(),
        seed,
        series_seed,
        volume_shape_xyz: [params.nx, params.ny, nz],
        pixel_a: px,
        interaction_constant_rad_per_v_a: interaction_constant(params.voltage_kv),
        ice_potential_v: phantom::ICE_POTENTIAL_V,
        conventions: CONVENTIONS.into(),
        tilts,
        particles: spec.particles,
        vesicles: spec.vesicles,
        beads: spec.beads,
    };
    Ok(SimulatedSeries {
        name: params.name.clone(),
        stack,
        geometry,
        nominal_tilts_deg: nominal,
        truth_volume,
        membrane_mask: spec.membrane,
        frames,
        truth,
    })
}

#[cfg(test)]
mod tests;
