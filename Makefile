# Two commands for a brand-new machine: `make demo` and `make test` (each sets up .venv if missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mrdiff-installed
TORCH_VERSION ?= 2.13.0
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
FASTMRI_VERSION := 0.3.0
PIP := $(PY) -m pip -q --disable-pip-version-check
LOG := $(VENV)/setup.log
QUIET = >>$(LOG) 2>&1 || { tail -n 30 $(LOG); echo "make setup: a step failed; full log: $(LOG)"; exit 1; }

.PHONY: setup demo test lint clean-venv

setup: $(STAMP)

# pip's own chatter (progress, index and retry warnings) goes to $(LOG) and is printed only if a step
# fails, so a working set-up prints one line per step. fastmri is installed last and with --no-deps: its
# core needs none of torchvision / lightning / torchmetrics (its real runtime needs are in pyproject), and
# installing the project after it would make pip's resolver report those as missing.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@: > $(LOG)
	@echo "setup: pip"; $(PIP) install --upgrade pip $(QUIET)
	@# CPU machines get the CPU build of torch; machines with nvidia-smi get the default (CUDA) build.
	@if $(PY) -c "import torch" 2>/dev/null; then echo "setup: torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then echo "setup: torch $(TORCH_VERSION) (CUDA build)"; \
	  $(PIP) install "torch==$(TORCH_VERSION)" $(QUIET); \
	else echo "setup: torch $(TORCH_VERSION) (CPU build)"; \
	  $(PIP) install --timeout 15 --retries 1 --extra-index-url $(CPU_INDEX) "torch==$(TORCH_VERSION)" $(QUIET); fi
	@echo "setup: mrdiff (editable) and its dependencies"; $(PIP) install -e ".[dev]" $(QUIET)
	@echo "setup: fastmri $(FASTMRI_VERSION) (--no-deps)"; $(PIP) install --no-deps "fastmri==$(FASTMRI_VERSION)" $(QUIET)
	@touch $(STAMP)
	@echo "setup: done ($(VENV); pip's log: $(LOG))"

demo: setup
	$(PY) -m recon.cli demo

test: setup
	$(PY) -m pytest tests

lint: setup
	$(PY) -m ruff check mrdiff recon data_prep benchmarks tests
	$(PY) -m ruff format --check mrdiff recon data_prep benchmarks tests

clean-venv:
	rm -rf $(VENV)
