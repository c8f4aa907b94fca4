#!/usr/bin/env bash
# make lint, first part: the Ansible code of the project, with the pinned tools of
# requirements-deploy.lock in .venv-deploy:
#   ansible-playbook --syntax-check site.yml, yamllint (.yamllint), ansible-lint at the production
#   profile on site.yml, the playbooks, the roles, their Molecule scenarios and the shared Molecule
#   config (.config/molecule).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
deploy_venv
export PATH="$PWD/.venv-deploy/bin:$PATH"
echo "lint: ansible-playbook --syntax-check site.yml"
ansible-playbook -i inventory/default --syntax-check site.yml >/dev/null
echo "lint: yamllint"
yamllint --strict site.yml playbooks roles .config/molecule
echo "lint: ansible-lint (production profile)"
ansible-lint --offline --profile production site.yml playbooks roles .config/molecule
echo "lint: clean"
