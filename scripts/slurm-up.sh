#!/usr/bin/env bash
# Installs Slurm from Debian's packages (if missing) and starts a single-node cluster on this
# machine: munged, slurmctld and slurmd, one partition `debug`. Idempotent: a cluster that is
# already up is left alone. Needs root (or sudo) and apt. Stop it with scripts/slurm-down.sh.
#
# State, logs and the job-completion record live under $ABLATE_SLURM_STATE
# (default /var/lib/ablate-slurm). See ../shared/notes/slurm.md for why each setting is there.
set -euo pipefail

STATE=${ABLATE_SLURM_STATE:-/var/lib/ablate-slurm}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

ready() { command -v sinfo >/dev/null 2>&1 && sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; }

if ready; then
  echo "slurm: already up ($(sinfo -h -N -o '%N %T %c CPUs'))"
  exit 0
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
  echo "slurm: installing slurmctld, slurmd and slurm-client from Debian's packages"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
# Advertise at least 4 CPUs so a job array runs several tasks at once even on a 2-core machine
# (slurmd's config_overrides lets the node claim more than it has).
if [ "$cpus" -lt 4 ]; then cpus=4; fi
mem=$(free -m | awk '/^Mem:/ {print $2}')

$SUDO install -d -m 0755 "$STATE" "$STATE/ctld" "$STATE/d" /etc/slurm
$SUDO install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
$SUDO chown munge:munge /etc/munge/munge.key
$SUDO chmod 0400 /etc/munge/munge.key

$SUDO tee /etc/slurm/slurm.conf >/dev/null <<EOF
# Written by ablate's scripts/slurm-up.sh: a single-node cluster for tests and local use.
ClusterName=ablate
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${STATE}/jobcomp.log
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/d
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
SlurmctldLogFile=${STATE}/slurmctld.log
SlurmdLogFile=${STATE}/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

if ! pgrep -x munged >/dev/null; then
  $SUDO runuser -u munge -- /usr/sbin/munged
fi
if ! pgrep -x slurmctld >/dev/null; then
  $SUDO slurmctld -i
fi
if ! pgrep -x slurmd >/dev/null; then
  $SUDO slurmd
fi

for _ in $(seq 1 60); do
  if ready; then
    echo "slurm: up ($(sinfo -h -N -o '%N %T %c CPUs'); state and logs in ${STATE})"
    exit 0
  fi
  sleep 0.5
done
echo "slurm: the node did not become idle within 30 s; logs:" >&2
tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
exit 1
