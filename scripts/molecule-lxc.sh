#!/usr/bin/env bash
# LXC instances for the Molecule scenarios (roles/*/molecule/default), driven by their create.yml and
# destroy.yml (Molecule's default "delegated" driver). Never touches what `make up` made:
#   - containers are named mol-* only (the platform names of molecule.yml),
#   - the test network is histo-mol0 (192.168.57.0/24, the controller is 192.168.57.1), made here,
#     removed here when no mol-* container is left,
#   - eth0 is on LXC's shared NAT bridge lxcbr0 (DHCP, apt from Debian mirrors), as on the cluster
#     machines: the management network where SSH is accepted. lxcbr0 is started when missing and
#     stopped again by the last destroy only if it was started here and no container is running.
# Root filesystems are overlays on one read-only copy of the project's box rootfs
# (.histo/molecule/base, extracted once from vagrant/box/histo-debian12-lxc.box): an instance starts
# in about a second and costs only the files it writes.
#
#   molecule-lxc.sh create NAME=ADDRESS...   start the instances, write Molecule's instance config
#   molecule-lxc.sh destroy NAME...          stop and remove them (and histo-mol0 once unused)
#   molecule-lxc.sh clean                    remove every mol-* container, histo-mol0, the base rootfs
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BR=histo-mol0
BR_ADDR=192.168.57.1/24
MOL=$ROOT/.histo/molecule
BASE=$MOL/base
BOX=$ROOT/vagrant/box/histo-debian12-lxc.box
LXCPATH=$(lxc-config lxc.lxcpath 2>/dev/null || echo /var/lib/lxc)
say() { echo "molecule-lxc: $*" >&2; }
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

check_name() {
  [[ "$1" =~ ^mol-[a-z0-9-]+$ ]] || { say "refusing instance name '$1' (must be mol-[a-z0-9-]+)"; exit 2; }
}

network_up() {
  if ! ip link show lxcbr0 >/dev/null 2>&1; then
    bash "$ROOT/vagrant/network.sh" nat-up
    touch "$MOL/.nat_started"
  fi
  if ! ip link show "$BR" >/dev/null 2>&1; then
    ip link add "$BR" type bridge
    ip addr add "$BR_ADDR" dev "$BR"
  fi
  ip link set "$BR" up
  # Drops logged by the instances' nftables reach the host's kernel log (the firewall verify reads it).
  if [ "$(sysctl -n net.netfilter.nf_log_all_netns)" != 1 ]; then
    sysctl -qw net.netfilter.nf_log_all_netns=1
    touch "$MOL/.nf_log_set"
  fi
}

network_down() {
  [ -n "$(lxc-ls -1 2>/dev/null | grep '^mol-' || true)" ] && return 0
  ip link show "$BR" >/dev/null 2>&1 && ip link del "$BR"
  if [ -f "$MOL/.nf_log_set" ]; then
    # Put back what we changed, unless the cluster network (which wants it) is up.
    ip link show histo-br0 >/dev/null 2>&1 || sysctl -qw net.netfilter.nf_log_all_netns=0
    rm -f "$MOL/.nf_log_set"
  fi
  if [ -f "$MOL/.nat_started" ]; then
    bash "$ROOT/vagrant/network.sh" nat-down
    rm -f "$MOL/.nat_started"
  fi
}

base_rootfs() {
  [ -f "$BOX" ] || bash "$ROOT/vagrant/build-box.sh" >&2
  if [ ! -f "$BASE/.from" ] || [ "$(cat "$BASE/.from")" != "$(stat -c %Y-%s "$BOX")" ]; then
    say "extracting the box rootfs into $BASE"
    rm -rf "$BASE"; mkdir -p "$BASE"
    tar -xOzf "$BOX" rootfs.tar.gz | tar -xz --numeric-owner -C "$BASE"
    stat -c %Y-%s "$BOX" > "$BASE/.from"
  fi
}

