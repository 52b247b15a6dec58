#!/usr/bin/env bash
# Install the Debian packages the tests use when they are missing: smbd/smbclient for the Samba
# end-to-end tests, systemd-analyze for the unit checks. Sourced by .ci/run and scripts/test.
# Needs root or passwordless sudo and apt-get; otherwise it only reports what is missing.
export PATH="$PATH:/usr/sbin:/sbin"
missing_system_packages() {
  local need=()
  command -v smbd >/dev/null 2>&1 || need+=(samba)
  command -v smbclient >/dev/null 2>&1 || need+=(smbclient)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  echo "${need[@]}"
}
install_system_packages() {
  local need
  need=$(missing_system_packages)
  [ -z "$need" ] && return 0
  local sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then sudo_cmd="sudo"; else
      echo "missing Debian packages: $need (run as root or install them)" >&2
      return 1
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "missing packages: $need (no apt-get)" >&2; return 1; }
  echo "Installing Debian packages: $need" >&2
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq --no-install-recommends $need >/dev/null
}
