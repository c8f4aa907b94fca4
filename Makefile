# histo — the two commands a user needs are `make up` (the Vagrant cluster) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HISTO := $(VENV)/bin/histo
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: bootstrap test test-cluster test-unit test-integration local local-down local-status bench attack clean

bootstrap:
	@bash scripts/bootstrap.sh

## make test: every test, from a fresh machine (installs what it needs first), in three stages:
##   1. unit and integration tests (loopback: real OpenBao, ZooKeeper, TLS, processes)
##   2. the roles: lint (syntax check, yamllint, ansible-lint production), a Molecule scenario per role
##   3. the cluster: make up, acceptance tests and attack drills on the machines, make down, and a
##      check that nothing (machine, instance, bridge, process, secret) is left behind
test: bootstrap
	$(PYTEST) tests/unit tests/integration -q -ra --timeout=600
	bash scripts/deploy-lint.sh
	bash scripts/molecule.sh
	bash scripts/cluster-test.sh

test-unit: bootstrap
	$(PYTEST) tests/unit -q

test-cluster: bootstrap
	bash scripts/cluster-test.sh

test-integration: bootstrap
	$(PYTEST) tests/integration -q -ra --timeout=600

## make local: OpenBao, ZooKeeper, 2 masters and 2 workers as processes on loopback
local: bootstrap
	$(HISTO) local up

local-down:
	@if [ -x $(HISTO) ]; then $(HISTO) local down; else echo "histo local: nothing to stop"; fi

local-status:
	$(HISTO) local status

bench: bootstrap
	$(PY) bench/run.py

clean: local-down
	rm -rf .histo/local

-include mk/*.mk

## make attack: the attack drills against the deployed cluster when it is up (`make up`: .histo/vagrant/env
## and every machine running), else against the running `make local` cluster
attack: bootstrap
	@if $(PY) -m attack --check-up; then \
	  $(PY) -m attack; \
	else \
	  echo "attack: the deployed cluster is not up; drills against make local (.histo/local)"; \
	  $(PY) -m attack.local .histo/local; \
	fi
