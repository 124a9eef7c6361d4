# Two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Kernels compiled into Numba's cache: again whenever a file holding kernels changes (engine/,
# the JSON scanners), so that tests' service subprocesses never compile them under a start-up
# timeout.
WARM := $(VENV)/.warm
KERNELS := $(wildcard engine/*.py) stream/jsonscan.py stream/eventscan.py

.PHONY: demo test bench bench-peers lint fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(WARM): $(STAMP) $(KERNELS)
	$(VENV)/bin/streamkm warmup
	touch $(WARM)

demo: $(WARM)
	$(VENV)/bin/streamkm demo

test: $(WARM)
	sh deploy/install-test-deps.sh
	$(PY) -m pytest -q

# Not part of `make test` or `make bench`: Spark's JVM and River's per-record loop take a while.
bench-peers: $(STAMP)
	$(PY) -m pip install --quiet -e '.[peers]'
	$(PY) bench/bench_peers.py

bench: $(STAMP)
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_modellog.py
	$(PY) bench/bench_service.py
	$(PY) bench/bench_baselines.py
	sh deploy/install-bench-deps.sh
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/bench_api.py
	$(PY) bench/bench_decode.py
	$(PY) bench/bench_sklearn.py
	$(PY) bench/plot.py

lint: $(STAMP)
	$(VENV)/bin/ruff check engine model stream metrics api estimators tests bench
	$(VENV)/bin/ruff format --check engine model stream metrics api estimators tests bench
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format engine model stream metrics api estimators tests bench
	$(VENV)/bin/ruff check --fix engine model stream metrics api estimators tests bench

clean:
	rm -rf $(VENV) .venv-flink .pytest_cache .mypy_cache .ruff_cache
