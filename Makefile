# Quick start: `make demo` runs the embedded demo end to end; `make test` runs the tests.
# Both create the virtual environment first (torch's CPU build, then the project).
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '$(TORCH)'
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
