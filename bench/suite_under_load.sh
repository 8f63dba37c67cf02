#!/usr/bin/env bash
# The whole suite as CI runs it, on a fresh clone, beside one busy CPU hog (`yes > /dev/null`),
# with pytest's 15 slowest tests: the check issue 23 asks for ("passes twice in a row with a CPU
# hog beside it"). The clone goes beside this repository (../suite-under-load-N), so that
# ../shared resolves as it does here. Run from the repo root:
#
#   bash bench/suite_under_load.sh 1 && bash bench/suite_under_load.sh 2
#
# CI's own 5400 s bound applies (a hang, even after the summary, ends as rc=124).
# Prints the log's path; the log ends with pytest's summary, its durations and "rc=... seconds=...".
set -u
N=${1:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLONE=$(dirname "$ROOT")/suite-under-load-$N
LOG=${TMPDIR:-/tmp}/suite-under-load-$N.log
rm -rf "$CLONE" && git clone -q "$ROOT" "$CLONE"
yes > /dev/null &
HOG=$!
trap 'kill $HOG 2>/dev/null' EXIT
start=$(date +%s)
(cd "$CLONE" && git log --oneline -1 && CI=true PYTEST_ADDOPTS="--durations=15" timeout 5400 bash .ci/run) > "$LOG" 2>&1 < /dev/null
echo "rc=$? seconds=$(($(date +%s) - start))" >> "$LOG"
echo "$LOG"
tail -1 "$LOG"
