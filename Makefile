# Set-up and the two entry points of the README: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data system-deps demo test lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]"
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist where apt is available; otherwise
# robustart downloads it from the official source (checksums checked) on first use.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
		echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; } \
			|| echo "could not install dataset-fashion-mnist: Fashion-MNIST will be downloaded on first use"; \
	else \
		echo "apt-get not found: Fashion-MNIST will be downloaded on first use"; \
	fi

# What the integration tests drive where root and apt are available: a one-node Slurm (slurm-wlm, munge)
# and headless Chromium for the report. Elsewhere those tests are skipped, saying why.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		missing=""; \
		for p in slurm-wlm munge chromium; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
				|| echo "could not install$$missing: the slurm and report-browser tests will be skipped"; \
		fi; \
	else \
		echo "not root with apt-get: the slurm and report-browser tests will be skipped"; \
	fi

demo: install data
	$(PY) -m robustart

test: install data system-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf results outputs multirun .pytest_cache .ruff_cache
