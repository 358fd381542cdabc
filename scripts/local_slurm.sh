#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying vae-run's Slurm paths (and for the tests that do):
#
#     sudo scripts/local_slurm.sh start [DIR]    # DIR: its state, spool, logs and slurm.conf (default
#                                                # /tmp/vaerun-slurm); prints the SLURM_CONF line to export
#     export SLURM_CONF=DIR/slurm.conf           # then sbatch, squeue, scontrol and vae-run find it
#     vae-run -m hydra/launcher=slurm hydra.launcher.gpus_per_node=0 hydra.launcher.cpus_per_task=1 \
#         hydra.launcher.mem_gb=1 data=digits latent=2,4
#     sudo scripts/local_slurm.sh stop [DIR]
#
# Needs root and Debian's slurm-wlm and munge (make apt-packages installs them); no systemd: munged,
# slurmctld and slurmd are started by hand, run as root, and keep everything in DIR. The node has this
# machine's memory and cores (LOCAL_SLURM_CPUS=N declares N instead: more jobs at once than cores, as the
# tests of array_parallelism need), one partition ("local") and no accounting (sacct has nothing to say).
set -euo pipefail

command=${1:-}
dir=${2:-/tmp/vaerun-slurm}
node=$(hostname -s)

fail() { echo "local_slurm.sh: $*" >&2; exit 2; }

start() {
    [ "$(id -u)" = 0 ] || fail "needs root (munged, slurmctld and slurmd run as root here)"
    for program in munged slurmctld slurmd sbatch; do
        command -v "$program" >/dev/null || fail "$program not found: install slurm-wlm and munge (make apt-packages)"
    done
    mkdir -p "$dir/state" "$dir/spool" /run/munge
    chown munge:munge /run/munge
    if ! pgrep -x munged >/dev/null; then
        runuser -u munge -- munged
        touch "$dir/munged.ours"  # stop ends it; a munged that was running already is left alone
    fi
    local memory_mb
    memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat > "$dir/slurm.conf" <<EOF
ClusterName=vaerun-local
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits for its credentials to expire before it starts again: 2 minutes by default, 5 s the
# least Slurm takes (a job step must start within it: milliseconds on one node)
AuthInfo=cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=5
# a loaded node (more jobs starting than cores) answers slowly: a signal that times out drains the node
MessageTimeout=60
# slurmd takes the declared CPUs rather than the ones it counts
SlurmdParameters=config_overrides
NodeName=$node CPUs=${LOCAL_SLURM_CPUS:-$(nproc)} RealMemory=$memory_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 1 50); do  # up to 10 s for the node to register
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            echo "export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.2
    done
    fail "the node did not come up; see $dir/slurmctld.log and $dir/slurmd.log"
}

stop() {
    # cancel what is still queued or running (a job requeued as its sweep ended starts again), and give
    # slurmd a few seconds to end those jobs' processes before the daemons go
    jobs="$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %A 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086  # one argument per job id
        SLURM_CONF="$dir/slurm.conf" scancel --quiet $jobs 2>/dev/null || true
        for _ in $(seq 1 50); do
            [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    for pid_file in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
        if [ -f "$pid_file" ]; then
            kill "$(cat "$pid_file")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 1 50); do  # the daemons write their state on the way out
        pgrep -f "slurm(ctld|d) -f $dir/slurm.conf" >/dev/null || break
        sleep 0.2
    done
    pkill -9 -f "slurm(ctld|d) -f $dir/slurm.conf" || true
    if [ -f "$dir/munged.ours" ]; then
        pkill -x munged || true
        rm -f "$dir/munged.ours"
    fi
    # a job that was still ending keeps its step daemons waiting for a slurmd that is gone: end them too
    for pid in $(pgrep -x slurmstepd); do
        if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_CONF=$dir/slurm.conf"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}

case "$command" in
    start) start ;;
    stop) stop ;;
    *) fail "usage: local_slurm.sh start|stop [DIR]" ;;
esac
