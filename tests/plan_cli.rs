//! `lamella plan`: estimates against a real run of the tiny preset (peak RSS from
//! `/usr/bin/time -v`, wall time), the demo config's plan, `--json`, and `lamella run`
//! refusing a series that does not fit the memory of a rank.

mod common;

use common::{lamella, ok};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn plan_json(cfg: &Path, extra: &[&str]) -> Value {
    let out = lamella()
        .args(["--threads", "2", "plan"])
        .arg(cfg)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    let text = ok(out, "lamella plan --json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("--json does not parse: {e}\n{text}"))
}

fn stage<'a>(plan: &'a Value, stage: &str, series: &str) -> &'a Value {
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["stage"] == stage && e["series"] == series)
        .unwrap_or_else(|| panic!("no {stage} of {series} in {plan:#}"))
}

/// Run `cmd` under `/usr/bin/time -v`: (success, peak RSS bytes, wall seconds). None when
/// there is no `/usr/bin/time`.
fn timed(cmd: &mut Command) -> Option<(bool, u64, f64)> {
    if !Path::new("/usr/bin/time").exists() {
        eprintln!("SKIP: /usr/bin/time not found");
        return None;
    }
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut t = Command::new("/usr/bin/time");
    t.arg("-v").arg(prog).args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let t0 = Instant::now();
    let out = t.output().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let kb: u64 = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in /usr/bin/time output:\n{err}"));
    if !out.status.success() {
        eprintln!("{err}");
    }
    Some((out.status.success(), kb * 1024, wall))
}

fn within(est: f64, measured: f64, factor: f64) -> bool {
    est <= measured * factor && est >= measured / factor
}

#[test]
fn tiny_estimates_match_a_real_run() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        &include_str!("../configs/tiny.toml").replace("tiny-out", "out"),
    );
    let plan = plan_json(&cfg, &[]);
    assert_eq!(plan["series"].as_array().unwrap().len(), 2);
    let Some((okay, run_rss, run_wall)) =
        timed(lamella().args(["--threads", "2", "run"]).arg(&cfg))
    else {
        return;
    };
    assert!(okay, "lamella run failed");
    // the reconstruct stage alone, on the simulated stack: its own process
    let sim = d.path().join("out/sim");
    let (okay, rec_rss, _) = timed(
        lamella()
            .args(["--threads", "2", "reconstruct", "--stack"])
            .arg(sim.join("tiny_01.mrc"))
            .arg("--tlt")
            .arg(sim.join("tiny_01.tlt"))
            .arg("--xf")
            .arg(sim.join("tiny_01.xf"))
            .args(["--bin", "1", "--thickness", "500", "--out"])
            .arg(d.path().join("r.mrc")),
    )
    .unwrap();
    assert!(okay, "lamella reconstruct failed");
    let rec_est = stage(&plan, "reconstruct", "tiny_01")["peak_bytes"]
        .as_f64()
        .unwrap();
    let peak_est = plan["peak_bytes"].as_f64().unwrap();
    let wall_est = plan["wall_seconds"].as_f64().unwrap();
    eprintln!(
        "reconstruct peak: estimate {rec_est:.3e} B, measured {rec_rss} B; run peak: estimate \
         {peak_est:.3e} B, measured {run_rss} B; wall: estimate {wall_est:.2} s, measured \
         {run_wall:.2} s"
    );
    assert!(within(rec_est, rec_rss as f64, 3.0), "reconstruct memory");
    // the same stack as an [[input]]: sizes from its MRC header, the reconstruct estimate
    // of that process (no truth volume held)
    let input = write_config(
        d.path(),
        &format!(
            "out = \"out2\"\n[[input]]\nstack = {:?}\ntlt = {:?}\n[reconstruct]\nthickness_a = 500.0\n",
            sim.join("tiny_01.mrc"),
            sim.join("tiny_01.tlt")
        ),
    );
    let p2 = plan_json(&input, &[]);
    let s2 = &p2["series"][0];
    assert_eq!(
        (s2["n_tilts"].as_u64(), s2["nx"].as_u64()),
        (Some(31), Some(96))
    );
    assert_eq!(s2["pixel_a"].as_f64(), Some(10.0));
    let rec_in = stage(&p2, "reconstruct", "tiny_01")["peak_bytes"]
        .as_f64()
        .unwrap();
    eprintln!("reconstruct peak of the [[input]]: estimate {rec_in:.3e} B");
    assert!(
        within(rec_in, rec_rss as f64, 3.0),
        "input reconstruct memory"
    );
    assert!(within(peak_est, run_rss as f64, 3.0), "run peak memory");
    assert!(within(wall_est, run_wall, 5.0), "wall time");
}

