# Two commands set everything up: `make test` and `make demo` (each creates .venv on first use).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
DEMO_DIR ?= demo_out
STAMP := $(VENV)/.installed

.PHONY: test demo bench replicate lint clean venv

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
	$(PY) -m pytest -m "not gpu" -q

demo: $(STAMP)
	$(PY) jobs/demo.py --output $(DEMO_DIR)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The seed papers' claims in miniature over 3 seeds (docs/replication.md): ~90 min on 2 idle cores.
replicate: $(STAMP)
	$(PY) benchmarks/replicate.py --json replication_out/replication.json

clean:
	rm -rf $(DEMO_DIR) replication_out .pytest_cache
