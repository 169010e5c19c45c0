# Two commands on a fresh Debian machine:
#   make run   - create .venv, install t38gw, start `t38gw serve` on its embedded defaults
#   make test  - install the test peers (SpanDSP, SIPp, libtiff tools, poppler) and run the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libspandsp2 libspandsp-dev sip-tester libtiff-tools poppler-utils netpbm tshark
PYTEST_ARGS ?=

.PHONY: run test venv test-deps system-deps bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
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

test: test-deps
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: venv
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
