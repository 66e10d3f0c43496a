#!/usr/bin/env bash
# A SLURM test cluster on this machine for the tests in tests/slurm (Debian's slurm-wlm and munge,
# daemons run as root, no cgroups). Idempotent:
#   bash tests/slurm/cluster.sh start [--nodes 2]   install if missing, configure, start, wait
#   bash tests/slurm/cluster.sh stop                stop every daemon; remove namespaces and bridge
#   bash tests/slurm/cluster.sh status [--nodes 2]  exit 0 when the nodes are up and accept jobs
#   bash tests/slurm/cluster.sh kill-node NODE      SIGKILL everything on a namespaced node
#                                                   (its slurmd, step daemons and tasks)
#   bash tests/slurm/cluster.sh start-node NODE     start a killed node's slurmd again
#
# One node: node "localhost" (127.0.0.1), partition "debug" (the default).
# Two more with --nodes 2: nodes sslnode1 and sslnode2, partition "pair". Each runs in its own
# network namespace with its own host name (UTS namespace) and address on a private bridge that
# the script makes (sslbr0, 10.211.0.0/24; the controller listens on 10.211.0.1), so a job on
# both rendezvouses across two addresses as on two machines, and a node can be lost on its own.
# The namespaces share this machine's file system: run directories are on shared storage, as
# on a cluster. Inside a node, /etc/hosts is /etc/netns/<node>/hosts (the layout of ip-netns(8)).
set -euo pipefail

CONF_DIR=/etc/slurm
SPOOL=/var/spool/sslframe-slurm
LOGS=/var/log/sslframe-slurm
NODE=localhost
BRIDGE=sslbr0
PREFIX=10.211.0
CONTROLLER_ADDR=$PREFIX.1
PAIR=(sslnode1 sslnode2)

log() { echo "cluster.sh: $*" >&2; }

node_addr() { echo "$PREFIX.$((10 + ${1#sslnode}))"; }

node_up() {
  command -v sinfo >/dev/null 2>&1 || return 1
  local state
  state=$(sinfo -h -n "$1" -o %t 2>/dev/null | head -n1) || return 1
  [[ "$state" =~ ^(idle|mix|alloc)$ ]]
}

all_up() {
  local nodes=$1 node
  node_up "$NODE" || return 1
  if ((nodes > 1)); then
    for node in "${PAIR[@]}"; do node_up "$node" || return 1; done
  fi
}

