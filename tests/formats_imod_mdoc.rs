//! IMOD .tlt/.xf and SerialEM .mdoc/.nav parsers against real files in shared/data/formats.

mod common;

use lamella::io::imod::{self, XfRow};
use lamella::io::mdoc::{self, Mdoc, MdocTilt};
use std::path::PathBuf;

fn fmt(rel: &str) -> PathBuf {
    common::shared_data().join("formats").join(rel)
}

/// Numeric columns of the data rows of an AreTomo .aln (lines not starting with `#`).
fn aln_rows(rel: &str) -> Vec<Vec<f64>> {
    std::fs::read_to_string(fmt(rel))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect()
}

#[test]
fn real_tlt_files() {
    let bba = imod::read_tlt(&fmt("imod-uitestdata/BBa.tlt")).unwrap();
    assert_eq!(bba.len(), 61);
    assert_eq!(bba[0], 65.06);
    assert!(bba.windows(2).all(|w| w[1] < w[0]), "BBa.tlt descends");

    let raw = imod::read_tlt(&fmt("etomofiles/TS_001.rawtlt")).unwrap();
    let tlt = imod::read_tlt(&fmt("etomofiles/TS_001.tlt")).unwrap();
    assert_eq!((raw.len(), tlt.len()), (40, 40));
    assert_eq!((raw[0], tlt[0]), (-60.0, -57.12));
    // .tlt ≈ .rawtlt + AngleOffset 2.85 (TS_001.edf); tiltalign also refined each view's
    // tilt, so the differences spread over 2.81–3.23°.
    for (r, t) in raw.iter().zip(&tlt) {
        assert!((t - (r + 2.85)).abs() <= 0.4, "{r} {t}");
    }

    let w = imod::read_tlt(&fmt("warpylib/00254.tlt")).unwrap();
    assert_eq!(w.len(), 41);
    assert_eq!((w[0], w[40]), (-60.01, 59.98));

    let sim =
        imod::read_tlt(&common::shared_data().join("sim-independent/tilt_series.tlt")).unwrap();
    assert_eq!(sim.len(), 41);
}

