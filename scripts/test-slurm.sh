#!/usr/bin/env bash
# `make test-slurm`: lamella's slurm/ templates, unedited, on a real single-node SLURM
# (scripts/slurm-local.sh). Only resources are given on the sbatch command line (they
# override the #SBATCH lines), sized to this machine.
#
#  1. single-node.sbatch on the `tiny` preset: summary.json complete, every series correlated
#     with its truth, lamella.h5 read by h5py;
#  2. preprocess-array.sbatch (one array task per series) + merge.sbatch with
#     --dependency=afterok: the same checks, every series skipped by the merge (done by the
#     array), and the same tomograms as in 1;
#  3. sta-refine.sbatch with [pick] + [sta]: `scancel --signal=USR1 --batch` once the first
#     iteration is written; the job checkpoints, requeues itself and resumes; its final map
#     equals that of an uninterrupted run of the same config on as many ranks (SLURM's hold
#     on the requeued job is cut to 10 s with `scontrol update StartTime=now+10` unless
#     SLURM_TEST_REQUEUE_HOLD=1).
# Outputs and job logs in $SLURM_TEST_DIR (default target/slurm-test). Wall times are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${SLURM_TEST_DIR:-$ROOT/target/slurm-test}
PY=${LAMELLA_PYTHON:-$ROOT/.venv/bin/python}
JOB_TIMEOUT_S=${SLURM_TEST_TIMEOUT_S:-900}
CHECK=("$PY" "$ROOT/scripts/slurm_check.py")
T0=$SECONDS

say() { echo "test-slurm: $*" >&2; }
fail() {
  say "FAIL: $*"
  exit 1
}

eval "$(scripts/slurm-local.sh start)"
${CARGO:-cargo} build --release
LAMELLA=$ROOT/target/release/lamella
rm -rf "$W"
mkdir -p "$W"

# Two ranks on two cores; more cores give each rank more threads.
NCPU=$(nproc)
TASKS=2
CPT=$((NCPU / TASKS > 0 ? NCPU / TASKS : 1))
RES=(--ntasks=$TASKS --cpus-per-task=$CPT --time=30)

# config NAME BASE [EXTRA TOML]: $W/NAME.toml, BASE with out = $W/NAME
config() {
  local name=$1 base=$2 extra=${3:-}
  sed -e "s|^out = .*|out = \"$W/$name\"|" "$base" >"$W/$name.toml"
  [[ -n "$extra" ]] && printf '%s\n' "$extra" >>"$W/$name.toml"
  echo "$W/$name.toml"
}

# job_states ID: one "JobId State ExitCode Restarts Reason" line per job (array tasks included)
job_states() {
  scontrol show job -o "$1" 2>/dev/null |
    sed -E 's/^JobId=([0-9]+) .*JobState=([A-Z_]+) Reason=([^ ]+) .*Restarts=([0-9]+) .*ExitCode=([0-9:]+) .*/\1 \2 \5 \4 \3/'
}

