# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
# peers we compare against in tests and benchmarks
PEERS   := pykeops==2.3 geomloss==0.3.1 pot ott-jax jax numba matplotlib asv cupy-cuda13x nvidia-cuda-nvrtc==13.0.88 faiss-cpu umap-learn gpytorch==1.15.2 linear-operator==0.6.1 dask==2026.8.0 distributed==2026.8.0 imageio

# pykeops compiles each formula once per machine, into one build folder inside the venv,
# shared by the tests (conftest.py sets the same default), the benchmarks and bench-peers
export KEOPS_CACHE_FOLDER ?= $(abspath $(VENV))/keops-cache
# two workers; the tests that compile KeOps formulas share one (conftest.py groups them);
# the slowest 20 tests are listed so that a regression in suite time shows
PYTEST  := $(PY) -m pytest -q -n 2 --dist loadgroup --durations=20
TESTS   := tests $(foreach p,$(PLUGINS),$(p)tests)

.PHONY: demo test test-fast lint bench bench-peers docs clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]' $(foreach p,$(PLUGINS),-e $(p)) $(PEERS)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lazymat demo
	mkdir -p demo_out
	$(PY) examples/gradient_flow.py --n 500 --out demo_out/gradient_flow.png
	$(PY) examples/kriging.py --n 20000 --out demo_out/kriging.png
	$(PY) examples/lddmm.py --n 200 --out demo_out/lddmm.png

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy core solvers plugins ml

test: lint
	$(PYTEST) $(TESTS)

# a contributor's quick check: the suite without the tests marked slow (make test and CI run all)
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(TESTS)

bench: $(STAMP)
	cd asv_bench && ../$(VENV)/bin/asv machine --yes >/dev/null && ../$(VENV)/bin/asv run --python=same --quick --show-stderr

bench-peers: $(STAMP)
	$(PY) asv_bench/peers.py --write BENCHMARKS.md

# the documentation, docs/_build/html/index.html: Sphinx with the gallery, which runs every
# example; any Sphinx warning (nitpicky references included) or example error fails it.
# -E re-reads every page (about a minute): Sphinx reports a page's warnings only when it
# reads the page, so an incremental rerun would pass after a failed build. The gallery keeps
# its own cache: an unchanged example does not run again.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PIP) install -q -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -E -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
