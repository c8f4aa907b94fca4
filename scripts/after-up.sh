#!/usr/bin/env bash
# The end of every `vagrant up`, `vagrant provision` and `vagrant reload` of the cluster (a trigger of the
# Vagrantfile's last machine), so plain Vagrant and `make up` end the same way:
#   1. .histo/vagrant/inventory: the profile's inventory and every machine's SSH endpoint with the
#      cluster key, the inventory plain `ansible-playbook site.yml` uses (ansible.cfg);
#   2. Vault unsealed with the unseal keys if it came back sealed (a halted or rebooted vault1), and every
#      Vault node serving a request (`histo vault-serving`);
#   3. ready means ready: every master counts every member as live (scripts/ready.sh);
#   4. the operator's env file (0600): URL, CA and short-lived tokens (`histo env write`);
#   5. its renewal: `histo env refresh --start` (envrefresh.py), a background process on the controller.
# HISTO_SSH_ENDPOINTS: {"host": {"ansible_host": ..., "ansible_port": ...}} from Vagrant's ssh_info.
set -euo pipefail
cd "$(dirname "$0")/.."
export HISTO_PROFILE=${HISTO_PROFILE:-default}
STATE=.histo/vagrant
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
inv=$STATE/inventory
install -d -m 700 "$inv"
ln -sfn "../../../inventory/$HISTO_PROFILE" "$inv/profile"
"$DEPLOY_VENV/bin/python" - "$PWD/$STATE/ssh/id_ed25519" "$HISTO_PROFILE" > "$inv/ssh.yml.tmp" <<'PY'
import json, os, sys
key, profile = sys.argv[1], sys.argv[2]
hosts = json.loads(os.environ.get("HISTO_SSH_ENDPOINTS") or "{}")
doc = {"all": {"hosts": hosts, "vars": {"ansible_user": "vagrant", "ansible_ssh_private_key_file": key,
       "ansible_ssh_common_args": "-o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null", "histo_profile": profile}}}
print("# Written by the Vagrantfile (scripts/after-up.sh) from Vagrant's ssh_info: the SSH endpoints")
print("# (management network) of the running machines and the cluster key; groups and addresses come from ./profile.")
print(json.dumps(doc, indent=1))
PY
mv "$inv/ssh.yml.tmp" "$inv/ssh.yml"
read -r master vault public vaults <<< "$("$DEPLOY_VENV/bin/python" - "$HISTO_PROFILE" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(f"inventory/{sys.argv[1]}/hosts.yml"))
groups, port = inv["all"]["children"], inv["all"]["vars"]["histo_ports"]["vault"]
masters = [f"https://{v['histo_address']}" for v in groups["masters"]["hosts"].values()]
floating = inv["all"]["vars"].get("histo_public_address")
nodes = [f"https://{v['histo_address']}:{port}" for v in groups["vault"]["hosts"].values()]
print(",".join(masters), nodes[0], f"https://{floating}" if floating and len(masters) > 1 else masters[0],
      ",".join(nodes))
PY
)"
if [ -f "$STATE/vault-init.json" ]; then
  .venv/bin/histo vault-unseal --init-file "$STATE/vault-init.json" --vault-url "$vault" \
    --vault-ca "$STATE/vault-tls/ca.pem" >/dev/null
fi
# every Vault node serves (a standby forwards to the active one): after the whole cluster restarted, a
# standby answers its health check before it can forward, and every login through it fails until then
if [ -f "$STATE/issuer-token" ]; then
  .venv/bin/histo vault-serving --vault-url "$vaults" --vault-ca "$STATE/vault-tls/ca.pem" \
    --token-file "$STATE/issuer-token" >/dev/null
fi
bash scripts/ready.sh
urls=()
IFS=, read -r -a masters_list <<< "$master"
for u in "${masters_list[@]}"; do urls+=(--url "$u"); done
env_file="$STATE/env"
.venv/bin/histo env write --out "$env_file" "${urls[@]}" --ca "$PWD/$STATE/ca.pem" \
  --public-url "$public" --set "HISTO_PROFILE=$HISTO_PROFILE" --ttl "${HISTO_TOKEN_TTL:-1h}" \
  --vault-url "$vault" --vault-ca "$STATE/vault-tls/ca.pem" --token-file "$STATE/issuer-token" >/dev/null
# 5. those tokens and the issuer token renewed at 2/3 of their life, in the background (make down stops it)
.venv/bin/histo env refresh --start "$STATE" --vault-url "$vaults" --vault-ca "$STATE/vault-tls/ca.pem" >/dev/null
cat <<MSG
up: the cluster is at $public   (env: $env_file)
  set -a; . $env_file; set +a
  curl --cacert "\$HISTO_CA" -H "Authorization: Bearer \$HISTO_TOKEN_UPLOADER" -F image=@photo.jpg "\$HISTO_URL/api/v1/jobs"
sign in: $public/  (Sign in opens OpenBao's page at $vault/ui/; trust $STATE/ca.pem and $STATE/vault-tls/ca.pem)
  first account (name, groups, password file): $(head -n 1 "$STATE/people/accounts" 2>/dev/null || echo "none: see roles/vault_config")
MSG
