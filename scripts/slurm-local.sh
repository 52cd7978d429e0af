#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for tests and CI:
#
#   scripts/slurm-local.sh start    # munged + slurmctld + slurmd, all under $SLURM_LOCAL_DIR
#   eval "$(scripts/slurm-local.sh env)"   # SLURM_CONF for sbatch/squeue/scontrol (and Snakemake)
#   scripts/slurm-local.sh status   # sinfo + squeue of that cluster
#   scripts/slurm-local.sh stop     # cancel its jobs, stop the daemons this script started, delete the dir
#
# Needs the Debian packages slurm-wlm and munge (`apt-get install slurm-wlm munge`). Nothing
# outside $SLURM_LOCAL_DIR is touched but a link /etc/slurm/slurm.conf -> its slurm.conf while
# it runs (see SYSTEM_CONF below; never replaces an existing file): its own munge key and socket, its own slurm.conf, state,
# spool, logs and pid files, and its own ports, so it never collides with a real cluster's
# daemons. One partition `debug` holds this machine with all its CPUs and no GPUs (no gres).
# No accounting database: job status comes from squeue/scontrol, hence MinJobAge=300 (finished
# jobs stay visible to squeue/scontrol for 5 minutes).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/cnnbench-slurm-$(id -u)}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6917}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6918}
CONF="$DIR/slurm.conf"
# srun inside a job must find the configuration without SLURM_CONF: Snakemake's slurm-jobstep
# executor removes every SLURM_* variable but a few from the job step's environment. So the
# default location links to this cluster's file while it runs, unless a real one is there.
SYSTEM_CONF=${SLURM_LOCAL_SYSTEM_CONF:-/etc/slurm/slurm.conf}
HOST=$(hostname -s)

die() { echo "slurm-local: $*" >&2; exit 1; }

need() {
  local missing=()
  for cmd in munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  if ((${#missing[@]})); then
    die "missing ${missing[*]}: install the Debian packages with 'apt-get update && apt-get install -y slurm-wlm munge'"
  fi
}

# Stop the daemon whose pid file is $1 (only that pid: never anything found by name).
stop_pid() {
  local pidfile=$1 pid
  [[ -s $pidfile ]] || return 0
  pid=$(<"$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  # Offer 90 % of the machine's memory so jobs that ask for --mem within it are accepted.
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  : >"$DIR/plugstack.conf"
  cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a single-node test cluster. Not for production.
ClusterName=cnnbench-local
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
PlugStackConfig=$DIR/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Keep finished jobs in slurmctld's memory: without an accounting database, squeue and
# scontrol are the only record of how a job ended.
MinJobAge=300
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  need
  if [[ -s $DIR/slurmctld.pid ]] && kill -0 "$(<"$DIR/slurmctld.pid")" 2>/dev/null; then
    die "already running (SLURM_CONF=$CONF); run '$0 stop' first"
  fi
  if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]] && [[ $(readlink "$SYSTEM_CONF" || true) != "$CONF" ]]; then
    die "$SYSTEM_CONF exists (a real SLURM installation?); refusing to replace it. Run on a machine without one."
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"/{munge,state,spool,log}
  chmod 700 "$DIR" "$DIR/munge"
  mungekey --create --keyfile="$DIR/munge/munge.key" --force >/dev/null 2>&1 ||
    { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; }
  chmod 600 "$DIR/munge/munge.key"
  # --force: munged refuses world-writable parents such as /tmp otherwise; the key and
  # socket live in a directory only this user can read.
  munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
  write_conf
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -sfn "$CONF" "$SYSTEM_CONF"
  slurmctld -f "$CONF" -i
  slurmd -f "$CONF"
  export SLURM_CONF=$CONF
  for _ in $(seq 100); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    if [[ $state == idle* ]]; then
      echo "slurm-local: cluster up in $DIR (node $HOST, $(nproc) CPUs); export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.2
  done
  echo "slurm-local: the node did not become idle (state: ${state:-none}); logs:" >&2
  tail -n 20 "$DIR"/log/*.log >&2 || true
  stop
  exit 1
}

stop() {
  [[ -d $DIR ]] || { echo "slurm-local: nothing to stop ($DIR does not exist)"; return 0; }
  if [[ -s $DIR/slurmctld.pid ]] && kill -0 "$(<"$DIR/slurmctld.pid")" 2>/dev/null; then
    # Cancel this cluster's jobs first so no job step outlives slurmd.
    SLURM_CONF=$CONF scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -z $(SLURM_CONF=$CONF squeue -h -t RUNNING,COMPLETING,PENDING 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
  stop_pid "$DIR/slurmd.pid"
  stop_pid "$DIR/slurmctld.pid"
  stop_pid "$DIR/munge/munged.pid"
  [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]] && rm -f "$SYSTEM_CONF"
  rm -rf "$DIR"
  echo "slurm-local: stopped; removed $DIR"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  status) export SLURM_CONF=$CONF; sinfo; squeue ;;
  *) echo "usage: $0 start|stop|env|status   (cluster directory: \$SLURM_LOCAL_DIR, default $DIR)" >&2; exit 2 ;;
esac