configured_nodes() {
  grep -q "^NodeName=sslnode" "$CONF_DIR/slurm.conf" 2>/dev/null && echo 2 || echo 1
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

# Prints the configuration for one node or three (localhost plus the pair).
config_text() {
  local nodes=$1 cpus memory_mb controller=localhost
  cpus=$(nproc)
  cpus=$((cpus > 4 ? cpus : 4))
  # A little below the machine's memory, as slurmd refuses a node claiming more than it has.
  memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  ((nodes > 1)) && controller="localhost($CONTROLLER_ADDR)"
  cat <<CONF
# Written by sslframe tests/slurm/cluster.sh: $nodes node(s) of tests on this machine.
ClusterName=sslframe
SlurmctldHost=$controller
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
# A node that stops answering is down after 45 s (default 300 s), so a lost node ends its job soon,
# yet later than the ranks left notice it themselves (tests/slurm/test_two_nodes.py runs them with a
# 20 s collective timeout; at 20 s here the controller sometimes ended the step first).
SlurmdTimeout=45
SlurmctldPidFile=/run/sslframe-slurmctld.pid
SlurmdPidFile=/run/sslframe-slurmd-%n.pid
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d-%n
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
# The test jobs use one CPU per task and may share the node's cores.
SlurmdParameters=config_overrides
CONF
  # The pair's lines come before localhost's: slurm 22.05 reports the nodes after a node named
  # localhost as "Duplicated NodeHostName".
  if ((nodes > 1)); then
    local node
    for node in "${PAIR[@]}"; do
      echo "NodeName=$node NodeAddr=$(node_addr "$node") CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN"
    done
  fi
  echo "NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN"
  echo "PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
  if ((nodes > 1)); then
    echo "PartitionName=pair Nodes=$(IFS=,; echo "${PAIR[*]}") MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
  fi
}

# Writes the configuration; returns 10 when it changed (the daemons must restart to read it).
write_config() {
  local nodes=$1 text
  if [[ -f $CONF_DIR/slurm.conf ]] && ! grep -q "^# Written by sslframe" "$CONF_DIR/slurm.conf"; then
    log "$CONF_DIR/slurm.conf exists and is not ours: this machine has its own SLURM, not touching it"
    return 1
  fi
  mkdir -p "$CONF_DIR" "$SPOOL/ctld" "$LOGS"
  text=$(config_text "$nodes")
  if [[ -f $CONF_DIR/slurm.conf ]] && [[ "$(cat "$CONF_DIR/slurm.conf")" == "$text" ]]; then
    return 0
  fi
  echo "$text" >"$CONF_DIR/slurm.conf"
  return 10
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

# The bridge, and for each node of the pair a namespace joined to it by a veth pair.
make_network() {
  local node addr
  command -v ip >/dev/null 2>&1 || { log "ip (iproute2) is missing: cannot make the node namespaces"; return 1; }
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$CONTROLLER_ADDR/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  for node in "${PAIR[@]}"; do
    addr=$(node_addr "$node")
    ip netns list | grep -qw "^$node" || ip netns add "$node"
    if ! ip link show "v-$node" >/dev/null 2>&1; then
      ip link add "v-$node" type veth peer name eth0 netns "$node"
      ip link set "v-$node" master "$BRIDGE"
      ip -n "$node" addr add "$addr/24" dev eth0
    fi
    ip link set "v-$node" up
    ip -n "$node" link set lo up
    ip -n "$node" link set eth0 up
    mkdir -p "/etc/netns/$node"
    {
      echo "127.0.0.1 localhost"
      echo "$CONTROLLER_ADDR sslctl"
      for other in "${PAIR[@]}"; do echo "$(node_addr "$other") $other"; done
    } >"/etc/netns/$node/hosts"
  done
}

remove_network() {
  local node
  for node in "${PAIR[@]}"; do
    ip netns list 2>/dev/null | grep -qw "^$node" && ip netns del "$node"
    ip link del "v-$node" >/dev/null 2>&1 || true
    rm -rf "/etc/netns/$node"
  done
  ip link del "$BRIDGE" >/dev/null 2>&1 || true
}

start_node() {
  local node=$1
  mkdir -p "$SPOOL/d-$node"
  if [[ $node == "$NODE" ]]; then
    pgrep -f "slurmd -N $NODE\$" >/dev/null 2>&1 || slurmd -N "$NODE"
    return 0
  fi
  ip link set "v-$node" up
  ip netns pids "$node" 2>/dev/null | xargs -r ps -o args= -p 2>/dev/null | grep -q "^slurmd -N $node" && return 0
  # Inside the node's network namespace, with its own host name (UTS namespace) and its
  # /etc/hosts (a mount namespace). Not "ip netns exec": it remounts /sys for the namespace,
  # which hides /sys/fs/cgroup, and slurmd does not start without it.
  nsenter --net="/run/netns/$node" unshare --uts --mount --propagation slave \
    sh -c "mount --bind /etc/netns/$node/hosts /etc/hosts && hostname $node && exec slurmd -N $node"
}

# As a node that loses power: its link goes silent first (peers get no connection reset, only
# silence), then everything in it dies.
kill_node() {
  local node=$1 pids
  [[ $node == sslnode* ]] || { log "only the namespaced nodes (${PAIR[*]}) can be killed"; return 2; }
  ip link set "v-$node" down 2>/dev/null || true
  pids=$(ip netns pids "$node" 2>/dev/null || true)
  [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
  log "killed $node (pids: ${pids//$'\n'/ })"
}

stop_daemons() {
  local pidfile
  scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 50); do pgrep -x slurmctld >/dev/null || break; sleep 0.1; done
  for node in "${PAIR[@]}"; do
    ip netns list 2>/dev/null | grep -qw "^$node" && kill_node "$node" 2>/dev/null
  done
  for pidfile in /run/sslframe-slurmd-*.pid /run/sslframe-slurmd.pid /run/sslframe-slurmctld.pid; do
    [[ -s $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  return 0
}

start() {
  local nodes=$1 node changed=0
  if [[ $(configured_nodes) -ge $nodes ]] && all_up "$nodes"; then
    log "already running"
    return 0
  fi
  install_packages
  # A two-node cluster is a superset of the one-node one: keep it when one node is asked for.
  ((nodes < $(configured_nodes))) && nodes=$(configured_nodes)
  write_config "$nodes" || changed=$?
  if ((changed == 10)); then
    stop_daemons
  elif ((changed != 0)); then
    return 1
  fi
  ((nodes > 1)) && make_network
  start_munge
  scontrol ping >/dev/null 2>&1 || slurmctld
  start_node "$NODE"
  if ((nodes > 1)); then
    for node in "${PAIR[@]}"; do start_node "$node"; done
  fi
  for _ in $(seq 150); do
    if all_up "$nodes"; then
      log "running: node $NODE, partition debug$( ((nodes > 1)) && echo "; nodes ${PAIR[*]}, partition pair")"
      return 0
    fi
    # A node that was down when the controller stopped comes back on request.
    for node in $NODE $( ((nodes > 1)) && echo "${PAIR[@]}"); do
      node_up "$node" || scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
    done
    sleep 0.3
  done
  log "the nodes did not come up; see $LOGS"
  sinfo >&2 || true
  return 1
}

stop() {
  stop_daemons
  remove_network
  log "stopped"
}

nodes_arg() {
  if [[ ${1:-} == --nodes ]]; then
    [[ ${2:-} =~ ^[12]$ ]] || { echo "cluster.sh: --nodes takes 1 or 2" >&2; exit 2; }
    echo "$2"
  else
    echo 1
  fi
}

case "${1:-}" in
  start) start "$(nodes_arg "${2:-}" "${3:-}")" ;;
  stop) stop ;;
  status) all_up "$(nodes_arg "${2:-}" "${3:-}")" ;;
  kill-node) kill_node "${2:?kill-node NODE}" ;;
  start-node)
    start_node "${2:?start-node NODE}"
    for _ in $(seq 150); do node_up "$2" && exit 0; scontrol update nodename="$2" state=resume >/dev/null 2>&1 || true; sleep 0.3; done
    log "$2 did not come back"
    exit 1
    ;;
  *)
    echo "usage: $0 {start [--nodes 2]|stop|status [--nodes 2]|kill-node NODE|start-node NODE}" >&2
    exit 2
    ;;
esac
