#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (for CI and local tests of monodir).
#
# Idempotent: safe to run again at any time. It
#   1. installs the Debian packages (slurmctld slurmd slurm-client munge) if they are missing,
#   2. creates a munge key if there is none and starts munged,
#   3. writes /etc/slurm/slurm.conf for this host (one node, one partition "debug"),
#   4. starts slurmctld and slurmd as plain daemons (no systemd needed: works in containers),
#   5. waits until `sinfo` reports the node idle, and prints the state.
# If the daemons already run with the same configuration, nothing is restarted.
# If the configuration changed (other hostname, CPU count, ...), they are restarted.
#
# Needs root (re-executes itself through sudo when that is available).
#
# Environment knobs (all optional):
#   MONODIR_SLURM_CPUS      CPUs advertised for the node (default: nproc). A value above the
#                           real count over-subscribes the machine (useful to run more 1-CPU
#                           worker jobs at once on a small CI box).
#   MONODIR_SLURM_TIMEOUT   seconds to wait for the node to become idle (default 60).
#   MONODIR_SLURM_NO_INSTALL=1  never call apt-get (fail if SLURM is missing).
#
# Files: /etc/slurm/slurm.conf, logs in /var/log/slurm/, state in /var/spool/slurmctld and
# /var/spool/slurmd, finished-job log (jobcomp/filetxt) in /var/log/slurm/jobcomp.log.
# Stop with deploy/slurm-stop.sh; inspect with deploy/slurm-status.sh.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    echo "slurm-start.sh: must run as root (and sudo is not available)" >&2
    exit 1
fi

export PATH="/usr/sbin:/usr/bin:/sbin:/bin:${PATH}"

SLURM_CONF_DIR=/etc/slurm
SLURM_CONF=${SLURM_CONF_DIR}/slurm.conf
LOG_DIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
JOBCOMP_LOG=${LOG_DIR}/jobcomp.log
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
TIMEOUT=${MONODIR_SLURM_TIMEOUT:-60}

log() { printf '[slurm-start] %s\n' "$*"; }
die() {
    printf '[slurm-start] ERROR: %s\n' "$*" >&2
    exit 1
}

# pid_alive PIDFILE NAME: true if PIDFILE names a live process whose command is NAME
pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(<"/proc/$pid/comm") == "$name" ]]
}

# ---------------------------------------------------------------------------------------------
# 1. packages
# ---------------------------------------------------------------------------------------------
install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sinfo sbatch munged munge; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    if [[ $missing -eq 0 ]]; then
        return 0
    fi
    if [[ ${MONODIR_SLURM_NO_INSTALL:-0} == 1 ]]; then
        die "SLURM or munge is not installed and MONODIR_SLURM_NO_INSTALL=1"
    fi
    command -v apt-get >/dev/null 2>&1 || die "SLURM is missing and apt-get is not available"
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # Do not let the packages' maintainer scripts try to start services (no init system here):
    # a policy-rc.d that answers 101 ("action forbidden") is the Debian way to say so.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update -q
    fi
    local pkgs=(slurmctld slurmd slurm-client munge)
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${pkgs[@]}"
    fi
    if [[ $created_policy -eq 1 ]]; then
        rm -f "$policy"
    fi
    for cmd in slurmctld slurmd sinfo sbatch munged; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after apt-get install"
    done
}

# ---------------------------------------------------------------------------------------------
# 2. munge
# ---------------------------------------------------------------------------------------------
start_munge() {
    local muser=munge
    id "$muser" >/dev/null 2>&1 || muser=root
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating munge key $MUNGE_KEY"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown "$muser:$muser" /etc/munge "$MUNGE_KEY" /var/lib/munge /var/log/munge /run/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    chmod 0400 "$MUNGE_KEY"

    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running"
        return 0
    fi
    # A stale pid file or socket from a killed munged makes a new one refuse to start.
    if [[ -e /run/munge/munged.pid ]] && ! pid_alive /run/munge/munged.pid munged; then
        rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    fi
    log "starting munged (as $muser)"
    if [[ $muser == root ]]; then
        munged --force
    else
        runuser -u "$muser" -- munged
    fi
    for _ in $(seq 1 50); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    die "munged did not come up (see /var/log/munge/munged.log)"
}

