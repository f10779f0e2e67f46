# Two commands set everything up: `make test` and `make demo` (each creates .venv on first use).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
DEMO_DIR ?= demo_out
STAMP := $(VENV)/.installed

.PHONY: test demo bench replicate lint clean venv gpu-check gpu-wheels

venv: $(STAMP)

# torch 2.13.0 (CPU) is installed first on its own so pip takes the local wheel, not a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(PY) -m pytest -m "not gpu" -q --durations=25

demo: $(STAMP)
	$(PY) jobs/demo.py --output $(DEMO_DIR)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The seed papers' claims in miniature over 3 seeds (docs/replication.md): ~90 min on 2 idle cores.
replicate: $(STAMP)
	$(PY) benchmarks/replicate.py --json replication_out/replication.json

# The GPU path in one time-boxed run on this machine's CUDA device (docs/gpu.md).
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py --json bench_out/gpu.json --minutes 5

# For a GPU machine that reaches no package registry: wheels (CPython 3.12, x86-64 Linux) of what a
# CUDA PyTorch image usually lacks, to carry there and install with --no-deps (docs/gpu.md).
GPU_WHEELS ?= .whl
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d $(GPU_WHEELS) vesin==0.6.2 vesin-torch==0.6.2 ase==3.29.0 tblite==0.8.0 \
	  oxyz==0.2.0 cffi==2.1.1 pycparser==3.12 lmdb==3.0.0 ase-db-backends==0.11.0

clean:
	rm -rf $(DEMO_DIR) replication_out .pytest_cache
