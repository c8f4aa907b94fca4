# histo — the two commands a user needs are `make up` (the Vagrant cluster) and `make test`.
# `make help` lists every target (from the `##` comment after its name).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
HISTO := $(VENV)/bin/histo
LIFETIMES ?= standard
PYTEST := $(PY) -m pytest -p no:cacheprovider
PYTEST_FLAGS ?= -q -ra --timeout=600 --durations=15
# pytest-xdist workers for the Python tests (docs/TESTING.md): each a pytest session with its own session
# cluster on its own loopback nets; --dist loadfile with tests/xdist_order.py keeps a file on one worker and
# every worker's disruptive tests after its calm ones. TEST_WORKERS=0: one process, as before.
TEST_WORKERS ?= 3
XDIST := -n $(TEST_WORKERS) --dist loadfile
DEPLOY_PY := .venv-deploy/bin/python
# make molecule ROLE=<role>: one role's scenario (default: every role in turn)
ROLE ?=

.PHONY: help bootstrap venv check test test-python test-unit test-integration lint lint-python deploy-lint molecule \
        molecule-clean test-cluster up down provision readmit deploy-test local local-down local-status bench soak \
        attack clean

help: ## this list
	@echo "histo: make <target>"
	@awk '/^[a-zA-Z_-]+:[^#]*## / {t = $$0; sub(/:.*/, "", t); d = $$0; sub(/^[^#]*## /, "", d); printf "  %-17s %s\n", t, d} \
	      /^## make [a-z-]+: / {t = $$3; sub(/:$$/, "", t); d = $$0; sub(/^## make [a-z-]+: /, "", d); printf "  %-17s %s\n", t, d}' \
	  $(MAKEFILE_LIST)

# -- the machine -------------------------------------------------------------------------------------
bootstrap: ## Debian packages (ZooKeeper, a JRE, nftables, ...) and the pinned .venv
	@bash scripts/bootstrap.sh

venv: ## the pinned .venv only, no apt step (what `make check` needs)
	@HISTO_NO_APT=1 bash scripts/bootstrap.sh

# -- tests -------------------------------------------------------------------------------------------
check: ## the inner loop: Python lint and type check, unit tests (no apt step, no root)
	@$(MAKE) --no-print-directory lint-python
	@$(MAKE) --no-print-directory test-unit

# make test: every test, from a fresh machine (installs what it needs first), in three stages:
#   1. unit and integration tests (loopback: real OpenBao, ZooKeeper, TLS, processes)
#   2. the roles: lint (syntax check, yamllint, ansible-lint production, shellcheck, Python lint), a
#      Molecule scenario per role
#   3. the cluster: make up, acceptance tests and attack drills on the machines, make down, and a
#      check that nothing (machine, instance, bridge, process, secret) is left behind
test: bootstrap ## everything, in three stages: Python tests; lint and Molecule; the cluster
	@$(MAKE) --no-print-directory test-python
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory molecule
	@$(MAKE) --no-print-directory test-cluster

test-python: bootstrap ## stage 1: unit and integration tests (loopback)
	$(PYTEST) tests/unit tests/integration $(XDIST) $(PYTEST_FLAGS)

test-unit: venv ## unit tests only (no apt step)
	$(PYTEST) tests/unit $(XDIST) $(PYTEST_FLAGS)

test-integration: bootstrap ## integration tests only (real OpenBao, ZooKeeper, TLS on loopback)
	$(PYTEST) tests/integration $(XDIST) $(PYTEST_FLAGS)

lint: ## syntax check, yamllint, ansible-lint (production), shellcheck, Python lint
	@bash scripts/deploy-lint.sh
	@bash scripts/shellcheck.sh
	@$(MAKE) --no-print-directory lint-python

lint-python: venv ## Python lint and type check (scripts/lint-python.sh)
	@if [ -f scripts/lint-python.sh ]; then bash scripts/lint-python.sh; fi

deploy-lint: lint ## the same as lint

molecule: ## every role's Molecule scenario on LXC instances (ROLE=<role>: one)
	@bash scripts/molecule.sh $(ROLE)

molecule-clean: ## remove every mol-* instance, histo-mol0 and the cached base rootfs
	@bash scripts/molecule-lxc.sh clean

test-cluster: bootstrap ## stage 3: make up, acceptance tests and drills, make down, teardown check
	@bash scripts/cluster-test.sh

# -- the Vagrant cluster (HISTO_PROFILE=small: 1 ZooKeeper, 1 master, 2 workers, secops1) -------------
up: ## the cluster on this host (Vagrant, lxc provider), provisioned by site.yml; idempotent
	@bash scripts/up.sh

down: ## remove the machines, the networks and the cluster's secrets
	@bash scripts/down.sh

provision: ## re-apply site.yml to the running machines (changed=0 when nothing drifted)
	@vagrant provision "$$(vagrant status --machine-readable | awk -F, '$$3=="state"{m=$$2} END{print m}')"

readmit: ## give a quarantined host back: rebuilt, re-provisioned, released, started (HOST=worker1)
	@bash scripts/readmit.sh $(HOST)

deploy-test: ## the acceptance tests against the running cluster (tests/deploy)
	$(DEPLOY_PY) -m pytest -p no:cacheprovider tests/deploy -q -ra --timeout=900

# -- local mode --------------------------------------------------------------------------------------
local: bootstrap ## OpenBao, ZooKeeper, 2 masters and 2 workers on loopback (LIFETIMES=compressed: every credential in minutes)
	$(HISTO) local up --lifetimes $(LIFETIMES)

local-down: ## stop the local cluster
	@if [ -x $(HISTO) ]; then $(HISTO) local down; else echo "histo local: nothing to stop"; fi

local-status: ## the local cluster's processes
	$(HISTO) local status

soak: bootstrap ## 20 minutes of load through compressed lifetimes, kills and outages (bench/soak.py; not in make test)
	flock /tmp/histo-loopback.lock $(PY) bench/soak.py --minutes $(or $(SOAK_MINUTES),20)

bench: bootstrap ## the benchmark (bench/run.py; bench/durable.py: durable jobs against the code before them; bench/cpu.py; bench/worker.py; bench/signin.py)
	$(PY) bench/run.py
	$(PY) bench/durable.py --baseline 53f6f81
	$(PY) bench/cpu.py --baseline 17de71e
	$(PY) bench/worker.py --baseline d998898
	$(PY) bench/signin.py
	$(PY) bench/secops.py
	$(PY) bench/containment.py

clean: local-down ## stop the local cluster and remove its state
	rm -rf .histo/local

## make attack: the attack drills against the deployed cluster when it is up (`make up`: .histo/vagrant/env
## and every machine running), else against the running `make local` cluster
attack: bootstrap
	@if $(PY) -m attack --check-up; then \
	  $(PY) -m attack; \
	else \
	  echo "attack: the deployed cluster is not up; drills against make local (.histo/local)"; \
	  $(PY) -m attack.local .histo/local; \
	fi
