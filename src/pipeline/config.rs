//! Run configuration (`lamella run CONFIG.toml`).
//!
//! Relative paths in the file are resolved against the directory of the config file.
//! Unknown keys are errors (a typo must not silently change a run).

use crate::align::stage::AlignConfig;
use crate::device::DeviceChoice;
use crate::recon::ctfcorr::CtfCorrection;
use crate::recon::filter::Filter;
use crate::recon::plan::Method;
use crate::recon::sirt::SupportMask;
use crate::recon::slab::parse_bytes;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole run configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output directory (created): `lamella.h5`, `ts/`, `tomograms/`, `summary.json`, `sim/`.
    pub out: PathBuf,
    /// Where `shared/data` lives (structures for the simulator presets); default: searched.
    #[serde(default)]
    pub shared_data: Option<PathBuf>,
    /// Simulate a built-in dataset as the first stage.
    #[serde(default)]
    pub simulate: Option<SimulateConfig>,
    /// Existing tilt series to process (`[[input]]` tables).
    #[serde(default)]
    pub input: Vec<InputSeries>,
    /// Motion correction of the tilt movies (`[motioncorr]`); absent = the stacks are used
    /// as they are.
    #[serde(default)]
    pub motioncorr: Option<super::motioncorr::MotionCorrConfig>,
    /// CTF estimation (`[ctf]`), before alignment; its defocus replaces the geometry's
    /// (used by `reconstruct.ctf_correction`). Absent = no CTF stage.
    #[serde(default)]
    pub ctf: Option<crate::ctf::stage::CtfConfig>,
    /// Tilt-series alignment (`[align]`); absent = no alignment stage (the input's or the
    /// simulator's geometry is used as it is).
    #[serde(default)]
    pub align: Option<AlignConfig>,
    /// Reconstruction settings.
    #[serde(default)]
    pub reconstruct: ReconstructConfig,
    /// Template matching in every reconstructed tomogram (`[pick]`); absent = no picking.
    #[serde(default)]
    pub pick: Option<super::pick::PickConfig>,
    /// Subtomogram averaging of the picked particles over all series (`[sta]`, collective
    /// over the ranks after the tilt series); absent = none.
    #[serde(default)]
    pub sta: Option<super::sta::StaConfig>,
}

/// `[simulate]`: a preset of the built-in simulator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateConfig {
    /// `tiny` or `demo`.
    pub preset: String,
    /// Random seed; the same seed gives bit-identical data.
    #[serde(default)]
    pub seed: u64,
    /// Override of the presets' amorphous-ice texture (`SeriesParams::ice_structure_factor`,
    /// ≈ 0.1 physical; the presets use 0): the Thon rings CTF estimation needs.
    #[serde(default)]
    pub ice_structure_factor: Option<f64>,
    /// Override of the presets' pixel size, Å (the field of view shrinks with it).
    #[serde(default)]
    pub pixel_a: Option<f64>,
    /// Override of the presets' mean defocus, Å (underfocus positive).
    #[serde(default)]
    pub defocus_a: Option<f64>,
    /// Override of the presets' image size (`nx = ny`), pixels.
    #[serde(default)]
    pub size: Option<usize>,
    /// Override of the number of particles of each structure per series.
    #[serde(default)]
    pub particles: Option<usize>,
    /// Override of the presets' structures: atomic models (`.pdb`, `.cif`) or density maps
    /// (`.mrc`, potential in volts, centre at voxel n/2). A bare file name such as
    /// `"3j9i.pdb"` is looked up in `shared_data/structures/`, then `shared_data/templates/`.
    /// Each structure gets `particles` copies (default: the preset's count of its first
    /// structure); the truth records its index (RELION `rlnClassNumber` = index + 1).
    #[serde(default)]
    pub structures: Option<Vec<PathBuf>>,
}

impl SimulateConfig {
    /// Apply the overrides to one preset series; `shared_data` resolves bare structure names.
    pub fn apply_overrides(
        &self,
        p: &mut crate::sim::SeriesParams,
        shared_data: &std::path::Path,
    ) -> crate::Result<()> {
        if let Some(s) = self.ice_structure_factor {
            p.ice_structure_factor = s;
        }
        if let Some(px) = self.pixel_a {
            p.pixel_a = px;
        }
        if let Some(d) = self.defocus_a {
            p.defocus_a = d;
        }
        if let Some(n) = self.size {
            p.nx = n;
            p.ny = n;
        }
        if let Some(list) = &self.structures {
            let copies = p.structures.first().map(|s| s.1).unwrap_or(1);
            p.structures = list
                .iter()
                .map(|f| Ok((crate::sim::Structure::from_file(f, shared_data)?, copies)))
                .collect::<crate::Result<Vec<_>>>()?;
        }
        if let Some(k) = self.particles {
            for s in &mut p.structures {
                s.1 = k;
            }
        }
        Ok(())
    }
}

