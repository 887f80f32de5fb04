//! `recon::plan::reconstruct` end to end on small phantoms: SIRT interrupted and resumed
//! equals an uninterrupted run; several binnings in one pass equal separate runs and do not
//! alias; slabs along Y equal the one-piece reconstruction (WBP and SIRT, general geometry).

mod common;

use lamella::core::geometry::TiltSeriesGeometry;
use lamella::device::Device;
use lamella::io::mrc;
use lamella::recon::filter::Filter;
use lamella::recon::plan::{
    reconstruct_with_stop, CheckpointSpec, Method, ReconstructOutcome, ReconstructSpec, Tomogram,
};
use lamella::recon::sirt::SupportMask;
use lamella::recon::wbp::{wbp, WbpParams};
use ndarray::{Array3, ArrayView3};
use std::cell::Cell;
use std::path::{Path, PathBuf};

const PIX: f64 = 5.0; // Å
const NZ: usize = 16; // thickness at bin 1, voxels

/// Blob centres in voxels relative to the tomogram centre (x, y, z), off-grid.
const BLOBS: [[f64; 3]; 4] = [
    [-10.3, 8.4, 3.6],
    [9.7, -11.2, -3.3],
    [2.2, 14.6, 0.4],
    [-6.6, -5.5, -2.7],
];

/// 25 tilts −60…60°, axis `axis_deg`, shifts, optional x-tilt; `ny × nx` images.
fn geometry(ny: usize, nx: usize, axis_deg: f64, x_tilt: f64) -> TiltSeriesGeometry {
    let angles: Vec<f64> = (0..25).map(|i| -60.0 + 5.0 * i as f64).collect();
    let mut g = TiltSeriesGeometry::from_angles(nx, ny, PIX, &angles, axis_deg);
    for (i, t) in g.tilts.iter_mut().enumerate() {
        t.shift_x_a = 7.0 * (0.7 * i as f64).sin();
        t.shift_y_a = -4.0 * (0.3 * i as f64).cos();
        t.x_tilt_deg = x_tilt;
    }
    g
}

/// Intensities `1 − 0.02·∫blobs` (dense matter dark, as in cryo-EM).
fn stack(g: &TiltSeriesGeometry) -> Array3<f32> {
    common::project_gaussian_blobs(g, &BLOBS, 2.5).mapv(|l| 1.0 - 0.02 * l)
}

fn spec(method: Method, binnings: Vec<usize>) -> ReconstructSpec {
    ReconstructSpec {
        method,
        binnings,
        thickness_a: NZ as f64 * PIX,
        lowpass: None,
        invert_contrast: true,
        max_memory_bytes: Some(1 << 30),
        checkpoint: None,
        ctf_correction: Default::default(),
        wiener_snr: 3.0,
    }
}

fn sirt(iterations: u32, positivity: bool, mask: SupportMask) -> Method {
    Method::Sirt {
        iterations,
        relaxation: 1.0,
        positivity,
        mask,
    }
}

fn never() -> bool {
    false
}

fn run(
    st: ArrayView3<f32>,
    g: &TiltSeriesGeometry,
    s: &ReconstructSpec,
    outs: &[PathBuf],
) -> Vec<Tomogram> {
    match reconstruct_with_stop(st, g, s, &Device::Cpu, outs, &never).unwrap() {
        ReconstructOutcome::Complete(t) => t,
        ReconstructOutcome::Interrupted(i) => panic!("unexpected: {i}"),
    }
}

fn max_abs_diff(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &Array3<f32>) -> f32 {
    a.iter().map(|v| v.abs()).fold(0.0, f32::max)
}

fn read(p: &Path) -> Array3<f32> {
    mrc::read(p).unwrap().data
}

