#!/usr/bin/env bash
# make up: the histo cluster on this host — Vagrant with the lxc provider, a box built locally from
# Debian packages, provisioned by Ansible (site.yml, once for all machines). Idempotent: a second
# run starts nothing new and re-applies site.yml (changed=0).
#   HISTO_PROFILE=small make up     # 1 ZooKeeper, 1 master, 2 workers (default: the full topology)
set -euo pipefail
cd "$(dirname "$0")/.."
export HISTO_PROFILE=${HISTO_PROFILE:-default}
export VAGRANT_DEFAULT_PROVIDER=lxc
STATE=.histo/vagrant
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
t0=$(date +%s)
write_ssh_inventory() {  # .histo/vagrant/inventory: inventory/<profile> (a link) + the SSH endpoints of `vagrant ssh-config`
  local inv=$STATE/inventory
  install -d -m 700 "$inv"
  ln -sfn "../../../inventory/$HISTO_PROFILE" "$inv/profile"
  # shellcheck disable=SC2016  # Python, not shell
  vagrant ssh-config | "$DEPLOY_VENV/bin/python" -c '
import json, re, sys
key, profile = sys.argv[1], sys.argv[2]
hosts = {m[0]: {"ansible_host": m[1]} for m in re.findall(r"^Host (\S+)\n\s+HostName (\S+)", sys.stdin.read(), re.M)}
doc = {"all": {"hosts": hosts, "vars": {"ansible_user": "vagrant", "ansible_ssh_private_key_file": key,
       "ansible_ssh_common_args": "-o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null", "histo_profile": profile}}}
print("# Written by make up (scripts/up.sh) from `vagrant ssh-config`: the SSH endpoints (management network)")
print("# of the running machines and the cluster key; groups and addresses come from ./profile.")
print(json.dumps(doc, indent=1))' "$PWD/$STATE/ssh/id_ed25519" "$HISTO_PROFILE" > "$inv/ssh.yml.tmp"
  mv "$inv/ssh.yml.tmp" "$inv/ssh.yml"
}
say() { echo "up: $*"; }
[ -f "inventory/$HISTO_PROFILE/hosts.yml" ] || { echo "up: no inventory/$HISTO_PROFILE/hosts.yml" >&2; exit 2; }

# 1. Debian packages of the controller.
apt_install up lxc vagrant vagrant-lxc debootstrap nftables dnsmasq-base iproute2 bridge-utils openssh-client

# 2. The project's virtualenv (the controller's `histo`: Vault setup, provisioning, tokens) and
#    Ansible, pinned, in its own virtualenv.
deploy_venv
export PATH="$PWD/$DEPLOY_VENV/bin:$PATH"

# 3. The box (built once, cached), the host networks.
as_root bash vagrant/build-box.sh
as_root bash vagrant/network.sh up
install -d -m 700 "$STATE"

# 4. Machines first (vagrant-lxc boots them in parallel), then one Ansible run for all of them
#    from the last machine (as `vagrant up` does alone on virtualbox/libvirt, which boot serially).
t1=$(date +%s)
vagrant up --provider=lxc --no-provision
t2=$(date +%s)
last=$(vagrant status --machine-readable | awk -F, '$3=="state"{m=$2} END{print m}')
# The inventory plain `ansible-playbook site.yml` uses (ansible.cfg): the profile's inventory and every
# machine's SSH endpoint with the cluster key.
write_ssh_inventory
vagrant provision "$last"
t3=$(date +%s)

# 5. The operator's env file (0600): URL, CA and short-lived tokens.
master=$("$DEPLOY_VENV/bin/python" - "$HISTO_PROFILE" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(f"inventory/{sys.argv[1]}/hosts.yml"))
masters = inv["all"]["children"]["masters"]["hosts"]
print(",".join(f"https://{v['histo_address']}" for v in masters.values()))
PY
)
vault=$("$DEPLOY_VENV/bin/python" - "$HISTO_PROFILE" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(f"inventory/{sys.argv[1]}/hosts.yml"))
port = inv["all"]["vars"]["histo_ports"]["vault"]
print(next(f"https://{v['histo_address']}:{port}" for v in inv["all"]["children"]["vault"]["hosts"].values()))
PY
)
# Ready means ready: only a cluster whose masters count every member as live is announced.
bash scripts/ready.sh
urls=()
IFS=, read -r -a masters_list <<< "$master"
for u in "${masters_list[@]}"; do urls+=(--url "$u"); done
# The operator's env file (0600): one writer for make local and make up (`histo env write`); tokens
# signed by Vault's transit key with the controller's issuer token (policy histo-token-issuer).
env_file="$STATE/env"
.venv/bin/histo env write --out "$env_file" "${urls[@]}" --ca "$PWD/$STATE/ca.pem" \
  --set "HISTO_PROFILE=$HISTO_PROFILE" --ttl "${HISTO_TOKEN_TTL:-1h}" \
  --vault-url "$vault" --vault-ca "$STATE/vault-tls/ca.pem" --token-file "$STATE/issuer-token" >/dev/null

say "machines $((t2 - t1)) s, provisioning $((t3 - t2)) s, total $(( $(date +%s) - t0 )) s (profile $HISTO_PROFILE)"
cat <<MSG
up: the cluster is at ${master%%,*}   (env: $env_file)
  set -a; . $env_file; set +a
  curl --cacert "\$HISTO_CA" -H "Authorization: Bearer \$HISTO_TOKEN_UPLOADER" -F image=@photo.jpg "\$HISTO_URL/api/v1/jobs"
MSG
