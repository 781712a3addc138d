#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for kdbench's Slurm tests and CI.
#
#   scripts/slurm-cluster.sh start    install (apt, if missing), configure, start munged/slurmctld/slurmd
#   scripts/slurm-cluster.sh stop     cancel every job, stop the daemons this script started
#   scripts/slurm-cluster.sh status   say what runs, and what sinfo says
#
# Idempotent: `start` on a running cluster only checks it (and restarts the daemons if
# the configuration changed); `stop` on a stopped one does nothing. Needs root. Writes
# /etc/slurm/slurm.conf (and refuses to touch one it did not write). No accounting
# database: use scripts/sacct (first on PATH) so submitit can read job states.
set -euo pipefail

MARK="# written by kdbench scripts/slurm-cluster.sh"
CONF=/etc/slurm/slurm.conf
RUN=/run/kdbench-slurm
SPOOL=/var/spool/kdbench-slurm
LOGS=/var/log/kdbench-slurm
PACKAGES="slurmctld slurmd slurm-client munge"

say() { echo "slurm-cluster: $*" >&2; }
die() { say "$*"; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need_root() { [ "$(id -u)" = 0 ] || die "needs root (it writes $CONF and starts the daemons)"; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return
  command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get: install $PACKAGES"
  say "installing $PACKAGES"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else create-munge-key -f; fi
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  # munged refuses to run as root with a key owned by munge: run it as munge
  runuser -u munge -- munged
  touch "$RUN/started-munged"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
  die "munged did not come up"
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  mem=$((mem * 9 / 10))  # more than the machine has drains the node ("Low RealMemory")
  cat <<EOF
$MARK
ClusterName=kdbench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MinJobAge=3600
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

stop_daemons() {
  for name in slurmd slurmctld; do
    if alive "$RUN/$name.pid"; then
      kill "$(cat "$RUN/$name.pid")"
      for _ in $(seq 50); do alive "$RUN/$name.pid" || break; sleep 0.1; done
    fi
    rm -f "$RUN/$name.pid"
  done
}

wait_idle() {
  local host state
  host=$(hostname -s)
  for _ in $(seq 100); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
      idle*|mixed*|allocated*|completing*) return 0 ;;
      down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "the node did not become idle (state: ${state:-none}); see $LOGS/"
}

start() {
  need_root
  install
  mkdir -p "$RUN" "$SPOOL/ctld" "$SPOOL/d" "$LOGS" /etc/slurm
  if [ -f "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script: not touching a real cluster's configuration"
  fi
  start_munge
  local wanted
  wanted=$(write_conf)
  if [ ! -f "$CONF" ] || [ "$wanted" != "$(cat "$CONF")" ]; then
    printf '%s\n' "$wanted" > "$CONF"
    stop_daemons  # a changed configuration needs fresh daemons
  fi
  alive "$RUN/slurmctld.pid" || slurmctld
  alive "$RUN/slurmd.pid" || slurmd
  wait_idle
  say "up: $(sinfo -h -o '%P %D node(s) %T %c CPUs' | head -1)"
}

stop() {
  if command -v squeue >/dev/null && alive "$RUN/slurmctld.pid"; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 50); do [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break; sleep 0.1; done
    fi
  fi
  stop_daemons  # by PID: stopping slurmd alone would leave running jobs' processes alive
  if [ -f "$RUN/started-munged" ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$RUN/started-munged"
  fi
  say "stopped"
}

status() {
  local up=0
  for name in slurmctld slurmd; do
    if alive "$RUN/$name.pid"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; up=1; fi
  done
  [ $up = 0 ] && sinfo -h -o '%P %D node(s) %T %c CPUs' || true
  return $up
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
