//! "Restart after walltime at any point": `lamella run` on the `tiny` preset (2 series of
//! 96², `[pick]` and a 3-iteration `[sta]` with box 24, so the STA iteration checkpoint is
//! exercised) is killed with real signals at times drawn uniformly from the span of an
//! uninterrupted run, and `--resume` must give the same final outputs as that run.
//!
//! 1. SIGTERM at a random time: exit code 4 (0 when the run had already finished), then
//!    `--resume` to completion.
//! 2. SIGKILL at three random times (a fresh run, then `--resume` runs that are killed again),
//!    then a final `--resume` to completion. After every SIGKILL no final-name file may be torn:
//!    every `*.h5` opens with h5py and all its datasets read, every `*.mrc`/`*.mrcs` passes
//!    `mrcfile.validate`, every `*.json` parses, every `*.star` reads with starfile and every
//!    `*.png` ends with its IEND chunk; only `*.partial` names may be incomplete.
//! 3. SIGKILL as soon as the first STA iteration checkpoint (`sta/refine/state.json`) exists
//!    (random times reach the STA stage only in its last ~20 % of the span), then `--resume`,
//!    which must continue from that checkpoint ("resuming from" in its log).
//!
//! The RNG seed is printed (and can be set with `LAMELLA_KILL_SEED`) together with every kill
//! time, so a failure is reproducible.
//!
//! "Same outputs" (see [`FINGERPRINT`]): the bytes of every MRC and STAR file (tomograms, pick
//! scores/angles/particles, the merged picks, STA map/half maps/iteration maps/particles, the
//! simulated stacks), and the values of every dataset and attribute in `ts/*.h5` and
//! `sta/*.h5`. Excluded, because two uninterrupted runs differ there too (compared
//! 2026-12-08): the `seconds` attribute (stage wall time) of `stages/*`; `lamella.h5`, `summary.json`, `ts/*.json`,
//! `pick/*_pick.json`, `sta/*/sta.json` and `report/index.html` (timestamps, seconds, resumed
//! flags; `lamella.h5` only holds links to the files compared).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use common::{lamella, python, run_python};

const CONFIG: &str = r#"out = "out"
[simulate]
preset = "tiny"
seed = 11
[reconstruct]
binnings = [1, 2]
device = "cpu"
[pick]
angular_step_deg = 30
[sta]
box = 24
symmetry = "O"
iterations = 3
"#;

/// Exit code of a run stopped by a signal with its work checkpointed.
const EXIT_INTERRUPTED: i32 = 4;

/// Prints `key hash` for every compared output under `argv[1]` (module docs).
const FINGERPRINT: &str = r#"
import sys, os, glob, hashlib, h5py, numpy as np
out = sys.argv[1]
def sha(b):
    return hashlib.sha256(b).hexdigest()[:20]
def values(a):
    a = np.asarray(a)
    if a.dtype.names:  # compound: field by field
        return "|".join(n + ":" + values(a[n]) for n in a.dtype.names)
    if a.dtype.kind == "O":
        return sha(repr(a.tolist()).encode())
    return sha(str((a.dtype.str, a.shape)).encode() + np.ascontiguousarray(a).tobytes())
SKIP_ATTRS = {"seconds"}
for root, _, files in os.walk(out):
    for f in files:
        p = os.path.join(root, f)
        rel = os.path.relpath(p, out)
        if f.endswith((".mrc", ".mrcs", ".star")):
            print(rel, sha(open(p, "rb").read()))
for p in sorted(glob.glob(out + "/ts/*.h5") + glob.glob(out + "/sta/*.h5")):
    rel = os.path.relpath(p, out)
    with h5py.File(p, "r") as f:
        def attrs(name, obj):
            for k, v in obj.attrs.items():
                if k not in SKIP_ATTRS:
                    print(f"{rel}:{name}@{k}", values(v))
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                print(f"{rel}:{name}", values(obj[()]))
            attrs(name, obj)
        attrs("/", f)
        f.visititems(visit)
"#;

