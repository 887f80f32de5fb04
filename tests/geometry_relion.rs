//! lamella's tilt geometry (`core::geometry::TiltImage`) against real RELION-5 projection
//! matrices (WarpTools export) and real RELION-5 per-tilt Euler geometry (pytom test data).

mod common;

use lamella::core::geometry::{matmul, max_abs_diff, transpose, TiltImage, IDENTITY};
use lamella::io::relion::{
    matrix_is_centred, projection_matrices, read_particles_star, read_tilt_series_star,
    read_tomograms_global,
};
use lamella::io::star::StarFile;

const WARP: &str = "real/warptools-ribosome-particles/warptools_test_4-tomos_10-ptcls_box-32_angpix-12_tomograms.star";
const WARP_PARTICLES: &str =
    "real/warptools-ribosome-particles/warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star";
const PYTOM_TS: &str = "formats/pytom-match-pick/tilt_series/tomo200528_107.star";

fn max_diff4(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) -> f64 {
    let mut m: f64 = 0.0;
    for i in 0..4 {
        for j in 0..4 {
            m = m.max((a[i][j] - b[i][j]).abs());
        }
    }
    m
}

fn rot3(m: &[[f64; 4]; 4]) -> [[f64; 3]; 3] {
    [
        [m[0][0], m[0][1], m[0][2]],
        [m[1][0], m[1][1], m[1][2]],
        [m[2][0], m[2][1], m[2][2]],
    ]
}

fn det3(r: &[[f64; 3]; 3]) -> f64 {
    r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0])
}

fn median(v: &[f64]) -> f64 {
    let mut w = v.to_vec();
    w.sort_by(f64::total_cmp);
    let n = w.len();
    if n % 2 == 1 {
        w[n / 2]
    } else {
        0.5 * (w[n / 2 - 1] + w[n / 2])
    }
}

