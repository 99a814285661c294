# tdx-boot-attest: every target installs what it needs itself (Debian/Ubuntu).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_ARGS ?=
SHELL_SCRIPTS := $(shell git ls-files '*.sh' .ci/run 'initramfs-hooks/initramfs-tools/hooks/*' 'initramfs-hooks/initramfs-tools/scripts/*/*' 2>/dev/null)

.PHONY: all deps demo test test-fast test-oldest-deps lint format bench vm-test install uninstall clean \
	deploy-compose install-server-unit

all: demo

$(STAMP): setup.cfg pyproject.toml scripts/install-system-deps.sh
	@echo "deps: system packages (cryptsetup, FUSE, ...)"
	scripts/install-system-deps.sh base test
	@echo "deps: a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	@echo "deps: the project and its Python dependencies (a minute or two on a first run)"
	$(VPY) -m pip install --progress-bar off -e '.[server,sim,test]'
	touch $@

deps: $(STAMP)

## The main job: a simulated TDX VM unlocks a LUKS2 disk end to end.
## DEMO_ARGS=--keep keeps its working directory and logs.
demo: deps
	$(VPY) scripts/demo.py $(DEMO_ARGS)

## The whole test suite, as CI runs it: lint, unit, end-to-end and VM boot tests.
test: deps lint
	scripts/install-system-deps.sh vm
	scripts/test-oldest-deps.sh
	$(VPY) -m pytest $(PYTEST_ARGS)

## The agent's unit tests on Python 3.11 with the oldest dependency versions it declares.
test-oldest-deps:
	scripts/test-oldest-deps.sh

test-fast: deps
	$(VPY) -m pytest -m "not slow and not vm" $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# mypy sees the packages under their installed names through a tree of links.
	mkdir -p build/import-tree/tdx_boot_attest
	for part in agent server tdxsim; do \
		ln -sfn ../../../$$part build/import-tree/tdx_boot_attest/$$part; \
	done
	MYPYPATH=build/import-tree $(VENV)/bin/mypy --strict -p tdx_boot_attest.agent \
		-p tdx_boot_attest.server -p tdx_boot_attest.tdxsim
	@# Tests and benchmarks are held to the same standard (mypy takes files or packages, not both).
	MYPYPATH=build/import-tree $(VENV)/bin/mypy --strict tests bench
	shellcheck $(SHELL_SCRIPTS)

format: deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: deps
	$(VPY) bench/run_all.py

## Boots a real kernel + initramfs in QEMU that unlocks a LUKS2 disk after attestation.
vm-test: deps
	scripts/install-system-deps.sh vm
	$(VPY) -m pytest -m vm tests/vm $(PYTEST_ARGS)

## Image builders: the agent in its own venv, initramfs-tools/dracut glue, systemd units.
DESTDIR ?=
PREFIX ?= /usr
SYSCONFDIR ?= /etc
AGENT_PREFIX ?= /opt/tdx-boot-attest
IMAGE_PYTHON ?= /usr/bin/python3
PIP_INSTALL_ARGS ?=
INITRAMFS_TOOLS_DIR ?= $(PREFIX)/share/initramfs-tools
DRACUT_MODULES_DIR ?= $(PREFIX)/lib/dracut/modules.d
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
AGENT_ROOT := $(DESTDIR)$(AGENT_PREFIX)
DRACUT_MODULE := $(DESTDIR)$(DRACUT_MODULES_DIR)/90tdx-boot-attest
UNITS := tdx-boot-attest.service tdx-attest-runtime.service tdx-attest-runtime.timer

# Installs the staged copy with every /opt/tdx-boot-attest replaced by AGENT_PREFIX.
install_with_prefix = install -D -m $(1) /dev/null $(3) && \
	sed 's|/opt/tdx-boot-attest|$(AGENT_PREFIX)|g' $(2) > $(3)
