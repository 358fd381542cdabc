# Set-up and everyday commands; every target creates .venv first when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian's Fashion-MNIST (torchvision's idx files): real data for data=fashion_mnist without a download.
APT_DATA := dataset-fashion-mnist

.PHONY: install dev data-packages run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -e .

dev: $(BIN)/python
	$(BIN)/pip install -e '.[dev]'

data-packages:
	@if dpkg -s $(APT_DATA) >/dev/null 2>&1; then echo "$(APT_DATA) is installed"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(APT_DATA); \
	elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo apt-get install -y -qq $(APT_DATA); \
	else echo "warning: cannot install $(APT_DATA) (not root, no sudo); data=fashion_mnist will download"; fi

run: install
	$(BIN)/vae-run model=vae latent=2

test: dev data-packages
	$(BIN)/ruff check src tests scripts configs
	$(BIN)/python -m pytest

lint: dev
	$(BIN)/ruff check src tests scripts configs
	$(BIN)/ruff format --check src tests scripts configs

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
