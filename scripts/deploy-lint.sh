#!/usr/bin/env bash
# make deploy-lint: ansible-lint (production profile) on site.yml, the playbooks and the roles.
# ansible-lint lives in its own virtualenv (.histo/lint-venv, git-ignored), beside the pinned ansible-core.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.histo/lint-venv
if [ ! -x "$VENV/bin/ansible-lint" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-deploy.lock ansible-lint
fi
"$VENV/bin/ansible-lint" --offline --profile production site.yml playbooks roles