#[test]
fn sirt_interrupted_and_resumed_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let g = geometry(48, 48, 85.0, 0.0);
    let st = stack(&g);
    let ck = dir.path().join("ck");
    let mut s = spec(
        sirt(7, true, SupportMask::Cylinder { radius_a: 110.0 }),
        vec![1],
    );
    let full_out = vec![dir.path().join("full.mrc")];
    let full = run(st.view(), &g, &s, &full_out).remove(0);
    let want = full.volume.clone().unwrap();
    assert_eq!(full.residuals.len(), 7);

    // stop after 2 iterations, then after 2 more, then run to the end
    s.checkpoint = Some(CheckpointSpec {
        dir: ck.clone(),
        every: 0,
        resume: true,
    });
    let out = vec![dir.path().join("resumed.mrc")];
    let mut stops = Vec::new();
    let got = loop {
        let polls = Cell::new(0u32);
        let stop = || {
            polls.set(polls.get() + 1);
            stops.len() < 2 && polls.get() >= 2
        };
        match reconstruct_with_stop(st.view(), &g, &s, &Device::Cpu, &out, &stop).unwrap() {
            ReconstructOutcome::Interrupted(i) => {
                println!("{i}");
                assert!(i.to_string().contains(&format!(
                    "interrupted at iteration {} of 7",
                    2 * (stops.len() + 1)
                )));
                let p = i.checkpoint.clone().unwrap();
                assert!(p.exists() && !out[0].exists());
                stops.push(i.iteration);
            }
            ReconstructOutcome::Complete(mut t) => break t.remove(0),
        }
    };
    assert_eq!(stops, vec![2, 4]);
    let vol = got.volume.unwrap();
    let err = max_abs_diff(&vol, &want);
    println!(
        "resumed vs uninterrupted: max |Δ| = {err:e} (max |v| = {:e})",
        max_abs(&want)
    );
    assert!(err <= 1e-6 * max_abs(&want), "{err}");
    // the residual norms are f64 sums reduced in rayon's (variable) order: equal to rounding
    assert_eq!(got.residuals.len(), full.residuals.len());
    for (a, b) in got.residuals.iter().zip(&full.residuals) {
        assert!((a - b).abs() <= 1e-12 * b, "{a} vs {b}");
    }
    assert_eq!(read(&out[0]), read(&full_out[0]));
    // the mask holds: voxels outside the cylinder stay 0
    let (nz, _, nx) = vol.dim();
    for ((z, _, x), &v) in vol.indexed_iter() {
        let r = PIX * ((x as f64 - (nx / 2) as f64).hypot(z as f64 - (nz / 2) as f64));
        if r > 110.0 {
            assert_eq!(v, 0.0);
        }
    }
    assert!(vol.iter().all(|&v| v >= 0.0));
    // the finished run removed its checkpoint
    assert_eq!(std::fs::read_dir(&ck).unwrap().count(), 0);
}

#[test]
fn a_stale_checkpoint_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let g = geometry(32, 32, 85.0, 0.0);
    let st = stack(&g);
    let mut s = spec(sirt(4, false, SupportMask::None), vec![1]);
    s.checkpoint = Some(CheckpointSpec {
        dir: dir.path().to_path_buf(),
        every: 1,
        resume: true,
    });
    let out = vec![dir.path().join("v.mrc")];
    let stop = || true;
    let r = reconstruct_with_stop(st.view(), &g, &s, &Device::Cpu, &out, &stop).unwrap();
    assert!(matches!(r, ReconstructOutcome::Interrupted(ref i) if i.iteration == 1));
    // other data: the checkpoint must not be used
    let st2 = st.mapv(|v| v * 0.5 + 0.5);
    let got = run(st2.view(), &g, &s, &out).remove(0).volume.unwrap();
    let mut fresh = s.clone();
    fresh.checkpoint = None;
    let want = run(st2.view(), &g, &fresh, &[dir.path().join("w.mrc")])
        .remove(0)
        .volume
        .unwrap();
    assert_eq!(max_abs_diff(&got, &want), 0.0);
}

#[test]
fn several_binnings_in_one_pass_equal_separate_runs() {
    let dir = tempfile::tempdir().unwrap();
    let g = geometry(64, 64, 85.0, 0.0);
    let st = stack(&g);
    for method in [
        Method::Wbp {
            filter: Filter::Ramp,
        },
        sirt(3, false, SupportMask::None),
    ] {
        let bins = vec![1, 2, 4];
        let outs: Vec<PathBuf> = bins
            .iter()
            .map(|b| dir.path().join(format!("all_bin{b}.mrc")))
            .collect();
        let all = run(st.view(), &g, &spec(method.clone(), bins.clone()), &outs);
        for (t, &b) in all.iter().zip(&bins) {
            let one_out = dir.path().join(format!("one_bin{b}.mrc"));
            let one = run(
                st.view(),
                &g,
                &spec(method.clone(), vec![b]),
                std::slice::from_ref(&one_out),
            )
            .remove(0);
            assert_eq!(t.shape, (NZ / b, 64 / b, 64 / b));
            assert_eq!(t.pixel_a, PIX * b as f64);
            let (a, o) = (t.volume.as_ref().unwrap(), one.volume.as_ref().unwrap());
            assert_eq!(max_abs_diff(a, o), 0.0, "{method:?} bin {b}");
            let h = mrc::read_header(&t.path).unwrap();
            assert!((h.pixel_size_a()[0] as f64 - PIX * b as f64).abs() < 1e-4);
            assert_eq!(read(&t.path), *a);
        }
        // the WBP path is the legacy `wbp` function
        if let Method::Wbp { filter } = method {
            let legacy = wbp(
                st.view(),
                &g,
                &WbpParams {
                    bin: 2,
                    thickness_px: NZ / 2,
                    filter,
                    lowpass: None,
                    invert_contrast: true,
                },
                &Device::Cpu,
            )
            .unwrap();
            assert_eq!(max_abs_diff(&legacy, all[1].volume.as_ref().unwrap()), 0.0);
        }
    }
}

