#!/usr/bin/env bash
# A real single-node SLURM on this machine, for testing lamella's slurm/ templates.
#
#   scripts/slurm-local.sh start    install slurm-wlm + munge (Debian/Ubuntu, idempotent), write
#                                   the config, start munged, slurmctld and slurmd, wait until
#                                   the node is idle
#   scripts/slurm-local.sh stop     stop the three daemons (state and logs stay in the prefix)
#   scripts/slurm-local.sh status   daemons, `sinfo` and the queue
#   scripts/slurm-local.sh env      print `export SLURM_CONF=...` (eval it to use sbatch & co)
#
# The daemons run as root, without systemd or cgroups (proctrack/linuxproc, task/none), one
# partition `debug` (default, no time limit) with this host as its only node. Everything
# lives under $SLURM_LOCAL_PREFIX (default /var/spool/slurm-local): slurm.conf, state, spool,
# pid and log files. Clients find the config through SLURM_CONF, which `start` prints.
# Safe to run twice: `start` on a running cluster only checks it; `stop` on a stopped one
# does nothing.
set -euo pipefail

PREFIX=${SLURM_LOCAL_PREFIX:-/var/spool/slurm-local}
CONF=$PREFIX/slurm.conf
NODE=$(hostname -s)
MUNGE_SOCKET=/run/munge/munge.socket.2
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

log() { echo "slurm-local: $*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    log "not root and no sudo: cannot run $*"
    exit 1
  fi
}

install_packages() {
  local missing=() p status
  for p in slurm-wlm munge; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get: install ${missing[*]} yourself"
    exit 1
  fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# RealMemory in MiB: MemTotal less 5 % (at least 512 MiB), so slurmd never finds less than
# the config claims.
real_memory_mib() {
  local kib total margin
  kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  total=$((kib / 1024))
  margin=$((total / 20))
  ((margin < 512)) && margin=512
  echo $((total > margin ? total - margin : total))
}

write_conf() {
  as_root mkdir -p "$PREFIX"/{state,spool,log,run}
  local tmp
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# Written by lamella scripts/slurm-local.sh: a single-node test cluster (root, no cgroups),
# reached on 127.0.0.1 so that the host name need not resolve.
ClusterName=lamella-local
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$PREFIX/state
SlurmdSpoolDir=$PREFIX/spool
SlurmctldPidFile=$PREFIX/run/slurmctld.pid
SlurmdPidFile=$PREFIX/run/slurmd.pid
SlurmctldLogFile=$PREFIX/log/slurmctld.log
SlurmdLogFile=$PREFIX/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobRequeue=1
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# keep finished jobs in \`scontrol show job\` for an hour (there is no accounting database)
MinJobAge=3600
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$(real_memory_mib) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  CONF_CHANGED=0
  if ! cmp -s "$tmp" "$CONF"; then
    as_root cp "$tmp" "$CONF"
    CONF_CHANGED=1
  fi
  rm -f "$tmp"
}

ensure_munge_key() {
  [[ -s /etc/munge/munge.key ]] && return 0
  log "creating /etc/munge/munge.key"
  as_root mkdir -p /etc/munge
  if command -v mungekey >/dev/null 2>&1; then
    as_root mungekey --create --keyfile=/etc/munge/munge.key
  else
    as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  as_root chown munge:munge /etc/munge/munge.key
  as_root chmod 400 /etc/munge/munge.key
}

# pid from a pid file when that process is alive
live_pid() {
  local f=$1 pid
  [[ -r "$f" ]] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start_munge() {
  if live_pid /run/munge/munged.pid >/dev/null && munge -n </dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  as_root mkdir -p /run/munge /var/log/munge /var/lib/munge
  as_root chown munge:munge /run/munge /var/log/munge /var/lib/munge
  as_root chmod 755 /run/munge
  log "starting munged"
  as_root runuser -u munge -- /usr/sbin/munged
  local i
  for ((i = 0; i < 20; i++)); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "munged does not answer (see /var/log/munge/munged.log)"
  exit 1
}

node_state() {
  SLURM_CONF=$CONF sinfo -h -n "$NODE" -o '%t' 2>/dev/null | head -n1
}

start() {
  install_packages
  write_conf
  ensure_munge_key
  start_munge
  export SLURM_CONF=$CONF
  if ! live_pid "$PREFIX/run/slurmctld.pid" >/dev/null; then
    log "starting slurmctld"
    as_root /usr/sbin/slurmctld -f "$CONF"
  elif ((CONF_CHANGED)); then
    log "slurm.conf changed: scontrol reconfigure"
    as_root env SLURM_CONF="$CONF" scontrol reconfigure
  fi
  if ! live_pid "$PREFIX/run/slurmd.pid" >/dev/null; then
    log "starting slurmd"
    as_root /usr/sbin/slurmd -f "$CONF"
  fi
  local i s=""
  for ((i = 0; i < WAIT_S * 2; i++)); do
    s=$(node_state)
    case "$s" in
    idle | mix | alloc) break ;;
    drain* | down* | inval*)
      # a node left down by an earlier run: bring it back
      as_root scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
      ;;
    esac
    sleep 0.5
  done
  if [[ ! "$s" =~ ^(idle|mix|alloc)$ ]]; then
    log "node $NODE is '${s:-unknown}' after ${WAIT_S}s; logs in $PREFIX/log"
    exit 1
  fi
  log "node $NODE is $s (partition debug)"
  echo "export SLURM_CONF=$CONF"
}

# stop_daemon NAME PIDFILE: TERM, wait up to 10 s for it to exit, then KILL
stop_daemon() {
  local name=$1 pid i
  pid=$(live_pid "$2") || return 0
  log "stopping $name ($pid)"
  as_root kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  as_root kill -9 "$pid" 2>/dev/null || true
}

stop() {
  stop_daemon slurmd "$PREFIX/run/slurmd.pid"
  stop_daemon slurmctld "$PREFIX/run/slurmctld.pid"
  stop_daemon munged /run/munge/munged.pid
}

status() {
  local d pid rc=0
  for d in slurmctld slurmd; do
    if pid=$(live_pid "$PREFIX/run/$d.pid"); then echo "$d: running ($pid)"; else
      echo "$d: stopped"
      rc=3
    fi
  done
  if pid=$(live_pid /run/munge/munged.pid); then echo "munged: running ($pid)"; else
    echo "munged: stopped"
    rc=3
  fi
  if ((rc == 0)); then
    SLURM_CONF=$CONF sinfo
    SLURM_CONF=$CONF squeue
  fi
  return $rc
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
  echo "usage: $0 start|stop|status|env" >&2
  exit 2
  ;;
esac
