# quantweb: `make run` installs and starts everything on the embedded defaults;
# `make test` installs and runs the whole test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-pg lint bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap
	$(PY) manage.py run --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) bench/sim.py
	$(PY) bench/scan.py --markets 500 --bars 1000
	$(PY) bench/mc.py
	$(PY) bench/traders.py --sizes 10,50,200
	$(PY) bench/pages.py
	$(PY) bench/backtest.py
	$(PY) bench/tune.py

clean-venv:
	rm -rf $(VENV)
