#!/usr/bin/env bash
# Builds the lxc Vagrant box from Debian packages (debootstrap), once: vagrant/box/histo-debian12-lxc.box.
# A `vagrant` user with Vagrant's insecure public key and passwordless sudo, openssh-server, python3,
# DHCP on eth0 (ifupdown). The rootfs is packed under ./rootfs/ (the template strips two
# components); metadata.json names the lxc provider and no template options.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/lib.sh
. ../scripts/lib.sh
BOX=box/histo-debian12-lxc.box
[ -f "$BOX" ] && { echo "box: $BOX exists"; exit 0; }
MIRROR=${HISTO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEY=$(vagrant_insecure_key public)
# One build per recipe and week on this host: every fresh checkout (CI's clean clone among them) reuses
# the box this script, the mirror and the key made in the last 7 days instead of running debootstrap
# again (~2 min); after that, a new build brings Debian's updates.
CACHE=${HISTO_BOX_CACHE:-/var/cache/histo/box}
recipe=$({ cat build-box.sh; echo "$MIRROR"; cat "$KEY"; } | sha256sum | cut -c1-16)
if [ -n "$(find "$CACHE" -maxdepth 1 -name "$recipe.box" -mtime -7 2>/dev/null)" ]; then
  mkdir -p box
  cp "$CACHE/$recipe.box" "$BOX.tmp" && mv "$BOX.tmp" "$BOX"
  echo "box: $BOX from this host's cache ($CACHE/$recipe.box)"
  exit 0
fi
work=$(mktemp -d /var/tmp/histo-box.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
echo "box: debootstrap bookworm into $root"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,openssh-server,sudo,python3,python3-venv,iproute2,ca-certificates,nftables,netbase,ifupdown,isc-dhcp-client \
  bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
chroot "$root" useradd -m -s /bin/bash vagrant
install -d -m 700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$KEY" "$root/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/vagrant"
chmod 440 "$root/etc/sudoers.d/vagrant"
# The management NIC (Vagrant's NAT, internet for apt and pip) by DHCP. ifupdown rather than
# systemd-networkd: in an LXC container there is no udev, and networkd leaves links "pending".
cat > "$root/etc/network/interfaces" <<'NET'
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
NET
chroot "$root" systemctl enable networking ssh >/dev/null 2>&1
echo "histo" > "$root/etc/hostname"
rm -f "$root"/etc/ssh/ssh_host_*  # each machine gets its own host keys at first boot
cat > "$root/etc/systemd/system/ssh-keygen.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable ssh-keygen.service >/dev/null 2>&1
apt_clean() { rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*; }
apt_clean
echo '{"provider": "lxc", "version": "1.0.0", "built-on": "'"$(date -u +%F)"'"}' > "$work/metadata.json"
(cd "$work" && tar --numeric-owner -czf rootfs.tar.gz ./rootfs)
mkdir -p box
tar -C "$work" -czf "$BOX" metadata.json rootfs.tar.gz
echo "box: built $BOX ($(du -h "$BOX" | cut -f1))"
if install -d -m 755 "$CACHE" 2>/dev/null; then
  cp "$BOX" "$CACHE/$recipe.box.tmp" && mv "$CACHE/$recipe.box.tmp" "$CACHE/$recipe.box"
fi