/// `[[input]]`: one existing tilt series.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// Name used for outputs; default: the stack's file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// MRC stack `[tilt, y, x]`.
    pub stack: PathBuf,
    /// IMOD `.tlt` (tilt angles, degrees); else the `.mdoc` angles are used.
    #[serde(default)]
    pub tlt: Option<PathBuf>,
    /// IMOD `.xf` alignment transforms (tilt-axis angle and shifts per tilt).
    #[serde(default)]
    pub xf: Option<PathBuf>,
    /// SerialEM `.mdoc` (angles, dose, pixel spacing, tilt-axis angle).
    #[serde(default)]
    pub mdoc: Option<PathBuf>,
    /// Pixel size (Å) overriding the MRC header / mdoc.
    #[serde(default)]
    pub pixel_a: Option<f64>,
    /// Tilt-axis angle (degrees CCW from +Y) when there is no `.xf` or mdoc.
    #[serde(default)]
    pub axis_deg: Option<f64>,
    /// A ground-truth volume (MRC, stack pixel size) to correlate the tomogram with.
    #[serde(default)]
    pub truth: Option<PathBuf>,
    /// IMOD `.defocus` (ctfplotter, version 2 or 3) giving every tilt's defocus U/V/angle.
    #[serde(default)]
    pub defocus: Option<PathBuf>,
}

/// How the simulated data are aligned before reconstruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeometrySource {
    /// The simulator's true geometry (what a perfect alignment would find). The default
    /// until the alignment stage exists.
    #[default]
    Truth,
    /// Nominal angles, no shifts (what the microscope reports).
    Nominal,
}

/// `[reconstruct]`: weighted back-projection settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconstructConfig {
    /// Binning factors; one tomogram per factor.
    #[serde(default = "default_binnings")]
    pub binnings: Vec<usize>,
    /// Tomogram thickness in Å (default: the simulated slab + 20 %, or 1/4 of the width).
    #[serde(default)]
    pub thickness_a: Option<f64>,
    /// `ramp` or `sirt-like`.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Iterations mimicked by the `sirt-like` filter.
    #[serde(default = "default_sirt_iterations")]
    pub sirt_iterations: u32,
    /// Optional low-pass, fraction of Nyquist (0–1].
    #[serde(default)]
    pub lowpass: Option<f64>,
    /// Negate the contrast so dense matter is bright (default true).
    #[serde(default = "default_true")]
    pub invert_contrast: bool,
    /// `auto`, `cpu` or `cuda`.
    #[serde(default)]
    pub device: DeviceChoice,
    /// `wbp` (weighted back-projection with `filter`) or `sirt`.
    #[serde(default = "default_method")]
    pub method: String,
    /// SIRT iterations (`method = "sirt"`).
    #[serde(default = "default_iterations")]
    pub iterations: u32,
    /// SIRT: clamp the volume to ≥ 0 after every iteration.
    #[serde(default)]
    pub positivity: bool,
    /// SIRT support mask, e.g. `{ kind = "slab", thickness_a = 800.0 }` or
    /// `{ kind = "cylinder", radius_a = 1000.0 }`; default none.
    #[serde(default)]
    pub mask: SupportMask,
    /// Memory budget per rank for one tomogram, e.g. `"8G"` (default: 80 % of the node's
    /// available memory divided by its ranks); larger volumes are made in slabs along Y.
    #[serde(default)]
    pub max_memory: Option<String>,
    /// Geometry of simulated data without an `[align]` stage: `truth` or `nominal` (with
    /// `[align]` the alignment starts from the nominal geometry).
    #[serde(default)]
    pub geometry: GeometrySource,
    /// CTF correction with the geometry's defocus: `none` (default), `phaseflip`, `wiener`
    /// or `3d` (WBP only); see `recon::ctfcorr`.
    #[serde(default)]
    pub ctf_correction: CtfCorrection,
    /// Wiener filter SNR constant (`ctf_correction = "wiener"`).
    #[serde(default = "crate::recon::plan::default_wiener_snr")]
    pub wiener_snr: f64,
}

fn default_binnings() -> Vec<usize> {
    vec![1]
}
fn default_method() -> String {
    "wbp".into()
}
fn default_iterations() -> u32 {
    20
}
fn default_filter() -> String {
    "ramp".into()
}
fn default_sirt_iterations() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

