#!/usr/bin/env bash
# make lint: shellcheck (Debian package, installed when missing) on every shell script of the project:
# scripts/, vagrant/ and .ci/run. Settings in .shellcheckrc (follows the scripts' `. lib.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
apt_install lint shellcheck
echo "lint: shellcheck"
shellcheck scripts/*.sh vagrant/*.sh .ci/run