#[test]
fn real_xf_files_parse() {
    for (rel, n) in [
        ("imod-uitestdata/BBa.xf", 61),
        ("imod-uitestdata/BBa.tltxf", 61),
        ("etomofiles/TS_001.xf", 40),
        ("alnfile/global_no_local.xf", 61),
        ("warpylib/00254.xf", 41),
    ] {
        let rows = imod::read_xf(&fmt(rel)).unwrap();
        assert_eq!(rows.len(), n, "{rel}");
        for r in &rows {
            assert!((r.scale() - 1.0).abs() < 0.03, "{rel}: scale {}", r.scale());
        }
    }
    let first = imod::read_xf(&fmt("imod-uitestdata/BBa.xf")).unwrap()[0];
    assert_eq!(first.a, [[0.9787406, -0.1898027], [0.1861717, 0.9824202]]);
    assert_eq!(first.d, [-20.199, 1.220]);
    // A local-alignment file is not a plain .xf and is refused with a hint.
    let e = imod::read_xf(&fmt("imod-uitestdata/BBalocal.xf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("BBalocal.xf") && e.contains("local"), "{e}");
}

/// IMOD's own alignment of the BB tutorial set: the .xf rotation read with A = Rz(−axis) gives
/// the tilt-axis angle that was given to tiltxcorr (`RotationAngle -12.5` in xcorra.com).
/// The mean over views is −11.35° (1.2° from −12.5); with the opposite sign it would be
/// +11.35°, 24° away: this pins the sign convention.
#[test]
fn bba_axis_matches_xcorr_rotation_angle() {
    let com = std::fs::read_to_string(fmt("imod-uitestdata/xcorra.com")).unwrap();
    let rot: f64 = com
        .lines()
        .find_map(|l| l.strip_prefix("RotationAngle"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rot, -12.5);
    let rows = imod::read_xf(&fmt("imod-uitestdata/BBa.xf")).unwrap();
    let mean_axis = rows.iter().map(|r| r.to_axis_shift(1.0).0).sum::<f64>() / rows.len() as f64;
    assert!((mean_axis - rot).abs() < 3.0, "axis {mean_axis} vs {rot}");
    assert!((mean_axis + 11.35).abs() < 0.05, "axis {mean_axis}");
}

/// WarpTools' ImportAlignments turned 00254.xf into 00254.xml: its AxisAngle and AxisOffsetX/Y
/// are exactly lamella's (axis, shift) from the .xf, at 10 Å/px.
#[test]
fn warp_import_matches_xf_convention() {
    let xml = std::fs::read_to_string(fmt("warpylib/00254.xml")).unwrap();
    let list = |tag: &str| -> Vec<f64> {
        let open = format!("<{tag}>");
        let start = xml.find(&open).unwrap() + open.len();
        let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
        xml[start..end]
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect()
    };
    let (axis, ox, oy) = (list("AxisAngle"), list("AxisOffsetX"), list("AxisOffsetY"));
    let rows = imod::read_xf(&fmt("warpylib/00254.xf")).unwrap();
    assert_eq!(rows.len(), axis.len());
    for (i, r) in rows.iter().enumerate() {
        let (a, sx, sy) = r.to_axis_shift(10.0);
        assert!((a - axis[i]).abs() < 1e-4, "row {i}: {a} vs {}", axis[i]);
        assert!(
            (sx - ox[i]).abs() < 0.02 && (sy - oy[i]).abs() < 0.02,
            "row {i}"
        );
    }
}

/// AreTomo's .aln and its IMOD export: the .tlt is the TILT column; the .xf matrix is R(ROT),
/// so lamella reads axis = −ROT, and the shift (px) it reads is exactly (TX, TY).
#[test]
fn alnfile_pair() {
    let aln = aln_rows("alnfile/global_no_local.aln");
    let tlt = imod::read_tlt(&fmt("alnfile/global_no_local.tlt")).unwrap();
    let xf = imod::read_xf(&fmt("alnfile/global_no_local.xf")).unwrap();
    assert_eq!((aln.len(), tlt.len(), xf.len()), (61, 61, 61));
    for ((row, t), x) in aln.iter().zip(&tlt).zip(&xf) {
        let (rot, tx, ty, tilt) = (row[1], row[3], row[4], row[9]);
        assert!((t - tilt).abs() < 1e-9);
        let (axis, sx, sy) = x.to_axis_shift(1.0);
        assert!((axis + rot).abs() < 1e-3, "axis {axis} rot {rot}");
        assert!(
            (sx - tx).abs() < 1e-3 && (sy - ty).abs() < 1e-3,
            "{sx} {sy} vs {tx} {ty}"
        );
    }
}

#[test]
fn etomo_ts001_axis() {
    let rows = imod::read_xf(&fmt("etomofiles/TS_001.xf")).unwrap();
    let (axis, _, _) = rows[0].to_axis_shift(1.0);
    // The xf rotates by about −84°, so the axis is about +84° (SerialEM-like values ≈ 85°).
    assert!((axis - 84.1).abs() < 0.2, "{axis}");
}

#[test]
fn xf_axis_shift_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rt.xf");
    let src = imod::read_xf(&fmt("warpylib/00254.xf")).unwrap();
    let params: Vec<_> = src.iter().map(|r| r.to_axis_shift(2.0)).collect();
    let rows: Vec<XfRow> = params
        .iter()
        .map(|&(a, x, y)| XfRow::from_axis_shift(a, x, y, 2.0))
        .collect();
    imod::write_xf(&p, &rows).unwrap();
    let back = imod::read_xf(&p).unwrap();
    for ((b, s), (a, x, y)) in back.iter().zip(&src).zip(&params) {
        // The file layout keeps 7 decimals in A and 3 in d: as in IMOD's files.
        for k in 0..2 {
            assert!((b.d[k] - s.d[k]).abs() <= 1.5e-3);
            for l in 0..2 {
                assert!((b.a[k][l] - s.a[k][l]).abs() <= 1e-6);
            }
        }
        let (a2, x2, y2) = b.to_axis_shift(2.0);
        assert!((a2 - a).abs() < 1e-4 && (x2 - x).abs() < 5e-3 && (y2 - y).abs() < 5e-3);
    }
    let text = std::fs::read_to_string(&p).unwrap();
    assert_eq!(
        text.lines().next().unwrap().len(),
        72,
        "six 12-character columns"
    );
}

#[test]
fn ts01_mdoc() {
    let d = Mdoc::read(&fmt("tomo-preprocessing/TS_01.mrc.mdoc")).unwrap();
    let t = d.tilts();
    assert_eq!(t.len(), 41);
    assert_eq!(d.sections.len(), 41);
    assert!((t[0].tilt_deg - 0.0).abs() < 0.01);
    assert!((t[1].tilt_deg - 3.0).abs() < 0.01);
    assert!((t[2].tilt_deg + 3.0).abs() < 0.01);
    assert!((t[3].tilt_deg + 6.0).abs() < 0.01);
    assert!(t.iter().enumerate().all(|(i, x)| x.z_value == i));
    assert_eq!(d.tilt_axis_angle(), Some(85.3));
    assert_eq!(d.pixel_spacing_a(), Some(5.4));
    assert_eq!(d.get("ImageSize"), Some("924 958"));
    assert_eq!(d.get("ImageFile"), Some("TS_01.mrc"));
    assert_eq!(d.titles.len(), 2);
    assert!(d.titles[0].starts_with("SerialEM: Digitized on EMBL Krios"));
    let t0 = &t[0];
    assert_eq!(t0.rotation_angle, Some(175.3));
    assert_eq!(t0.pixel_a, Some(5.4));
    assert_eq!(t0.dose_e_a2, 0.0);
    assert_eq!(t0.prior_record_dose, None);
    assert_eq!(t0.num_sub_frames, Some(8));
    assert_eq!(t0.date_time.as_deref(), Some("30-Nov-15  15:21:38"));
    assert_eq!(
        t0.sub_frame_path.as_deref(),
        Some(r"D:\DATA\Flo\HGK149_20151130\frames\TS_01_000_0.0.mrc")
    );
    assert_eq!(t0.sub_frame_file.as_deref(), Some("TS_01_000_0.0.mrc"));
    // No CR survives in values.
    assert!(d
        .sections
        .iter()
        .flat_map(|s| &s.entries)
        .all(|(k, v)| !k.contains('\r') && !v.contains('\r')));
    // Axis title and RotationAngle are 90° apart, as the README notes.
    assert!((t0.rotation_angle.unwrap() - d.tilt_axis_angle().unwrap() - 90.0).abs() < 1e-9);
}

#[test]
fn ts017_mdoc() {
    let d = Mdoc::read(&fmt("serialem-ts017/017.mdoc")).unwrap();
    assert_eq!(d.pixel_spacing_a(), Some(1.971));
    assert_eq!(d.tilt_axis_angle(), Some(82.9));
    let t = d.tilts();
    assert_eq!(t.len(), 60);
    assert_eq!(t[0].tilt_deg, -52.0064);
    assert_eq!(t[0].dose_e_a2, 2.23843);
    assert_eq!(t[0].prior_record_dose, Some(134.379));
    assert_eq!(t[0].sub_frame_file.as_deref(), Some("017_01.mrc"));
    assert_eq!(t[0].num_sub_frames, Some(10));
    assert_eq!(
        d.sections[0].get_f64s("FrameDosesAndNumber"),
        Some(vec![0.023687, 3.0, 0.035531, 7.0])
    );
    assert!(d
        .get("Version")
        .unwrap()
        .starts_with("SerialEM Version 4.0.20"));
}

#[test]
fn frame_set_mdoc() {
    let d = Mdoc::read(&fmt("mdocfile/frame_set_single.mdoc")).unwrap();
    assert_eq!(d.titles.len(), 1);
    assert!(d.titles[0].starts_with("SerialEM: UMass_Krios"));
    assert_eq!(d.get("Voltage"), Some("300"));
    assert_eq!(d.get("ImageFile"), None);
    assert_eq!(d.sections.len(), 1);
    let s = &d.sections[0];
    assert_eq!((s.kind.as_str(), s.id.as_str()), ("FrameSet", "0"));
    assert_eq!(s.get_f64("Binning"), Some(0.5));
    assert_eq!(s.get("FrameDosesAndNumber"), Some("0.63824 12"));
    assert_eq!(s.get_f64s("FrameDosesAndNumber"), Some(vec![0.63824, 12.0]));
    assert_eq!(
        s.get("GainReference"),
        Some("SuperRef_s_mmm_00000_-15.0_Oct08_01.59.24.dm4")
    );
    assert_eq!(d.pixel_spacing_a(), Some(1.2827));
    assert!(d.tilts().is_empty(), "a FrameSet is not a ZValue tilt");
}

#[test]
fn montage_mdoc() {
    let d = Mdoc::read(&fmt("mdocfile/montage_section.mdoc")).unwrap();
    assert_eq!(d.tilt_axis_angle(), Some(-86.7));
    assert_eq!(d.pixel_spacing_a(), Some(656.139));
    assert_eq!(d.get("Montage"), Some("1"));
    assert_eq!(d.tilts().len(), 62);
    assert_eq!(d.sections_of("ZValue").count(), 62);
    let last = d.sections.last().unwrap();
    assert_eq!((last.kind.as_str(), last.id.as_str()), ("MontSection", "0"));
    assert_eq!(last.get("FullMontSize"), Some("31992 31176"));
    assert_eq!(d.sections[0].get("PieceCoordinates"), Some("0 0 0"));
    assert_eq!(
        d.sections[0].get_f64s("XedgeDxyVS"),
        Some(vec![245.996, 14.1728, 0.0296564])
    );
}

#[test]
fn multitilt_mdoc() {
    let d = Mdoc::read(&fmt("serialem-multitilt/test_000.mdoc")).unwrap();
    let t = d.tilts();
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|x| x.pixel_a == Some(7.88)));
    assert_eq!(d.pixel_spacing_a(), Some(7.88));
    assert_eq!(d.tilt_axis_angle(), Some(-90.0));
    assert_eq!(d.get("ImageSize"), Some("1024 1024"));
    // The stack it describes: 2 images of 1024², 7.88 Å/px.
    let h = lamella::io::mrc::read_header(&fmt("serialem-multitilt/test_000.mrc")).unwrap();
    assert_eq!((h.nx, h.ny, h.nz), (1024, 1024, t.len()));
    assert!((h.pixel_size_a()[0] as f64 - d.pixel_spacing_a().unwrap()).abs() < 1e-4);
}

