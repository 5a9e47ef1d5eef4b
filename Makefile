# make run   - start the dashboard on the built-in synthetic data (creates .venv on first use)
# make test  - run the whole test suite (browser tests skip when chromium is not installed)
# make unit  - only the fast unit and app tests (no browser tests, none marked slow)
# make bench - the performance benchmark against the seed pipeline (needs ../shared/datasets/busi)
# make classroom - 30 simulated people on one server (several minutes, both cores; figures in docs/scaling.md)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test unit e2e bench classroom clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run streamlit_app.py

# Two test processes (pytest-xdist; the browser tests all in one of them): about a quarter faster on 2 cores, since much of a
# test's time is waiting on a server, a browser or a worker process. PYTEST_PROCESSES=0 runs them in this one.
PYTEST_PROCESSES ?= 2
PYTEST := $(PY) -m pytest -n $(PYTEST_PROCESSES) --dist loadgroup

test: $(STAMP)
	$(PYTEST) -m "not classroom"

# Not the browser tests, nor the slow ones (marked slow: they start processes or train real runs): about 5 min.
unit: $(STAMP)
	$(PYTEST) -m "not e2e and not classroom and not slow"

e2e: $(STAMP)
	$(PYTEST) -m e2e

classroom: $(STAMP)
	$(PY) -m pytest -m classroom -s tests/reliability/test_classroom_load.py

bench: $(STAMP)
	$(PY) -m medcls bench

clean:
	rm -rf $(VENV) .pytest_cache
