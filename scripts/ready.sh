#!/usr/bin/env bash
# Ready means ready: waits until every master of the deployed cluster counts every master and worker
# of the inventory as a live process and names a leader that answered it — what `make up` and
# `make provision` wait for before they return, so an upload is accepted the moment they do.
#   HISTO_PROFILE=small bash scripts/ready.sh     (HISTO_READY_TIMEOUT, seconds, default 180)
set -euo pipefail
cd "$(dirname "$0")/.."
HISTO_PROFILE=${HISTO_PROFILE:-default}
STATE=.histo/vagrant
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# Hosts SecOps quarantined are not waited for: they come back only after a re-provisioning and
# `histo quarantine release` (README, "Detection and containment"), and the re-provisioning runs this.
held='{}'
if [ -f "$STATE/provisioner-token" ] && [ -f "$STATE/vault-tls/ca.pem" ]; then
  vaults=$("$DEPLOY_VENV/bin/python" - "$HISTO_PROFILE" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(f"inventory/{sys.argv[1]}/hosts.yml"))
port = inv["all"]["vars"]["histo_ports"]["vault"]
print(",".join(f"https://{v['histo_address']}:{port}" for v in inv["all"]["children"]["vault"]["hosts"].values()))
PY
)
  held=$(.venv/bin/histo quarantine list --token-file "$STATE/provisioner-token" --vault-url "$vaults" \
    --vault-ca "$STATE/vault-tls/ca.pem" 2>/dev/null) || held='{}'  # Vault away: wait for every host
fi
counts=$(HISTO_HELD="$held" "$DEPLOY_VENV/bin/python" - "$HISTO_PROFILE" <<'PY'
import json, os, sys, yaml
inv = yaml.safe_load(open(f"inventory/{sys.argv[1]}/hosts.yml"))
groups = inv["all"]["children"]
try:
    held = set(json.loads(os.environ["HISTO_HELD"]))
except (ValueError, TypeError):
    held = set()
workers = [h for h in groups["workers"]["hosts"] if h not in held]
masters = [h for h in groups["masters"]["hosts"] if h not in held]
print(len(workers), len(masters), ",".join(sorted(held)) or "-",
      " ".join(f"https://{v['histo_address']}" for h, v in groups["masters"]["hosts"].items() if h not in held))
PY
)
read -r workers nmasters held_names masters <<< "$counts"
urls=()
for u in $masters; do urls+=(--url "$u"); done
.venv/bin/histo wait-ready "${urls[@]}" --ca "$STATE/ca.pem" --workers "$workers" \
  --masters "$nmasters" --timeout "${HISTO_READY_TIMEOUT:-180}" >/dev/null
echo "ready: $nmasters masters and $workers workers live$([ "$held_names" = - ] || echo " (quarantined, not counted: $held_names)")"