create_one() {
  local name=$1 addr=$2 dir=$LXCPATH/$1
  if lxc-info -n "$name" >/dev/null 2>&1; then
    lxc-info -n "$name" -s | grep -q RUNNING || lxc-start -n "$name"
    return 0
  fi
  mkdir -p "$dir/delta0"; chmod 700 "$dir"
  cat > "$dir/config" <<CFG
# Molecule instance of histo (scripts/molecule-lxc.sh); removed by its scenario's destroy.
lxc.uts.name = $name
lxc.rootfs.path = overlay:$BASE/rootfs:$dir/delta0
lxc.apparmor.profile = generated
lxc.apparmor.allow_nesting = 1
lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
lxc.net.0.flags = up
lxc.net.0.name = eth0
lxc.net.0.hwaddr = 00:16:3e:xx:xx:xx
lxc.net.1.type = veth
lxc.net.1.link = $BR
lxc.net.1.flags = up
lxc.net.1.name = eth1
lxc.net.1.ipv4.address = $addr/24
lxc.mount.entry = /sys/fs/pstore sys/fs/pstore none bind,optional 0 0
lxc.mount.entry = tmpfs tmp tmpfs nodev,nosuid,size=1G 0 0
CFG
  lxc-start -n "$name"
}

mgmt_address() {  # the instance's DHCP address on lxcbr0 (eth0), where SSH is accepted
  lxc-info -n "$1" -iH 2>/dev/null | grep -v '^192\.168\.57\.' | grep -E '^[0-9.]+$' | head -1 || true
}

case "${1:-}" in
  create)
    shift
    mkdir -p "$MOL"; chmod 700 "$MOL"
    base_rootfs
    network_up
    # The scenarios' own "cluster key" (the common role's common_ssh_authorized_keys, .config/molecule):
    # authorized beside the box's insecure key at creation, so that the role's removal of the insecure
    # key is what the scenario exercises, and Molecule logs in with this key throughout.
    key=$MOL/ssh_key
    [ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C histo-molecule -f "$key"
    install -m 600 "$(vagrant_insecure_key private)" "$MOL/vagrant_insecure_key"
    for pair in "$@"; do check_name "${pair%%=*}"; create_one "${pair%%=*}" "${pair#*=}"; done
    conf="# Molecule managed (scripts/molecule-lxc.sh)"$'\n'
    for pair in "$@"; do
      name=${pair%%=*}; ip=""
      for _ in $(seq 120); do ip=$(mgmt_address "$name"); [ -n "$ip" ] && break; sleep 0.5; done
      [ -n "$ip" ] || { say "$name: no DHCP address on lxcbr0"; exit 1; }
      for _ in $(seq 120); do timeout 1 bash -c "</dev/tcp/$ip/22" 2>/dev/null && break; sleep 0.5; done
      # shellcheck disable=SC2016  # $1 expands in the instance's shell
      lxc-attach -n "$name" -- sh -c 'grep -qxF "$1" /home/vagrant/.ssh/authorized_keys ||
        printf "%s\n" "$1" >> /home/vagrant/.ssh/authorized_keys' sh "$(cat "$key.pub")"
      conf+="- {instance: $name, address: $ip, user: vagrant, port: 22, identity_file: $key, become_method: sudo}"$'\n'
      say "$name: eth0 $ip, eth1 ${pair#*=}"
    done
    if [ -n "${MOLECULE_INSTANCE_CONFIG:-}" ]; then
      umask 077; printf '%s' "$conf" > "$MOLECULE_INSTANCE_CONFIG"
    fi
    ;;
  destroy)
    shift
    for name in "$@"; do
      check_name "$name"
      if lxc-info -n "$name" >/dev/null 2>&1; then
        lxc-stop -n "$name" -k 2>/dev/null || true
        lxc-destroy -n "$name"
      fi
    done
    [ -n "${MOLECULE_INSTANCE_CONFIG:-}" ] && rm -f "$MOLECULE_INSTANCE_CONFIG"
    network_down
    ;;
  clean)
    host_lxc_lock molecule-lxc
    for name in $(lxc-ls -1 2>/dev/null | grep '^mol-' || true); do
      lxc-stop -n "$name" -k 2>/dev/null || true; lxc-destroy -n "$name"
    done
    network_down
    rm -rf "$MOL"
    ;;
  *) echo "usage: $0 create NAME=ADDRESS... | destroy NAME... | clean" >&2; exit 2 ;;
esac