# ---------------------------------------------------------------------------------------------
# 3. slurm.conf
# ---------------------------------------------------------------------------------------------
write_conf() {
    local host cpus mem_mb real_mem
    host=$(hostname -s)
    [[ -n $host ]] || die "hostname -s is empty"
    cpus=${MONODIR_SLURM_CPUS:-$(nproc)}
    [[ $cpus =~ ^[0-9]+$ && $cpus -ge 1 ]] || die "bad MONODIR_SLURM_CPUS=$cpus"
    # `slurmd -C` prints the node line SLURM itself detects; take RealMemory from there and keep
    # ~5% (at least 256 MB) below it so the node is never drained for "Low RealMemory".
    mem_mb=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
    if [[ -z $mem_mb ]]; then
        mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    fi
    local margin=$((mem_mb / 20))
    ((margin < 256)) && margin=256
    real_mem=$((mem_mb - margin))
    ((real_mem < 256)) && real_mem=256

    local overrides=""
    if ((cpus != $(nproc))); then
        # Advertise a different CPU count than the hardware has (over-subscription on purpose).
        overrides="SlurmdParameters=config_overrides"
    fi

    mkdir -p "$SLURM_CONF_DIR" "$LOG_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"
    touch "$JOBCOMP_LOG"
    local tmp
    tmp=$(mktemp "${SLURM_CONF}.XXXXXX")
    cat >"$tmp" <<EOF
# Written by monodir deploy/slurm-start.sh -- single-node SLURM for tests. Regenerated on
# every start; edit the script, not this file.
ClusterName=monodir
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ReturnToService=2
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${CTLD_SPOOL}
SlurmdSpoolDir=${SLURMD_SPOOL}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
PropagateResourceLimits=NONE
# Cores and memory are consumable per CPU, so several 1-CPU jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
${overrides}
# Timers: quick turnaround for tests; finished jobs stay visible to scontrol for 10 min.
InactiveLimit=0
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
SchedulerType=sched/backfill
# No slurmdbd: no accounting database, but every finished job is appended to a text file.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=${JOBCOMP_LOG}
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 644 "$tmp"
    if [[ -f $SLURM_CONF ]] && cmp -s "$tmp" "$SLURM_CONF"; then
        rm -f "$tmp"
        CONF_CHANGED=0
    else
        mv -f "$tmp" "$SLURM_CONF"
        CONF_CHANGED=1
        log "wrote $SLURM_CONF (node ${host}: CPUs=${cpus} RealMemory=${real_mem} MB)"
    fi
    NODE=$host
}

# ---------------------------------------------------------------------------------------------
# 4. daemons
# ---------------------------------------------------------------------------------------------
stop_daemon() {
    local pidfile=$1 name=$2 pid
    pid_alive "$pidfile" "$name" || return 0
    pid=$(<"$pidfile")
    log "stopping $name (pid $pid) to apply the new configuration"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        pid_alive "$pidfile" "$name" || return 0
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
}

start_daemons() {
    if [[ $CONF_CHANGED -eq 1 ]]; then
        stop_daemon "$SLURMD_PID" slurmd
        stop_daemon "$CTLD_PID" slurmctld
    fi
    if pid_alive "$CTLD_PID" slurmctld; then
        log "slurmctld already running (pid $(<"$CTLD_PID"))"
    else
        log "starting slurmctld"
        # -i: ignore unreadable state files (e.g. left by a machine with another hostname).
        slurmctld -i || die "slurmctld failed to start (see ${LOG_DIR}/slurmctld.log)"
    fi
    if pid_alive "$SLURMD_PID" slurmd; then
        log "slurmd already running (pid $(<"$SLURMD_PID"))"
    else
        log "starting slurmd"
        slurmd || die "slurmd failed to start (see ${LOG_DIR}/slurmd.log)"
    fi
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) state="" resumed=0
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true)
        case $state in
            idle | mixed | allocated | completing)
                log "node $NODE is $state"
                return 0
                ;;
            down* | drain* | fail*)
                # e.g. left "down" by an unclean stop: put it back into service once.
                if [[ $resumed -eq 0 ]]; then
                    log "node $NODE is $state; resuming it"
                    scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
                    resumed=1
                fi
                ;;
        esac
        sleep 1
    done
    echo "---- sinfo ----" >&2
    sinfo -N -l 2>&1 >&2 || true
    echo "---- tail ${LOG_DIR}/slurmctld.log ----" >&2
    tail -n 20 "${LOG_DIR}/slurmctld.log" >&2 2>/dev/null || true
    echo "---- tail ${LOG_DIR}/slurmd.log ----" >&2
    tail -n 20 "${LOG_DIR}/slurmd.log" >&2 2>/dev/null || true
    die "node $NODE not idle after ${TIMEOUT}s (last state: '${state:-no answer from slurmctld}')"
}

install_packages
start_munge
write_conf
start_daemons
wait_idle
echo
sinfo -N -l
echo
squeue
log "SLURM is up (partition debug, node $NODE; finished jobs are logged in $JOBCOMP_LOG)"
