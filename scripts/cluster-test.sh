#!/usr/bin/env bash
# The cluster stage of `make test`: `make up`, the acceptance tests and the cluster attack drills
# against the deployed machines (tests/deploy, which also re-provisions and expects changed=0), then
# `make down` and a check that it left no machine, bridge or process behind (tests/teardown).
#
# A cluster that was already up before this stage (an operator's) is tested but not torn down.
# HISTO_SKIP_CLUSTER=1 skips the stage (e.g. on a host that is not root or has no lxc).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${HISTO_SKIP_CLUSTER:-0}" = 1 ]; then
  echo "cluster stage: skipped (HISTO_SKIP_CLUSTER=1)"; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "cluster stage: needs root for lxc (run as root, or HISTO_SKIP_CLUSTER=1 make test)" >&2; exit 2
fi
export HISTO_PROFILE=${HISTO_PROFILE:-default}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
host_lxc_lock "cluster stage"
DEPLOY_PY=.venv-deploy/bin/python
PYTEST=(-m pytest -p no:cacheprovider -q -ra --timeout=1200 --durations=20)

# Already up = the env file and at least one of this checkout's Vagrant machines running (not just any
# container: a Molecule instance or someone else's does not count).
owned=1
if [ -f .histo/vagrant/env ]; then
  for id in .vagrant/machines/*/lxc/id; do
    if [ -f "$id" ] && lxc-info -n "$(cat "$id")" -s 2>/dev/null | grep -q RUNNING; then owned=0; break; fi
  done
fi
[ "$owned" -eq 1 ] || echo "cluster stage: a cluster is already up; testing it and leaving it up"

t0=$(date +%s)
rc=0
bash scripts/up.sh || rc=$?
t1=$(date +%s)
echo "cluster stage: make up took $((t1 - t0)) s"
if [ "$rc" -eq 0 ]; then
  "$DEPLOY_PY" "${PYTEST[@]}" tests/deploy || rc=$?
  echo "cluster stage: acceptance tests and drills took $(( $(date +%s) - t1 )) s"
fi
if [ "$owned" -eq 1 ]; then
  t2=$(date +%s)
  bash scripts/down.sh || rc=$?
  echo "cluster stage: make down took $(( $(date +%s) - t2 )) s"
  HISTO_EXPECT_DOWN=1 "$DEPLOY_PY" "${PYTEST[@]}" tests/teardown || rc=$?
fi
exit "$rc"
