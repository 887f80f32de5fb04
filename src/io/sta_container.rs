//! The subtomogram-averaging part of the container: `/sta/<job>` (docs/container.md).
//!
//! `lamella run` writes it from rank 0 into `<out>/sta/<job>.h5` (atomically) and links it
//! from `lamella.h5` as `/sta/<job>` (an external link, as the tilt series are).
//!
//! Layout of `/sta/<job>`: attributes `voxel_a` (Å), `box` (voxels), `symmetry`, `classes`,
//! `n_particles`, `iterations`, `mask_radius_a`, `resolution_a` (per class, Å), `complete`
//! (written last); `mask` (`f32 [z, y, x]`, box³, centre voxel n/2); `iter_<k>/` (k from 1,
//! two digits) with `half1`, `half2` (`f32 [z, y, x]`) and `fsc` (`f64 [shell, 5]`: columns
//! `s_per_a` (1/Å), `unmasked`, `masked`, `randomised`, `corrected`; attribute
//! `resolution_a`) for one class, or the same in `iter_<k>/class<c>/` (c from 1) for several;
//! `map` (final full map, or `class<c>/map`); `particles` (compound: `tomogram` index into
//! the `tomograms` string attribute, `x_a, y_a, z_a` Å about the tomogram centre,
//! `rot_deg, tilt_deg, psi_deg` RELION ZYZ, `half` 1|2, `class` from 1).

use std::path::Path;

use hdf5::{Group, H5Type};
use ndarray::{Array1, Array2, Array3};

use crate::io::container::{check_component, h5err, write_h5_atomic, AttrWriter};
use crate::sta::fsc::GoldStandard;
use crate::Result;

/// One class of one iteration.
#[derive(Clone, Debug)]
pub struct StaClassMaps {
    /// Half maps `[z, y, x]`.
    pub half1: Array3<f32>,
    /// Second half map.
    pub half2: Array3<f32>,
    /// Gold-standard FSC (absent before the first FSC).
    pub fsc: Option<GoldStandard>,
}

/// One iteration: its classes.
#[derive(Clone, Debug)]
pub struct StaIteration {
    /// Iteration number, from 1.
    pub iteration: usize,
    /// Per class.
    pub classes: Vec<StaClassMaps>,
}

/// One row of `/sta/<job>/particles`.
#[derive(H5Type, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct StaParticleRow {
    /// Index into the `tomograms` attribute.
    pub tomogram: u32,
    /// Gold-standard half, 1 or 2 (u32 like its neighbours: no padding bytes in the row).
    pub half: u32,
    /// Class, from 1.
    pub class: u32,
    /// Padding made explicit (always 0), so every byte of a row is written.
    pub reserved: u32,
    /// Position, Å about the tomogram centre.
    pub x_a: f64,
    /// y, Å.
    pub y_a: f64,
    /// z, Å.
    pub z_a: f64,
    /// RELION rot, degrees.
    pub rot_deg: f64,
    /// RELION tilt, degrees.
    pub tilt_deg: f64,
    /// RELION psi, degrees.
    pub psi_deg: f64,
}

/// Everything `/sta/<job>` holds.
#[derive(Clone, Debug)]
pub struct StaRecord {
    /// Job name (one HDF5 path component).
    pub job: String,
    /// Voxel size, Å.
    pub voxel_a: f64,
    /// Symmetry name.
    pub symmetry: String,
    /// Mask radius, Å.
    pub mask_radius_a: f64,
    /// The refinement mask, box³.
    pub mask: Array3<f32>,
    /// Every iteration.
    pub iterations: Vec<StaIteration>,
    /// Final full map per class.
    pub maps: Vec<Array3<f32>>,
    /// Final gold-standard resolution per class, Å.
    pub resolution_a: Vec<f64>,
    /// Tomogram names (`StaParticleRow::tomogram` indexes them).
    pub tomograms: Vec<String>,
    /// Refined particles.
    pub particles: Vec<StaParticleRow>,
}

