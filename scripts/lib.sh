# shellcheck shell=bash
# Helpers sourced by the scripts (`. "$(dirname "$0")/lib.sh"`, from the repository root):
#   apt_install WHO PACKAGE...   installs those of the Debian packages that are missing
#                                (HISTO_NO_APT=1: only says what is missing, installs nothing)
#   deploy_venv                  the project's .venv (scripts/bootstrap.sh) and .venv-deploy with the
#                                pinned deployment tools of requirements-deploy.lock (Ansible, Molecule,
#                                ansible-lint, yamllint), reinstalled only when the lock file changes
#   vagrant_insecure_key private|public   the path of Vagrant's insecure key (the box, Molecule's SSH)
#   as_root COMMAND...           runs COMMAND as root (through sudo when not root already)
#   host_lxc_lock WHO            waits for, then holds until exit, the host's LXC lock: make up/down,
#                                Molecule and the cluster stage share lxcbr0, the histo bridges and the
#                                containers, so two checkouts (CI beside an operator) take turns

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local who=$1 p
  shift
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" -gt 0 ] || return 0
  if [ "${HISTO_NO_APT:-0}" = 1 ]; then
    echo "$who: missing Debian packages (not installed, HISTO_NO_APT=1): ${missing[*]}" >&2
    return 0
  fi
  echo "$who: installing Debian packages: ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

DEPLOY_VENV=.venv-deploy

deploy_venv() {
  bash scripts/bootstrap.sh >&2
  local stamp
  stamp="$DEPLOY_VENV/.lock-$(sha256sum requirements-deploy.lock | cut -c1-16)"
  [ ! -f "$stamp" ] || return 0
  echo "deploy: installing requirements-deploy.lock into $DEPLOY_VENV" >&2
  [ -x "$DEPLOY_VENV/bin/python" ] || python3 -m venv "$DEPLOY_VENV"
  "$DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check -r requirements-deploy.lock
  rm -f "$DEPLOY_VENV"/.lock-*
  touch "$stamp"
}

vagrant_insecure_key() {  # private|public: Vagrant's insecure key pair as Debian's vagrant package ships it
  local suffix=""
  [ "$1" = private ] || suffix=.pub
  local keys=(/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant"$suffix")
  [ -f "${keys[0]}" ] || { echo "no Vagrant insecure key (Debian package vagrant)" >&2; return 1; }
  echo "${keys[0]}"
}

HISTO_LXC_LOCK=${HISTO_LXC_LOCK:-/run/lock/histo-lxc.lock}

host_lxc_lock() {
  # Held by a parent (the cluster stage runs up.sh and down.sh): the child inherits it.
  [ "${HISTO_LXC_LOCK_HELD:-0}" = 1 ] && return 0
  exec 9>>"$HISTO_LXC_LOCK"
  if ! flock -n 9; then
    echo "$1: waiting for another run that uses the host's LXC ($HISTO_LXC_LOCK)" >&2
    flock 9
  fi
  export HISTO_LXC_LOCK_HELD=1
}
