# Deployment targets (issue 4), included by the Makefile.
#   make up            the Vagrant cluster on this host (lxc provider), provisioned by site.yml
#   make down          removes the machines, the networks and the cluster's secrets
#   make provision     re-applies site.yml to the running machines (changed=0 when nothing drifted)
#   make deploy-test   the acceptance tests against the running cluster (tests/deploy)
# HISTO_PROFILE=small selects the small profile (1 ZooKeeper, 1 master, 2 workers).
.PHONY: up down provision deploy-test deploy-lint

up:
	@bash scripts/up.sh

down:
	@bash scripts/down.sh

provision:
	@PATH="$(CURDIR)/.venv-deploy/bin:$$PATH" VAGRANT_DEFAULT_PROVIDER=lxc \
	  vagrant provision "$$(VAGRANT_DEFAULT_PROVIDER=lxc vagrant status --machine-readable | awk -F, '$$3=="state"{m=$$2} END{print m}')"

deploy-test:
	.venv-deploy/bin/python -m pytest -p no:cacheprovider tests/deploy -q -ra --timeout=900

deploy-lint:
	@bash scripts/deploy-lint.sh