/// Exits non-zero naming the first torn final-name file under `argv[1]` (module docs).
const NOT_TORN: &str = r#"
import sys, os, json, h5py, mrcfile, starfile
out = sys.argv[1]
n = 0
for root, _, files in os.walk(out):
    for f in files:
        p = os.path.join(root, f)
        if f.endswith(".partial"):
            continue
        try:
            if f.endswith(".h5"):
                with h5py.File(p, "r") as h:
                    h.visititems(lambda k, o: o[()] if isinstance(o, h5py.Dataset) else None)
            elif f.endswith((".mrc", ".mrcs")):
                assert mrcfile.validate(p, print_file=open(os.devnull, "w")), "mrcfile.validate"
            elif f.endswith(".json"):
                json.load(open(p))
            elif f.endswith(".star"):
                starfile.read(p)
            elif f.endswith(".png"):
                assert open(p, "rb").read()[-8:-4] == b"IEND", "no IEND"
            else:
                continue
        except Exception as e:
            sys.exit(f"torn file {p}: {e!r}")
        n += 1
print("ok", n)
"#;

/// Start `lamella run` (with `--resume` when `resume`) in `dir`, its output into
/// `dir/log_<tag>.txt`.
fn start(dir: &Path, resume: bool, tag: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("log_{tag}.txt"))).unwrap();
    let mut c = lamella();
    c.current_dir(dir).args(["run", "c.toml"]);
    if resume {
        c.arg("--resume");
    }
    c.stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start lamella run")
}

/// Wait for `child` up to `after`; if it is still running then, send `signal` (`TERM` or
/// `KILL`, with the `kill` tool) and wait for it. Returns its exit status and whether the
/// signal was sent.
fn signal_after(child: &mut Child, after: Duration, signal: &str) -> (ExitStatus, bool) {
    let t0 = Instant::now();
    while t0.elapsed() < after {
        if let Some(st) = child.try_wait().unwrap() {
            return (st, false);
        }
        std::thread::sleep(Duration::from_millis(5).min(after.saturating_sub(t0.elapsed())));
    }
    let sent = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    (child.wait().unwrap(), sent)
}

