#!/usr/bin/env bash
# The GLUE study's GPU rows, on a GPU machine with Python, torch and transformers and no network,
# in the repo root with .gpu/ built by bench/gpu_carry.sh (the device tool: carry .gpu).
#
#   OUT=/some/folder GPU_STUDY_SECONDS=540 GPU_STUDY_PARALLEL=12 bash bench/gpu_study.sh
#
# GPU_STUDY_SPEC picks the spec set (default docs/examples/glue-study.yaml; the low-resource study
# is docs/examples/glue-study-1k.yaml) and GPU_STUDY_ARGS adds runner options, e.g.
#   GPU_STUDY_SPEC=docs/examples/glue-study-1k.yaml GPU_STUDY_SEEDS=10 \
#   GPU_STUDY_ARGS="--only hyperparameters.learning_rate=1e-4" bash bench/gpu_study.sh
#
# Installs .gpu/whl into /tmp/site, writes the minilm-l6 weights back as fp32, runs the gpu-marked
# tests beside the study (bounded), then `python -m bench.glue_study run --device cuda
# --sequential` (RTE, MRPC, STS-B, CoLA: the shortest tasks first, so a budget cut leaves whole
# tasks) with GPU_STUDY_PARALLEL jobs sharing the GPU, stopped in order before the budget ends.
# The GPU runs already under docs/results/runs*/<task>-gpu/ are not run again.
# $OUT gets runs.tgz (the run files; refreshed every 20 s, so a kill keeps what finished),
# run.log, worker.log, gpu-tests.log and gpu.txt. Here, merge the runs with
#   tar xzf runs.tgz -C docs/results && python -m bench.glue_study report
set -u
start=$(date +%s)
OUT=${OUT:-/tmp/gpu-study-out}
BUDGET=${GPU_STUDY_SECONDS:-540}
PARALLEL=${GPU_STUDY_PARALLEL:-12}
TASKS=${GPU_STUDY_TASKS:-glue/rte,glue/mrpc,glue/sts-b,glue/cola}
SEEDS=${GPU_STUDY_SEEDS:-5}
SPEC=${GPU_STUDY_SPEC:-docs/examples/glue-study.yaml}
EXTRA=${GPU_STUDY_ARGS:-}
DEVICE=${GPU_STUDY_DEVICE:-cuda}  # cpu: a rehearsal of this script on a machine without a GPU
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
STATE=/tmp/gpu-study-state
RESULTS=/tmp/gpu-study-results
mkdir -p "$OUT" "$SITE" "$RESULTS"
# The GPU runs already in the repo are skipped: each GPU session continues the last one's grid.
for done in docs/results/runs*/*-gpu; do
  [ -d "$done" ] || continue
  mkdir -p "$RESULTS/$(basename "$(dirname "$done")")" && cp -r "$done" "$RESULTS/$(basename "$(dirname "$done")")/"
done
log() { echo "[gpu_study +$(($(date +%s) - start))s] $*" | tee -a "$OUT/run.log"; }

# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh || exit 3
# At the stop, the worker waits 5 s (not 30) for its jobs before they go back to the queue.
export CHILDTUNE_SOFT_SHUTDOWN_S=5

(timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/childtuning/test_gpu.py \
  tests/workers/test_train.py > "$OUT/gpu-tests.log" 2>&1; echo "rc=$?" >> "$OUT/gpu-tests.log") &
(while sleep 20; do
  tar czf "$OUT/runs.tmp" -C "$RESULTS" . 2>/dev/null && mv "$OUT/runs.tmp" "$OUT/runs.tgz"
done) &
saver=$!

left=$((BUDGET - ($(date +%s) - start) - 45))  # 45 s for the stack's stop and the last copy
log "study: $SPEC $EXTRA, $TASKS, $SEEDS seeds, $PARALLEL jobs at once, stop after ${left}s"
# shellcheck disable=SC2086  # EXTRA is a list of options
"$PY" -m bench.glue_study run --spec "$SPEC" --device "$DEVICE" --sequential --tasks "$TASKS" \
  --seeds "$SEEDS" --parallel "$PARALLEL" --stop-after "$left" --state "$STATE" --results "$RESULTS" \
  $EXTRA >> "$OUT/run.log" 2>&1
log "study exited rc=$?"
kill "$saver" 2>/dev/null
tar czf "$OUT/runs.tmp" -C "$RESULTS" . && mv "$OUT/runs.tmp" "$OUT/runs.tgz"
tail -c 2000000 "$STATE/logs/worker.log" > "$OUT/worker.log" 2>/dev/null
log "runs saved: $(find "$RESULTS" -name '*.json' | wc -l)"
wait