impl Default for ReconstructConfig {
    fn default() -> Self {
        ReconstructConfig {
            binnings: default_binnings(),
            thickness_a: None,
            filter: default_filter(),
            sirt_iterations: default_sirt_iterations(),
            lowpass: None,
            invert_contrast: true,
            device: DeviceChoice::Auto,
            method: default_method(),
            iterations: default_iterations(),
            positivity: false,
            mask: SupportMask::None,
            max_memory: None,
            geometry: GeometrySource::Truth,
            ctf_correction: CtfCorrection::None,
            wiener_snr: crate::recon::plan::DEFAULT_WIENER_SNR,
        }
    }
}

impl ReconstructConfig {
    /// The reconstruction method as `recon::plan`'s type; errors name the config key.
    pub fn method(&self, path: &Path) -> Result<Method> {
        match self.method.as_str() {
            "wbp" => Ok(Method::Wbp {
                filter: self.filter(path)?,
            }),
            "sirt" => {
                if self.iterations == 0 {
                    return Err(Error::Config(format!(
                        "{}: reconstruct.iterations = 0: SIRT needs at least 1 iteration",
                        path.display()
                    )));
                }
                Ok(Method::Sirt {
                    iterations: self.iterations,
                    relaxation: 1.0,
                    positivity: self.positivity,
                    mask: self.mask,
                })
            }
            other => Err(Error::Config(format!(
                "{}: reconstruct.method = {other:?}: use \"wbp\" or \"sirt\"",
                path.display()
            ))),
        }
    }

    /// The memory budget in bytes (`max_memory`), None for the default.
    pub fn max_memory_bytes(&self, path: &Path) -> Result<Option<u64>> {
        match &self.max_memory {
            None => Ok(None),
            Some(t) => parse_bytes(t).map(Some).ok_or_else(|| {
                Error::Config(format!(
                    "{}: reconstruct.max_memory = {t:?}: give bytes with an optional K/M/G/T \
                     suffix, e.g. \"8G\"",
                    path.display()
                ))
            }),
        }
    }

    /// The filter as the reconstruction module's type; errors name the config key.
    pub fn filter(&self, path: &Path) -> Result<Filter> {
        match self.filter.as_str() {
            "ramp" => Ok(Filter::Ramp),
            "sirt-like" | "sirt_like" | "sirtlike" => Ok(Filter::SirtLike {
                iterations: self.sirt_iterations,
            }),
            other => Err(Error::Config(format!(
                "{}: reconstruct.filter = {other:?}: use \"ramp\" or \"sirt-like\"",
                path.display()
            ))),
        }
    }
}

