# Each target sets up its own .venv. TORCH_SPEC picks the torch build: the default is the CPU
# wheel this machine keeps on disk; override it elsewhere, e.g. `make test TORCH_SPEC=torch`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neutral-lang-installed

.PHONY: test demo bench fuzz install clean train-toy

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@# torch first, so that diffusers does not pull a multi-GB CUDA build from the index
	$(PY) -m pip install -q "$(TORCH_SPEC)" || { echo "note: $(TORCH_SPEC) unavailable, trying torch>=2.1"; $(PY) -m pip install -q "torch>=2.1"; }
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m neutral_lang demo

# Trains the toy model from scratch into TOY_OUT (56 min on 2 CPU cores, see docs/toy.md);
# TOY_OUT=neutral_lang/toy/weights replaces the shipped weights.
TOY_OUT ?= toy-run
train-toy: $(STAMP)
	$(PY) -m neutral_lang.toy.train --out $(TOY_OUT) --minutes 56 --vae-minutes 6 --threads 1 --seed 1

bench: $(STAMP)
	@$(PY) benchmarks/run.py || { echo "make bench: failed; see 'benchmarks that failed' above" >&2; exit 1; }

fuzz: $(STAMP)
	$(PY) -m pip install -q atheris
	$(PY) fuzz/fuzz_compile.py -atheris_runs=1000000

clean:
	rm -rf $(VENV) build *.egg-info
