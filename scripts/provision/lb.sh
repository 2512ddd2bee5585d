#!/usr/bin/env bash
# Provisions a Vagrant lab load balancer (lb1, lb2) on Debian bookworm, as root:
# the rack address and the VIPs on `lo`, HAProxy with the netns lab's config and
# its two backends, the DataPlaneAPI emulator in front of that config, gobgpd with
# the LB's config from gobgp/, and announcer installed from this repository.
# The same files as the network-namespace lab (tests/integration/lab.py), so both
# labs show the same thing. Idempotent: `vagrant provision lbN` re-applies it.
#
# Environment (set by the Vagrantfile; repo paths are relative to $REPO):
#   REPO              the synced repository (/vagrant)
#   LAB_NODE          lb1 or lb2
#   RACK_MAC          MAC of the rack LAN NIC
#   RACK_V4 RACK_V6   this LB's rack addresses with prefix length
#   ROUTERS_V4/_V6    the routers' rack addresses (space separated): the way back
#   EDGE_V4 EDGE_V6   the client LAN, reached through both routers
#   GOBGP_CONFIG      gobgpd config, e.g. gobgp/lb1.toml
#   ANNOUNCER_CONFIG  announcer config, e.g. tests/integration/announcer/lb1.yaml
#   ANNOUNCER_DEB     optional: the Debian package to install announcer from (a path,
#                     absolute or relative to $REPO; scripts/build-deb makes it). Unset:
#                     announcer is pip-installed from the checkout into a virtualenv.
set -euo pipefail
: "${REPO:?}" "${LAB_NODE:?}" "${RACK_MAC:?}" "${RACK_V4:?}" "${RACK_V6:?}"
: "${ROUTERS_V4:?}" "${ROUTERS_V6:?}" "${EDGE_V4:?}" "${EDGE_V6:?}"
: "${GOBGP_CONFIG:?}" "${ANNOUNCER_CONFIG:?}"
# shellcheck source=scripts/provision/lib.sh
source "$REPO/scripts/provision/lib.sh"

