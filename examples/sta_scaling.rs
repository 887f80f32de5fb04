//! Rank scaling of the subtomogram-averaging refinement: particles per second of
//! `sta::refine::iterate` for the number of ranks this process runs under
//! (`lamella::comm::init`: MPI when started by mpirun/srun, else one rank).
//!
//! ```text
//! cargo build --release --example sta_scaling
//! mpirun -n 3 target/release/examples/sta_scaling [particles] [iterations] [field px]
//! scripts/sta_scaling.sh          # 1, 2, 3 ranks and a table
//! ```
//! Every rank simulates the same tomogram (`[field px]² × 50` voxels of 10 Å, default 192²
//! with 36 apoferritins; benches/common `sta_problem`: box 24, O symmetry, local ±12° at 4°
//! then 2°) — in a real run every rank reads the tomograms of its particles. Rank 0 prints
//! one `sta_scaling` line per iteration (wall time between barriers, so the slowest rank
//! counts) and one `sta_comm` line with the bytes of the iteration's collectives: the
//! allreduce of the Fourier sums (f64) and the all-gather of the particles' new states
//! (JSON; and how long parsing the JSON of 10^5 particles takes, which every rank does at
//! that scale). `cpu_s` is the CPU time (user + system) of the iteration summed over the ranks:
//! on a machine shared with other jobs it says what the work costs when wall time cannot.
//! `checksum` (sum of |half maps|) and `resolution` show that the ranks agree.

#[path = "../benches/common/mod.rs"]
mod common;

use lamella::sta::refine::{initial_state, iterate};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("arguments: [particles] [iterations] [field px]")
        })
        .collect();
    let particles = args.first().copied().unwrap_or(36);
    let iterations = args.get(1).copied().unwrap_or(2);
    let field = args.get(2).copied().unwrap_or(192);
    let comm = lamella::comm::init();
    let c = comm.as_ref();
    let mut p = common::sta_problem(field, particles);
    p.params.iterations = iterations;
    let count = p.particles.len();
    let n = p.params.box_px;
    let threads = rayon::current_num_threads();
    c.barrier();
    let t = Instant::now();
    let mut state = initial_state(
        c,
        &p.tomograms,
        p.particles.clone(),
        &p.references,
        1,
        &p.params,
    )
    .expect("initial state");
    c.barrier();
    let init_s = t.elapsed().as_secs_f64();
    if c.rank() == 0 {
        eprintln!(
            "sta_scaling: {count} particles, box {n}, {} rank(s) × {threads} thread(s), initial state {init_s:.2} s",
            c.size()
        );
    }
    for _ in 0..iterations {
        c.barrier();
        let t = Instant::now();
        let cpu0 = cpu_seconds();
        iterate(c, &p.tomograms, &mut state, &p.params).expect("iterate");
        let mut cpu = [cpu_seconds() - cpu0];
        c.allreduce_sum_f64(&mut cpu);
        c.barrier();
        let s = t.elapsed().as_secs_f64();
        let checksum: f64 = state
            .half_maps
            .iter()
            .flatten()
            .flatten()
            .map(|v| v.abs() as f64)
            .sum();
        if c.rank() == 0 {
            println!(
                "sta_scaling ranks={} threads={threads} particles={count} box={n} iteration={} \
                 seconds={s:.3} particles_per_s={:.2} cpu_s={:.3} cpu_ms_per_particle={:.1} \
                 resolution_a={:.2} checksum={checksum:.6e}",
                c.size(),
                state.iteration,
                count as f64 / s,
                cpu[0],
                1e3 * cpu[0] / count as f64,
                state.resolution_a[0],
            );
        }
    }
    if c.rank() == 0 {
        // The allreduce buffer of one iteration: `Sums` of every class (sta::average).
        let sums = lamella::sta::average::Sums::new(n, state.half_maps.len());
        let allreduce = std::mem::size_of_val(sums.as_slice());
        // The all-gather carries this rank's `Vec<Aligned>` as JSON (sta::refine): the
        // same record layout, `{"index":i,"particle":{...}}`.
        let records: Vec<Record> = state
            .particles
            .iter()
            .enumerate()
            .map(|(index, q)| Record {
                index,
                particle: q.clone(),
            })
            .collect();
        let gather = serde_json::to_vec(&records).expect("json").len();
        // What every rank parses for 10^5 particles (the records above repeated).
        let many: Vec<Record> = (0..100_000)
            .map(|i| Record {
                index: i,
                particle: records[i % records.len()].particle.clone(),
            })
            .collect();
        let text = serde_json::to_vec(&many).expect("json");
        let t = Instant::now();
        let back: Vec<Record> = serde_json::from_slice(&text).expect("json");
        let parse_s = t.elapsed().as_secs_f64();
        assert_eq!(back.len(), many.len());
        println!(
            "sta_comm ranks={} allreduce_bytes={allreduce} gather_bytes={gather} \
             gather_bytes_per_particle={:.1} parse_1e5_ms={:.1} parse_mb_per_s={:.0}",
            c.size(),
            gather as f64 / count as f64,
            1e3 * parse_s,
            text.len() as f64 / parse_s / 1e6
        );
    }
    drop(comm); // finalises MPI
}

/// One particle's record in the all-gather of `sta::refine::iterate` (its `Aligned`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    index: usize,
    particle: lamella::sta::refine::Particle,
}

/// CPU time (user + system) of this process so far, seconds (Linux `/proc/self/stat`,
/// fields 14–15 in clock ticks of 1/100 s; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // the command name (field 2) is in parentheses and may hold spaces
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}
