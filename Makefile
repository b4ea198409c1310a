# Every target sets up what it needs: a fresh clone only needs python3 (3.11+) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?= -n auto
STAMP := $(VENV)/.installed

.PHONY: help run test lint format typecheck bench binary clean

help:
	@echo "make run        resolve examples/request.json through the executable"
	@echo "make test       install the test dependencies and run the whole suite"
	@echo "make lint       ruff + mypy"
	@echo "make bench      benchmarks (writes docs/benchmarks.md)"
	@echo "make binary     frozen one-folder build in dist/datadog-secret-backend/ (PyInstaller)"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/datadog-secret-backend < examples/request.json

# Two phases: the suite in parallel, then the tests that need the machine to themselves.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m "not exclusive"
	$(PY) -m pytest -m exclusive

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/run.py

# Pinned (constraints.txt) PyInstaller and every backend SDK come with the test extra.
binary: $(STAMP)
	PY=$(PY) packaging/build.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
