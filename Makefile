# One command sets up a fresh Debian 12 machine (as root) and runs everything CI runs: `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
DEBVENV := .venv-deb
# Debian packages the tests need: systemd-python's build deps, the Debian Python stack the .deb
# runs on (for the compatibility run; python3-openssl is pyOpenSSL 23 for the FTPS server, built
# for Debian's cryptography 38 so pip never upgrades it there), the real bootloader tools the
# slot backends drive (rauc 1.8 with a private dbus-daemon for its service), losetup (mount)
# and openssl. Under CI=true a test that skips fails, so everything a test needs is here or in
# TEST_ONLY_PIP.
APT_PACKAGES := libsystemd-dev pkg-config python3-venv python3-systemd python3-requests \
	python3-websocket python3-cryptography python3-openssl libubootenv-tool u-boot-tools \
	grub-common mtools dosfstools rauc dbus-daemon mount openssl nodejs
# The same as setup.cfg's [test] extra.
TEST_ONLY_PIP := "pytest>=7.2" "pytest-timeout>=2.1" "hypothesis>=6.0" "ocpp>=2.0" \
	"websockets>=11" "pyftpdlib>=1.5" "pyOpenSSL>=23.0"
PYTEST_ARGS ?=
TEST_TMP ?= /tmp/ocpp-fw-agent-tests

.PHONY: test deps venv debvenv lint unit compat demo bench clean mutation flake-hunt peers

# The two pytest passes run side by side (their tests mostly wait on processes, sockets and
# disks, so two at once on two cores take little more than the longer one), each in its own
# basetemp, their output kept whole (-O); then the system test, which boots a container.
test: deps venv debvenv lint peers
	$(MAKE) --no-print-directory -j2 -O unit compat
	$(MAKE) --no-print-directory system

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

# Current PyPI versions of everything.
venv: $(VENV)/.done
$(VENV)/.done: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,dev]'
	touch $@

# Debian 12's own interpreter and libraries (cryptography 38, requests 2.28,
# websocket-client 1.2.3, python3-systemd 235): what the .deb runs on. Only test tools come
# from PyPI; the agent is installed without dependencies so pip cannot upgrade Debian's.
debvenv: $(DEBVENV)/.done
$(DEBVENV)/.done: setup.cfg pyproject.toml
	/usr/bin/python3 -m venv --system-site-packages $(DEBVENV)
	$(DEBVENV)/bin/pip install -q $(TEST_ONLY_PIP)
	$(DEBVENV)/bin/pip install -q --no-deps -e .
	$(DEBVENV)/bin/python -c 'import cryptography, requests, websocket, systemd; \
		print("debian stack:", cryptography.__version__, requests.__version__, websocket.__version__); \
		assert cryptography.__file__.startswith("/usr/lib/python3/"), cryptography.__file__'
	touch $@

