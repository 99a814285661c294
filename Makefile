# tdx-boot-attest: every target installs what it needs itself (Debian/Ubuntu).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
SHELL_SCRIPTS := $(shell git ls-files '*.sh' .ci/run 'initramfs-hooks/initramfs-tools/hooks/*' 'initramfs-hooks/initramfs-tools/scripts/*/*' 2>/dev/null)

.PHONY: all deps demo test test-fast lint format bench vm-test install uninstall clean

all: demo

$(STAMP): setup.cfg pyproject.toml scripts/install-system-deps.sh
	scripts/install-system-deps.sh base test
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[server,sim,test]'
	touch $@

deps: $(STAMP)

## The main job: a simulated TDX VM unlocks a LUKS2 disk end to end.
demo: deps
	$(VPY) -m tdxsim.demo

## The whole test suite, as CI runs it: lint, unit, end-to-end and VM boot tests.
test: deps lint
	$(VPY) -m pytest $(PYTEST_ARGS)

test-fast: deps
	$(VPY) -m pytest -m "not slow and not vm" $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict agent server tdxsim
	shellcheck $(SHELL_SCRIPTS)

format: deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: deps
	$(VPY) bench/run_all.py

vm-test: deps
	$(VPY) -m pytest -m vm tests/vm $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
