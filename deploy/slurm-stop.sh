#!/usr/bin/env bash
# Stop the single-node SLURM started by deploy/slurm-start.sh.
#
#   deploy/slurm-stop.sh               cancel all jobs, stop slurmd + slurmctld, stop munged
#   deploy/slurm-stop.sh --keep-munge  same, but leave munged running
#   deploy/slurm-stop.sh --keep-jobs   do not cancel queued/running jobs first (their processes
#                                      keep running without a slurmd; they are requeued or failed
#                                      at the next start)
#
# Safe to run when nothing is running. Daemons are found through their pid files
# (/run/slurmctld.pid, /run/slurmd.pid, /run/munge/munged.pid); no process is killed by name.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    echo "slurm-stop.sh: must run as root (and sudo is not available)" >&2
    exit 1
fi
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:${PATH}"

KEEP_MUNGE=0
KEEP_JOBS=0
for arg in "$@"; do
    case $arg in
        --keep-munge) KEEP_MUNGE=1 ;;
        --keep-jobs) KEEP_JOBS=1 ;;
        -h | --help)
            sed -n '2,10p' "$0"
            exit 0
            ;;
        *)
            echo "slurm-stop.sh: unknown argument $arg" >&2
            exit 2
            ;;
    esac
done

CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

log() { printf '[slurm-stop] %s\n' "$*"; }

pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(<"/proc/$pid/comm") == "$name" ]]
}

# wait_gone PIDFILE NAME SECONDS: wait for the daemon to exit, then SIGKILL it
wait_gone() {
    local pidfile=$1 name=$2 secs=$3 pid
    pid_alive "$pidfile" "$name" || return 0
    pid=$(<"$pidfile")
    for _ in $(seq 1 $((secs * 5))); do
        pid_alive "$pidfile" "$name" || return 0
        sleep 0.2
    done
    log "$name (pid $pid) still running after ${secs}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

ctld_up=0
pid_alive "$CTLD_PID" slurmctld && ctld_up=1

if [[ $ctld_up -eq 1 && $KEEP_JOBS -eq 0 ]] && command -v squeue >/dev/null 2>&1; then
    mapfile -t jobs < <(squeue -h -o '%i' 2>/dev/null || true)
    if [[ ${#jobs[@]} -gt 0 ]]; then
        log "cancelling ${#jobs[@]} job(s): ${jobs[*]}"
        scancel "${jobs[@]}" 2>/dev/null || true
        for _ in $(seq 1 30); do
            [[ -z $(squeue -h -o '%i' 2>/dev/null || true) ]] && break
            sleep 0.5
        done
    fi
fi

if [[ $ctld_up -eq 1 ]]; then
    log "scontrol shutdown (slurmctld and slurmd)"
    scontrol shutdown >/dev/null 2>&1 || true
fi
# slurmd without a controller (or a controller that did not pass the shutdown on): TERM it.
for pair in "$SLURMD_PID:slurmd" "$CTLD_PID:slurmctld"; do
    pidfile=${pair%%:*}
    name=${pair##*:}
    if pid_alive "$pidfile" "$name"; then
        sleep 1
        if pid_alive "$pidfile" "$name"; then
            log "stopping $name (pid $(<"$pidfile"))"
            kill -TERM "$(<"$pidfile")" 2>/dev/null || true
        fi
    fi
    wait_gone "$pidfile" "$name" 15
done

if [[ $KEEP_MUNGE -eq 0 ]] && pid_alive "$MUNGE_PID" munged; then
    log "stopping munged (pid $(<"$MUNGE_PID"))"
    kill -TERM "$(<"$MUNGE_PID")" 2>/dev/null || true
    wait_gone "$MUNGE_PID" munged 10
fi
log "SLURM stopped"
