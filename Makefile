# Two commands for a fresh machine with Python 3.11:  make demo  |  make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench install clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/l2 demo

test: $(STAMP)
	$(VENV)/bin/python run_l2_tests.py

test-all: $(STAMP)
	$(VENV)/bin/python run_l2_tests.py --all

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python bench/features.py
	$(VENV)/bin/python bench/envs.py
	$(VENV)/bin/python bench/signals.py
	$(VENV)/bin/python bench/bus.py
	$(VENV)/bin/python bench/backtest.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