# wait_job ID: until every job of ID has ended; fails unless all COMPLETED with 0:0
wait_job() {
  local id=$1 t=$SECONDS states
  while :; do
    states=$(job_states "$id")
    if [[ -n "$states" ]] && ! grep -qvE '^[0-9]+ (COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) ' <<<"$states"; then
      break
    fi
    ((SECONDS - t < JOB_TIMEOUT_S)) || {
      scancel "$id" || true
      fail "job $id still running after ${JOB_TIMEOUT_S}s: $states"
    }
    sleep 1
  done
  if grep -qvE '^[0-9]+ COMPLETED 0:0 ' <<<"$states"; then
    tail -n 30 "$W"/*.log >&2 || true
    fail "job $id: $states"
  fi
  say "job $id done in $((SECONDS - t)) s: $(tr '\n' ';' <<<"$states")"
}

# --- 1. single node -------------------------------------------------------------------
C=$(config single configs/tiny.toml)
mapfile -t NAMES < <("$LAMELLA" run "$C" --list-series)
t=$SECONDS
J=$(sbatch --parsable "${RES[@]}" --output="$W/single-%j.log" slurm/single-node.sbatch "$C")
wait_job "$J"
WALL_SINGLE=$((SECONDS - t))
"${CHECK[@]}" run "$W/single" "${NAMES[@]}"

# --- 2. job array + merge ---------------------------------------------------------------
C=$(config array configs/tiny.toml)
N=${#NAMES[@]}
t=$SECONDS
A=$(sbatch --parsable --array=0-$((N - 1)) --cpus-per-task="$CPT" --time=30 \
  --output="$W/array-%A_%a.log" slurm/preprocess-array.sbatch "$C")
M=$(sbatch --parsable --dependency=afterok:"$A" --cpus-per-task="$NCPU" --time=30 \
  --output="$W/merge-%j.log" slurm/merge.sbatch "$C")
wait_job "$A"
wait_job "$M"
WALL_ARRAY=$((SECONDS - t))
# --all-resumed: the merge skipped every series (the array tasks made them)
"${CHECK[@]}" run --all-resumed "$W/array" "${NAMES[@]}"
grep -q "partial run" "$W"/array-"$A"_0.log || fail "array task 0 was not a partial run"
"${CHECK[@]}" same "$W/single" "$W/array"

# --- 3. STA: signal, checkpoint, requeue, resume ------------------------------------------
STA_TOML='
[simulate]
preset = "tiny"
seed = 3
size = 160
particles = 10
[reconstruct]
binnings = [1]
device = "cpu"
[pick]
angular_step_deg = 30
[sta]
box = 24
symmetry = "O"
iterations = 4'
printf 'out = "x"\n%s\n' "$STA_TOML" >"$W/sta-base.toml"
CR=$(config sta-ref "$W/sta-base.toml")
CI=$(config sta-int "$W/sta-base.toml")
t=$SECONDS
J=$(sbatch --parsable "${RES[@]}" --output="$W/sta-ref-%j.log" slurm/sta-refine.sbatch "$CR")
wait_job "$J"
WALL_STA_REF=$((SECONDS - t))
t=$SECONDS
J=$(sbatch --parsable "${RES[@]}" --output="$W/sta-int-%j.log" slurm/sta-refine.sbatch "$CI")
# signal once iteration 1 is on disk (iteration 2 takes ~10 s on 2 cores)
until [[ -e "$W/sta-int/sta/refine/iter_01/map.mrc" ]]; do
  ((SECONDS - t < JOB_TIMEOUT_S)) || fail "STA iteration 1 never appeared"
  job_states "$J" | grep -qE ' (PENDING|RUNNING|CONFIGURING) ' || fail "STA job ended early: $(job_states "$J")"
  sleep 0.2
done
scancel --signal=USR1 --batch "$J"
say "sent USR1 to job $J after $((SECONDS - t)) s"
# SLURM holds a requeued job for a while (Reason=BeginTime, ~2.5 min measured); unless
# SLURM_TEST_REQUEUE_HOLD=1, shorten the hold to 10 s once the job is back in the queue
# (not to 0: slurmd refuses a start within a second or so of the kill, "Job credential
# revoked", and the job fails)
if [[ "${SLURM_TEST_REQUEUE_HOLD:-0}" != 1 ]]; then
  until job_states "$J" | grep -qE '^[0-9]+ PENDING [0-9:]+ [1-9]'; do
    ((SECONDS - t < JOB_TIMEOUT_S)) || fail "STA job never requeued: $(job_states "$J")"
    job_states "$J" | grep -qE '^[0-9]+ (COMPLETED|FAILED|CANCELLED) ' && break
    sleep 0.2
  done
  say "requeued: $(job_states "$J"); scontrol update StartTime=now+10"
  scontrol update JobId="$J" StartTime=now+10 || true
fi
wait_job "$J"
WALL_STA_INT=$((SECONDS - t))
RESTARTS=$(job_states "$J" | awk '{print $4}')
((RESTARTS >= 1)) || fail "STA job $J was not requeued (Restarts=$RESTARTS)"
LOG="$W/sta-int-$J.log"
grep -q "stop signal: iteration" "$LOG" || fail "no checkpoint message in $LOG"
grep -q "checkpointed; requeueing" "$LOG" || fail "no requeue in $LOG"
"${CHECK[@]}" sta "$W/sta-ref" "$W/sta-int"

say "all passed in $((SECONDS - T0)) s; job wall times (submit to end):" \
  "single-node ${WALL_SINGLE} s, array+merge ${WALL_ARRAY} s," \
  "sta ${WALL_STA_REF} s, sta interrupted+requeued ${WALL_STA_INT} s (restarts ${RESTARTS})"