#[test]
fn navigator_file() {
    let d = Mdoc::read(&fmt("pyserialem/nav.nav")).unwrap();
    assert_eq!(d.get("AdocVersion"), Some("2.00"));
    assert_eq!(d.sections.len(), 1);
    let item = &d.sections[0];
    assert_eq!((item.kind.as_str(), item.id.as_str()), ("Item", "17-1-A"));
    assert_eq!(item.get("Note"), Some("Sec 0 - map.mrc -"));
    assert_eq!(item.get_f64s("PtsX").unwrap().len(), 5);
    assert_eq!(
        item.get_f64s("MapScaleMat"),
        Some(vec![0.638997, -26.616, -26.5862, -1.01529])
    );
    assert!(d.tilts().is_empty());
}

#[test]
fn every_autodoc_file_parses() {
    let files = common::files_with_ext(&common::shared_data().join("formats"), &[".mdoc", ".nav"]);
    assert_eq!(files.len(), 6, "{files:?}");
    for p in files {
        let d = Mdoc::read(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.sections.is_empty(), "{}", p.display());
        assert!(d.sections.iter().all(|s| !s.kind.is_empty()));
    }
}

#[test]
fn mdoc_write_read_round_trip() {
    let src = Mdoc::read(&fmt("tomo-preprocessing/TS_01.mrc.mdoc")).unwrap();
    let mut tilts = src.tilts();
    tilts[1].prior_record_dose = Some(3.5);
    tilts[2].dose_e_a2 = 2.75;
    tilts[3].pixel_a = None;
    tilts[4].sub_frame_path = Some("/data/frames/x_004.tif".into());
    tilts[4].sub_frame_file = Some("x_004.tif".into());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.mdoc");
    mdoc::write_mdoc(&p, "out.mrc", 924, 958, 5.4, 85.3, &tilts).unwrap();
    let d = Mdoc::read(&p).unwrap();
    assert_eq!(d.pixel_spacing_a(), Some(5.4));
    assert_eq!(d.tilt_axis_angle(), Some(85.3));
    assert_eq!(d.get("ImageSize"), Some("924 958"));
    assert_eq!(d.get("ImageFile"), Some("out.mrc"));
    let back = d.tilts();
    let mut want = tilts.clone();
    want[3].pixel_a = Some(5.4); // the header pixel is written where a tilt has none
    assert_eq!(back, want);
    let one = MdocTilt {
        z_value: 7,
        tilt_deg: -0.1 + 0.2,
        dose_e_a2: 1.0 / 3.0,
        pixel_a: None,
        sub_frame_path: None,
        sub_frame_file: None,
        rotation_angle: None,
        date_time: None,
        num_sub_frames: None,
        prior_record_dose: None,
    };
    mdoc::write_mdoc(&p, "a.mrc", 10, 10, 1.25, -90.0, std::slice::from_ref(&one)).unwrap();
    let mut want = one.clone();
    want.pixel_a = Some(1.25);
    assert_eq!(Mdoc::read(&p).unwrap().tilts(), vec![want]);
}
