# Two commands set up a fresh machine: `make demo` and `make test`.
# Both create .venv (and, where Go is installed, the Collector and Jaeger) and reuse them.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv demo test lint typecheck unit e2e bench bench-quick collector jaeger tools telemetrygen clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: venv
	$(PY) tools/demo.py

lint: venv
	$(VENV)/bin/ruff check src tests examples benchmarks tools
	$(VENV)/bin/ruff format --check src tests examples benchmarks tools
	$(VENV)/bin/mypy

# make test: lint, type check, the whole suite (e2e included when Go can build the binaries),
# and the quick benchmark run that proves the benchmarks still work.
test: venv lint tools
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory bench-quick

include tools/tools.mk

bench: venv
	$(PY) -m benchmarks --full

bench-quick: venv
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) .tools build dist src/*.egg-info
