#!/usr/bin/env bash
# Side-by-side global motion correction of the same movie, back to back: lamella motioncorr vs
# RELION 3.1's own implementation (relion_run_motioncorr --use_own, through
# /work/shared/peers/relion_motioncorr.sh), both on 2 threads, dose-weighted.
#
#   scripts/peer_motioncorr.sh [WORK=/tmp/lamella-peer-mc] [SIZE=1024] [FRAMES=10] [DOSE=2.0]
#
# Input: the peers' own generator (make_synthetic.py movie: textured specimen, Poisson frames,
# drift 1.5/−1 px per frame plus a quadratic term, 1 Å pixels, DOSE e/Å² per frame), so the
# drift truth is not lamella's. Error: compare_drift.py (RMS over frames, frame 1 = origin);
# lamella reports the specimen drift itself (sign +1), RELION the aligning shift (sign −1).
# Time: /usr/bin/time wall and CPU of each whole program run (read, align, sum, write).
# Needs `relion` (apt, see /work/shared/peers/README.md) and the test venv (`make venv`).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/lamella-peer-mc}
N=${2:-1024}
F=${3:-10}
DOSE=${4:-2.0}
PEERS=${PEERS:-/work/shared/peers}
PY=${LAMELLA_PYTHON:-.venv/bin/python}
TARGET=${CARGO_TARGET_DIR:-target}
LAMELLA=${LAMELLA:-$TARGET/release/lamella}
DATA="$WORK/data_${N}_$F"
mkdir -p "$WORK"
[ -f "$DATA/movie.mrcs" ] || "$PY" "$PEERS/make_synthetic.py" movie --out "$DATA" --size "$N" \
  --frames "$F" --dose "$DOSE"

echo "== load: $(uptime)"
echo "== lamella motioncorr ($N² × $F frames, $DOSE e/Å²/frame)"
rm -rf "$WORK/lamella"
/usr/bin/time -v -o "$WORK/lamella_time.txt" "$LAMELLA" --threads 2 motioncorr \
  --movie "$DATA/movie.mrcs" --pixel 1.0 --dose-per-frame "$DOSE" --out "$WORK/lamella" \
  > "$WORK/lamella_stdout.txt"
grep -E "Elapsed|User time|System time|Maximum resident" "$WORK/lamella_time.txt"
"$PY" - "$WORK/lamella/movie_motion.json" "$WORK/lamella_shifts.txt" <<'PYEOF'
import json, sys
rec = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for i, s in enumerate(rec["tilts"][0]["shifts_px"]):
        f.write(f"{i + 1} {s[0]} {s[1]}\n")
PYEOF
"$PY" "$PEERS/compare_drift.py" "$WORK/lamella_shifts.txt" "$DATA/drift_truth.txt" --sign 1 | tail -1

echo "== load: $(uptime)"
echo "== RELION relion_run_motioncorr --use_own"
rm -rf "$WORK/relion"
"$PEERS/relion_motioncorr.sh" "$DATA/movies.star" "$WORK/relion" 1.0 "$DOSE" 1 1 2
grep -E "User time|System time" "$WORK/relion/time.txt"
"$PY" "$PEERS/compare_drift.py" "$WORK/relion/movie.star" "$DATA/drift_truth.txt" | tail -1
