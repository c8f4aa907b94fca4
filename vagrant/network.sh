#!/usr/bin/env bash
# The host side of the Vagrant lxc networks: LXC's NAT bridge (management, internet for apt/pip)
# and histo-br0, the cluster network, with the controller's address. Idempotent; `down` removes both.
set -euo pipefail
BR=histo-br0
ADDR=${HISTO_CONTROLLER_CIDR:-192.168.56.1/24}
case "${1:-up}" in
  up)
    ip link show lxcbr0 >/dev/null 2>&1 || USE_LXC_BRIDGE=true /usr/libexec/lxc/lxc-net start
    if ! ip link show "$BR" >/dev/null 2>&1; then
      ip link add "$BR" type bridge
      ip addr add "$ADDR" dev "$BR"
    fi
    ip link set "$BR" up
    # Let the containers' nftables "log" rules reach the host's kernel log (drops are logged there).
    sysctl -qw net.netfilter.nf_log_all_netns=1
    ;;
  down)
    ip link show "$BR" >/dev/null 2>&1 && ip link del "$BR"
    # LXC's NAT bridge is shared: keep it while another container (not the cluster's, destroyed
    # before this runs) still uses it, e.g. a Molecule instance.
    if [ -n "$(lxc-ls --running 2>/dev/null)" ]; then exit 0; fi
    USE_LXC_BRIDGE=true /usr/libexec/lxc/lxc-net stop >/dev/null 2>&1 || true
    # lxc-net may not know a bridge its package's postinst started: remove what is left by pid/name.
    [ -f /run/lxc/dnsmasq.pid ] && kill "$(cat /run/lxc/dnsmasq.pid)" 2>/dev/null || true
    ip link show lxcbr0 >/dev/null 2>&1 && ip link del lxcbr0 || true
    sysctl -qw net.netfilter.nf_log_all_netns=0
    ;;
esac
