# quantweb: `make run` installs the runtime dependencies and starts everything on the embedded
# defaults; `make test` installs the test tools too and runs the whole test suite.
# Both install exact versions from the lock files (scripts/lock_requirements.py writes them from
# a working venv after pyproject.toml changes), then the project itself without dependencies.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)
TEST_STAMP := $(VENV)/.installed-test-$(shell cat pyproject.toml requirements.lock requirements-test.lock | sha1sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test lock run test test-pg lint bench clean-venv

# Runtime only: what `make run` needs, nothing from the test extra.
$(RUN_STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-run-* $(VENV)/.installed-test-*
	touch $(RUN_STAMP)

# The test tools on top of the runtime.
$(TEST_STAMP): $(RUN_STAMP) requirements-test.lock
	$(PY) -m pip install --quiet -r requirements-test.lock
	rm -f $(VENV)/.installed-test-*
	touch $(TEST_STAMP)

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

# After changing pyproject.toml: install the change into the venv, then rewrite the locks.
lock:
	$(PY) scripts/lock_requirements.py

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap
	$(PY) manage.py run --host $(HOST) --port $(PORT)

# Every core by default (pytest-xdist); PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= auto

test: install-test
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: install-test
	$(PY) -m ruff check .

bench: install-test
	$(PY) bench/sim.py
	$(PY) bench/scan.py --markets 500 --bars 1000
	$(PY) bench/mc.py
	$(PY) bench/traders.py --sizes 10,50,200
	$(PY) bench/pages.py
	$(PY) bench/backtest.py
	$(PY) bench/tune.py

clean-venv:
	rm -rf $(VENV)
