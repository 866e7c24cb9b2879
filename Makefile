# Convenience targets; each is the README's command spelled out.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-test demo test test-slow lint format bench clean

$(VENV)/bin/activate:
	python3 -m venv $(VENV)

install: $(VENV)/bin/activate
	$(VENV)/bin/pip install -e .

install-test: $(VENV)/bin/activate
	$(VENV)/bin/pip install -e '.[test]'

demo: install            ## generate demo shards, preprocess on local Ray, print the summary
	$(VENV)/bin/mm-ray demo

test: install-test       ## the default test run (unit + integration, no slow)
	$(PY) -m pytest

test-slow: install-test  ## only the long tests
	$(PY) -m pytest -m slow

lint: install-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install-test
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: install           ## ingest and training benchmarks (each prints its table and ratios)
	$(VENV)/bin/mm-ray bench ingest --json runs/bench/ingest.json
	$(VENV)/bin/mm-ray bench train --json runs/bench/train.json --plot runs/bench/train.png

clean:
	rm -rf runs .pytest_cache .ruff_cache
