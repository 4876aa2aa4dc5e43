# The one place that knows how to set up the environment. Everything else calls these targets.
#   make demo   set up, then run the whole pipeline on the bundled example
#   make test   set up, then lint (ruff) and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: setup test demo bench clean-venv

setup: $(STAMP)

# torch first and pinned: this machine has the CPU wheel of 2.13.0; an unpinned torch pulls CUDA.
# mediapipe==0.10.14 only ships the hand models we run through ai-edge-litert: no deps on purpose.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -r requirements.txt
	$(PIP) --no-deps mediapipe==0.10.14
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

# ruff first: its rule set and line length are in pyproject.toml ([tool.ruff]).
test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/hoirecon run examples/mug/video.mp4 --category mug --out demo_out/mug

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
