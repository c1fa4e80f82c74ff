#!/usr/bin/env bash
# Stops the single-node cluster scripts/slurm-up.sh started: slurmd, slurmctld, munged (TERM,
# then KILL after 5 s). Leaves the packages and the state directory in place.
set -euo pipefail

STATE=${ABLATE_SLURM_STATE:-/var/lib/ablate-slurm}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

stop() {
  local name=$1 pidfile=$2 pid=""
  if [ -s "$pidfile" ]; then pid=$(cat "$pidfile"); fi
  if [ -z "$pid" ]; then pid=$(pgrep -x "$name" || true); fi
  [ -z "$pid" ] && return 0
  $SUDO kill -TERM $pid 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 $pid 2>/dev/null || return 0
    sleep 0.1
  done
  $SUDO kill -KILL $pid 2>/dev/null || true
}

stop slurmd "$STATE/slurmd.pid"
stop slurmctld "$STATE/slurmctld.pid"
stop munged /run/munge/munged.pid
echo "slurm: down"
