//! Real data: 40 ribosome particles exported by WarpTools as 2D tilt stacks (RELION-5
//! projection matrices, per-tilt CTF, CTF-premultiplied images, 12 Å pixels, 32² boxes)
//! reconstructed by Fourier insertion with the given poses, against RELION's reconstruction
//! of the same files (`warptools_test_box-32_angpix-12_reconstruct.mrc`).
//!
//! Writes the FSC figure and our map to `$CARGO_TARGET_TMPDIR/sta_real_warptools/`.

mod common;

use lamella::io::mrc::{self, MrcKind};
use lamella::recon::fsc::{fsc, Fsc};
use lamella::report::plot::{write_chart_png, Chart, Series, Style, PALETTE};
use lamella::sta::particles2d::{read_stack_set, reconstruct, InsertOptions, StackFrame};
use ndarray::Array3;
use std::path::PathBuf;

const DIR: &str = "real/warptools-ribosome-particles";
const PARTICLES: &str = "warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star";
const RELION_MAP: &str = "warptools_test_box-32_angpix-12_reconstruct.mrc";

/// Soft spherical mask: 1 inside radius `r` voxels, cosine edge of `w` voxels, about n/2.
fn soft_sphere(n: usize, r: f64, w: f64) -> Array3<f32> {
    let c = (n / 2) as f64;
    Array3::from_shape_fn((n, n, n), |(z, y, x)| {
        let d = ((x as f64 - c).powi(2) + (y as f64 - c).powi(2) + (z as f64 - c).powi(2)).sqrt();
        if d <= r {
            1.0
        } else if d >= r + w {
            0.0
        } else {
            (0.5 + 0.5 * (std::f64::consts::PI * (d - r) / w).cos()) as f32
        }
    })
}

/// Per-shell rms amplitude of a volume's spectrum (shells as in `recon::fsc`).
fn shell_amplitude(v: &Array3<f32>) -> Vec<f64> {
    let f = lamella::recon::fsc::fft3(v.view());
    let n = v.dim().0;
    let freq = |k: usize| {
        if k < n.div_ceil(2) {
            k as f64
        } else {
            k as f64 - n as f64
        }
    };
    let mut sum = vec![0.0; n / 2];
    let mut cnt = vec![0usize; n / 2];
    for ((z, y, x), c) in f.indexed_iter() {
        let r = (freq(z).powi(2) + freq(y).powi(2) + freq(x).powi(2)).sqrt() as usize;
        if r < n / 2 {
            sum[r] += c.norm_sqr() as f64;
            cnt[r] += 1;
        }
    }
    sum.iter()
        .zip(&cnt)
        .map(|(s, c)| (s / *c as f64).sqrt())
        .collect()
}

/// Frequency (1/Å) where the curve first drops below `level` (linear between shells).
fn crossing(f: &Fsc, level: f64) -> Option<f64> {
    (1..f.fsc.len()).find_map(|i| {
        let (a, b) = (f.fsc[i - 1], f.fsc[i]);
        (a >= level && b < level).then(|| {
            let t = (a - level) / (a - b);
            f.s_per_a[i - 1] + t * (f.s_per_a[i] - f.s_per_a[i - 1])
        })
    })
}

fn masked_fsc(a: &Array3<f32>, b: &Array3<f32>, mask: &Array3<f32>, px: f64) -> Fsc {
    fsc((a * mask).view(), (b * mask).view(), px)
}

