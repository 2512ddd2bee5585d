# shellcheck shell=bash
# Helpers for the Vagrant lab's provisioning scripts (lb.sh, core.sh); sourced, not run.
#
# Vagrant uploads a provisioning script to /tmp and runs it as root there, so the
# scripts cannot find the repository from their own path: they get it as $REPO
# (the synced folder, /vagrant) and write every repo file as "$REPO/...". The CI
# test tests/packaging/test_vagrantfile.py relies on that spelling to check that every
# file referenced this way exists.

say() { echo "== provision ${LAB_NODE:-?}: $*"; }

die() {
  echo "provision ${LAB_NODE:-?}: $*" >&2
  exit 1
}

# Words of a list file (scripts/provision/*.packages), without `#` comments.
read_list() {
  [[ -r $1 ]] || die "$1: not readable"
  awk '{ sub(/#.*/, ""); for (i = 1; i <= NF; i++) print $i }' "$1"
}

# Install the Debian packages that are missing. Unlike scripts/deps on a test host,
# a VM wants the packaged services (haproxy, gobgpd, docker) to start normally.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The name of the interface with this MAC address. Vagrant gives each lab NIC a
# fixed MAC (see the Vagrantfile), which is how the scripts tell the rack LAN from
# the edge LAN and from Vagrant's own NAT interface, whatever the box names them.
iface_by_mac() {
  local want=${1,,} dev
  for dev in /sys/class/net/*; do
    if [[ $(<"$dev/address") == "$want" ]]; then
      echo "${dev##*/}"
      return 0
    fi
  done
  die "no interface with MAC $1 (is the VM's NIC configured as in the Vagrantfile?)"
}

# boot_script NAME DESCRIPTION: install the commands on stdin as /usr/local/sbin/NAME
# and run them now and at every boot, from a oneshot unit ordered before the
# services that need the lab's addresses (gobgpd binds its local-address-list at
# start, HAProxy binds the VIPs, Docker attaches macvlans to the LAN interfaces).
# The commands must be idempotent (`ip addr replace`, `ip route replace`).
boot_script() {
  local name=$1 description=$2
  {
    echo '#!/bin/bash'
    echo "# $description. Written by the Vagrant lab's provisioning; re-provision to change."
    echo 'set -euo pipefail'
    cat
  } >"/usr/local/sbin/$name"
  chmod 0755 "/usr/local/sbin/$name"
  cat >"/etc/systemd/system/$name.service" <<EOF
[Unit]
Description=$description
After=networking.service systemd-udev-settle.service
Before=network-online.target haproxy.service gobgpd.service docker.service
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/$name

[Install]
WantedBy=multi-user.target
EOF
  systemctl daemon-reload
  systemctl enable --quiet "$name.service"
  systemctl restart "$name.service"
}

# simple_service [--user USER] NAME DESCRIPTION COMMAND...: a small long-running lab
# service (a backend, the DataPlaneAPI emulator) as a unit of its own, unprivileged (a
# dynamic user, or USER), restarted when it dies, (re)started now.
simple_service() {
  local user="DynamicUser=yes"
  if [[ $1 == --user ]]; then
    user="User=$2"
    shift 2
  fi
  local name=$1 description=$2
  shift 2
  cat >"/etc/systemd/system/$name.service" <<EOF
[Unit]
Description=$description
After=announcer-lab-net.service

[Service]
ExecStart=$*
$user
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
EOF
  systemctl daemon-reload
  systemctl enable --quiet "$name.service"
  systemctl restart "$name.service"
}