fn volume(path: &Path, g: &Group, obj: &str, name: &str, v: &Array3<f32>) -> Result<()> {
    g.new_dataset_builder()
        .with_data(v.view())
        .create(name)
        .map(|_| ())
        .map_err(h5err(path, &format!("writing {obj}/{name}")))
}

fn group(path: &Path, g: &Group, obj: &str, name: &str) -> Result<Group> {
    g.create_group(name)
        .map_err(h5err(path, &format!("creating group {obj}/{name}")))
}

fn write_class(path: &Path, g: &Group, obj: &str, c: &StaClassMaps) -> Result<()> {
    volume(path, g, obj, "half1", &c.half1)?;
    volume(path, g, obj, "half2", &c.half2)?;
    if let Some(f) = &c.fsc {
        let cols = [
            &f.s_per_a,
            &f.unmasked,
            &f.masked,
            &f.randomised,
            &f.corrected,
        ];
        let n = f.s_per_a.len();
        let table = Array2::from_shape_fn((n, 5), |(i, k)| cols[k].get(i).copied().unwrap_or(0.0));
        let d = g
            .new_dataset_builder()
            .with_data(table.view())
            .create("fsc")
            .map_err(h5err(path, &format!("writing {obj}/fsc")))?;
        let what = format!("{obj}/fsc");
        let a = AttrWriter {
            path,
            loc: &d,
            obj: &what,
        };
        a.f64("resolution_a", f.resolution_a)?;
        a.str("columns", "s_per_a unmasked masked randomised corrected")?;
    }
    Ok(())
}

/// Write `path` holding `/sta/<rec.job>` (module docs), atomically.
pub fn write_sta_file(path: &Path, rec: &StaRecord) -> Result<()> {
    check_component(path, "sta job", &rec.job)?;
    write_h5_atomic(path, |file| {
        let root = file
            .create_group("sta")
            .map_err(h5err(path, "creating group /sta"))?;
        let obj = format!("/sta/{}", rec.job);
        let g = group(path, &root, "/sta", &rec.job)?;
        let a = AttrWriter {
            path,
            loc: &g,
            obj: &obj,
        };
        let classes = rec.maps.len();
        a.f64("voxel_a", rec.voxel_a)?;
        a.u64("box", rec.mask.dim().0)?;
        a.str("symmetry", &rec.symmetry)?;
        a.u64("classes", classes)?;
        a.u64("n_particles", rec.particles.len())?;
        a.u64("iterations", rec.iterations.len())?;
        a.f64("mask_radius_a", rec.mask_radius_a)?;
        a.str("axes", "zyx")?;
        a.str_array("tomograms", &rec.tomograms)?;
        g.new_attr_builder()
            .with_data(&Array1::from(rec.resolution_a.clone()))
            .create("resolution_a")
            .map_err(h5err(
                path,
                &format!("writing attribute resolution_a of {obj}"),
            ))?;
        volume(path, &g, &obj, "mask", &rec.mask)?;
        for it in &rec.iterations {
            let name = format!("iter_{:02}", it.iteration);
            let ipath = format!("{obj}/{name}");
            let ig = group(path, &g, &obj, &name)?;
            if it.classes.len() == 1 {
                write_class(path, &ig, &ipath, &it.classes[0])?;
            } else {
                for (c, m) in it.classes.iter().enumerate() {
                    let cname = format!("class{}", c + 1);
                    let cg = group(path, &ig, &ipath, &cname)?;
                    write_class(path, &cg, &format!("{ipath}/{cname}"), m)?;
                }
            }
        }
        if classes == 1 {
            volume(path, &g, &obj, "map", &rec.maps[0])?;
        } else {
            for (c, m) in rec.maps.iter().enumerate() {
                let cname = format!("class{}", c + 1);
                let cg = group(path, &g, &obj, &cname)?;
                volume(path, &cg, &format!("{obj}/{cname}"), "map", m)?;
            }
        }
        g.new_dataset_builder()
            .with_data(&Array1::from(rec.particles.clone()))
            .create("particles")
            .map_err(h5err(path, &format!("writing {obj}/particles")))?;
        a.scalar("complete", &true)
    })
}
