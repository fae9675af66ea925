# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-unit lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/coi demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# Every tier (pytest's testpaths: tests/unit, tests/integration, tests/system), a file per
# worker on two: the system tests mostly wait on processes and brokers.
test: lint
	$(PY) -m pytest -n 2 --dist loadfile

# The fast tier alone: no database, no broker, no process (seconds).
test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit -q

clean:
	rm -rf $(VENV) coi-data