AGENT_SITE = $(AGENT_ROOT)/lib/python$(IMAGE_PYTHON_VERSION)/site-packages
IMAGE_PYTHON_VERSION = $(shell $(IMAGE_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# Reproducible bytes: the .pyc files embed no time stamp and no staging path.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

## The agent alone (no pip, no server, no simulator) from hash-pinned requirements.
install:
	$(IMAGE_PYTHON) -m venv --clear --without-pip $(AGENT_ROOT)
	$(PYTHON) -m pip --python $(AGENT_ROOT)/bin/python install --quiet --no-cache-dir \
		--no-deps --require-hashes --no-compile --no-warn-script-location \
		$(PIP_INSTALL_ARGS) -r requirements/agent.txt
	@# Only the agent's own command stays in bin; RECORD files hold install-time hashes
	@# of the removed scripts, and nothing (no pip) in the image reads them.
	find $(AGENT_ROOT)/bin -maxdepth 1 -type f ! -name 'activate*' ! -name 'Activate.ps1' -delete
	find $(AGENT_SITE) -path '*.dist-info/RECORD' -delete
	mkdir -p $(AGENT_SITE)/tdx_boot_attest
	cp -r --no-preserve=mode,ownership agent $(AGENT_SITE)/tdx_boot_attest/agent
	find $(AGENT_SITE)/tdx_boot_attest -name __pycache__ -prune -exec rm -rf {} +
	find $(AGENT_SITE)/tdx_boot_attest -type d -exec chmod 0755 {} +
	find $(AGENT_SITE)/tdx_boot_attest -type f -exec chmod 0644 {} +
	printf '#!%s/bin/python\nimport sys\n\nfrom tdx_boot_attest.agent.cli import main\n\nsys.exit(main())\n' \
		'$(AGENT_PREFIX)' > $(AGENT_ROOT)/bin/tdx-boot-agent
	chmod 0755 $(AGENT_ROOT)/bin/tdx-boot-agent
	@# A venv records its own path; a staged (DESTDIR) one must name its final place.
	if [ -n "$(DESTDIR)" ]; then \
		grep -lIs -- '$(AGENT_ROOT)' $(AGENT_ROOT)/bin/* $(AGENT_ROOT)/pyvenv.cfg \
			| xargs -r sed -i 's|$(AGENT_ROOT)|$(AGENT_PREFIX)|g'; \
	fi
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(AGENT_ROOT)/bin/python -m compileall -q -j1 \
		--invalidation-mode unchecked-hash $(if $(DESTDIR),-s '$(DESTDIR)' -p /) $(AGENT_SITE)
	$(call install_with_prefix,0755,initramfs-hooks/tdx_runtime_files.py,$(AGENT_ROOT)/libexec/tdx_runtime_files.py)
	$(call install_with_prefix,0755,initramfs-hooks/keyscript.sh,$(AGENT_ROOT)/libexec/keyscript)
	install -D -m 0644 docs/image-building.md $(AGENT_ROOT)/share/doc/image-building.md
	install -D -m 0644 initramfs-hooks/agent.conf.example $(AGENT_ROOT)/share/doc/agent.conf.example
	$(call install_with_prefix,0755,initramfs-hooks/initramfs-tools/hooks/tdx-boot-attest,\
		$(DESTDIR)$(INITRAMFS_TOOLS_DIR)/hooks/tdx-boot-attest)
	$(call install_with_prefix,0755,initramfs-hooks/initramfs-tools/scripts/local-top/tdx-boot-attest,\
		$(DESTDIR)$(INITRAMFS_TOOLS_DIR)/scripts/local-top/tdx-boot-attest)
	$(call install_with_prefix,0755,initramfs-hooks/dracut/90tdx-boot-attest/module-setup.sh,\
		$(DRACUT_MODULE)/module-setup.sh)
	$(call install_with_prefix,0755,initramfs-hooks/dracut/90tdx-boot-attest/tdx-boot-attest-cmdline.sh,\
		$(DRACUT_MODULE)/tdx-boot-attest-cmdline.sh)
	$(call install_with_prefix,0644,systemd/tdx-boot-attest.service,\
		$(DRACUT_MODULE)/tdx-boot-attest.service)
	for unit in $(UNITS); do \
		$(call install_with_prefix,0644,systemd/$$unit,$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit) \
			|| exit 1; \
	done
	if [ ! -e $(DESTDIR)$(SYSCONFDIR)/tdx-boot-attest/agent.conf ]; then \
		install -D -m 0600 initramfs-hooks/agent.conf.example \
			$(DESTDIR)$(SYSCONFDIR)/tdx-boot-attest/agent.conf; \
	fi
	@echo "installed; now edit $(SYSCONFDIR)/tdx-boot-attest/agent.conf (see docs/image-building.md)"

## Removes what install put down, except the configuration in $(SYSCONFDIR)/tdx-boot-attest.
uninstall:
	rm -rf $(AGENT_ROOT) $(DRACUT_MODULE)
	rm -f $(DESTDIR)$(INITRAMFS_TOOLS_DIR)/hooks/tdx-boot-attest \
		$(DESTDIR)$(INITRAMFS_TOOLS_DIR)/scripts/local-top/tdx-boot-attest
	for unit in $(UNITS); do rm -f $(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit; done

## The verifier: two replicas, PostgreSQL and nginx on port 8000 (deploy/compose.yaml).
COMPOSE ?= $(shell if command -v podman >/dev/null; then echo podman compose; else echo docker compose; fi)
deploy-compose: deps
	test -e deploy/server.toml || install -m 0644 deploy/server.toml.example deploy/server.toml
	@# The container runs as uid 10001, which must own its copy of the key (mode 0600).
	mkdir -p -m 0700 deploy/secrets
	if [ ! -e deploy/secrets/master.key ]; then \
		$(VENV)/bin/tdx-attest-server master-key generate deploy/secrets/master.key && \
		echo "chown 10001 deploy/secrets/master.key if the engine does not map it"; \
	fi
	$(COMPOSE) -f deploy/compose.yaml up -d --build

## The verifier as a hardened systemd service (see the unit's header and docs/server.md).
install-server-unit:
	install -D -m 0644 deploy/tdx-attest-server.service \
		$(DESTDIR)$(SYSCONFDIR)/systemd/system/tdx-attest-server.service
	if [ -z "$(DESTDIR)" ]; then systemctl daemon-reload; fi

clean:
	rm -rf $(VENV) .venv-oldest build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
