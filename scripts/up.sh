#!/usr/bin/env bash
# make up: the Debian packages the lxc machines need on this host, then plain `vagrant up` — which does
# the rest by itself (Vagrantfile: the lxc provider, vagrant/prepare.sh, one site.yml run, and
# scripts/after-up.sh: ready, then the env file). Idempotent: a second run starts nothing new and
# announces the running cluster again; `make provision` re-applies site.yml (changed=0).
#   HISTO_PROFILE=small make up     # 1 ZooKeeper, 1 master, 2 workers, secops1 (default: the full topology)
set -euo pipefail
cd "$(dirname "$0")/.."
export HISTO_PROFILE=${HISTO_PROFILE:-default}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
host_lxc_lock up
[ -f "inventory/$HISTO_PROFILE/hosts.yml" ] || { echo "up: no inventory/$HISTO_PROFILE/hosts.yml" >&2; exit 2; }
t0=$(date +%s)
apt_install up lxc vagrant vagrant-lxc debootstrap nftables dnsmasq-base iproute2 bridge-utils openssh-client
# The test stage's Debian packages and the virtualenvs (vagrant/prepare.sh would install only the latter).
deploy_venv
as_root vagrant up
echo "up: total $(( $(date +%s) - t0 )) s (profile $HISTO_PROFILE)"
