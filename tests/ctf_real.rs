//! CTF estimation on real data: the 7 EMPIAR-10076 particle images (320² at 1.31 Å/px,
//! 300 kV, Cs 2.7 mm, A 0.07) in shared/data/real/cryodrgn-ribosome-tilt-particles, whose STAR
//! holds the published defocus (U ≈ 15 300 Å, V ≈ 14 900 Å, angle 5.28°). Each image is fitted
//! on its own (`ctf::estimate`); the differences are printed and the median bounded.

mod common;

use lamella::ctf::{estimate, CtfSearch};
use lamella::io::{mrc, star::StarFile};

/// Pixel size: rlnDetectorPixelSize 5 µm / rlnMagnification 38168.
const PIXEL_A: f64 = 5.0e4 / 38168.0;

#[test]
fn defocus_of_real_empiar_10076_particles_against_the_published_values() {
    let dir = common::shared_data().join("real/cryodrgn-ribosome-tilt-particles");
    let stack = mrc::read(&dir.join("empiar_10076_7.mrc")).unwrap().data;
    let sp = dir.join("empiar_10076_7.star");
    let st = StarFile::read(&sp).unwrap();
    let b = st.blocks.iter().find(|b| b.table.is_some()).unwrap();
    let t = b.table().unwrap();
    let col = |name: &str| -> Vec<f64> { t.f64_column(name, &sp, &b.name).unwrap() };
    let (us, vs) = (col("rlnDefocusU"), col("rlnDefocusV"));
    let mut s = CtfSearch::new(PIXEL_A, 300.0, 2.7, 0.07);
    s.tile = 128;
    s.defocus_min_a = 5000.0;
    s.defocus_max_a = 40000.0;
    s.resolution_band_a = (25.0, 4.0);
    let mut errs = Vec::new();
    for (i, img) in stack.outer_iter().enumerate() {
        let f = estimate(img, &s).unwrap();
        let (mf, mp) = (0.5 * (f.defocus_u_a + f.defocus_v_a), 0.5 * (us[i] + vs[i]));
        eprintln!(
            "particle {}: fit U {:.0} V {:.0} {:.1}° (score {:.3}, to {:.1} Å); published U {:.0} V {:.0}; mean diff {:+.0} Å",
            i + 1, f.defocus_u_a, f.defocus_v_a, f.astig_angle_deg, f.score, f.fit_resolution_a,
            us[i], vs[i], mf - mp
        );
        errs.push((mf - mp).abs());
    }
    errs.sort_by(|a, b| a.total_cmp(b));
    let med = errs[errs.len() / 2];
    let close = errs.iter().filter(|e| **e < 1500.0).count();
    eprintln!("median |mean defocus difference| {med:.0} Å; {close} of 7 within 1500 Å");
    // Measured 2026-12-07 (docs/ctf.md): 3 of 7 within 700–1000 Å of the published mean
    // defocus (fitted lower by 700–1000 Å), the other 4 locked onto a wrong ring order
    // (−8500 to +21000 Å); scores 0.06–0.07. One 320² box (4 × 4 tiles of 128) is too
    // little ring signal for a reliable per-image fit. The bound guards the 3 good ones.
    assert!(
        close >= 3,
        "only {close} of 7 within 1500 Å (median {med:.0} Å)"
    );
}
