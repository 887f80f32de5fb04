#!/usr/bin/env bash
# Side-by-side timing of lamella and ASTRA 2.5 (CPU) on the same input, back to back:
# WBP vs ASTRA FBP (whole volume) and one SIRT iteration vs ASTRA SIRT (per iteration).
#
#   scripts/bench_peers.sh [WORK=/tmp/lamella-peers] [N=512] [NZ=128] [SIRT_SLICES=32]
#
# Input: 61 tilts (−60..60°, 2°) of N×N px (4 Å), tilt axis = image Y (ASTRA's geometry and
# an aligned stack), projections of random Gaussian blobs computed analytically with numpy
# in the ASTRA venv. Output: N×N×NZ. lamella: `lamella reconstruct` (whole WBP, read to
# write) and the criterion SIRT-iteration bench (`cargo bench --bench sirt_iter`).
# ASTRA: /work/shared/peers/astra_tomo_recon.py (slice by slice, --procs 2). SIRT per
# iteration = (t(ITERS_HI) − t(ITERS_LO)) / (ITERS_HI − ITERS_LO) on SIRT_SLICES central
# slices, scaled to N slices. The load average is printed before each run: other jobs share
# the cores, so run it when `uptime` is low and quote the loads with the numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/lamella-peers}
N=${2:-512}
NZ=${3:-128}
SIRT_SLICES=${4:-32}
ITERS_LO=${ITERS_LO:-2}
ITERS_HI=${ITERS_HI:-6}
PY=${ASTRA_PY:-/tmp/astra-venv/bin/python}
PEERS=${PEERS:-/work/shared/peers}
TARGET=${CARGO_TARGET_DIR:-target}
LAMELLA=${LAMELLA:-$TARGET/release/lamella}
mkdir -p "$WORK"
TS="$WORK/ts_$N.mrc"
TLT="$WORK/ts_$N.tlt"

if [ ! -f "$TS" ]; then
  "$PY" - "$TS" "$TLT" "$N" "$NZ" <<'PYEOF'
import sys
import mrcfile
import numpy as np
ts_path, tlt_path, n, nz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(3)
ang = np.arange(-60.0, 60.0 + 1e-6, 2.0)
nb = 40
# blob centres (x, y, z) in px about the centre n//2, widths sigma px, amplitudes
c = np.stack([rng.uniform(-0.4, 0.4, nb) * n, rng.uniform(-0.4, 0.4, nb) * n,
              rng.uniform(-0.4, 0.4, nb) * nz], axis=1)
sig = rng.uniform(2.0, 6.0, nb)
amp = rng.uniform(0.5, 1.5, nb)
x = np.arange(n) - n // 2
ts = np.zeros((len(ang), n, n), np.float32)
for i, a in enumerate(np.deg2rad(ang)):
    u = c[:, 0] * np.cos(a) + c[:, 2] * np.sin(a)   # tilt about Y
    for k in range(nb):
        gx = np.exp(-0.5 * ((x - u[k]) / sig[k]) ** 2)
        gy = np.exp(-0.5 * ((x - c[k, 1]) / sig[k]) ** 2)
        ts[i] += (amp[k] * np.sqrt(2 * np.pi) * sig[k]) * np.outer(gy, gx).astype(np.float32)
ts += 1.0  # positive intensities for lamella's (I − mean)/mean normalisation
with mrcfile.new(ts_path, overwrite=True) as m:
    m.set_data(ts)
    m.voxel_size = 4.0
np.savetxt(tlt_path, ang, fmt="%.2f")
print(f"wrote {ts_path} ({len(ang)} x {n} x {n})")
PYEOF
fi

if [ ! -x "$LAMELLA" ]; then
  cargo build --release --bin lamella
fi

load() { echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"; }

echo "== WBP, 61 x ${N}^2 -> ${N}x${N}x${NZ} =="
load
"$PY" "$PEERS/astra_tomo_recon.py" "$TS" "$TLT" --nz "$NZ" --method fbp --procs 2
load
/usr/bin/time -f "lamella reconstruct: %e s wall, %U s user, %M KiB" \
  "$LAMELLA" reconstruct --stack "$TS" --tlt "$TLT" --axis 0 --thickness "$NZ" \
  --device cpu --out "$WORK/lamella_wbp_$N.mrc"

echo "== SIRT iteration, ASTRA on $SIRT_SLICES central slices, scaled to $N =="
for it in "$ITERS_LO" "$ITERS_HI"; do
  load
  "$PY" "$PEERS/astra_tomo_recon.py" "$TS" "$TLT" --nz "$NZ" --method sirt --iters "$it" \
    --slices "$SIRT_SLICES" --procs 2
done
if [ "${SKIP_CRITERION:-0}" != 1 ]; then
  load
  cargo bench --bench sirt_iter -- "sep/61x${N}x"
fi
