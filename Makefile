# lenet_np: every target sets itself up on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LIGHT  := $(VENV)/.installed-light
RUNS   := runs

.PHONY: help light test test-numerics-low lint train data browser bench gpu-check figures notebooks clean

help:
	@echo "make train      set up, fetch Fashion-MNIST, train the book's LeNet (5 epochs)"
	@echo "make test       set up, fetch the data, lint and run the test suite"
	@echo "make test-numerics-low  the numerics tests again, one SIMD level below this CPU's"
	@echo "make lint       ruff"
	@echo "make data       make Fashion-MNIST available (Debian package or download)"
	@echo "make browser    install Chromium for the explorer's browser test (as root, with apt-get)"
	@echo "make bench      CPU benchmarks (report in benchmarks/results/)"
	@echo "make gpu-check  GPU tests and benchmarks on a CUDA machine"
	@echo "make figures    draw the book's figures from the code (docs/figures/)"
	@echo "make notebooks  turn every page of the book into a Jupyter notebook (notebooks/)"
	@echo "make light      a light set-up for reading, figures, notebooks and the exercises (no torch, no CuPy)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch==2.13.0 is pinned in setup.cfg: an unpinned torch would pull a multi-GB CUDA build
# CuPy imports without a GPU: the tests check the CuPy stand-in's names against it (only
# where no CuPy build is installed yet, so a CUDA 12 machine keeps its cupy-cuda12x)
$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,progress]'
	$(BIN)/python -c 'import cupy' 2>/dev/null || $(BIN)/python -m pip install -q 'cupy-cuda13x>=14'
	touch $@

# The light set-up: the package with the docs and exercises extras (matplotlib, SciPy, Jupyter's
# converters, Hypothesis), no torch and no CuPy; figures and notebooks need nothing more.
$(LIGHT): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[docs,exercises,progress]'
	touch $@

light: $(LIGHT)

data: $(STAMP)
	@if $(BIN)/python -m lenet_np.data >/dev/null 2>&1; then \
	  $(BIN)/python -m lenet_np.data; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  { apt-get install -y -q dataset-fashion-mnist || \
	    { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null && \
	  $(BIN)/python -m lenet_np.data --verify; \
	else \
	  $(BIN)/python -m lenet_np.data --download; \
	fi

# The explorer's browser test (tests/explore) drives Debian's Chromium with Playwright (from the
# test extra). As root with apt-get, Chromium is installed here; elsewhere the test skips, naming
# what is missing.
browser: $(STAMP)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null \
	    || echo "chromium could not be installed: the explorer's browser test will skip"; \
	else \
	  echo "no chromium, and no root apt-get to install it: the explorer's browser test will skip"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) data browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-numerics-low

# Rounding follows the CPU: NumPy's SIMD dispatch, OpenBLAS's kernels, torch's own kernels, MKL
# and oneDNN. The tests marked `numerics` run once more with all of them held one level below
# this CPU's (AVX-512 -> AVX2, AVX2 -> x86-64-v2), as on a user's older CPU.
AVX2_LEVEL := NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell \
  ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
V2_LEVEL := NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Nehalem \
  ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41

test-numerics-low: $(STAMP)
	@if grep -qw avx512f /proc/cpuinfo; then \
	  echo "numerics tests at the AVX2 level (this CPU has AVX-512)"; \
	  $(AVX2_LEVEL) HYPOTHESIS_PROFILE=numerics-low $(BIN)/python -m pytest -q -m numerics; \
	elif grep -qw avx2 /proc/cpuinfo; then \
	  echo "numerics tests at the x86-64-v2 level (this CPU has AVX2)"; \
	  $(V2_LEVEL) HYPOTHESIS_PROFILE=numerics-low $(BIN)/python -m pytest -q -m numerics; \
	else \
	  echo "numerics tests: no SIMD level below this CPU's to emulate"; \
	fi

train: $(STAMP) data
	mkdir -p $(RUNS)
	$(BIN)/python -m lenet_np.train --checkpoint $(RUNS)/lenet.npz --metrics $(RUNS)/metrics.csv \
	  --plot $(RUNS)/curves.png
	@echo "checkpoint: $(RUNS)/lenet.npz  metrics: $(RUNS)/metrics.csv  plot: $(RUNS)/curves.png"

bench: $(STAMP) data
	$(BIN)/python -m benchmarks.run

figures: $(LIGHT)
	$(BIN)/python docs/figures.py docs/figures

notebooks: $(LIGHT)
	$(BIN)/python docs/notebooks.py notebooks

# On the lent GPU machine (CuPy, torch, pytest, hypothesis preinstalled, no network): no venv,
# the repository on PYTHONPATH. Here first: `python benchmarks/gpu_check.py --stage` copies the
# data (and threadpoolctl.py) into .gpu-data/, which the machine gets carried with the tree.
# The script keeps to 300 s; `timeout` interrupts it at 330 s (it then writes the report of what
# ran) and kills it 15 s later, so that a second try fits in the machine's 15 minutes. The
# report and everything printed (gpu-check.log) go to $OUT when set, else benchmarks/results.
gpu-check:
	@mkdir -p "$(or $(OUT),benchmarks/results)"
	PYTHONPATH=. PYTHONUNBUFFERED=1 bash -o pipefail -c 'timeout -s INT -k 15 330 $(PYTHON) \
	  benchmarks/gpu_check.py --out "$(or $(OUT),benchmarks/results)" --no-log $(GPU_CHECK_ARGS) 2>&1 \
	  | tee -a "$(or $(OUT),benchmarks/results)/gpu-check.log"'

clean:
	rm -rf $(VENV) notebooks .pytest_cache .ruff_cache .hypothesis build *.egg-info