impl Config {
    /// Read and validate a config file. Returns the config (paths resolved against the
    /// file's directory) and the file's text (recorded in the container).
    pub fn load(path: &Path) -> Result<(Config, String)> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "{}: cannot read the config file: {e}",
                path.display()
            ))
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{}: {} (see configs/demo.toml for a valid example)",
                path.display(),
                e.to_string().trim_end()
            ))
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.resolve_paths(&base);
        cfg.validate(path)?;
        Ok((cfg, text))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.out);
        if let Some(p) = self.shared_data.as_mut() {
            fix(p);
        }
        if let Some(m) = self.motioncorr.as_mut() {
            for p in [&mut m.frames_dir, &mut m.gain].into_iter().flatten() {
                fix(p);
            }
        }
        if let Some(t) = self.pick.as_mut().and_then(|p| p.template.as_mut()) {
            // a bare name that is not next to the config is looked up in shared/data later
            if t.is_relative() && base.join(&*t).is_file() {
                *t = base.join(&*t);
            }
        }
        if let Some(st) = self.sta.as_mut() {
            for p in st.reference.iter_mut().chain(st.particles.as_mut()) {
                fix(p);
            }
        }
        for s in &mut self.input {
            fix(&mut s.stack);
            for p in [
                &mut s.tlt,
                &mut s.xf,
                &mut s.mdoc,
                &mut s.truth,
                &mut s.defocus,
            ]
            .into_iter()
            .flatten()
            {
                fix(p);
            }
        }
    }

    /// Check the config before any heavy work; errors name the key and the fix.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let err = |m: String| Err(Error::Config(format!("{}: {m}", path.display())));
        if self.simulate.is_none() && self.input.is_empty() {
            return err("nothing to do: add a [simulate] section or [[input]] tables".into());
        }
        if let Some(s) = &self.simulate {
            if s.preset != "tiny" && s.preset != "demo" {
                return err(format!(
                    "simulate.preset = {:?}: use \"tiny\" or \"demo\"",
                    s.preset
                ));
            }
        }
        if let Some(s) = &self.simulate {
            for (k, v) in [
                ("ice_structure_factor", s.ice_structure_factor),
                ("pixel_a", s.pixel_a),
                ("defocus_a", s.defocus_a),
                ("size", s.size.map(|n| n as f64)),
            ] {
                if let Some(v) = v {
                    if !(v.is_finite() && (v > 0.0 || (k == "ice_structure_factor" && v == 0.0))) {
                        return err(format!("simulate.{k} = {v}: must be a positive number"));
                    }
                }
            }
        }
        if let Some(c) = &self.ctf {
            c.validate(path)?;
        }
        if let Some(p) = &self.pick {
            p.validate(path, &self.reconstruct.binnings)?;
        }
        if let Some(st) = &self.sta {
            st.validate(path)?;
            if self.pick.is_none() && st.particles.is_none() {
                return err(
                    "[sta] needs particles: add a [pick] stage or sta.particles (a RELION-5 particle STAR)"
                        .into(),
                );
            }
        }
        let r = &self.reconstruct;
        if r.binnings.is_empty() || r.binnings.iter().any(|&b| b == 0 || b > 64) {
            return err(format!(
                "reconstruct.binnings = {:?}: give one or more factors between 1 and 64",
                r.binnings
            ));
        }
        if let Some(t) = r.thickness_a {
            if !(t.is_finite() && t > 0.0) {
                return err(format!("reconstruct.thickness_a = {t}: must be > 0 Å"));
            }
        }
        if let Some(l) = r.lowpass {
            if !(l > 0.0 && l <= 1.0) {
                return err(format!(
                    "reconstruct.lowpass = {l}: a fraction of Nyquist in (0, 1]"
                ));
            }
        }
        r.filter(path)?;
        r.method(path)?;
        r.max_memory_bytes(path)?;
        if let Some(a) = &self.align {
            if let Some(x) = a.axis_deg {
                if !x.is_finite() {
                    return err(format!("align.axis_deg = {x}: give an angle in degrees"));
                }
            }
        }
        if let Some(m) = &self.motioncorr {
            m.validate(path)?;
            if let Some(s) = self.input.iter().find(|s| s.mdoc.is_none()) {
                return err(format!(
                    "[[input]] {:?} has no `mdoc`: [motioncorr] finds the movies through the \
                     SerialEM .mdoc; add `mdoc = \"...\"`",
                    s.series_name()
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.input {
            let n = s.series_name();
            if !names.insert(n.clone()) {
                return err(format!(
                    "[[input]] name {n:?} appears twice: give each input a unique `name`"
                ));
            }
        }
        Ok(())
    }
}

impl InputSeries {
    /// The series name: `name`, else the stack's file stem.
    pub fn series_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.stack
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "series".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn demo_config_parses() {
        let text = include_str!("../../configs/demo.toml").replace("@OUT@", "/tmp/x");
        let (_d, p) = write(&text);
        let (c, _) = Config::load(&p).unwrap();
        assert_eq!(c.simulate.unwrap().preset, "demo");
        assert_eq!(c.reconstruct.binnings, vec![1, 2]);
        assert_eq!(c.reconstruct.ctf_correction, CtfCorrection::None);
        let (_d, p) = write(
            "out = \"o\"\n[simulate]\npreset = \"tiny\"\n[reconstruct]\nctf_correction = \"3d\"\n",
        );
        let (c, _) = Config::load(&p).unwrap();
        assert_eq!(c.reconstruct.ctf_correction, CtfCorrection::ThreeD);
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let (_d, p) =
            write("out = \"o\"\n[simulate]\npreset = \"tiny\"\n[reconstruct]\nbinings = [2]\n");
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("binings") && e.contains("c.toml"), "{e}");
        let (_d, p) = write("out = \"o\"\n[simulate]\npreset = \"huge\"\n");
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("simulate.preset"), "{e}");
        let (_d, p) = write("out = \"o\"\n");
        assert!(Config::load(&p)
            .unwrap_err()
            .to_string()
            .contains("nothing to do"));
    }

    #[test]
    fn relative_paths_resolve_against_config_dir() {
        let (d, p) = write("out = \"o\"\n[[input]]\nstack = \"a.mrc\"\n");
        let (c, _) = Config::load(&p).unwrap();
        assert_eq!(c.out, d.path().join("o"));
        assert_eq!(c.input[0].stack, d.path().join("a.mrc"));
        assert_eq!(c.input[0].series_name(), "a");
    }
}
