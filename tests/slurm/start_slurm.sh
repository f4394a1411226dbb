#!/usr/bin/env bash
# A single-node SLURM on this machine for tests/test_slurm.py: munged, slurmctld and slurmd on
# localhost, accounting disabled (so the Snakemake executor needs --slurm-status-command
# squeue). Installs Debian's slurm-wlm and munge when missing (needs root and apt).
# Idempotent: exits 0 at once when the node already answers and is idle.
#
#   sudo bash tests/slurm/start_slurm.sh      # then: sinfo
set -euo pipefail

log() { echo "start_slurm: $*" >&2; }
# the daemons and runuser live in the sbin folders, which a minimal PATH (env -i) lacks
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

if command -v sinfo >/dev/null && sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    log "SLURM already running: $(sinfo -h -o '%P %T %D')"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "needs root to install and start SLURM"; exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi

# munge: the key the package made, its run directory, the daemon as the munge user
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- /usr/sbin/mungekey --create
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=noise2map-test
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue is the status command without accounting: keep finished jobs visible for 5 min
MinJobAge=300
ReturnToService=2
KillWait=30
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
rm -f /etc/slurm/cgroup.conf  # the defaults work without cgroup writes (22.05 has no 'disabled')

pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    case "$state" in
        idle*|mixed*|allocated*) log "SLURM up: $(sinfo -h -o '%P %T %D')"; exit 0 ;;
        down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
log "SLURM did not come up; see /var/log/slurm/slurmctld.log and slurmd.log"
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
