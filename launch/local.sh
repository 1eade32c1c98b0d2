#!/usr/bin/env bash
# Local run on this machine: create the venv if needed, install, train, keep a log beside the run.
#
#   launch/local.sh configs/tiny.py runs/tiny [--config.key=value ...]
#
# Rerunning the same command resumes from the latest checkpoint in the workdir.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$repo/.venv/bin/pyoco-train" ]; then
  python3 -m venv "$repo/.venv"
  "$repo/.venv/bin/pip" install -q -e "$repo[video]"
fi
mkdir -p "$workdir"
"$repo/.venv/bin/pyoco-train" --config "$config" --workdir "$workdir" "$@" 2>&1 | tee -a "$workdir/train.log"
