# Shared by lamella's sbatch templates: `source "$SLURM_SUBMIT_DIR/slurm/lib.sh"`, then
# `lamella_job ARGS...`. Submit from the repository root (or set LAMELLA and LAMELLA_SLURM_LIB).
#
# lamella_job ARGS... starts `lamella ARGS` on every task of the allocation through
# $LAMELLA_LAUNCH (default `mpirun -n $SLURM_NTASKS --bind-to none`: Open MPI and MPICH read
# the allocation; sites with PMI set e.g. LAMELLA_LAUNCH="srun --mpi=pmix"), with
# `--threads $SLURM_CPUS_PER_TASK` when that is set. USR1 and TERM sent to this batch shell
# (`#SBATCH --signal=B:USR1@300`, `scancel --signal=USR1 --batch`) are passed to the launcher,
# which passes them to the ranks: lamella finishes the unit at hand (a tilt series, a
# reconstruction slab, an STA iteration), saves it and exits with 4. After USR1 and exit 4
# the job requeues itself (`scontrol requeue`); the next start continues where it stopped
# when ARGS has --resume. The function exits the script with lamella's exit code.

LAMELLA=${LAMELLA:-${SLURM_SUBMIT_DIR:-$PWD}/target/release/lamella}
LAMELLA_LAUNCH=${LAMELLA_LAUNCH:-mpirun -n ${SLURM_NTASKS:-1} --bind-to none}
# Open MPI refuses root unless told (containers, CI)
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

lamella_job() {
  local threads=() pid rc signalled=""
  [[ -n "${SLURM_CPUS_PER_TASK:-}" ]] && threads=(--threads "$SLURM_CPUS_PER_TASK")
  echo "lamella job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname -s):" \
    "$LAMELLA_LAUNCH $LAMELLA $* ${threads[*]}" >&2
  # shellcheck disable=SC2086  # the launcher is a command line
  $LAMELLA_LAUNCH "$LAMELLA" "$@" "${threads[@]}" &
  pid=$!
  trap 'signalled=USR1; kill -USR1 "$pid" 2>/dev/null || true' USR1
  trap 'signalled=TERM; kill -TERM "$pid" 2>/dev/null || true' TERM
  while :; do
    rc=0
    wait "$pid" || rc=$?
    # a trapped signal ends `wait` early (rc > 128) while the launcher still runs
    if ((rc > 128)) && kill -0 "$pid" 2>/dev/null; then continue; fi
    if ((rc > 128)); then
      rc=0
      wait "$pid" || rc=$?
    fi
    break
  done
  trap - USR1 TERM
  echo "lamella job ${SLURM_JOB_ID:-?}: exit code $rc${signalled:+ after $signalled}" >&2
  if [[ $rc -eq 4 && $signalled == USR1 && -n "${SLURM_JOB_ID:-}" ]]; then
    echo "lamella job $SLURM_JOB_ID: checkpointed; requeueing" >&2
    scontrol requeue "$SLURM_JOB_ID" && sleep 60
  fi
  exit "$rc"
}
