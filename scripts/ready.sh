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
counts=$("$DEPLOY_VENV/bin/python" - "$HISTO_PROFILE" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(f"inventory/{sys.argv[1]}/hosts.yml"))
groups = inv["all"]["children"]
print(len(groups["workers"]["hosts"]), " ".join(f"https://{v['histo_address']}" for v in groups["masters"]["hosts"].values()))
PY
)
read -r workers masters <<< "$counts"
urls=()
for u in $masters; do urls+=(--url "$u"); done
.venv/bin/histo wait-ready "${urls[@]}" --ca "$STATE/ca.pem" --workers "$workers" \
  --masters "$(( ${#urls[@]} / 2 ))" --timeout "${HISTO_READY_TIMEOUT:-180}" >/dev/null
echo "ready: $(( ${#urls[@]} / 2 )) masters and $workers workers live"
