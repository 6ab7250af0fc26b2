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

.PHONY: install bin sources browser manual test test-all demo models replicate lint man bench clean

install: $(STAMP)

$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	PYTHONPATH=$(CURDIR) $(PY) -m moetools.cli.launchers bin
	touch $(STAMP)

# bin/<tool>: a link to bin/_launch per console script of pyproject.toml (no install needed, any python3)
bin:
	PYTHONPATH=$(CURDIR) $(PYTHON) -m moetools.cli.launchers bin

# the fast tier: every test not marked `slow` (under ~4 minutes on 2 idle cores)
test: install sources browser manual
	$(PY) -m pytest -q -m "not slow" tests

# everything, the `slow` tier too (torchrun launches, the demo and README pipelines, the 135M
# local model): the full run, what CI runs (.ci/run)
test-all: install sources browser manual
	$(PY) -m pytest -q tests

# The math domain's source is a Debian package (the book `derivations`); install it when apt can,
# otherwise the corpus is built without it and `moetools corpus sources` says what is missing.
sources:
	@test -f /usr/share/doc/derivations/derivations.pdf || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    (apt-get install -y -qq derivations >/dev/null 2>&1 || \
	     { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq derivations >/dev/null 2>&1; }) ; } || \
	  echo "make: Debian package derivations not installed (math domain skipped); apt-get install derivations"

# moe-report's browser test drives Debian's chromium (headless, through Playwright; no browser download);
# install it when apt can, as `sources` does, otherwise that test is skipped and says why.
browser:
	@test -x /usr/bin/chromium || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }) ; } || \
	  echo "make: Debian package chromium not installed (moe-report's browser test skipped); apt-get install chromium"

# `man` (Debian package man-db) reads the pages pip installs into VENV/share/man; install it when apt can,
# as `sources` does, otherwise the test that runs `man -w` in a fresh venv is skipped and says why.
manual:
	@command -v man >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    (apt-get install -y -qq man-db >/dev/null 2>&1 || \
	     { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq man-db >/dev/null 2>&1; }) ; } || \
	  echo "make: Debian package man-db not installed (the installed-man-page test skipped); apt-get install man-db"

demo: install sources
	$(PY) -m moetools.cli.main demo

models: install sources
	$(PY) -m moetools.cli.main models

# the papers' findings over seeds 0,1,2 with 95% intervals -> bench/results/replication.json and README's table
# (about an hour on 2 idle cores; resumable: run it again after a kill; `bench/replicate.py --device cuda` on a GPU)
replicate: install sources
	$(PY) bench/replicate.py

lint: install
	$(PY) -m ruff check moetools tests bench

man: install
	$(PY) -m moetools.cli.manpage man

bench: install
	for script in $(filter-out bench/bench_compare_versions.py,$(wildcard bench/bench_*.py)); do \
		$(PY) $$script || exit 1; done  # compare_versions needs --old TREE

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
