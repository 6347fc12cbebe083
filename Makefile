# One command each: `make demo` sets up and runs the demo, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench bench-quick clean

$(VENV)/.core: pyproject.toml
	@echo "installing acdg-asgi into $(VENV) (about half a minute)..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	@echo "installing the test and benchmark extras..."
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/acdg demo

test: $(VENV)/.dev
	$(PY) -m pytest -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/mypy

bench: $(VENV)/.dev
	$(PY) benchmarks/run.py

bench-quick: $(VENV)/.dev
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
