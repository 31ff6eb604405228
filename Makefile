# Everything a fresh machine needs, from the two commands in the README:
#   make serve   -> venv + project + example models, then serve the digits classifier
#   make test    -> the same setup, then every test tier (fast, integration, e2e)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-10)
PYTEST_ARGS ?=

.PHONY: setup system-deps examples serve test test-fast lint crds

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

examples: $(STAMP)
	$(PY) examples/build.py

serve: examples
	$(VENV)/bin/kubeinfer serve examples/models --model digits

system-deps:
	bash tools/system-deps.sh

lint: $(STAMP)
	$(VENV)/bin/lint-imports

# The slow e2e builds (control plane, metrics stack) start in the background first and
# overlap with the fast tiers; the e2e fixtures wait for them (cached: seconds).
test: system-deps examples lint
	bash tools/prebuild.sh start
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; bash tools/prebuild.sh stop; exit $$rc

test-fast: examples
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)
