#!/usr/bin/env bash
# make lint (also make deploy-lint): the Ansible code of the project, with the pinned tools of
# requirements-deploy.lock in .venv-deploy:
#   ansible-playbook --syntax-check site.yml, yamllint (.yamllint), ansible-lint at the production
#   profile (.ansible-lint) on site.yml, the playbooks, the roles and their Molecule scenarios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/molecule-venv.sh
export PATH="$PWD/.venv-deploy/bin:$PATH"
echo "lint: ansible-playbook --syntax-check site.yml"
ansible-playbook -i inventory/default --syntax-check site.yml >/dev/null
echo "lint: yamllint"
yamllint --strict site.yml playbooks roles
echo "lint: ansible-lint (production profile)"
ansible-lint --offline --profile production site.yml playbooks roles
echo "lint: clean"
