# quantshift-mlops: every build output here is git-ignored and rebuilt on demand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WHEELHOUSE := .cache/wheelhouse
# the hosts' extras, defined once: the quantshift_common role's package spec
HOST_SPEC := roles/quantshift_common/defaults/main.yml
HOST_EXTRAS := $(shell sed -n 's/^quantshift_common_package_spec: quantshift-ml\(\[[^]]*]\)$$/\1/p' $(HOST_SPEC))
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv retrain test lint unit integration faults awx packaging molecule wheelhouse package-wheel benchmarks bench-deploy bench-smoke clean status rollback console console-test console-screenshots

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): python/pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e 'python[yfinance,serve,monitor,explain,console,garch,cluster,dev]' -r requirements-dev.txt
	touch $@

venv: $(STAMP) ## create .venv with the package and the controller tooling

retrain: $(STAMP) ## provision and retrain on inventory/local with bundled data
	$(BIN)/ansible-playbook playbooks/site.yml
	$(BIN)/ansible-playbook playbooks/retrain.yml
	$(BIN)/ansible-playbook playbooks/status.yml

status: $(STAMP) ## fleet table for inventory/local
	$(BIN)/ansible-playbook playbooks/status.yml

rollback: $(STAMP) ## roll inventory/local back to the latest backup
	$(BIN)/ansible-playbook playbooks/rollback.yml

console: $(STAMP) ## model console for inventory/local on http://127.0.0.1:8790/ (first run prints a password)
	$(BIN)/quantshift-ml console passwd --env-file .local/console.env --user admin --generate --if-missing > /dev/null
	$(BIN)/quantshift-ml console --inventory inventory/local --env-file .local/console.env

console-test: $(STAMP) ## the console in headless Chromium on a copy of inventory/local, and its role
	$(BIN)/pytest -q tests/console

console-screenshots: $(STAMP) ## console-test, keeping its screenshots in docs/console/
	QS_CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest -q tests/console

lint: $(STAMP) ## ruff, mypy, yamllint, ansible-lint (production), module docs
	cd python && ../$(BIN)/ruff check . && ../$(BIN)/mypy
	$(BIN)/ruff check benchmarks library molecule tests
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production
	$(BIN)/ansible-doc -M library quantshift_train > /dev/null
	$(BIN)/ansible-doc -M library quantshift_model > /dev/null

unit: $(STAMP) ## pytest unit tests of the package
	$(BIN)/pytest -q python/tests

integration: $(STAMP) ## playbooks against inventory/local (site, retrain, rollback, refused gate)
	$(BIN)/pytest -q tests/integration

wheelhouse: package-wheel $(WHEELHOUSE)/.deps ## wheels for the test hosts (Python 3.11, manylinux x86_64)

# The package's own wheel, rebuilt once per `make wheelhouse` (its sources are
# not prerequisites, so make cannot tell when it is stale).
# python/build is removed first: setuptools never empties it, so a file dropped
# from the package data would still ship from an earlier build.
package-wheel: $(STAMP)
	mkdir -p $(WHEELHOUSE) && rm -f $(WHEELHOUSE)/quantshift_ml-*.whl
	rm -rf python/build
	$(BIN)/python -m build -q --wheel --outdir $(WHEELHOUSE) python > /dev/null

# Third-party wheels for the hosts' interpreter and platform, not the controller's,
# downloaded again only when the package's requirements change. pip resolves them
# from the package wheel, an order-only prerequisite: built first, never a reason
# to download again.
$(WHEELHOUSE)/.deps: python/pyproject.toml $(HOST_SPEC) $(STAMP) | package-wheel
	@test -n "$(HOST_EXTRAS)" || { echo "no extras in $(HOST_SPEC)'s quantshift_common_package_spec" >&2; exit 1; }
	find $(WHEELHOUSE) -maxdepth 1 -name '*.whl' ! -name 'quantshift_ml-*' -delete
	$(BIN)/pip download -q --only-binary=:all: --python-version 3.11 \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform linux_x86_64 --platform any \
	  -d $(WHEELHOUSE) "$$(ls $(WHEELHOUSE)/quantshift_ml-*.whl)$(HOST_EXTRAS)"
	touch $@

molecule: $(STAMP) wheelhouse ## Molecule scenarios on systemd-nspawn hosts (root)
	@if [ "$$(id -u)" != 0 ]; then echo "molecule: the nspawn test hosts need root; run as root" >&2; exit 1; fi
	$(BIN)/pytest -q molecule/shared/test_testbed.py
	$(BIN)/molecule test -s default
	$(BIN)/python molecule/shared/testbed.py check-clean --host primary --index 1 --host standby --index 2

faults: $(STAMP) ## fault matrix (tests/faults; some need root)
	$(BIN)/pytest -q tests/faults

awx: $(STAMP) ## AWX data checks
	$(BIN)/pytest -q tests/awx

packaging: $(STAMP) ## the built wheel in a fresh venv: every package file, serve and console run
	$(BIN)/pytest -q tests/packaging

test: lint unit integration faults awx packaging console-test molecule bench-smoke ## everything CI runs

# every benchmarks/bench_*.py but the deploy fan-out (root, its own target)
BENCHMARKS := $(filter-out benchmarks/bench_deploy.py,$(sort $(wildcard benchmarks/bench_*.py)))

benchmarks: $(STAMP) ## speed figures (not part of the tests)
	set -e; for b in $(BENCHMARKS); do $(BIN)/python $$b; done

bench-deploy: $(STAMP) wheelhouse ## deploy fan-out on nspawn hosts (root, several minutes)
	$(BIN)/python benchmarks/bench_deploy.py

# bench_deploy's smoke boots 2 nspawn hosts: root and the wheelhouse, like molecule
bench-smoke: $(STAMP) wheelhouse ## every benchmarks/bench_*.py --smoke (bench_deploy: root)
	@if [ "$$(id -u)" != 0 ]; then echo "bench-smoke: bench_deploy's nspawn test hosts need root; run as root" >&2; exit 1; fi
	$(BIN)/python benchmarks/smoke.py

clean: ## remove build outputs (keeps the rootfs cache outside the checkout)
	rm -rf $(VENV) .cache .local build python/build python/*.egg-info
