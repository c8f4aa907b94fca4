# Role tests (issue 5), included by the Makefile.
#   make molecule               every role's Molecule scenario in turn (LXC instances on histo-mol0)
#   make molecule ROLE=vault    one role's scenario
#   make molecule-clean         removes every mol-* instance, histo-mol0 and the cached base rootfs
#   make lint                   ansible-lint (production profile), yamllint, syntax check of site.yml
.PHONY: molecule molecule-clean lint

molecule:
	@bash scripts/molecule.sh $(ROLE)

molecule-clean:
	@bash scripts/molecule-lxc.sh clean

lint:
	@bash scripts/deploy-lint.sh
