#!/usr/bin/env bash
# make down: removes every machine of every profile, the host networks and the dead cluster's
# secrets (secret zero, tokens, bootstrap CA). Keeps the box and the wheel caches. Leaves no process.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
host_lxc_lock down
export VAGRANT_DEFAULT_PROVIDER=lxc
# --cleanup-only: what the Vagrantfile's destroy trigger calls once the last machine is gone.
if [ "${1:-}" != --cleanup-only ] && command -v vagrant >/dev/null 2>&1 && [ -d .vagrant/machines ]; then
  for inv in inventory/*/hosts.yml; do
    profile=$(basename "$(dirname "$inv")")
    HISTO_PROFILE=$profile HISTO_NO_PROVISION=1 vagrant destroy -f
  done
fi
as_root bash vagrant/network.sh down
state=.histo/vagrant
# the controller's token refresher (scripts/after-up.sh): nothing of the cluster keeps running
if [ -x .venv/bin/histo ] && [ -d "$state/env-refresh" ]; then .venv/bin/histo env refresh --stop "$state" >/dev/null || true; fi
rm -rf "$state/env-refresh" "$state/vault-init.json" "$state/vault-seal.key" "$state/root-token" "$state/provisioner-token" "$state/root-accessors" \
       "$state/issuer-token" "$state/env" "$state/ca.pem" \
       "$state/vault-spec.json" "$state/vault-tls" "$state/provision" \
       "$state/ssh" "$state/inventory"
echo "down: machines, networks and the cluster's secrets removed"
