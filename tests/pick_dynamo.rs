//! The Dynamo table reader on real tables (shared/data/formats/dynamotable, CCP-EM's
//! dynamotable test files): a 35-column table and a 41-column one with MATLAB complex
//! values.

use lamella::core::geometry::{dynamo_zxz_to_matrix, max_abs_diff};
use lamella::io::dynamo::{read_table, write_table};
use std::path::PathBuf;

fn dir() -> PathBuf {
    std::env::var("LAMELLA_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
        .join("formats/dynamotable")
}

#[test]
fn reads_real_dynamo_tables() {
    let t = read_table(&dir().join("t_double.tbl")).unwrap();
    assert_eq!(t.len(), 300);
    let r = &t[0];
    assert_eq!((r.tag(), r.tomo(), r.class()), (1, 1, 9));
    assert_eq!(r.angles_deg(), [175.66, 90.681, -129.51]);
    assert!((r.cc() - 0.15858).abs() < 1e-12);
    let c = r.centre_px();
    let want = [141.28 + 2.5178, 114.71 - 3.523, 163.08 + 2.1043];
    for k in 0..3 {
        assert!((c[k] - want[k]).abs() < 1e-9, "{c:?}");
    }
    assert_eq!(r.col(14), -60.0);
    assert_eq!(r.col(15), 60.0);
    assert_eq!(t[299].tag(), 300);

    let t = read_table(&dir().join("t_complex.tbl")).unwrap();
    assert_eq!(t.len(), 8742);
    assert_eq!(t[1].0.len(), 41);
    assert_eq!(t[1].tag(), 4);
    assert_eq!(t[1].col(27), 0.0); // "0+1.2074e-06i"
    assert_eq!(
        t[1].centre_px(),
        [1006.9 - 1.4208, 751.05 + 0.58177, 641.53 + 0.57748]
    );

    // round trip through our writer keeps every column
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pick_dynamo.tbl");
    write_table(&out, &t[..50]).unwrap();
    let back = read_table(&out).unwrap();
    for (a, b) in t[..50].iter().zip(&back) {
        assert_eq!(a.0.len(), b.0.len());
        for (x, y) in a.0.iter().zip(&b.0) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{x} vs {y}");
        }
        assert!(max_abs_diff(&a.pose(), &b.pose()) < 1e-6);
        let [p, q, s] = a.angles_deg();
        assert!(max_abs_diff(&a.pose(), &dynamo_zxz_to_matrix(p, q, s)) < 1e-12);
    }
}
