#!/usr/bin/env bash
# Local run on this machine: create the venv if needed, install, train, keep a log beside the run.
#
#   launch/local.sh [--dry-run] configs/tiny.py runs/tiny [--config.key=value ...]
#
# Rerunning the same command resumes from the latest checkpoint in the workdir. A gs:// workdir works
# too (the log then goes to runs/logs/ here). --dry-run prints the commands instead of running them.
set -euo pipefail
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 [--dry-run] CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
case $workdir in
  *://*) log="$repo/runs/logs/$(basename "$workdir").log" ;;
  *) log="$workdir/train.log" ;;
esac
commands=()
if [ ! -x "$repo/.venv/bin/pyoco-train" ]; then
  commands+=("python3 -m venv $(printf %q "$repo/.venv")")
  commands+=("$(printf %q "$repo/.venv/bin/pip") install -q -e $(printf %q "$repo[video]")")
fi
commands+=("mkdir -p $(printf %q "$(dirname "$log")")")
train=$(printf ' %q' "$repo/.venv/bin/pyoco-train" --config "$config" --workdir "$workdir" "$@")
commands+=("${train# } 2>&1 | tee -a $(printf %q "$log")")
for command in "${commands[@]}"; do
  if [ $dry_run = 1 ]; then
    echo "$command"
  else
    eval "$command"
  fi
done
