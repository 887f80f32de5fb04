#!/usr/bin/env bash
# Rank scaling of one subtomogram-averaging refinement iteration (examples/sta_scaling.rs):
# particles per second on 1, 2 and 3 MPI ranks, with THREADS rayon threads per rank.
#
#   scripts/sta_scaling.sh [PARTICLES=36] [ITERATIONS=2] [FIELD=192] [THREADS="1 2"]
#
# Every rank simulates the same 192² × 50 tomogram (10 Å/px) with PARTICLES apoferritins;
# box 24, O symmetry, local search ±12° at 4° (iteration 1) and 2° (iteration 2). Ranks
# run under `mpirun --oversubscribe --bind-to none`: on a machine with fewer cores than
# ranks × threads the ranks share cores (oversubscribed), and the load average printed
# before each run says how busy the machine was. The table: wall seconds and particles/s
# per iteration (between barriers on rank 0), speed-up against 1 rank at the same threads
# per rank, CPU milliseconds per particle summed over the ranks (what the work costs when
# other jobs share the cores), and the map checksum (equal for every rank count up to float tolerance).
set -euo pipefail
cd "$(dirname "$0")/.."
PARTICLES=${1:-36}
ITERATIONS=${2:-2}
FIELD=${3:-192}
THREADS=${4:-"1 2"}
TARGET=${CARGO_TARGET_DIR:-target}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo build --release --example sta_scaling
BIN="$TARGET/release/examples/sta_scaling"
echo "cores: $(nproc); $(uname -n)"
LINES=()
for t in $THREADS; do
  for r in 1 2 3; do
    echo "ranks $r × threads $t — $(uptime | sed 's/.*load/load/')" >&2
    out=$(RAYON_NUM_THREADS=$t mpirun -n "$r" --oversubscribe --bind-to none \
      "$BIN" "$PARTICLES" "$ITERATIONS" "$FIELD")
    echo "$out" >&2
    while IFS= read -r l; do LINES+=("$l"); done < <(echo "$out" | grep '^sta_')
  done
done
printf '%s\n' "${LINES[@]}" | awk '
  function v(k,   i, a) { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == k) return a[2] } }
  /^sta_scaling/ {
    r = v("ranks"); t = v("threads"); it = v("iteration"); s = v("seconds")
    if (r == 1) base[t, it] = s
    row[++n] = sprintf("| %5d | %7d | %9d | %7.2f | %11.2f | %8.2f | %15.1f | %s |", r, t, it, s,
      v("particles_per_s"), (base[t, it] > 0 ? base[t, it] / s : 0), v("cpu_ms_per_particle"), v("checksum"))
  }
  /^sta_comm/ { comm = sprintf("allreduce %d bytes per iteration; all-gather %d bytes (%.1f per particle; JSON of 10^5 particles parsed in %s ms)",
      v("allreduce_bytes"), v("gather_bytes"), v("gather_bytes_per_particle"), v("parse_1e5_ms")) }
  END {
    print "| ranks | threads | iteration | seconds | particles/s | speed-up | CPU ms/particle | map checksum |"
    print "|------:|--------:|----------:|--------:|------------:|---------:|----------------:|:-------------|"
    for (i = 1; i <= n; i++) print row[i]
    print ""
    print comm
  }'
