# Two commands on a fresh Debian machine:
#   make run   - create .venv, install t38gw, start `t38gw serve` on its embedded defaults
#   make test  - install the test peers (SpanDSP, SIPp, libtiff tools, poppler), run the
#                guard rails (make lint) and then the tests
#   make lint  - just the guard rails: `ruff check .` and `mypy` on the packages listed in
#                pyproject.toml's [tool.mypy] files (strict); both come from the [test] extra
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libspandsp2 libspandsp-dev sip-tester libtiff-tools poppler-utils netpbm tshark
PYTEST_ARGS ?=

.PHONY: run run-deps test lint venv test-deps system-deps bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# SpanDSP's modems carry faxes that arrive (or leave) as G.711 audio ([t38] audio_fallback).
RUN_PACKAGES := libspandsp2

run-deps:
	@for p in $(RUN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || { \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$p; }; done

run: run-deps venv
	$(VENV)/bin/t38gw serve

# System packages the tests drive as real peers; installed only when missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

test-deps: system-deps venv

# ruff's rules and mypy's file list and strictness live in pyproject.toml ([tool.ruff],
# [tool.mypy]); mypy run without arguments checks exactly the `files` listed there.  Both
# run even when the first fails, so one run shows everything to fix.
lint: venv
	@status=0; \
	echo "== ruff check . (rules: [tool.ruff] in pyproject.toml)"; \
	$(VENV)/bin/ruff check . || status=1; \
	echo "== mypy (strict; files: [tool.mypy] in pyproject.toml)"; \
	$(VENV)/bin/mypy || status=1; \
	if [ $$status -ne 0 ]; then echo "== lint FAILED: fix the ruff/mypy findings above (make lint reruns just these)"; fi; \
	exit $$status

test: test-deps lint
	$(PY) -m pytest -n 3 $(PYTEST_ARGS)

bench: venv
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis .mypy_cache .ruff_cache
