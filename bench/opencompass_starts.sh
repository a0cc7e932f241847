#!/usr/bin/env bash
# What each way of starting OpenCompass's processes costs: `scripts/demo` (the README's main job:
# preflight, inference, a streamed evaluation and the eval stage, on the stand-in servers and the
# real OpenCompass) by default, each process a new Python, beside `--fork-server`, in turn, with
# farm-bench (median of N pairs; default 3). Run from the repository root:
#   bench/opencompass_starts.sh [N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
out=$(mktemp -d)
"$root/scripts/setup" >/dev/null
farm-bench -n "$runs" --warmup 1 --timeout 3600 --vs "$root/scripts/demo -w $out/forked --fork-server" \
  -- "$root/scripts/demo" -w "$out/new"
rm -rf "$out"
