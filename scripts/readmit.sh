#!/usr/bin/env bash
# make readmit HOST=worker1: give a host SecOps quarantined back to the cluster, the README's procedure
# in one command (docs/SECURITY.md, "Containment"):
#   1. a root token from the unseal keys (`histo vault-generate-root`): only root may write a policy;
#   2. the machine rebuilt (`vagrant destroy -f`, `vagrant up`): a compromised machine is not trusted
#      again, and nothing it stored survives (HISTO_READMIT_KEEP_MACHINE=1 skips this for a machine
#      rebuilt by other means: it trusts the machine as it is);
#   3. `make provision`: vault-setup revokes every token the host held and restores its policy and PKI
#      role, then retires the root token; the host gets a new wrapped secret_id (HISTO_READMIT_HOST: the
#      only quarantined host provisioning delivers credentials to) and is left stopped (every other
#      machine's firewall still drops it);
#   4. `histo quarantine release`: refused unless 3 happened (the policy, the PKI role, a new secret_id);
#   5. site.yml on that host alone: its wrapped secret_id is replaced if it may have expired meanwhile,
#      the service started; then ready counts it again.
# Each step says what it did; the first that fails stops the procedure with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
export HISTO_PROFILE=${HISTO_PROFILE:-default}
STATE=.histo/vagrant
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
host=${1:-}
[ -n "$host" ] || { echo "readmit: name the host (make readmit HOST=worker1)" >&2; exit 2; }
[ -f "$STATE/provisioner-token" ] || { echo "readmit: no cluster here ($STATE/provisioner-token missing: make up)" >&2; exit 2; }
read -r role vaults <<< "$("$DEPLOY_VENV/bin/python" - "$HISTO_PROFILE" "$host" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(f"inventory/{sys.argv[1]}/hosts.yml"))
groups, port = inv["all"]["children"], inv["all"]["vars"]["histo_ports"]["vault"]
role = next((g for g in ("masters", "workers") if sys.argv[2] in (groups[g]["hosts"] or {})), "-")
print(role, ",".join(f"https://{v['histo_address']}:{port}" for v in groups["vault"]["hosts"].values()))
PY
)"
[ "$role" != - ] || { echo "readmit: $host is no master or worker of inventory/$HISTO_PROFILE" >&2; exit 2; }
vault=(--vault-url "$vaults" --vault-ca "$STATE/vault-tls/ca.pem")
token=(--token-file "$STATE/provisioner-token")
held=$(.venv/bin/histo quarantine list "${token[@]}" "${vault[@]}")
HISTO_HELD="$held" "$DEPLOY_VENV/bin/python" -c 'import json, os, sys; sys.exit(sys.argv[1] not in json.loads(os.environ["HISTO_HELD"]))' "$host" \
  || { echo "readmit: $host is not quarantined (histo quarantine list)" >&2; exit 2; }
t0=$(date +%s)
step() { echo "readmit: [$(( $(date +%s) - t0 )) s] $*"; }
# A root token never outlives the procedure: if a step fails before provisioning retired it, it is
# revoked here (a new run makes a new one from the unseal keys).
retire_root() {
  if [ -f "$STATE/root-token" ]; then
    if .venv/bin/histo vault-retire-root --init-file "$STATE/vault-init.json" --provisioner-file "$STATE/provisioner-token" \
      --root-token-file "$STATE/root-token" "${vault[@]}" >/dev/null; then
      echo "readmit: stopped before the end; the root token was revoked" >&2
    else
      echo "readmit: WARNING: the root token in $STATE/root-token could not be revoked: run histo vault-retire-root" >&2
    fi
  fi
}
on_exit() {
  local rc=$?
  retire_root  # whatever ended the run: provisioning retired it already, or it goes now
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM  # an interrupt ends through on_exit with a failure, not a success

if [ ! -f "$STATE/root-token" ]; then
  .venv/bin/histo vault-generate-root --init-file "$STATE/vault-init.json" --out "$STATE/root-token" \
    "${token[@]}" "${vault[@]}" >/dev/null
fi
step "1/5 a root token from the unseal keys ($STATE/root-token, 0600; provisioning retires it)"

if [ "${HISTO_READMIT_KEEP_MACHINE:-0}" != 1 ]; then
  as_root vagrant destroy -f "$host" >/dev/null
  as_root vagrant up "$host" >/dev/null
  step "2/5 $host rebuilt (vagrant destroy -f, vagrant up)"
else
  step "2/5 $host kept as it is (HISTO_READMIT_KEEP_MACHINE=1)"
fi

HISTO_READMIT_HOST="$host" make --no-print-directory provision
[ ! -f "$STATE/root-token" ] || { echo "readmit: provisioning left the root token unused" >&2; exit 1; }
step "3/5 provisioned: $host's policy and PKI role restored, its old tokens revoked, a new secret_id delivered"

.venv/bin/histo quarantine release "$host" "${token[@]}" "${vault[@]}" >/dev/null
step "4/5 $host released"

# The machine's SSH endpoint is the one after-up.sh wrote at the end of step 3 (ansible.cfg).
PATH="$PWD/$DEPLOY_VENV/bin:$PATH" ansible-playbook site.yml --limit "$host" -e "histo_profile=$HISTO_PROFILE"
bash scripts/ready.sh
step "5/5 $host started and counted as live again"
