# Two commands on a fresh machine:
#   make demo   create .venv, install, run a small city against the gateway, print the loss report
#   make test   install everything the tests need (Debian packages too) and run the suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DEBS   := mosquitto mosquitto-clients victoria-metrics dbus libdbus-1-dev libglib2.0-dev pkg-config openssl \
          prometheus chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo demo-deps demo-replay faults fuzz test test-fast venv test-deps lint bench clean deb deb-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# A small city on real simulators: LoRaWAN over UDP, Modbus/SDS011/WXT on ptys, BLE tags on a
# private D-Bus (python-dbusmock, from the test extras; Debian's dbus), OCPP charge points over
# loopback WebSockets, the file uplink; faults injected; prints the loss report.
$(VENV)/.demo-installed: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e '.[demo]'
	touch $@

# The demo's Debian packages only: D-Bus for the mock BlueZ, and what dbus-python builds with.
DEMO_DEBS := dbus libdbus-1-dev libglib2.0-dev pkg-config

demo-deps:
	@missing=""; for p in $(DEMO_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: demo-deps $(VENV)/.demo-installed
	rm -rf demo-state
	$(VENV)/bin/edge-gateway-sim city --scenario config/scenarios/demo.toml --workdir demo-state

# The embedded default: a recorded day of city data replayed into the file uplink.
demo-replay: $(VENV)/.installed
	rm -rf demo-state
	$(VENV)/bin/edge-gateway run --config config/demo.toml --duration 25 --drain --summary

# Debian packages the tests start as real peers (Mosquitto, VictoriaMetrics, a private D-Bus).
test-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check gateway drivers simulators tests benchmarks
	$(VENV)/bin/mypy

PYTEST   := $(VENV)/bin/pytest -q -p no:cacheprovider
COVERAGE := $(VENV)/bin/coverage
# Absolute, and inherited by every process the tests start, whatever their working directory.
COVERAGE_DIR := $(CURDIR)/build/coverage

# CI runs this (.ci/run): lint, then the fast suite, the slow one (tests marked `slow`: real
# gateway or simulator processes, end to end over brokers, ptys and D-Bus, the city, the
# package) and the bounded fuzz run (`fuzz`). All three always run; the target fails if any did. Coverage is measured in both and
# in the processes they start ([tool.coverage.run] in pyproject.toml), then printed: the least
# covered modules and the total.
test: test-deps $(VENV)/.test-installed lint
	@rm -rf $(COVERAGE_DIR) && mkdir -p $(COVERAGE_DIR); \
	export COVERAGE_FILE=$(COVERAGE_DIR)/.coverage; status=0; \
	echo "== fast suite (-m 'not slow')"; \
	$(COVERAGE) run -m pytest -q -p no:cacheprovider -m "not slow and not fuzz" || status=$$?; \
	echo "== slow suite (-m slow)"; \
	$(COVERAGE) run -m pytest -q -p no:cacheprovider -m slow || status=$$?; \
	echo "== fuzz run (-m fuzz, $(FUZZ_EXAMPLES) inputs per decoder)"; \
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) -m fuzz || status=$$?; \
	$(COVERAGE) combine -q && { \
	echo "== coverage, least covered modules first (full table: $(COVERAGE) report)"; \
	$(COVERAGE) report | sed -n '1,17p'; \
	echo "== coverage total (lines, pytest and every process it started): $$($(COVERAGE) report --format=total)%"; \
	}; \
	exit $$status

# For development: everything but the slow tests and the fuzz run (under a minute on 2 cores).
# Development: the same tests on 4 workers (under a minute on 2 cores); `make test` stays serial.
test-fast: $(VENV)/.test-installed
	$(PYTEST) -m "not slow and not fuzz" -n 4

# Every decoder that reads field or network bytes, fed mutated published frames, arbitrary bytes
# and nesting/length extremes (tests/fuzz); only the decoder's own error may come out.
# FUZZ_EXAMPLES inputs per decoder: 5,000 take about two minutes on 2 cores; raise it for a long run.
FUZZ_EXAMPLES ?= 5000
fuzz: $(VENV)/.test-installed
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) -m fuzz

# The fault table: one small city per fault, every loss named (exit 1 on any unexplained one).
faults: test-deps $(VENV)/.test-installed
	$(PY) -m benchmarks.faults

bench: $(VENV)/.installed
	$(PY) -m benchmarks.windows
	$(PY) -m benchmarks.outbox

# A Debian 12 / Raspberry Pi OS (bookworm) package for this machine's architecture, built from
# wheels into a venv under /opt/edge-gateway (packaging/build-deb.sh); DEB_OUT picks the folder.
# debootstrap is for the package's install test (tests/packaging).
DEB_OUT      ?= build/deb
DEB_BUILD_DEBS := python3 python3-venv dpkg-dev debootstrap

deb-deps:
	@missing=""; for p in $(DEB_BUILD_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

deb: deb-deps
	packaging/build-deb.sh $(DEB_OUT)

clean:
	rm -rf $(VENV) demo-state edge-gateway-state .pytest_cache .hypothesis .mypy_cache .ruff_cache build/coverage