#[test]
fn reconstruction_of_warptools_2d_stacks_agrees_with_relion() {
    let dir = common::shared_data().join(DIR);
    let set = read_stack_set(&dir.join(PARTICLES), None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.particles.len(), 40);
    assert_eq!(set.tomograms.len(), 4);
    assert_eq!((set.box_px, set.pixel_a), (32, 12.0));
    assert!(set.premultiplied, "rlnCtfDataAreCtfPremultiplied is 1");
    // Tilts actually used: visible and with a non-zero CTF scale (Unt_083 drops frames 0, 5
    // and 35, whose rlnCtfScalefactor is 0 too).
    let opts = InsertOptions::default();
    let used: Vec<usize> = (0..40).map(|p| set.slices(p, &opts).len()).collect();
    println!("tilts used per particle: {used:?}");
    assert_eq!(used[0], 34);
    assert!(used.iter().all(|&u| (20..=37).contains(&u)));
    let total: usize = used.iter().sum();

    let relion = mrc::read(&dir.join(RELION_MAP)).unwrap().data;
    assert_eq!(relion.dim(), (32, 32, 32));
    let px = set.pixel_a;
    let mask = soft_sphere(32, 12.0, 4.0);

    let t0 = std::time::Instant::now();
    let ours = reconstruct(&set, &opts).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!("reconstructed {total} slices of 40 particles in {secs:.2} s (debug build)");

    let variants = [
        (
            "mirrored frame",
            InsertOptions {
                frame: StackFrame::Lamella,
                ..opts
            },
        ),
        ("no CTF weight", InsertOptions { ctf: false, ..opts }),
        (
            "no dose, centre defocus",
            InsertOptions {
                dose: false,
                depth: false,
                ..opts
            },
        ),
    ];
    let maps: Vec<(&str, Array3<f32>)> = variants
        .iter()
        .map(|(name, o)| (*name, reconstruct(&set, o).unwrap()))
        .collect();

    let f_unmasked = fsc(ours.view(), relion.view(), px);
    let f_masked = masked_fsc(&ours, &relion, &mask, px);
    let f_var: Vec<(&str, Fsc)> = maps
        .iter()
        .map(|(n, m)| (*n, masked_fsc(m, &relion, &mask, px)))
        .collect();
    println!(
        "shell  1/s(Å)  masked  unmasked  {}",
        variants.map(|v| v.0).join(" | ")
    );
    for i in 0..f_masked.fsc.len() {
        print!(
            "{i:>4} {:>8.1} {:>7.3} {:>8.3}",
            1.0 / f_masked.s_per_a[i],
            f_masked.fsc[i],
            f_unmasked.fsc[i]
        );
        for (_, f) in &f_var {
            print!("  {:>7.3}", f.fsc[i]);
        }
        println!();
    }
    let mean = |f: &Fsc, a: usize, b: usize| f.fsc[a..b].iter().sum::<f64>() / (b - a) as f64;
    let (m_lo, m_hi) = (mean(&f_masked, 1, 6), mean(&f_masked, 6, 14));
    let m_mirror = mean(&f_var[0].1, 1, 6);
    println!(
        "masked FSC mean shells 1-5: {m_lo:.3} (mirrored frame {m_mirror:.3}), shells 6-13: {m_hi:.3}"
    );
    let r05 = crossing(&f_masked, 0.5).map(|s| 1.0 / s);
    let r0143 = crossing(&f_masked, 0.143).map(|s| 1.0 / s);
    println!("masked FSC(ours, RELION) crosses 0.5 at {r05:?} Å, 0.143 at {r0143:?} Å");

    // Geometry: the right frame agrees with RELION at low and middle resolution; the mirror
    // image (our pose convention without RELION-5's z mirror) does not.
    assert!(
        f_masked.fsc[1..5].iter().all(|&x| x > 0.85),
        "{:?}",
        f_masked.fsc
    );
    assert!(m_hi > 0.5, "shells 6-13 mean {m_hi}");
    assert!(
        m_mirror < 0.7 && m_lo - m_mirror > 0.25,
        "mirror {m_mirror} vs {m_lo}"
    );
    assert!(r05.is_some_and(|r| r < 40.0), "0.5 crossing {r05:?}");

    // CTF weighting: with CTF² in the denominator our spectrum has RELION's shape at low
    // resolution (amplitude ratio flat over shells 1-4); without it the premultiplied data
    // keep the CTF's low-frequency attenuation undone wrongly: the ratio climbs by > 3×.
    let a_rel = shell_amplitude(&relion);
    let tilt = |m: &Array3<f32>| {
        let a = shell_amplitude(m);
        (a[4] / a_rel[4]) / (a[1] / a_rel[1])
    };
    let (t_ctf, t_none) = (tilt(&ours), tilt(&maps[1].1));
    println!("amplitude ratio ours/RELION, shell 4 over shell 1: CTF-weighted {t_ctf:.2}, unweighted {t_none:.2}");
    assert!((0.7..1.5).contains(&t_ctf), "CTF-weighted tilt {t_ctf}");
    assert!(t_none > 3.0, "unweighted tilt {t_none}");

    // Figure and map.
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sta_real_warptools");
    std::fs::create_dir_all(&out).unwrap();
    mrc::write(
        &out.join("ours.mrc"),
        ours.view(),
        px as f32,
        MrcKind::Volume,
    )
    .unwrap();
    let series = |label: &str, f: &Fsc, i: usize| Series {
        label: label.into(),
        points: f
            .s_per_a
            .iter()
            .zip(&f.fsc)
            .skip(1)
            .map(|(s, v)| (*s, *v))
            .collect(),
        color: PALETTE[i],
        style: Style::LineMarkers,
    };
    let mut chart = Chart::new("FSC lamella vs RELION: 40 ribosomes", "1/A", "FSC");
    chart.y_range = Some((-0.2, 1.0));
    chart.hlines = vec![(0.5, [128, 128, 128]), (0.143, [128, 128, 128])];
    chart.series = vec![
        series("masked", &f_masked, 0),
        series("unmasked", &f_unmasked, 1),
        series("mirrored frame, masked", &f_var[0].1, 3),
        series("no CTF weight, masked", &f_var[1].1, 2),
    ];
    let png = out.join("fsc_vs_relion.png");
    write_chart_png(&png, &chart).unwrap();
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    println!("wrote {}", png.display());
}

