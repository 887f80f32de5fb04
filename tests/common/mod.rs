//! Helpers shared by the integration tests: test data paths, the Python interpreter of the
//! test venv, the built binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Repository root (`CARGO_MANIFEST_DIR`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `shared/data` beside the checkout (`<repo>/../shared/data`), or `$LAMELLA_SHARED_DATA`.
pub fn shared_data() -> PathBuf {
    if let Ok(p) = std::env::var("LAMELLA_SHARED_DATA") {
        return PathBuf::from(p);
    }
    repo_root().join("..").join("shared").join("data")
}

/// All files under `dir` (recursively) whose name ends with one of `exts` (lower-case).
pub fn files_with_ext(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.file_name().unwrap().to_string_lossy().to_lowercase();
                if exts.iter().any(|x| name.ends_with(x)) {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// The Python interpreter of the test venv: `$LAMELLA_PYTHON`, else `<repo>/.venv/bin/python`.
/// Returns `None` (after printing a SKIP line) when there is none, unless
/// `LAMELLA_REQUIRE_PYTHON=1`, in which case it panics: `make test` sets that, so the
/// interop tests cannot silently skip there.
pub fn python(test: &str) -> Option<PathBuf> {
    let cand = std::env::var("LAMELLA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".venv/bin/python"));
    if cand.exists() {
        return Some(cand);
    }
    if std::env::var("LAMELLA_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!(
            "{test}: Python venv not found at {} (run `make venv`)",
            cand.display()
        );
    }
    eprintln!(
        "SKIP: {test}: no Python venv at {} (run `make test`)",
        cand.display()
    );
    None
}

/// Run a Python snippet with `args`; panics with its stderr when it fails; returns stdout.
pub fn run_python(py: &Path, code: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("start python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Analytic projections `[tilt, y, x]` of Gaussian blobs (centres in voxels about the
/// tomogram centre, voxel = `geom.pixel_a`, standard deviation `sigma_vox`, peak density 1):
/// a 3D Gaussian integrates along the beam to `√(2π)·σ·exp(−d²/2σ²)` (voxel units), `d` the
/// in-plane distance from its projected centre `(n/2, n/2) + ([R·c]_xy + shift)/pixel`.
pub fn project_gaussian_blobs(
    geom: &lamella::core::geometry::TiltSeriesGeometry,
    blobs_vox: &[[f64; 3]],
    sigma_vox: f64,
) -> ndarray::Array3<f32> {
    let px = geom.pixel_a;
    let mut out = ndarray::Array3::<f32>::zeros((geom.len(), geom.ny, geom.nx));
    let amp = (2.0 * std::f64::consts::PI).sqrt() * sigma_vox;
    for (i, t) in geom.tilts.iter().enumerate() {
        let r = t.rotation();
        for b in blobs_vox {
            let q = lamella::core::geometry::apply(&r, [b[0] * px, b[1] * px, b[2] * px]);
            let uc = (geom.nx / 2) as f64 + (q[0] + t.shift_x_a) / px;
            let vc = (geom.ny / 2) as f64 + (q[1] + t.shift_y_a) / px;
            for y in 0..geom.ny {
                for x in 0..geom.nx {
                    let d2 = (x as f64 - uc).powi(2) + (y as f64 - vc).powi(2);
                    out[[i, y, x]] += (amp * (-d2 / (2.0 * sigma_vox * sigma_vox)).exp()) as f32;
                }
            }
        }
    }
    out
}

/// The built `lamella` binary with `LAMELLA_SHARED_DATA` set and `RUST_LOG` removed.
pub fn lamella() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lamella"));
    c.env("LAMELLA_SHARED_DATA", shared_data());
    c.env_remove("RUST_LOG");
    c
}

/// Assert that a command succeeded (printing its code, stdout and stderr otherwise) and
/// return its stdout.
pub fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mpirun` with the flags OpenMPI needs as root and when oversubscribing, or None (SKIP)
/// when there is no mpirun and LAMELLA_REQUIRE_MPI is not set.
pub fn mpirun(n: usize) -> Option<Command> {
    let found = Command::new("mpirun").arg("--version").output().is_ok();
    if !found {
        if std::env::var("LAMELLA_REQUIRE_MPI").as_deref() == Ok("1") {
            panic!("mpirun not found (run `make deps`)");
        }
        eprintln!("SKIP: mpirun not found");
        return None;
    }
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("LAMELLA_SHARED_DATA", shared_data())
        .args(["-n", &n.to_string(), "--oversubscribe", "--bind-to", "none"])
        .arg(env!("CARGO_BIN_EXE_lamella"));
    Some(c)
}

/// Write `config` (its `out` must be `"out"`) as `dir/c.toml`, run `lamella run` on it
/// (asserting success, `what` names it in the failure) and return its stdout, the output
/// directory and the parsed `summary.json`.
pub fn run_pipeline(dir: &Path, config: &str, what: &str) -> (String, PathBuf, serde_json::Value) {
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, config).unwrap();
    let text = ok(
        lamella()
            .args(["run", cfg.to_str().unwrap()])
            .output()
            .unwrap(),
        what,
    );
    let out = dir.join("out");
    let summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    (text, out, summary)
}

/// RELION Euler angles (degrees) of the pose `euler_deg` turned by a deterministic rotation
/// of `base_deg + span_deg·|sin(0.7·i)|` about a particle-dependent axis (particle `i`): a
/// start "as after template matching" for refinement tests.
#[allow(dead_code)]
pub fn perturbed_euler(euler_deg: [f64; 3], i: usize, base_deg: f64, span_deg: f64) -> [f64; 3] {
    use lamella::core::geometry::{euler_zyz_to_matrix, matmul, matrix_to_euler_zyz};
    let k = i as f64;
    let axis = [(k * 1.3).sin(), (k * 2.1).cos(), 0.5];
    let r = matmul(
        &lamella::core::so3::axis_angle(axis, base_deg + span_deg * (k * 0.7).sin().abs()),
        &euler_zyz_to_matrix(euler_deg[0], euler_deg[1], euler_deg[2]),
    );
    let (a, b, c) = matrix_to_euler_zyz(&r);
    [a, b, c]
}

/// The headless browser (Debian's `chromium`), or None (SKIP) when absent and
/// LAMELLA_REQUIRE_BROWSER is not set.
#[allow(dead_code)]
pub fn chromium(test: &str) -> Option<PathBuf> {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
        {
            if o.status.success() {
                return Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
            }
        }
    }
    if std::env::var("LAMELLA_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{test}: chromium not found (run `make deps`)");
    }
    eprintln!("SKIP: {test}: no chromium on PATH (headless browser check not run)");
    None
}

/// Open `page` in headless Chromium, write a screenshot `shot` (`width × height` px) and
/// return the browser's log (stderr with `--enable-logging`): console messages appear there
/// as `CONSOLE(...)` / `Failed to load resource` lines.
#[allow(dead_code)]
pub fn screenshot(browser: &Path, page: &Path, shot: &Path, size: (usize, usize)) -> String {
    let profile = shot.with_extension("profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && shot.is_file(),
        "chromium failed ({:?}) on {}:\n{log}",
        out.status.code(),
        page.display()
    );
    log
}
