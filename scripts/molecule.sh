#!/usr/bin/env bash
# make molecule [ROLE=<role>]: `molecule test` of one role's scenario, or of every role in turn
# (create -> prepare -> converge -> idempotence -> verify -> destroy on LXC instances, see
# scripts/molecule-lxc.sh). Prints the time of each scenario and the total; stops at the first failure
# after destroying that scenario's instances.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ALL="common firewall vault vault_config histo_app zookeeper histo keepalived logship"
roles=${*:-$ALL}
[ "$(id -u)" -eq 0 ] || { echo "molecule: run as root (LXC containers, a host bridge)" >&2; exit 2; }
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
host_lxc_lock molecule
# lxc + dnsmasq-base (lxcbr0), debootstrap + vagrant (the box and Vagrant's insecure key), clients.
apt_install molecule lxc dnsmasq-base debootstrap vagrant iproute2 openssh-client curl openssl
deploy_venv
export PATH="$ROOT/.venv-deploy/bin:$PATH" HISTO_ROOT=$ROOT ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
summary=""; t0=$(date +%s); rc=0
for role in $roles; do
  [ -f "roles/$role/molecule/default/molecule.yml" ] || { echo "molecule: no scenario for role '$role'" >&2; exit 2; }
  t=$(date +%s)
  if (cd "roles/$role" && molecule test --scenario-name default); then res=ok; else res=FAILED; rc=1; fi
  summary+="$(printf '  %-13s %-6s %4d s' "$role" "$res" $(( $(date +%s) - t )))"$'\n'
  [ $rc -eq 0 ] || break
done
printf 'molecule: scenarios\n%s  total %d s\n' "$summary" $(( $(date +%s) - t0 ))
exit $rc