/// `lamella reconstruct-particles` writes the same map as the library, on 1 and 2 MPI ranks
/// (one allreduce of the Fourier sums), as a float32 MRC that Python's `mrcfile` validates
/// with the 12 Å voxel; bad input exits 3 naming the file and the field.
#[test]
fn reconstruct_particles_cli_writes_a_valid_mrc_on_one_and_two_ranks() {
    let dir = common::shared_data().join(DIR);
    let star = dir.join(PARTICLES);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sta_real_warptools_cli");
    std::fs::create_dir_all(&out).unwrap();
    let one = out.join("map1.mrc");
    common::ok(
        common::lamella()
            .args(["reconstruct-particles", "--particles"])
            .arg(&star)
            .arg("--out")
            .arg(&one)
            .output()
            .unwrap(),
        "reconstruct-particles",
    );
    let set = read_stack_set(&star, None).unwrap();
    let lib = reconstruct(&set, &InsertOptions::default()).unwrap();
    let m1 = mrc::read(&one).unwrap();
    assert_eq!(m1.header.mode, 2);
    let scale = lib.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let d1 = m1
        .data
        .iter()
        .zip(lib.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(d1 <= 1e-5 * scale, "CLI vs library: {d1} (max {scale})");
    if let Some(py) = common::python("reconstruct_particles_cli") {
        let got = common::run_python(
            &py,
            "import os, sys, mrcfile\nassert mrcfile.validate(sys.argv[1], print_file=open(os.devnull, 'w')), 'invalid'\n\
             m = mrcfile.open(sys.argv[1])\nprint(m.data.shape, m.data.dtype, float(m.voxel_size.x))",
            &[one.to_str().unwrap()],
        );
        assert_eq!(got.trim(), "(32, 32, 32) float32 12.0", "{got}");
    }
    if let Some(mut two) = common::mpirun(2) {
        let m2p = out.join("map2.mrc");
        common::ok(
            two.args(["reconstruct-particles", "--particles"])
                .arg(&star)
                .arg("--out")
                .arg(&m2p)
                .output()
                .unwrap(),
            "mpirun -n 2 reconstruct-particles",
        );
        let m2 = mrc::read(&m2p).unwrap().data;
        let d2 = m2
            .iter()
            .zip(m1.data.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("1 vs 2 ranks: max |difference| {d2:e} of max {scale:e}");
        assert!(d2 <= 1e-5 * scale, "1 vs 2 ranks: {d2}");
    }
    // Bad input: a tilt-series STAR is not a 2D-stack particle file (exit 3, file + field).
    let bad =
        common::shared_data().join("formats/pytom-match-pick/tilt_series/tomo200528_107.star");
    let o = common::lamella()
        .args(["reconstruct-particles", "--particles"])
        .arg(&bad)
        .arg("--out")
        .arg(out.join("bad.mrc"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tomo200528_107.star") && err.contains("rlnTomoSubTomosAre2DStacks"),
        "{err}"
    );
    let o = common::lamella()
        .args(["reconstruct-particles", "--box", "33", "--particles"])
        .arg(&star)
        .arg("--out")
        .arg(out.join("bad.mrc"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `relion_reconstruct` (RELION 3.1, apt) on the same tilt images as 2D particles, or None
/// (SKIP) when it is not installed and LAMELLA_REQUIRE_PEERS is not 1.
fn relion_reconstruct() -> Option<std::process::Command> {
    let found = std::process::Command::new("relion_reconstruct")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        if std::env::var("LAMELLA_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("relion_reconstruct not found (apt-get install relion)");
        }
        eprintln!("SKIP: relion_reconstruct (RELION 3.1) not installed");
        return None;
    }
    Some(std::process::Command::new("relion_reconstruct"))
}

/// Peer: RELION 3.1's `relion_reconstruct --ctf` (Fourier insertion with its own gridding)
/// on the same 1430 tilt images written as 2D particles, with the proper rotation
/// `A_total = R·A` as Euler angles (lamella frame), the per-image defocus at the particle's
/// depth, `rlnCtfScalefactor` and `rlnCtfDataAreCtfPremultiplied 1`. Our reconstruction
/// with the same inputs (lamella frame, no dose filter, which RELION 3.1 does not apply)
/// must agree with it to FSC > 0.97 up to 1/37 Å (masked).
#[test]
fn agrees_with_relion_3_reconstruct_on_the_same_images() {
    use lamella::core::geometry::{matrix_to_euler_zyz, transpose};
    use lamella::io::star::{StarBlock, StarFile, StarTable};
    use lamella::sta::insert::CtfWeight;
    let Some(mut peer) = relion_reconstruct() else {
        return;
    };
    let dir = common::shared_data().join(DIR);
    let set = read_stack_set(&dir.join(PARTICLES), None).unwrap();
    let opts = InsertOptions {
        frame: StackFrame::Lamella,
        dose: false,
        ..InsertOptions::default()
    };
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sta_real_warptools_relion3");
    std::fs::create_dir_all(&out).unwrap();
    let mut images = Vec::new();
    let mut table = StarTable::new(&[
        "rlnImageName",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnCtfScalefactor",
        "rlnOpticsGroup",
    ]);
    for p in 0..set.particles.len() {
        let stack = set.read_stack(p).unwrap();
        for (f, s) in set.slices(p, &opts) {
            images.push(stack.index_axis(ndarray::Axis(0), f).to_owned());
            let (rot, tilt, psi) = matrix_to_euler_zyz(&transpose(&s.to_reference));
            let CtfWeight::Premultiplied(c) = s.ctf else {
                panic!("premultiplied data expected")
            };
            table.push_row(vec![
                format!("{:06}@images.mrcs", images.len()),
                format!("{rot:.6}"),
                format!("{tilt:.6}"),
                format!("{psi:.6}"),
                format!("{:.3}", c.defocus_u_a),
                format!("{:.3}", c.defocus_v_a),
                format!("{:.3}", c.astig_angle_deg),
                format!("{:.5}", s.ctf_scale),
                "1".into(),
            ]);
        }
    }
    let views: Vec<_> = images.iter().map(|i| i.view()).collect();
    let stack = ndarray::stack(ndarray::Axis(0), &views).unwrap();
    mrc::write(
        &out.join("images.mrcs"),
        stack.view(),
        12.0,
        MrcKind::ImageStack,
    )
    .unwrap();
    let g = &set.tomograms[0].geometry.optics;
    let mut optics = StarTable::new(&[
        "rlnOpticsGroup",
        "rlnOpticsGroupName",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
        "rlnImageSize",
        "rlnImageDimensionality",
        "rlnCtfDataAreCtfPremultiplied",
    ]);
    optics.push_row(
        [
            "1",
            "opticsGroup1",
            &g.voltage_kv.to_string(),
            &g.cs_mm.to_string(),
            &g.amplitude_contrast.to_string(),
            "12.0",
            "32",
            "2",
            "1",
        ]
        .map(String::from)
        .to_vec(),
    );
    let block = |name: &str, t: StarTable| {
        let mut b = StarBlock::new(name);
        b.table = Some(t);
        b
    };
    StarFile {
        blocks: vec![block("optics", optics), block("particles", table)],
    }
    .write(&out.join("images.star"))
    .unwrap();
    let t0 = std::time::Instant::now();
    let o = peer
        .current_dir(&out)
        .args([
            "--i",
            "images.star",
            "--o",
            "relion3.mrc",
            "--ctf",
            "--angpix",
            "12",
        ])
        .output()
        .unwrap();
    let t_peer = t0.elapsed().as_secs_f64();
    common::ok(o, "relion_reconstruct");
    let t0 = std::time::Instant::now();
    let ours = reconstruct(&set, &opts).unwrap();
    let t_ours = t0.elapsed().as_secs_f64();
    let r3 = mrc::read(&out.join("relion3.mrc")).unwrap().data;
    let mask = soft_sphere(32, 12.0, 4.0);
    let fm = masked_fsc(&ours, &r3, &mask, 12.0);
    let fu = fsc(ours.view(), r3.view(), 12.0);
    println!(
        "{} images; relion_reconstruct {t_peer:.2} s wall, lamella {t_ours:.2} s (debug build)",
        images.len()
    );
    for i in 0..fm.fsc.len() {
        println!(
            "{i:>4} {:>7.1} Å  masked {:.4}  unmasked {:.4}",
            1.0 / fm.s_per_a[i],
            fm.fsc[i],
            fu.fsc[i]
        );
    }
    assert!(fm.fsc[1..11].iter().all(|&x| x > 0.97), "{:?}", fm.fsc);
    assert!(fm.fsc[11..14].iter().all(|&x| x > 0.85), "{:?}", fm.fsc);
}
