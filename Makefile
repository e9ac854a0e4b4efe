# Two commands on a fresh machine:
#   make demo   create .venv, install, run the gateway on the demo config, print a summary
#   make test   install everything the tests need (Debian packages too) and run the suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DEBS   := mosquitto mosquitto-clients victoria-metrics dbus libdbus-1-dev libglib2.0-dev pkg-config openssl
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test venv test-deps lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	rm -rf demo-state
	$(VENV)/bin/edge-gateway run --config config/demo.toml --duration 25 --drain --summary

# Debian packages the tests start as real peers (Mosquitto, VictoriaMetrics, a private D-Bus).
test-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check gateway drivers simulators tests benchmarks
	$(VENV)/bin/mypy

test: test-deps $(VENV)/.test-installed lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) -m benchmarks.windows
	$(PY) -m benchmarks.outbox

clean:
	rm -rf $(VENV) demo-state edge-gateway-state .pytest_cache .hypothesis .mypy_cache .ruff_cache
