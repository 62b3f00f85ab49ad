# Two entry points on a fresh machine: `make run` (embedded default end to end) and `make test`.
# Both create .venv at the repository root and install the pinned stack into it (idempotently).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= 2

export HF_HUB_OFFLINE := 1

.PHONY: run test install lint browser

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# GPU jobs are limited to the visible GPUs; without one they run on the CPU, as many side by side as the
# cores allow (a `gpu=1` limit there would serialise every training job onto one core).
GPUS ?= $(shell nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)
GPU_LIMIT = $(if $(filter-out 0,$(GPUS)),--resources gpu=$(GPUS),)

run: $(STAMP)
	@echo "make run: each job logs to logs/synthetic/<rule>/...; Snakemake prints 'N of M steps' as jobs finish"
	$(VENV)/bin/snakemake --cores $(CORES) $(GPU_LIMIT) --keep-going all

# The report tests open the HTML page in headless Chromium (Debian's package; skipped if it cannot install).
browser:
	@command -v chromium > /dev/null 2>&1 || (apt-get install -y --no-install-recommends chromium > /dev/null 2>&1 \
	  || echo "chromium not installed: the report's browser tests will skip")

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/snakemake --lint
