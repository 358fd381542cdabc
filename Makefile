# Set-up and everyday commands; every target creates .venv first when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests use: Fashion-MNIST (torchvision's idx files: real data for data=fashion_mnist
# without a download), and Slurm's daemons, commands and munge (slurm-wlm without its plugins for
# InfluxDB, Elasticsearch, IPMI and RRD) for a one-node cluster (scripts/local_slurm.sh).
APT_PACKAGES := dataset-fashion-mnist slurmctld slurmd slurm-client munge

.PHONY: install dev apt-packages run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -e .

dev: $(BIN)/python
	$(BIN)/pip install -e '.[dev]'

apt-packages:
	@missing="$$(for package in $(APT_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done)"; \
	if [ -z "$$missing" ]; then echo "installed: $(APT_PACKAGES)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "warning: cannot install" $$missing "(not root, no sudo): their tests skip, data=fashion_mnist downloads"; fi

run: install
	$(BIN)/vae-run model=vae latent=2

test: dev apt-packages
	$(BIN)/ruff check src tests scripts configs
	$(BIN)/python -m pytest -m "not slurm"
	@# the tests on a local Slurm cluster, on their own: their jobs need the cores the test workers would take
	$(BIN)/python -m pytest -m slurm -n 0 tests/test_slurm.py

lint: dev
	$(BIN)/ruff check src tests scripts configs
	$(BIN)/ruff format --check src tests scripts configs

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
