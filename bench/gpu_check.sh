#!/usr/bin/env bash
# The prepared GPU check (issue 25): one command, at most about 8 minutes, on a GPU machine with
# Python, torch and transformers and no network, in the repo root with .gpu/ built by
# bench/gpu_carry.sh (the device tool: carry .gpu). Each part has its own budget (timeout), so a
# slow part cannot eat the rest, and a part that fails still leaves the others' rows:
#
#   1. every gpu-marked test, full output kept (gpu-tests.log), beside 5. (counts, not times)
#   2. ChildTuning-D jobs in fp32, fp16 and bf16: mask overlap, loss curves, samples/s
#   3. step time of vanilla, D, F, update-dropout, fused and generic: MiniLM 32x128 fp32 and
#      bf16, SmolLM2-135M-shaped SFT bf16 8x512, MiniLM with 8 processes at once; peak memory;
#      the Fisher pass per batch against one forward+backward
#   4. SmolLM2-shaped SFT: our training program against a plain PyTorch loop (MFU)
#   5. kernel launches and host syncs of one optimizer.step(), at 6 and 12 layers; a flat ZeRO
#      partition's fused step, a kernel per fragment against one launch (bench/segments_step.py)
#
#   OUT=/some/folder bash bench/gpu_check.sh                   # on the GPU machine
#   GPU_CHECK_DEVICE=cpu PY=/tmp/rehearse/bin/python OUT=/tmp/o bash bench/gpu_check.sh   # rehearsal
#
# $OUT gets gpu-check.md and gpu-check.json (the report), gpu-tests.log, parts.log, gpu.txt and
# gpu-check.tgz (every part's raw rows and the jobs' records). Here:
#   python -m bench.gpu_check publish --out FOLDER     (copies the report under docs/results/)
set -u
start=$(date +%s)
OUT=${OUT:-/tmp/gpu-check-out}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
WORK=/tmp/gpu-check
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
log() { echo "[gpu_check +$(($(date +%s) - start))s] $*" | tee -a "$OUT/parts.log"; }
# shellcheck source=bench/gpu_env.sh
source bench/gpu_env.sh || exit 3
cp "$OUT/gpu.txt" "$WORK/gpu.txt"

# A SmolLM2-135M-shaped model: its config and tokenizer (carried), random weights drawn here.
SMOL=$WORK/smollm2-shape
"$PY" - "$SMOL" <<'PYEOF' >> "$OUT/parts.log" 2>&1 || log "no SmolLM2-shaped model"
import gzip, shutil, sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

src, dst = Path(".gpu/smollm2"), Path(sys.argv[1])
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.gz"))
(dst / "tokenizer.json").write_bytes(gzip.decompress((src / "tokenizer.json.gz").read_bytes()))
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(dst)).save_pretrained(dst)
PYEOF
log "SmolLM2-shaped model: $(du -sh "$SMOL" 2>/dev/null | cut -f1)"

if [ "$DEVICE" = cuda ]; then
  STEP=(--device cuda)
  SMALL=()
  JOBS_STEPS=60
  JOBS=8
else  # the rehearsal: every part runs, at sizes a CPU gets through in seconds
  STEP=(--device cpu --steps 2 --windows 2 --warmup 1 --fisher-batches 2)
  SMALL=(--layers 2 --batch 4 --seq 16)
  JOBS_STEPS=4
  JOBS=2
fi

# part NAME SECONDS COMMAND...: runs COMMAND under its budget, stdout to $WORK/NAME.jsonl.
part() {
  local name=$1 budget=$2
  shift 2
  log "$name: start (budget ${budget}s)"
  timeout -k 10 "$budget" "$@" > "$WORK/$name.jsonl" 2>> "$OUT/parts.log"
  log "$name: rc=$? rows=$(grep -c '^{' "$WORK/$name.jsonl")"
}

# 1 and 5 together: the tests' outcome and the profile's counts do not depend on timing.
(timeout -k 10 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rA tests/childtuning/test_gpu.py \
  tests/childtuning/test_segments.py \
  tests/workers/test_train.py > "$OUT/gpu-tests.log" 2>&1; echo "rc=$?" >> "$OUT/gpu-tests.log") &
tests=$!
part profile 60 "$PY" -m bench.gpu_step "${STEP[@]}" "${SMALL[@]}" --profile --steps 1 --windows 1
part profile12 40 "$PY" -m bench.gpu_step "${STEP[@]}" --layers 12 "${SMALL[@]:2}" --profile --steps 1 \
  --windows 1 --modes vanilla,childtuning-d,update-dropout
cat "$WORK/profile12.jsonl" >> "$WORK/profile.jsonl"
if [ "$DEVICE" = cuda ]; then
  part segments 30 "$PY" -m bench.segments_step --device cuda
else
  part segments 30 "$PY" -m bench.segments_step --device cpu --layers 1 --reps 2 --modes childtuning-d
fi
wait "$tests"
log "gpu tests: $(tail -2 "$OUT/gpu-tests.log" | tr '\n' ' ')"
cp "$OUT/gpu-tests.log" "$WORK/gpu_tests.log"

log "precision: start"
timeout -k 10 90 "$PY" -m bench.gpu_check precision --out "$WORK" --work "$WORK/jobs" --device "$DEVICE" \
  --steps "$JOBS_STEPS" --budget 75 >> "$OUT/parts.log" 2>&1
log "precision: rc=$?"
part step_minilm 60 "$PY" -m bench.gpu_step "${STEP[@]}" "${SMALL[@]}"
part step_minilm_bf16 45 "$PY" -m bench.gpu_step "${STEP[@]}" "${SMALL[@]}" --precision bf16
cat "$WORK/step_minilm_bf16.jsonl" >> "$WORK/step_minilm.jsonl"
if [ "$DEVICE" = cuda ]; then
  part step_smollm2 60 "$PY" -m bench.gpu_step "${STEP[@]}" --model smollm2 --precision bf16
else
  part step_smollm2 60 "$PY" -m bench.gpu_step "${STEP[@]}" --model smollm2 --layers 2 --batch 2 --seq 16
fi
part step_jobs 45 "$PY" -m bench.gpu_step "${STEP[@]}" "${SMALL[@]}" --jobs "$JOBS" --modes vanilla,childtuning-d \
  --fused fused
log "sft: start"
timeout -k 10 90 "$PY" -m bench.gpu_check sft --out "$WORK" --work "$WORK/jobs" --device "$DEVICE" --steps 30 --budget 80 \
  --smollm2 "$SMOL" >> "$OUT/parts.log" 2>&1
log "sft: rc=$?"

"$PY" -m bench.gpu_check report --out "$WORK" >> "$OUT/parts.log" 2>&1 || log "report failed"
cp "$WORK/gpu-check.md" "$WORK/gpu-check.json" "$OUT/" 2>/dev/null
tar czf "$OUT/gpu-check.tgz" -C "$WORK" --exclude smollm2-shape --exclude '*.safetensors' \
  --exclude checkpoints --exclude model --exclude '*.jsonl.gz' . 2>> "$OUT/parts.log"
log "done in $(($(date +%s) - start))s"