/// Least-squares line through `(i, v[i])`: (slope, rms residual).
fn line_fit(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = v.iter().sum::<f64>() / n;
    let sxy: f64 = v
        .iter()
        .enumerate()
        .map(|(i, y)| (i as f64 - mx) * (y - my))
        .sum();
    let sxx: f64 = (0..v.len()).map(|i| (i as f64 - mx).powi(2)).sum();
    let slope = sxy / sxx;
    let rms = (v
        .iter()
        .enumerate()
        .map(|(i, y)| (y - my - slope * (i as f64 - mx)).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    (slope, rms)
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt();
    (m, sd)
}

/// The key geometry test: every WarpTools projection matrix decomposes into a `TiltImage`
/// that `relion_matrix` rebuilds to 1e-5.
///
/// Finding: WarpTools' 2D-stack export writes rotation-only matrices (`[r0,r1,r2,0]`, W =
/// `[0,0,0,1]`): its particle images are cut out centred on each particle, so the matrices
/// map coordinates about the tomogram centre to coordinates about the image centre. The
/// tilt-image size is not in the file, and no image size makes the RELION corner-origin
/// reading sensible (the Z row would need a translation `−(R·c)_z` that the file does not
/// have, and the x/y "shifts" would be thousands of Å, varying with tilt). So the matrices
/// are decomposed with tomogram size `[0,0,0]` and image size `[0,0]` (the centred frame),
/// which gives zero shifts and an exact rebuild. The corner-origin reading with
/// `rlnTomoSizeX/Y/Z` is checked too: rows X, Y and W rebuild exactly, and the Z row differs
/// only in its translation, by exactly `−(R·c)_z`.
#[test]
fn warptools_projection_matrices_decompose_and_rebuild() {
    let path = common::shared_data().join(WARP);
    let file = StarFile::read(&path).unwrap();
    let tomos = read_tomograms_global(&path).unwrap();
    assert_eq!(tomos.len(), 4);
    let mut worst_centred: f64 = 0.0;
    let mut worst_corner: f64 = 0.0;
    println!("tomogram          tilt#  pre-exp  tilt_deg  axis_deg  xtilt_deg  |R·Rᵀ−I|");
    for tg in &tomos {
        let size = tg.size_px.expect("rlnTomoSizeX/Y/Z");
        assert_eq!(size, [4400, 6000, 1400]);
        let px = tg.pixel_a;
        assert!((px - 1.667).abs() < 1e-9);
        let block = file.block(&tg.name).unwrap();
        let mats = projection_matrices(block, &path).unwrap();
        assert_eq!(mats.len(), 37);
        let pre = block
            .table()
            .unwrap()
            .f64_column("rlnMicrographPreExposure", &path, &tg.name)
            .unwrap();
        let mut tilts = Vec::new();
        let mut axes = Vec::new();
        for (i, m) in mats.iter().enumerate() {
            assert!(
                matrix_is_centred(m),
                "{} tilt {i}: not rotation-only",
                tg.name
            );
            assert_eq!(m[3], [0.0, 0.0, 0.0, 1.0]);
            let r = rot3(m);
            let orth = max_abs_diff(&matmul(&r, &transpose(&r)), &IDENTITY);
            assert!(orth < 1e-5, "{} tilt {i}: R·Rᵀ−I = {orth:e}", tg.name);
            assert!(
                (det3(&r) - 1.0).abs() < 1e-5,
                "{} tilt {i}: det {}",
                tg.name,
                det3(&r)
            );

            // Centred frame: exact decomposition and rebuild, zero shifts.
            let mut t = TiltImage::nominal(0.0, 0.0);
            t.set_from_relion_matrix(m, px, [0, 0, 0], [0, 0]).unwrap();
            let back = t.relion_matrix(px, [0, 0, 0], [0, 0]);
            let d = max_diff4(m, &back);
            worst_centred = worst_centred.max(d);
            assert!(d < 1e-5, "{} tilt {i}: rebuild differs by {d:e}", tg.name);
            assert!(t.shift_x_a.abs() < 1e-9 && t.shift_y_a.abs() < 1e-9);

            // Corner-origin reading with the tomogram size (image size = tomogram x/y size).
            let mut u = TiltImage::nominal(0.0, 0.0);
            let img = [size[0], size[1]];
            u.set_from_relion_matrix(m, px, size, img).unwrap();
            let back = u.relion_matrix(px, size, img);
            for row in [0usize, 1, 3] {
                for col in 0..4 {
                    worst_corner = worst_corner.max((m[row][col] - back[row][col]).abs());
                }
            }
            let rc_z: f64 = (0..3).map(|k| back[2][k] * (size[k] / 2) as f64).sum();
            assert!((back[2][3] + rc_z).abs() < 1e-6 && m[2][3] == 0.0);

            println!(
                "{:<17} {:>4} {:>8.3} {:>9.3} {:>9.3} {:>10.3} {:>9.1e}",
                tg.name, i, pre[i], t.tilt_deg, t.axis_deg, t.x_tilt_deg, orth
            );
            tilts.push(t.tilt_deg);
            axes.push(t.axis_deg);
        }
        assert!(
            worst_corner < 1e-5,
            "corner reading rows X/Y/W: {worst_corner:e}"
        );
        // The tilt angles: a ~108° span (±54° in 3° steps, 37 tilts) about the first
        // acquired tilt (pre-exposure 0), which carries the specimen's pre-tilt.
        let (lo, hi) = tilts
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let i0 = pre.iter().position(|&p| p == 0.0).unwrap();
        let (axis_mean, axis_sd) = mean_sd(&axes);
        println!(
            "{}: tilt range {lo:.2}..{hi:.2} (span {:.2}), first tilt {:.2}, axis {axis_mean:.2} ± {axis_sd:.2}",
            tg.name,
            hi - lo,
            tilts[i0]
        );
        assert!(lo > -80.0 && hi < 80.0);
        assert!((hi - lo) > 95.0 && (hi - lo) < 125.0, "span {}", hi - lo);
        assert!(lo < tilts[i0] && tilts[i0] < hi);
        // Stack order is by tilt angle: a straight-line fit of tilt vs index has a slope
        // near the 3° step and small residuals.
        let (slope, rms) = line_fit(&tilts);
        println!(
            "{}: tilt ≈ a + {slope:.3}·index, residual rms {rms:.2}°",
            tg.name
        );
        assert!(slope.abs() > 2.4 && slope.abs() < 3.8, "slope {slope}");
        assert!(rms < 6.0, "rms {rms}");
        // The axis is constant-ish: median absolute deviation < 3°.
        let med = median(&axes);
        let mad = median(&axes.iter().map(|a| (a - med).abs()).collect::<Vec<_>>());
        println!("{}: axis median {med:.2}°, MAD {mad:.2}°", tg.name);
        assert!(mad < 3.0, "{}: axis MAD {mad}", tg.name);
        assert!(axes.iter().all(|a| (a - med).abs() < 30.0));
    }
    println!(
        "max |rebuilt − file| centred: {worst_centred:.2e}; corner rows X/Y/W: {worst_corner:.2e}"
    );
}

/// RELION-5 Euler geometry (`rlnTomoXTilt/YTilt/ZRot`, shifts): our projection matrices
/// are rotations, the refined `YTilt` follows the nominal stage tilt, and the tomogram
/// centre projects to the image centre plus the shift.
#[test]
fn pytom_euler_geometry_builds_rotations_tracking_nominal_tilt() {
    let path = common::shared_data().join(PYTOM_TS);
    // The stack size is not in the file; tomograms.star gives the tomogram as 4000² at
    // 1.724 Å, used here as the image size (it only moves the image centre).
    let (nx, ny, px) = (4000usize, 4000usize, 1.724);
    let g = read_tilt_series_star(&path, nx, ny, px).unwrap();
    assert_eq!(g.len(), 35);
    let file = StarFile::read(&path).unwrap();
    let t = file.blocks[0].table().unwrap();
    let nominal = t
        .f64_column("rlnTomoNominalStageTiltAngle", &path, "tomo200528_107")
        .unwrap();
    let mut worst_tilt: f64 = 0.0;
    let mut axes = Vec::new();
    println!("tilt#  nominal   ytilt    zrot    xtilt   shiftX_A  shiftY_A  pre-exp  acq");
    for (i, ti) in g.tilts.iter().enumerate() {
        let m = ti.relion_matrix(px, [4000, 4000, 2000], [nx, ny]);
        let r = rot3(&m);
        assert!(max_abs_diff(&matmul(&r, &transpose(&r)), &IDENTITY) < 1e-12);
        assert!((det3(&r) - 1.0).abs() < 1e-12);
        // tomogram centre -> image centre + shift / pixel
        let c = [2000.0, 2000.0, 1000.0, 1.0];
        let u: f64 = (0..4).map(|k| m[0][k] * c[k]).sum();
        let v: f64 = (0..4).map(|k| m[1][k] * c[k]).sum();
        assert!((u - (2000.0 + ti.shift_x_a / px)).abs() < 1e-9);
        assert!((v - (2000.0 + ti.shift_y_a / px)).abs() < 1e-9);
        // decomposing our own matrix gives the STAR angles back
        let mut back = TiltImage::nominal(0.0, 0.0);
        back.set_from_relion_matrix(&m, px, [4000, 4000, 2000], [nx, ny])
            .unwrap();
        assert!((back.tilt_deg - ti.tilt_deg).abs() < 1e-9);
        assert!((back.axis_deg - ti.axis_deg).abs() < 1e-9);
        assert!((back.shift_x_a - ti.shift_x_a).abs() < 1e-6);
        worst_tilt = worst_tilt.max((ti.tilt_deg - nominal[i]).abs());
        axes.push(ti.axis_deg);
        println!(
            "{i:>4} {:>8.3} {:>8.3} {:>7.3} {:>7.3} {:>9.2} {:>9.2} {:>8.2} {:>4}",
            nominal[i],
            ti.tilt_deg,
            ti.axis_deg,
            ti.x_tilt_deg,
            ti.shift_x_a,
            ti.shift_y_a,
            ti.pre_exposure_e_a2,
            ti.acquisition_index
        );
    }
    let (am, asd) = mean_sd(&axes);
    println!("max |YTilt − nominal| = {worst_tilt:.3}°, ZRot {am:.3} ± {asd:.3}°");
    assert!(
        worst_tilt < 3.0,
        "YTilt strays {worst_tilt}° from the nominal angle"
    );
    assert!((am + 90.55).abs() < 1.0, "ZRot mean {am}");
    // nominal angles increase with the stack index, and so do the refined ones
    assert!(g.tilts.windows(2).all(|w| w[1].tilt_deg > w[0].tilt_deg));
    // dose: pre-exposures are a permutation of k·step
    let mut pre: Vec<f64> = g.tilts.iter().map(|t| t.pre_exposure_e_a2).collect();
    pre.sort_by(f64::total_cmp);
    assert!(pre[0] == 0.0 && pre.windows(2).all(|w| w[1] > w[0]));
}

/// WarpTools particles: pixel coordinates (at the 12 Å export pixel) centred with the
/// tomogram sizes of the sibling tomograms file land inside the tomograms.
#[test]
fn warptools_particles_are_inside_their_tomograms() {
    let path = common::shared_data().join(WARP_PARTICLES);
    let parts = read_particles_star(&path).unwrap();
    assert_eq!(parts.len(), 40);
    let half = [
        4400.0 / 2.0 * 1.667,
        6000.0 / 2.0 * 1.667,
        1400.0 / 2.0 * 1.667,
    ];
    let mut lo = [f64::MAX; 3];
    let mut hi = [f64::MIN; 3];
    for p in &parts {
        for k in 0..3 {
            let c = p.centered_coordinate_a[k];
            assert!(c.abs() <= half[k], "{p:?} outside the tomogram");
            lo[k] = lo[k].min(c);
            hi[k] = hi[k].max(c);
        }
    }
    // spread over most of x and y (they would crowd one corner at the wrong pixel size)
    for k in 0..2 {
        assert!(hi[k] - lo[k] > half[k], "axis {k}: {}..{}", lo[k], hi[k]);
    }
    println!("particle extent (Å about centre): {lo:?} .. {hi:?}");
    let first = &parts[0];
    assert_eq!(first.tomo_name, "Unt_083.tomostar");
    assert!((first.centered_coordinate_a[0] - (494.521 * 12.0 - 2200.0 * 1.667)).abs() < 1e-6);
    assert_eq!(first.euler_deg, [53.913, 104.840, -78.580]);
}
