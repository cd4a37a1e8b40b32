# Quick start: `make demo` runs the embedded demo end to end; `make test` runs the tests.
# Both create the virtual environment first (torch, then the project).
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
# PyPI serves torch's CUDA build for Linux; TORCH_INDEX=https://download.pytorch.org/whl/cpu
# installs the far smaller CPU build instead.
TORCH_INDEX ?=
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[test,slurm]'
	touch $@

demo: $(BIN)/.installed
	snakemake --profile profiles/default
	snakemake --profile profiles/default --report results/report.html

test: $(BIN)/.installed
	python -m pytest

lint: $(BIN)/.installed
	snakefmt --check .
	snakemake --lint

clean:
	rm -rf results .snakemake
