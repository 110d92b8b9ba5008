#!/usr/bin/env bash
# Show the state of the single-node SLURM started by deploy/slurm-start.sh.
# Exit status 0 when the controller answers and the node is usable (idle/mixed/allocated),
# 1 otherwise. Usage: deploy/slurm-status.sh [N]   (N = how many finished jobs to list, default 5)
set -uo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:${PATH}"

N=${1:-5}
JOBCOMP_LOG=/var/log/slurm/jobcomp.log

daemon() {
    local pidfile=$1 name=$2 pid
    if [[ -s $pidfile ]]; then
        pid=$(<"$pidfile")
        if [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$name" ]]; then
            printf '  %-10s running (pid %s)\n' "$name" "$pid"
            return
        fi
    fi
    printf '  %-10s not running\n' "$name"
}

echo "daemons:"
daemon /run/munge/munged.pid munged
daemon /run/slurmctld.pid slurmctld
daemon /run/slurmd.pid slurmd
echo
if ! command -v sinfo >/dev/null 2>&1; then
    echo "SLURM is not installed (run deploy/slurm-start.sh)"
    exit 1
fi
if ! sinfo -N -l; then
    echo "slurmctld does not answer"
    exit 1
fi
echo
squeue
if [[ -s $JOBCOMP_LOG ]]; then
    echo
    echo "last $N finished jobs ($JOBCOMP_LOG):"
    tail -n "$N" "$JOBCOMP_LOG" | awk '{
        out = ""
        for (i = 1; i <= NF; i++)
            if ($i ~ /^(JobId|Name|JobState|StartTime|EndTime|ExitCode)=/) out = out " " $i
        print " " out
    }'
fi
state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1)
case $state in
    idle | mixed | allocated | completing) exit 0 ;;
    *) exit 1 ;;
esac
