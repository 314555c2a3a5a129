# Set-up and the two entry points of the README: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data demo test lint format clean

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

demo: install data
	$(PY) -m robustart

test: install data
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf results outputs multirun .pytest_cache .ruff_cache
