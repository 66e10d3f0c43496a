#!/usr/bin/env bash
# A one-node SLURM cluster (node "localhost") on this machine for the tests in tests/slurm
# (Debian's slurm-wlm and munge, daemons run as root, no cgroups). Idempotent:
#   bash tests/slurm/cluster.sh start    install if missing, configure, start, wait for the node
#   bash tests/slurm/cluster.sh stop     stop slurmd, slurmctld and munged
#   bash tests/slurm/cluster.sh status   exit 0 when the node is up and accepts jobs
set -euo pipefail

CONF_DIR=/etc/slurm
SPOOL=/var/spool/sslframe-slurm
LOGS=/var/log/sslframe-slurm
NODE=localhost

log() { echo "cluster.sh: $*" >&2; }

node_up() {
  command -v sinfo >/dev/null 2>&1 || return 1
  local state
  state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1) || return 1
  [[ "$state" =~ ^(idle|mix|alloc)$ ]]
}

install_packages() {
  command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 && return 0
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "slurm-wlm and munge are missing and cannot be installed here (needs root and apt-get)"
    return 1
  fi
  log "installing slurm-wlm and munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
  local cpus memory_mb
  if [[ -f $CONF_DIR/slurm.conf ]] && ! grep -q "^# Written by sslframe" "$CONF_DIR/slurm.conf"; then
    log "$CONF_DIR/slurm.conf exists and is not ours: this machine has its own SLURM, not touching it"
    return 1
  fi
  cpus=$(nproc)
  # A little below the machine's memory, as slurmd refuses a node claiming more than it has.
  memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$CONF_DIR" "$SPOOL/ctld" "$SPOOL/d" "$LOGS"
  cat >"$CONF_DIR/slurm.conf" <<CONF
# Written by sslframe tests/slurm/cluster.sh: one node on this machine.
ClusterName=sslframe
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again once its credentials expire (default 120 s).
AuthInfo=cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
JobRequeue=1
ReturnToService=2
KillWait=30
MinJobAge=600
SlurmctldPidFile=/run/sslframe-slurmctld.pid
SlurmdPidFile=/run/sslframe-slurmd.pid
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# The test jobs use one CPU per task and may share the node's cores.
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$((cpus > 4 ? cpus : 4)) RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  [[ -s /etc/munge/munge.key ]] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "munged did not start"
  return 1
}

start() {
  if node_up; then
    log "already running ($NODE)"
    return 0
  fi
  install_packages
  write_config
  start_munge
  scontrol ping >/dev/null 2>&1 || slurmctld
  pgrep -f "slurmd -N $NODE" >/dev/null 2>&1 || slurmd -N "$NODE"
  for _ in $(seq 100); do
    if node_up; then
      log "running: node $NODE, partition debug"
      return 0
    fi
    # A node that was down when the controller stopped comes back on request.
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    sleep 0.3
  done
  log "the node did not come up; see $LOGS"
  sinfo >&2 || true
  return 1
}

stop() {
  scontrol shutdown >/dev/null 2>&1 || true
  for pidfile in /run/sslframe-slurmd.pid /run/sslframe-slurmctld.pid /run/munge/munged.pid; do
    [[ -s $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) node_up ;;
  *)
    echo "usage: $0 {start|stop|status}" >&2
    exit 2
    ;;
esac
