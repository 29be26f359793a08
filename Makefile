# Two commands for a brand-new machine: `make demo` and `make test` (each sets up .venv if missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mrdiff-installed
TORCH_VERSION ?= 2.13.0
CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo test lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# CPU machines get the CPU build of torch; machines with nvidia-smi get the default (CUDA) build.
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	else $(PY) -m pip install -q --timeout 15 --retries 1 --extra-index-url $(CPU_INDEX) "torch==$(TORCH_VERSION)"; fi
	$(PY) -m pip install -q --no-deps "fastmri==0.3.0"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: setup
	$(PY) -m recon.cli demo

test: setup
	$(PY) -m pytest tests

lint: setup
	$(PY) -m ruff check mrdiff recon data_prep benchmarks tests
	$(PY) -m ruff format --check mrdiff recon data_prep benchmarks tests

clean-venv:
	rm -rf $(VENV)
