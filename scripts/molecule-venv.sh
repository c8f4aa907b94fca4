#!/usr/bin/env bash
# Installs the pinned deployment tools (requirements-deploy.lock: ansible-core, molecule, ansible-lint,
# yamllint) into .venv-deploy, exactly as scripts/up.sh does (same stamp file, so neither reinstalls
# after the other), and the project's .venv (the controller's `histo`, used by the roles).
set -euo pipefail
cd "$(dirname "$0")/.."
DEPLOY_VENV=.venv-deploy
bash scripts/bootstrap.sh >&2
stamp="$DEPLOY_VENV/.lock-$(sha256sum requirements-deploy.lock | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "molecule: installing requirements-deploy.lock into $DEPLOY_VENV" >&2
  [ -x "$DEPLOY_VENV/bin/python" ] || python3 -m venv "$DEPLOY_VENV"
  "$DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check -r requirements-deploy.lock
  rm -f "$DEPLOY_VENV"/.lock-*; touch "$stamp"
fi
