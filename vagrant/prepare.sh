#!/usr/bin/env bash
# What the lxc machines need on this host before Vagrant boots them; run by the Vagrantfile for `vagrant
# up|reload|resume|provision` with the lxc provider (so plain `vagrant up` works), and by nothing else.
# A missing prerequisite is one line saying what to do. Idempotent and quick once done:
#   the project's .venv (the controller's histo) and .venv-deploy (Ansible, pinned);
#   the box (vagrant/build-box.sh, built once from Debian packages); the host networks (network.sh);
#   the state folder .histo/vagrant (0700).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
need() { echo "vagrant: $1" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || need "the lxc provider needs root on this host: run sudo vagrant up (or make up)"
command -v lxc-start >/dev/null || need "LXC is missing: apt-get install lxc (or run make up, which installs it)"
command -v debootstrap >/dev/null || need "debootstrap is missing (it builds the box): apt-get install debootstrap"
compgen -G "/usr/share/rubygems-integration/all/gems/vagrant-lxc-*" >/dev/null \
  || compgen -G "${VAGRANT_HOME:-$HOME/.vagrant.d}/gems/*/gems/vagrant-lxc-*" >/dev/null \
  || need "the vagrant-lxc plugin is missing: apt-get install vagrant-lxc"
command -v ip >/dev/null || need "iproute2 is missing: apt-get install iproute2"
command -v dnsmasq >/dev/null || need "dnsmasq is missing (LXC's NAT bridge): apt-get install dnsmasq-base"
command -v ssh-keygen >/dev/null || need "ssh-keygen is missing: apt-get install openssh-client"
# Only the virtualenvs here: the Debian packages the tests need are make test's (scripts/bootstrap.sh).
HISTO_NO_APT=1 deploy_venv || need "the virtualenvs could not be installed: see the lines above"
bash vagrant/build-box.sh >&2
bash vagrant/network.sh up
install -d -m 700 .histo/vagrant
