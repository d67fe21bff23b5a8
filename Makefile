# Two commands do all the set-up on a fresh machine:
#   make demo   the embedded default: trains a small model offline and prints its modularity curve
#   make test   the test suite (CI runs this through .ci/run)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch lies on local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q torch
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gpugraph demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The full benchmarks: about 10 minutes on 2 cores, and 9.4 GiB at its peak (the dense N x N
# reference of bench_similarity at N = 20k).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_knn.py
	$(BIN)/python benchmarks/bench_graph.py
	$(BIN)/python benchmarks/bench_similarity.py

# The same scripts at small sizes: about 1 minute, under 1 GiB.
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/bench_knn.py --sizes 10000 --memory-n 20000
	$(BIN)/python benchmarks/bench_graph.py --n 10000
	$(BIN)/python benchmarks/bench_similarity.py --sizes 2000 5000

clean:
	rm -rf $(VENV) gpugraph-out .pytest_cache