#[test]
fn demo_plan_is_plausible_and_distributes_largest_first() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        &include_str!("../configs/demo.toml").replace("@OUT@", "out"),
    );
    let plan = plan_json(&cfg, &["--ranks", "2", "--memory-per-rank", "8"]);
    for s in ["demo_01", "demo_02", "demo_03"] {
        for st in ["simulate", "motioncorr", "align", "reconstruct", "pick"] {
            let e = stage(&plan, st, s);
            assert!(e["seconds"].as_f64().unwrap() > 0.0, "{st} {s}");
        }
        // 41 tilts of 256² plus the bin-1 and bin-2 tomograms (960 Å at 8 and 16 Å), f32:
        // the least the stage holds; the working set stays under twice that plus the base
        let data = 4.0 * (41.0 * 256.0 * 256.0 + 256.0 * 256.0 * 120.0 + 128.0 * 128.0 * 60.0);
        let r = stage(&plan, "reconstruct", s)["peak_bytes"]
            .as_f64()
            .unwrap();
        assert!(
            r > data && r < 2.0 * data + 64e6,
            "reconstruct {s}: {r:.3e} vs {data:.3e}"
        );
    }
    assert!(plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["stage"] == "sta" && e["series"].is_null()));
    let ranks = plan["distribution"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    let counts: Vec<usize> = ranks
        .iter()
        .map(|r| r["series"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, vec![2, 1], "equal costs: ranks 0, 1, 0");
    let sb = plan["sbatch"].as_array().unwrap();
    let has = |p: &str| sb.iter().any(|l| l.as_str().unwrap().starts_with(p));
    for p in [
        "#SBATCH --ntasks=2",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem-per-cpu=",
        "#SBATCH --time=",
    ] {
        assert!(has(p), "{p} missing: {sb:?}");
    }
    // the table form prints the same block
    let out = lamella()
        .args(["--threads", "2", "plan"])
        .arg(&cfg)
        .args(["--ranks", "2"])
        .output()
        .unwrap();
    let text = ok(out, "lamella plan");
    assert!(
        text.contains("#SBATCH --ntasks=2") && text.contains("reconstruct"),
        "{text}"
    );
}

#[test]
fn too_big_is_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let base = include_str!("../configs/tiny.toml").replace("tiny-out", "out");
    // 4096² px: a 2 GB stack, more than 1 GiB per rank
    let cfg = write_config(d.path(), &base.replace("seed = 7", "seed = 7\nsize = 4096"));
    let out = lamella()
        .args(["plan"])
        .arg(&cfg)
        .args(["--memory-per-rank", "1", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("--json parses");
    assert_eq!(plan["memory_per_rank_bytes"].as_u64(), Some(1 << 30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stage simulate of tiny_01"), "{err}");
    // 40000² px: 200 GB for the stack alone, more than this machine has
    let cfg = write_config(
        d.path(),
        &base.replace("seed = 7", "seed = 7\nsize = 40000"),
    );
    let t0 = Instant::now();
    let out = lamella().arg("run").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for w in [
        "stage simulate of tiny_01",
        "available",
        "more memory",
        "binning",
    ] {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
    assert!(!d.path().join("out/ts").exists(), "work started");
    assert!(t0.elapsed().as_secs() < 30);
}