# The second CSMS peer of the tests (issue #14): ocpp-rpc in strict mode, a Node library,
# pinned by tests/peers/ocpp_rpc/package-lock.json. Debian 12's nodejs 18 satisfies its
# node >= 17.3; npm is installed only when missing (NodeSource's nodejs bundles its own and
# conflicts with Debian's npm package). The stamp lives in node_modules, so removing that
# directory reinstalls it.
PEER_DIR := tests/peers/ocpp_rpc
peers: $(PEER_DIR)/node_modules/.done
$(PEER_DIR)/node_modules/.done: $(PEER_DIR)/package.json $(PEER_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "installing apt packages: nodejs npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends nodejs npm >/dev/null; }
	npm ci --prefix $(PEER_DIR) --no-audit --no-fund --loglevel=error
	touch $@

lint: venv
	$(VENV)/bin/ruff check agent tests $(wildcard bench)
	$(VENV)/bin/ruff format --check agent tests $(wildcard bench)
	$(VENV)/bin/mypy agent

# Current PyPI releases: every folder that exercises a library (websocket-client, requests and
# urllib3, cryptography, the test CSMS's websockets), without the whole-update process tests
# (tests/e2e) and the slow ones, which the Debian pass below runs: the stack the .deb ships on.
unit: venv peers
	mkdir -p $(TEST_TMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider --basetemp=$(TEST_TMP)/unit \
		-m "not slow or node_peer" --ignore=tests/e2e $(PYTEST_ARGS)

# Debian 12's stack (what the .deb runs on): the whole suite.
compat: debvenv peers
	mkdir -p $(TEST_TMP)
	$(DEBVENV)/bin/python -m pytest -q -p no:cacheprovider --basetemp=$(TEST_TMP)/compat \
		-m "not node_peer" --durations=15 $(PYTEST_ARGS)

# Options: make demo DEMO_ARGS=--sidecar (the charger's own stack behind the agent, charging
# during the update), DEMO_ARGS="--ocpp 2.0.1" (or 2.1); -v keeps the files and the agent's log.
DEMO_ARGS ?=
demo: deps venv
	$(VENV)/bin/ocpp-fw-agent demo $(DEMO_ARGS)

# The peers' pipeline needs curl and openssl (Debian packages `curl`, `openssl`); dd is coreutils.
# Options: make bench BENCH_ARGS="--sizes 64M,1G --reps 3" (see python -m bench --help).
# The agent runs on Debian 12's Python stack, as the .deb does (PyPI's cryptography wheel
# bundles its own OpenSSL and costs ~5 MiB more RSS than the product has).
bench: deps debvenv
	@missing=$$(for p in curl openssl; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi
	$(DEBVENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEBVENV) build dist *.egg-info

# --- Debian package and the container test (issue 5) ------------------------------------------
# Tools to build and lint the .deb, and to boot a debootstrapped Debian 12 under systemd-nspawn.
PACKAGING_APT_PACKAGES := devscripts debhelper dh-python python3-all python3-setuptools \
	pybuild-plugin-pyproject lintian systemd systemd-container debootstrap procps
DEB_OUT := build/deb

.PHONY: packaging-deps deb system

packaging-deps:
	@missing=$$(for p in $(PACKAGING_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

# build/deb/ocpp-fw-agent_<version>_all.deb from the working tree; fails on any lintian warning.
deb: packaging-deps
	tests/system/build-deb $(DEB_OUT)

# Builds the .deb, installs it into Debian 12 booted with systemd-nspawn and runs it under
# systemd: start, crash, watchdog, SIGTERM, upgrade, purge (tests/system/test_package.py).
system: packaging-deps venv
	OCPP_FW_AGENT_SYSTEM_TEST=1 $(VENV)/bin/python -m pytest -q -p no:cacheprovider \
		tests/system $(PYTEST_ARGS)

# --- Trusting the tests (issue 10) --------------------------------------------------------------
# Mutation testing (cosmic-ray, installed into .venv here) of the modules whose bugs brick or open
# a charger, each with only its own fast tests; sessions and survivors in build/mutation/ (run
# again to resume). One module: make mutation MUTATION_MODULES=agent/firmware/signature.py
MUTATION_MODULES ?=
mutation: venv
	$(VENV)/bin/pip install -q "cosmic-ray>=8.3"
	$(VENV)/bin/python -m tests.mutation.run $(MUTATION_MODULES)

# tests/e2e and tests/integration FLAKE_RUNS times in a row (stopping at the first failure) with
# a CPU hog on every core, so timing assumptions show up. Narrower: make flake-hunt
# FLAKE_RUNS=1 FLAKE_PATHS=tests/integration
FLAKE_RUNS ?= 5
FLAKE_PATHS ?= tests/e2e tests/integration
flake-hunt: venv
	tests/flake-hunt $(FLAKE_RUNS) $(VENV)/bin/python -m pytest -x -q -p no:cacheprovider \
		$(FLAKE_PATHS) $(PYTEST_ARGS)
