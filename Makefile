# Two commands for a fresh machine with Python 3.11:  make demo  |  make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

FINRL_PINS := finrl==0.3.7 torch==2.13.0 stable_baselines3==2.9.2 gymnasium==1.4.0 numpy==2.4.6 TA-Lib==0.8.2 \
	PyYAML==6.0.3 pyarrow==26.0.1 pytest matplotlib==3.11.2 stockstats==0.6.10 yfinance==1.7.0 \
	alpaca-trade-api==0.48 alpha_vantage==2.3.1 wrds==3.5.0 pandas_market_calendars==5.5.0 exchange_calendars==4.13.2

.PHONY: demo test test-all lint bench install clean finrl-venv

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

# FinRL interop runs in its own venv: FinRL's imports pin packages that clash with the project's.
finrl-venv: .venv-finrl/.installed
.venv-finrl/.installed: Makefile
	test -x .venv-finrl/bin/python || $(PYTHON) -m venv .venv-finrl
	.venv-finrl/bin/pip install --quiet $(FINRL_PINS)
	.venv-finrl/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
