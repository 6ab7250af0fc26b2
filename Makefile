# moetools: the two commands a fresh machine needs are `make demo` and `make test`.
# Each sets itself up (`make install`), offline apart from the package registries.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MOETOOLS_HOME ?= $(CURDIR)/.moetools

.PHONY: install test test-all demo lint man bench clean

install: $(STAMP)

$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -m "not slow" tests

test-all: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) -m moetools.demo

lint: install
	$(PY) -m ruff check moetools tests bench

man: install
	$(PY) -m moetools.cli.manpage man

bench: install
	for script in bench/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