haproxy_cfg=$REPO/tests/integration/haproxy/lb.cfg
# From the Debian package: its unit (/usr/bin/announcer), its gobgpd drop-in and its
# sysusers.d file. From the checkout: the same three files from systemd/, plus the
# drop-in that runs the unit from the virtualenv below.
deb=${ANNOUNCER_DEB:-}
[[ -z $deb || $deb == /* ]] || deb=$REPO/$deb
announcer_unit=$REPO/systemd/announcer.service
backstop_unit=$REPO/systemd/announcer-peers-down.service # announcer.service's OnFailure=
venv_dropin=$REPO/systemd/announcer.service.d/venv.conf
gobgpd_dropin=$REPO/systemd/gobgpd.service.d/announcer.conf
sysusers=$REPO/systemd/sysusers.d/announcer.conf # the group of gobgpd's API socket
gobgp_api=unix:///run/gobgpd/api.sock # where the drop-in puts gobgpd's API
venv=/opt/announcer/venv # where $venv_dropin runs it from

[[ -r $haproxy_cfg ]] || die "$haproxy_cfg: not readable"
list=$(read_list "$REPO/scripts/provision/lb.packages")
mapfile -t packages <<<"$list"
apt_install "${packages[@]}"

# ------------------------------------------------------------------ addresses
# The VIPs are the literal addresses HAProxy binds in lb.cfg (the one list of
# them); 192.0.2.200 too, which announcer must never announce.
mapfile -t vips < <(sed -nE \
  's/^[[:space:]]*bind[[:space:]]+\[?([0-9A-Fa-f.:]*[0-9A-Fa-f])\]?:[0-9]+([[:space:]].*)?$/\1/p' \
  "$haproxy_cfg" | sort -u)
((${#vips[@]})) || die "$haproxy_cfg: no VIP binds found"
rack=$(iface_by_mac "$RACK_MAC")
say "rack LAN on $rack: $RACK_V4 $RACK_V6; VIPs on lo: ${vips[*]}"

# Like the netns lab: no DAD (gobgpd binds its local-address-list at once), no
# reverse-path filter (client -> r1 -> lb1 -> r2 -> client is normal with ECMP),
# and the way back to the clients over both routers.
v4_hops=() v6_hops=()
for r in $ROUTERS_V4; do v4_hops+=(nexthop via "$r"); done
for r in $ROUTERS_V6; do v6_hops+=(nexthop via "$r"); done
{
  echo "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.$rack.rp_filter=0"
  echo "sysctl -qw net.ipv6.conf.$rack.accept_dad=0 net.ipv6.conf.$rack.accept_ra=0"
  echo "ip link set $rack up"
  echo "ip addr replace $RACK_V4 dev $rack"
  echo "ip -6 addr replace $RACK_V6 dev $rack nodad"
  echo "ip route replace $EDGE_V4 ${v4_hops[*]}"
  echo "ip -6 route replace $EDGE_V6 ${v6_hops[*]}"
  for vip in "${vips[@]}"; do
    if [[ $vip == *:* ]]; then
      echo "ip -6 addr replace $vip/128 dev lo"
    else
      echo "ip addr replace $vip/32 dev lo"
    fi
  done
} | boot_script announcer-lab-net "Announcer lab: rack address, routes and VIPs of $LAB_NODE"

# ------------------------------------------------------------------ HAProxy
# Each backend of lb.cfg is one small HTTP server on the loopback port its
# `server` line names, answering "<lb> <backend>" like the netns lab's.
while read -r backend port; do
  name=${backend#be_}
  mkdir -p "/srv/announcer-lab/$name"
  echo "$LAB_NODE $name" >"/srv/announcer-lab/$name/index.html"
  simple_service "announcer-lab-backend-$name" "Announcer lab: backend $backend" \
    /usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "/srv/announcer-lab/$name" "$port"
done < <(awk '$1 == "backend" { be = $2 } $1 == "server" { n = split($3, a, ":"); print be, a[n] }' \
  "$haproxy_cfg")

sed -e "/^[[:space:]]*#/!{s|@LB@|$LAB_NODE|g; s|@RUNDIR@|/run|g}" "$haproxy_cfg" \
  >/etc/haproxy/haproxy.cfg.new
haproxy -c -q -f /etc/haproxy/haproxy.cfg.new
mv /etc/haproxy/haproxy.cfg.new /etc/haproxy/haproxy.cfg
systemctl enable --quiet haproxy
systemctl reload-or-restart haproxy

# ------------------------------------------------------------------ DataPlaneAPI
# The emulator stands in for DataPlaneAPI here as in the netns lab: it serves the
# installed haproxy.cfg over DataPlaneAPI's v3 API (users: lb.cfg's userlist). As user
# haproxy, like a packaged DataPlaneAPI: announcer sends its password only to a server
# socket owned by one of dataplaneapi.server_users (root and haproxy by default).
install -D -m 0755 "$REPO/tests/support/dpapi_emulator.py" \
  /usr/local/libexec/announcer-lab/dpapi_emulator.py
simple_service --user haproxy announcer-lab-dpapi "Announcer lab: DataPlaneAPI emulator" \
  /usr/bin/python3 /usr/local/libexec/announcer-lab/dpapi_emulator.py \
  --config /etc/haproxy/haproxy.cfg --api-version 3 --listen 127.0.0.1:5555

# ------------------------------------------------------------------ announcer
# First, because the package brings what gobgpd's unit needs below: the drop-in that
# moves gobgpd's API to /run/gobgpd/api.sock and the group announcer-gobgp that may
# reach it (the package's postinst runs systemd-sysusers; without the group systemd
# would give gobgpd a dynamic group of that name that announcer cannot use).
systemctl stop announcer.service 2>/dev/null || true
systemctl reset-failed announcer.service 2>/dev/null || true
if [[ -n $deb ]]; then
  [[ -r $deb ]] || die "$deb: not readable"
  say "installing announcer from $deb"
  # Its dependencies are lb.packages (installed above), so this needs no network. A
  # copy: apt's sandbox user must be able to read the file, which a synced folder or
  # a read-only bind mount may not allow.
  cp "$deb" /tmp/announcer.deb
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    /tmp/announcer.deb >/dev/null
  rm -f /tmp/announcer.deb
  # What an earlier provisioning from the checkout left would override the package.
  rm -rf /etc/systemd/system/announcer.service /etc/systemd/system/announcer.service.d/venv.conf \
    /etc/systemd/system/announcer-peers-down.service /etc/systemd/system/announcer-peers-down.service.d \
    /etc/systemd/system/gobgpd.service.d/announcer.conf /usr/local/bin/announcer "$venv"
  announcer=/usr/bin/announcer
else
  # Built from a copy of the checkout, offline: its dependencies are Debian's
  # (lb.packages; --system-site-packages), pip only builds the package. The copy
  # keeps build/ and egg-info out of the synced folder.
  say "installing announcer into $venv"
  [[ -r $gobgpd_dropin && -r $sysusers ]] || die "$gobgpd_dropin or $sysusers: not readable"
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  cp -a "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/announcer" "$src/"
  [[ -x $venv/bin/python ]] || python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --force-reinstall "$src"
  ln -sf "$venv/bin/announcer" /usr/local/bin/announcer
  install -D -m 0644 "$sysusers" /etc/sysusers.d/announcer.conf
  systemd-sysusers /etc/sysusers.d/announcer.conf
  install -D -m 0644 "$gobgpd_dropin" /etc/systemd/system/gobgpd.service.d/announcer.conf
  install -m 0644 "$announcer_unit" /etc/systemd/system/announcer.service
  install -D -m 0644 "$venv_dropin" /etc/systemd/system/announcer.service.d/venv.conf
  install -m 0644 "$backstop_unit" /etc/systemd/system/announcer-peers-down.service
  install -D -m 0644 "$REPO/systemd/announcer-peers-down.service.d/venv.conf" \
    /etc/systemd/system/announcer-peers-down.service.d/venv.conf
  announcer=$venv/bin/announcer
fi

# ------------------------------------------------------------------ gobgpd
# Debian's gobgpd.service reads /etc/gobgpd.conf; by default its API listens on every
# address (and has no authentication) and pprof is on. The drop-in installed above
# serves the API on /run/gobgpd/api.sock only (root and announcer-gobgp), pprof off.
getent group announcer-gobgp >/dev/null || die "group announcer-gobgp missing (sysusers.d)"
install -m 0644 "$REPO/$GOBGP_CONFIG" /etc/gobgpd.conf
mkdir -p /etc/systemd/system/gobgpd.service.d
printf '[Unit]\nAfter=announcer-lab-net.service\n' \
  >/etc/systemd/system/gobgpd.service.d/announcer-lab.conf
systemctl daemon-reload
systemctl enable --quiet gobgpd
systemctl restart gobgpd

# ------------------------------------------------------------------ announcer's config
# The password reaches announcer only as the unit's credential (LoadCredential= from
# the root-only file below): the config shared with the netns lab names an
# environment variable, which here becomes the credential's name. The emulator's
# users are lb.cfg's userlist, so that is where the password is.
password=$(awk '$1 == "user" && $3 == "insecure-password" { print $4; exit }' "$haproxy_cfg")
[[ -n $password ]] || die "$haproxy_cfg: no insecure-password user for the emulator"
install -d -m 0755 /etc/announcer
(umask 077 && printf '%s\n' "$password" >/etc/announcer/dataplaneapi.password)
config=/etc/announcer/announcer.yaml
sed -E 's/^([[:space:]]*)password_env:[[:space:]]*ANNOUNCER_DPAPI_PASSWORD[[:space:]]*$/\1password_file: dataplaneapi-password   # announcer.service: LoadCredential=/' \
  "$REPO/$ANNOUNCER_CONFIG" >"$config.new"
grep -q '^[[:space:]]*password_file: dataplaneapi-password' "$config.new" ||
  die "$ANNOUNCER_CONFIG: no 'password_env: ANNOUNCER_DPAPI_PASSWORD' to turn into the credential"
chmod 0644 "$config.new"
mv "$config.new" "$config"
# Checked the way the service reads it: as a dynamic user, with the credential.
systemd-run --quiet --pipe --wait --collect -p DynamicUser=yes \
  -p LoadCredential=dataplaneapi-password:/etc/announcer/dataplaneapi.password \
  "$announcer" check-config -c "$config"

mkdir -p /etc/systemd/system/announcer.service.d
printf '[Unit]\nAfter=announcer-lab-dpapi.service\n' \
  >/etc/systemd/system/announcer.service.d/announcer-lab.conf
systemctl daemon-reload
systemctl enable --quiet announcer.service
systemctl start announcer.service

# ------------------------------------------------------------------ done
say "waiting for the BGP sessions to r1 and r2 (the core VM's routers dial in)"
for _ in $(seq 60); do
  established=$(gobgp --target "$gobgp_api" neighbor 2>/dev/null | grep -c Establ || true)
  ((established >= 4)) && break
  sleep 1
done
gobgp --target "$gobgp_api" neighbor || true
gobgp --target "$gobgp_api" global rib -a ipv4 || true
gobgp --target "$gobgp_api" global rib -a ipv6 || true
say "done. On the core VM: lab-vtysh r1 -c 'show ip bgp' (docker exec r1 vtysh ... with Docker routers)"