/// A wave above the binned Nyquist added to every tilt leaves the binned tomogram unchanged
/// (it is cropped away, not folded back).
#[test]
fn binning_does_not_alias() {
    let dir = tempfile::tempdir().unwrap();
    let g = geometry(64, 64, 85.0, 0.0);
    let st = stack(&g);
    // 24 cycles per 64 px along x and 20 along y: below the stack's Nyquist (32 cycles),
    // above bin 2's (16 cycles); a pixel average would fold it to 8 and 12 cycles
    let wave = |y: usize, x: usize| {
        0.05 * (2.0 * std::f32::consts::PI * (24.0 * x as f32 + 20.0 * y as f32) / 64.0).cos()
    };
    let noisy = Array3::from_shape_fn(st.dim(), |(t, y, x)| st[[t, y, x]] + wave(y, x));
    let s = spec(
        Method::Wbp {
            filter: Filter::Ramp,
        },
        vec![2, 4],
    );
    let outs = [dir.path().join("a2.mrc"), dir.path().join("a4.mrc")];
    let clean = run(st.view(), &g, &s, &outs);
    let outs = [dir.path().join("b2.mrc"), dir.path().join("b4.mrc")];
    let dirty = run(noisy.view(), &g, &s, &outs);
    for (c, d) in clean.iter().zip(&dirty) {
        let (c, d) = (c.volume.as_ref().unwrap(), d.volume.as_ref().unwrap());
        let rel = max_abs_diff(c, d) / max_abs(c);
        println!("aliasing: max |Δ| / max |v| = {rel:e}");
        // the wave changes the image means by ~1e-8 only (normalisation), nothing else
        assert!(rel < 1e-4, "{rel}");
    }
}

/// Force slabs with a budget just above the fixed memory, check the split and the values.
fn slab_vs_one_piece(method: Method, axis: f64, x_tilt: f64, lines_budget: u64) -> (usize, f32) {
    let dir = tempfile::tempdir().unwrap();
    let g = geometry(64, 48, axis, x_tilt);
    let st = stack(&g);
    let mut s = spec(method.clone(), vec![1]);
    let one = run(st.view(), &g, &s, &[dir.path().join("one.mrc")]).remove(0);
    let want = one.volume.unwrap();
    let images = 4 * 25 * 64 * 48u64;
    let line = 4 * (NZ * 48) as u64;
    s.max_memory_bytes = Some(match method {
        Method::Wbp { .. } => images + lines_budget * line,
        Method::Sirt { .. } => 4 * images + 4 * lines_budget * line,
    });
    let out = dir.path().join("slabs.mrc");
    let t = run(st.view(), &g, &s, std::slice::from_ref(&out)).remove(0);
    assert!(t.slabs > 1, "budget did not force slabs");
    assert!(t.volume.is_none(), "sliced volumes are not returned");
    let got = read(&out);
    let rel = max_abs_diff(&got, &want) / max_abs(&want);
    println!(
        "{method:?} axis {axis} x-tilt {x_tilt}: {} slabs, max |Δ| / max |v| = {rel:e}",
        t.slabs
    );
    (t.slabs, rel)
}

#[test]
fn wbp_slabs_equal_one_piece() {
    let (n, rel) = slab_vs_one_piece(
        Method::Wbp {
            filter: Filter::Ramp,
        },
        85.0,
        0.0,
        20,
    );
    assert_eq!(n, 4);
    assert!(rel <= 1e-5, "{rel}");
}

