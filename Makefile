# The two commands a new user needs: `make run` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run reset test test-postgres openapi compose bench fuzz verify-log clean help

help:
	@echo "make run       start the gateway and every service on SQLite (Ctrl-C stops them)"
	@echo "               options: make run ARGS=\"--port-offset 100 --fresh\""
	@echo "make reset     back to the seeded demo state, running or not (ARGS=\"--port-offset 100\", --data-dir)"
	@echo "make test      run the whole test suite"
	@echo "make openapi   re-export openapi/<service>.json from the code"
	@echo "make compose   regenerate docker-compose.yml from sandbox/topology.py"
	@echo "make k8s       regenerate deploy/k8s (Kubernetes: kustomize base, kind overlay) from sandbox/topology.py"
	@echo "make bench     run every benchmark (prints figures; not a test)"
	@echo "make fuzz      schemathesis against the running stack and through the gateway (start it with make run first; ARGS=\"--max-examples 10\")"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m sandbox run $(ARGS)

reset: $(STAMP)
	$(PY) -m sandbox reset $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

openapi: $(STAMP)
	$(PY) -m sandbox openapi

compose: $(STAMP)
	$(PY) -m sandbox compose

k8s: $(STAMP)
	$(PY) -m sandbox k8s

bench: $(STAMP)
	$(PY) -m sandbox bench all

fuzz: $(STAMP)
	$(PY) -m sandbox fuzz $(ARGS)

verify-log: $(STAMP)
	$(PY) -m sandbox verify-log

clean:
	rm -rf $(VENV) .sandbox-data .pytest_cache
