#!/usr/bin/env bash
# A single-node Slurm cluster on this machine: {start|stop|status|env}.
#
# start: installs Debian's slurm-wlm + munge when missing (root only), writes a
#   slurm.conf for NodeName=localhost with this machine's CPUs and memory
#   (slurmd -C), creates the munge key if absent, starts munged, slurmctld and
#   slurmd (no systemd, no cgroups: proctrack/linuxproc, task/none), and waits
#   until `sinfo` shows the node idle (resuming it if Slurm marked it down).
# stop: kills the daemons this script started (by their pid files).
# status: daemons, sinfo and the queue.   env: prints `export SLURM_CONF=...`.
#
# Everything (config, state, spool, logs, pid files) lives under EVL_SLURM_DIR
# (default /tmp/evl-slurm). Clients find the config through SLURM_CONF; when
# /etc/slurm/slurm.conf does not exist it is linked to ours so plain `sinfo`
# works too. Ports: EVL_SLURM_CTLD_PORT (6817), EVL_SLURM_SLURMD_PORT (6818).
# Exit status: 0 ok, 1 failure (the reason and log tails are printed).
set -euo pipefail

DIR=${EVL_SLURM_DIR:-/tmp/evl-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${EVL_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${EVL_SLURM_SLURMD_PORT:-6818}
START_TIMEOUT=${EVL_SLURM_START_TIMEOUT:-90}
PIDFILE_GRACE=20
NODE=localhost
export SLURM_CONF=$CONF

log() { echo "local_cluster: $*" >&2; }
die() {
  log "error: $*"
  for f in "$DIR"/log/*.log; do
    [ -f "$f" ] && { echo "--- tail of $f" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  local missing=()
  for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "need root to install ${missing[*]} (apt-get install slurm-wlm munge)"
  command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm and munge by hand"
  log "installing slurm-wlm munge (${missing[*]} missing)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq || true
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
    || die "apt-get install slurm-wlm munge failed"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_works; then
    return 0  # a munged is already serving the default socket (ours or the system's)
  fi
  local key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    log "creating munge key $key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" --force; else
      dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
  fi
  local user=root
  id munge >/dev/null 2>&1 && user=munge
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown "$user" /run/munge /var/lib/munge /var/log/munge "$key" 2>/dev/null || true
  chmod 0700 /etc/munge 2>/dev/null || true
  chmod 0400 "$key"
  chmod 0755 /run/munge
  local cmd=(munged --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log")
  [ "$user" = root ] && cmd+=(--force)
  chown "$user" "$DIR/log" "$DIR/run"
  if [ "$user" = root ]; then "${cmd[@]}"; else runuser -u "$user" -- "${cmd[@]}"; fi \
    || die "munged failed to start"
  touch "$DIR/run/munged.ours"
  for _ in $(seq 1 50); do munge_works && return 0; sleep 0.2; done
  die "munged started but 'munge -n | unmunge' fails"
}

write_conf() {
  local hw
  hw=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *$//')
  [ -n "$hw" ] || die "slurmd -C printed no hardware line"
  local ctld_host
  ctld_host=$(hostname -s)
  cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm/local_cluster.sh: a single-node Slurm for tests and demos.
ClusterName=evl
SlurmctldHost=${ctld_host}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool/slurmd-%n
SlurmctldPidFile=${DIR}/run/slurmctld.pid
SlurmdPidFile=${DIR}/run/slurmd.pid
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
MinJobAge=300
MaxArraySize=100001
NodeName=${NODE} NodeAddr=127.0.0.1 ${hw} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  mv "$CONF.tmp" "$CONF"
  if [ ! -e /etc/slurm/slurm.conf ] && [ -d /etc/slurm ]; then
    ln -s "$CONF" /etc/slurm/slurm.conf && touch "$DIR/run/etc-link.ours"
  fi
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }

cmd_start() {
  install_packages
  mkdir -p "$DIR"/{state,spool,log,run}
  if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid" && scontrol ping >/dev/null 2>&1; then
    log "already running ($CONF)"
  else
    cmd_stop quiet
    mkdir -p "$DIR"/{state,spool,log,run}
    start_munge
    write_conf
    slurmctld -f "$CONF" || die "slurmctld failed to start"
    slurmd -f "$CONF" -N "$NODE" || die "slurmd failed to start"
  fi
  local started=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) state="" d
  while [ $SECONDS -lt $deadline ]; do
    for d in slurmctld slurmd; do
      # A daemon writes its pid file only after it has forked and initialised,
      # which can take a second or two on a loaded machine: a missing or empty
      # pid file is "not yet", a failure only after PIDFILE_GRACE seconds.
      # (Calling it a failure at once made the tests stop a healthy cluster.)
      pid_alive "$DIR/run/$d.pid" && continue
      if [ -s "$DIR/run/$d.pid" ] || [ $((SECONDS - started)) -ge "$PIDFILE_GRACE" ]; then
        die "$d exited"
      fi
    done
    state=$(node_state)
    case "$state" in
      idle | mixed | allocated) log "node $NODE is $state; export SLURM_CONF=$CONF"; return 0 ;;
      down* | drain* | fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  die "node $NODE did not become idle within ${START_TIMEOUT}s (state '${state}')"
}

stop_pidfile() {
  local f=$1
  pid_alive "$f" || { rm -f "$f"; return 0; }
  local pid
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

cmd_stop() {
  stop_pidfile "$DIR/run/slurmd.pid"
  stop_pidfile "$DIR/run/slurmctld.pid"
  # Daemons of this configuration that never wrote a pid file (stopped while
  # starting) are found by their command line.
  if pkill -f -- "-f $CONF" 2>/dev/null; then
    for _ in $(seq 1 50); do pgrep -f -- "-f $CONF" >/dev/null || break; sleep 0.2; done
    pkill -9 -f -- "-f $CONF" 2>/dev/null || true
  fi
  if [ -f "$DIR/run/munged.ours" ]; then
    stop_pidfile "$DIR/run/munged.pid"
    rm -f "$DIR/run/munged.ours"
  fi
  if [ -f "$DIR/run/etc-link.ours" ]; then
    [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ] && rm -f /etc/slurm/slurm.conf
    rm -f "$DIR/run/etc-link.ours"
  fi
  [ "${1:-}" = quiet ] || log "stopped"
}

cmd_status() {
  local rc=0
  for d in munged slurmctld slurmd; do
    if pid_alive "$DIR/run/$d.pid"; then echo "$d: running (pid $(cat "$DIR/run/$d.pid"))"
    else echo "$d: not running (by this script)"; [ "$d" = munged ] || rc=1; fi
  done
  if [ $rc -eq 0 ]; then sinfo; squeue; fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 {start|stop|status|env}   (EVL_SLURM_DIR=${DIR})" >&2; exit 2 ;;
esac