#[test]
fn sirt_slabs_equal_one_piece_in_general_geometry() {
    // separable: axis along Y, no x-tilt
    let (_, rel) = slab_vs_one_piece(sirt(4, true, SupportMask::None), 0.0, 0.0, 36);
    assert!(rel <= 1e-5, "{rel}");
    // axis 85°, shifts, and an x-tilt: the halo grows, the result stays exact
    let (n, rel) = slab_vs_one_piece(
        sirt(3, false, SupportMask::Slab { thickness_a: 60.0 }),
        85.0,
        2.0,
        40,
    );
    assert!(n >= 2);
    assert!(rel <= 1e-5, "{rel}");
}

/// The halo is what makes a SIRT slab exact: with `sirt_halo` lines the core equals the
/// one-piece SIRT, with none it does not (axis 85°: every iteration couples neighbouring Y
/// lines through the bilinear footprints).
#[test]
fn sirt_slab_needs_its_halo() {
    use lamella::recon::project::forward_project_cpu;
    use lamella::recon::sirt::{sirt_solve, SirtParams};
    use lamella::recon::slab::{sirt_halo, slab_projections};
    use ndarray::s;
    let g = geometry(48, 48, 85.0, 0.0);
    let projs = g.projections(1);
    let shape = (NZ, 48, 48);
    let truth = Array3::from_shape_fn(shape, |(z, y, x)| {
        ((x * 7 + y * 3 + z * 5) % 11) as f32 * 0.1
    });
    let b = forward_project_cpu(truth.view(), &projs, (48, 48), PIX);
    let p = SirtParams {
        iterations: 5,
        ..SirtParams::default()
    };
    let full = sirt_solve(b.view(), &projs, shape, PIX, &p, &Device::Cpu)
        .unwrap()
        .volume;
    let halo = sirt_halo(&projs, shape, PIX, p.iterations);
    println!("halo for 5 iterations at axis 85°: {halo} lines");
    let (y0, y1) = (20usize, 28usize);
    let core_err = |halo: usize| {
        let (py0, py1) = (y0.saturating_sub(halo), (y1 + halo).min(48));
        let sp = slab_projections(&projs, 48, py0, py1 - py0, PIX);
        let v = sirt_solve(b.view(), &sp, (NZ, py1 - py0, 48), PIX, &p, &Device::Cpu)
            .unwrap()
            .volume;
        let core = v.slice(s![.., y0 - py0..y1 - py0, ..]).to_owned();
        let want = full.slice(s![.., y0..y1, ..]).to_owned();
        max_abs_diff(&core, &want) / max_abs(&want)
    };
    let (exact, none) = (core_err(halo), core_err(0));
    println!("slab core vs one piece: halo {halo}: {exact:e}; no halo: {none:e}");
    assert!(exact <= 1e-5, "{exact}");
    assert!(none > 1e-2, "{none}");
}

/// Slabs and checkpoints together: a stop in the second slab, then a resume, gives the file
/// of an uninterrupted sliced run (the first slab comes from its final checkpoint).
#[test]
fn sliced_sirt_resumes_in_the_slab_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let g = geometry(64, 48, 85.0, 0.0);
    let st = stack(&g);
    let images = 4 * 25 * 64 * 48u64;
    let line = 4 * (NZ * 48) as u64;
    let mut s = spec(sirt(3, false, SupportMask::None), vec![1]);
    s.max_memory_bytes = Some(4 * images + 4 * 40 * line);
    let plain = dir.path().join("plain.mrc");
    let t = run(st.view(), &g, &s, std::slice::from_ref(&plain)).remove(0);
    assert!(t.slabs >= 2);
    s.checkpoint = Some(CheckpointSpec {
        dir: dir.path().join("ck"),
        every: 0,
        resume: true,
    });
    let out = dir.path().join("resumed.mrc");
    let polls = Cell::new(0u32);
    let stop = || {
        polls.set(polls.get() + 1);
        polls.get() == 5
    };
    let r = reconstruct_with_stop(
        st.view(),
        &g,
        &s,
        &Device::Cpu,
        std::slice::from_ref(&out),
        &stop,
    )
    .unwrap();
    let ReconstructOutcome::Interrupted(i) = r else {
        panic!("not interrupted")
    };
    println!("{i}");
    assert_eq!((i.slab, i.iteration), (1, 2));
    let t = run(st.view(), &g, &s, std::slice::from_ref(&out)).remove(0);
    assert_eq!(t.slabs, i.slabs);
    assert_eq!(read(&out), read(&plain));
    assert_eq!(std::fs::read_dir(dir.path().join("ck")).unwrap().count(), 0);
}
