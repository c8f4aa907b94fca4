#!/usr/bin/env bash
# The host side of the Vagrant lxc networks: LXC's NAT bridge (management, internet for apt/pip)
# and histo-br0, the cluster network, with the controller's address. Idempotent; `down` removes both.
# `nat-up` / `nat-down` handle LXC's NAT bridge alone (also used by scripts/molecule-lxc.sh).
set -euo pipefail
BR=histo-br0
ADDR=${HISTO_CONTROLLER_CIDR:-192.168.56.1/24}

nat_up() {
  ip link show lxcbr0 >/dev/null 2>&1 || USE_LXC_BRIDGE=true /usr/libexec/lxc/lxc-net start
}

nat_down() {
  # LXC's NAT bridge is shared: keep it while any container still runs (a Molecule instance, or the
  # cluster while Molecule cleans up). Returns 1 when it was kept.
  if [ -n "$(lxc-ls --running 2>/dev/null)" ]; then return 1; fi
  USE_LXC_BRIDGE=true /usr/libexec/lxc/lxc-net stop >/dev/null 2>&1 || true
  # lxc-net may not know a bridge its package's postinst started: remove what is left by pid/name.
  if [ -f /run/lxc/dnsmasq.pid ]; then kill "$(cat /run/lxc/dnsmasq.pid)" 2>/dev/null || true; fi
  if ip link show lxcbr0 >/dev/null 2>&1; then ip link del lxcbr0 || true; fi
}

case "${1:-up}" in
  nat-up) nat_up ;;
  nat-down) nat_down || true ;;
  up)
    nat_up
    if ! ip link show "$BR" >/dev/null 2>&1; then
      ip link add "$BR" type bridge
      ip addr add "$ADDR" dev "$BR"
    fi
    ip link set "$BR" up
    # Let the containers' nftables "log" rules reach the host's kernel log (drops are logged there).
    sysctl -qw net.netfilter.nf_log_all_netns=1
    ;;
  down)
    if ip link show "$BR" >/dev/null 2>&1; then ip link del "$BR"; fi
    # the kernel-log setting goes back only when no container is left to log through it
    if nat_down; then sysctl -qw net.netfilter.nf_log_all_netns=0; fi
    ;;
esac
