# The two commands: `make demo` (the whole pipeline on configs/demo.yaml) and `make test`.
# Both create the virtual environment when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_VERSION := 2.13.0
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo results test test-fast lint format clean check-torch

venv: $(STAMP)

# Installs torch first (the CPU wheel on disk), then the package under a constraint that
# forbids any other torch; then checks that nothing changed the torch version.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	@$(MAKE) --no-print-directory check-torch
	@touch $(STAMP)

check-torch:
	@v=$$($(PY) -c 'import torch; print(torch.__version__)'); \
	case "$$v" in $(TORCH_VERSION)|$(TORCH_VERSION)+cpu) echo "torch $$v ok";; \
	*) echo "ERROR: torch is $$v, expected $(TORCH_VERSION): something upgraded it" >&2; exit 1;; esac

demo: venv
	$(VENV)/bin/mlt demo --config configs/demo.yaml

# Every experiment of docs/RESULTS.md (hours on 2 cores; finished stages are reused, so an
# interrupted run resumes). One experiment: .venv/bin/mlt experiment NAME
results: venv
	$(VENV)/bin/mlt experiment all

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check mlt featurestore jobs tests bench
	$(PY) -m ruff format --check mlt featurestore jobs tests bench

format: venv
	$(PY) -m ruff format mlt featurestore jobs tests bench
	$(PY) -m ruff check --fix mlt featurestore jobs tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
