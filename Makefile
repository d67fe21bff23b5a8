# Two commands do all the set-up on a fresh machine:
#   make demo   the embedded default: trains a small model offline and prints its modularity curve
#   make test   the test suite (CI runs this through .ci/run)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs sanitize bench bench-quick install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch lies on local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q torch
	$(BIN)/python -m pip install -q -e ".[test,bench,lint,docs]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gpugraph demo

test: $(STAMP)
	$(BIN)/python -m pytest

# ruff's lint rules and its formatter (pyproject.toml [tool.ruff]) over the package, the tests,
# the benchmarks, the examples and the docs' Python (`.venv/bin/ruff format $(LINTED)` applies
# the formatting), then mypy over the package (pyproject.toml [tool.mypy]).
LINTED := gpugraph tests benchmarks examples docs/conf.py docs/_examples.py
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# The documentation site, offline, into docs/_build/html: every example runs first (the guide's
# code blocks as doctests, the docstrings' examples in `make test`), and any warning (a broken
# cross-reference, a public name without a reference page) fails the build.
docs: $(STAMP)
	rm -rf docs/_build docs/generated
	$(BIN)/sphinx-build -W --keep-going -q -b doctest docs docs/_build/doctest
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

# The CUDA kernels' host build (tests/kernels/cuda_host) with two blocks in flight at once
# (each with its own __shared__ memory, as on a GPU): at the GPU's 256 threads a block under
# AddressSanitizer + UndefinedBehaviorSanitizer, then at 128 under ThreadSanitizer (the same
# 256 std::threads; at 256 a block TSan takes 4 minutes instead of 1.5), numba and torch on
# one thread there (their OpenMP pools are not instrumented and would report false races).
# TSan sees a race if two blocks in flight share __shared__ memory or write the same output
# (checked: compiling both slots from one copy of the kernels fails at topk.cu:122).
# About 3 minutes on 2 cores; CI runs it.
SANITIZE_TESTS := $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/kernels/test_kernels.py
sanitize: $(STAMP)
	GPUGRAPH_SANITIZE=address GPUGRAPH_HOST_THREADS=256 GPUGRAPH_HOST_SLOTS=2 ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 \
		LD_PRELOAD=$$(gcc -print-file-name=libasan.so) $(SANITIZE_TESTS) -k host
	NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 GPUGRAPH_SANITIZE=thread GPUGRAPH_HOST_THREADS=128 GPUGRAPH_HOST_SLOTS=2 \
		TSAN_OPTIONS=halt_on_error=1:report_signal_unsafe=0 \
		LD_PRELOAD=$$(gcc -print-file-name=libtsan.so) $(SANITIZE_TESTS) -k "host and not scheduler"

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