/// Wait until `path` exists (or `child` exits), then SIGKILL `child`. Returns whether it was
/// killed.
fn kill_when_exists(child: &mut Child, path: &Path) -> bool {
    while !path.exists() {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

/// Run to completion (asserting exit code 0, `what` names it in a failure).
fn run_to_end(dir: &Path, resume: bool, tag: &str, what: &str) -> Duration {
    let t0 = Instant::now();
    let st = start(dir, resume, tag).wait().unwrap();
    let took = t0.elapsed();
    assert!(
        st.success(),
        "{what}: {st:?}\n{}",
        std::fs::read_to_string(dir.join(format!("log_{tag}.txt"))).unwrap()
    );
    took
}

fn fingerprint(py: &Path, out: &Path) -> BTreeMap<String, String> {
    let text = run_python(py, FINGERPRINT, &[out.to_str().unwrap()]);
    text.lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Assert that the outputs under `out` equal `reference`, naming every difference.
fn assert_same(py: &Path, out: &Path, reference: &BTreeMap<String, String>, what: &str) {
    let got = fingerprint(py, out);
    let mut diff: Vec<String> = Vec::new();
    for (k, v) in reference {
        match got.get(k) {
            None => diff.push(format!("missing {k}")),
            Some(g) if g != v => diff.push(format!("differs {k}")),
            _ => {}
        }
    }
    diff.extend(
        got.keys()
            .filter(|k| !reference.contains_key(*k))
            .map(|k| format!("extra {k}")),
    );
    assert!(
        diff.is_empty(),
        "{what}: {} of {} outputs differ from the uninterrupted run:\n{}",
        diff.len(),
        reference.len(),
        diff.join("\n")
    );
}

fn assert_not_torn(py: &Path, out: &Path, what: &str) {
    let o = Command::new(py)
        .arg("-c")
        .arg(NOT_TORN)
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn workdir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("c.toml"), CONFIG).unwrap();
    d
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let Some(py) = python("kill_resume") else {
        return;
    };
    let seed: u64 = std::env::var("LAMELLA_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill_resume: seed {seed} (rerun with LAMELLA_KILL_SEED={seed})");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let t_all = Instant::now();

    // the uninterrupted run: the reference outputs and the span the kill times are drawn from
    let refd = workdir(root.path(), "ref");
    let span = run_to_end(&refd, false, "ref", "uninterrupted run");
    let reference = fingerprint(&py, &refd.join("out"));
    eprintln!(
        "uninterrupted run: {:.2} s, {} outputs compared",
        span.as_secs_f64(),
        reference.len()
    );
    assert!(reference.len() > 100, "{} outputs", reference.len());
    let mut draw = || span.mul_f64(rng.random::<f64>());

    // 1. SIGTERM at a random time, then --resume
    let d = workdir(root.path(), "term");
    let t = draw();
    let t0 = Instant::now();
    let (st, sent) = signal_after(&mut start(&d, false, "term"), t, "TERM");
    eprintln!(
        "SIGTERM at {:.3} s (sent: {sent}): {st:?} after {:.2} s",
        t.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let log = || std::fs::read_to_string(d.join("log_term.txt")).unwrap();
    match st.code() {
        Some(0) | Some(EXIT_INTERRUPTED) => {}
        // a SIGTERM before the handlers are installed (process start, config, MPI init)
        // takes the default action; nothing has been written by then
        None if t < Duration::from_millis(500) => {}
        _ => panic!("SIGTERM at {t:?}: {st:?}\n{}", log()),
    }
    let took = run_to_end(&d, true, "term_resume", "--resume after SIGTERM");
    eprintln!("  --resume: {:.2} s", took.as_secs_f64());
    assert_same(&py, &d.join("out"), &reference, "SIGTERM + --resume");

    // 2. SIGKILL at three random times (each into a fresh --resume run), then --resume
    let d = workdir(root.path(), "kill");
    for k in 0..3 {
        let t = draw();
        let tag = format!("kill{k}");
        let (st, sent) = signal_after(&mut start(&d, k > 0, &tag), t, "KILL");
        eprintln!(
            "SIGKILL {k} at {:.3} s (sent: {sent}): {st:?}",
            t.as_secs_f64()
        );
        assert!(
            sent || st.success(),
            "{st:?}\n{}",
            std::fs::read_to_string(d.join(format!("log_{tag}.txt"))).unwrap()
        );
        assert_not_torn(&py, &d.join("out"), &format!("after SIGKILL {k} at {t:?}"));
    }
    let took = run_to_end(&d, true, "kill_resume", "--resume after SIGKILL");
    eprintln!("  final --resume: {:.2} s", took.as_secs_f64());
    assert_same(&py, &d.join("out"), &reference, "SIGKILL ×3 + --resume");

    // 3. SIGKILL inside STA, once its first iteration is checkpointed, then --resume
    let d = workdir(root.path(), "sta");
    let killed = kill_when_exists(
        &mut start(&d, false, "sta"),
        &d.join("out/sta/refine/state.json"),
    );
    assert!(
        killed,
        "{}",
        std::fs::read_to_string(d.join("log_sta.txt")).unwrap()
    );
    assert_not_torn(&py, &d.join("out"), "after SIGKILL inside STA");
    let took = run_to_end(&d, true, "sta_resume", "--resume after SIGKILL inside STA");
    let log = std::fs::read_to_string(d.join("log_sta_resume.txt")).unwrap();
    assert!(
        log.contains("resuming from"),
        "STA checkpoint not used:\n{log}"
    );
    eprintln!(
        "SIGKILL inside STA, --resume from its checkpoint: {:.2} s",
        took.as_secs_f64()
    );
    assert_same(
        &py,
        &d.join("out"),
        &reference,
        "SIGKILL inside STA + --resume",
    );
    eprintln!("kill_resume: total {:.1} s", t_all.elapsed().as_secs_f64());
}
