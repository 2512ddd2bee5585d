#!/usr/bin/env bash
# Provisions the Vagrant lab's core VM on Debian bookworm, as root: the core routers
# r1 and r2 with the netns lab's own FRR configs, and a `client` network namespace on
# the edge LAN. The routers are either (CORE_ROUTERS)
#   debian  Debian's frr (8.4 in bookworm, the netns lab's FRR), zebra and bgpd of each
#           router in a network namespace of its own, run by the template units
#           announcer-lab-zebra@rN and announcer-lab-bgpd@rN; or
#   docker  FRR containers of the pinned upstream image (FRR_IMAGE, from quay.io).
# Idempotent: `vagrant provision core` restarts the routers with the current configs.
#
# How the routers get the rack and edge addresses: a macvlan on each of the VM's rack
# and edge NICs per router (Docker macvlan networks, or macvlans moved into the
# router's namespace). Each router has its own MAC and address directly on the LAN, as
# a router on a real rack would, so r1 is 198.51.100.1 on the same L2 segment as lb1
# and lb2, and both routers reach both LBs on-link (which the LBs' single v4 + v6 next
# hop needs, see tests/integration/lab.py). The VM itself has no address on either
# LAN: a macvlan parent cannot talk to its children anyway. Frames for the routers'
# MACs reach the VM only if its NICs accept them: the Vagrantfile sets VirtualBox's
# promiscuous mode "allow-all" on these two NICs (a libvirt bridge forwards them).
#
# Environment (set by the Vagrantfile):
#   REPO                       the synced repository (/vagrant)
#   CORE_ROUTERS               debian or docker (above)
#   RACK_MAC EDGE_MAC          MACs of the rack and edge NICs
#   RACK_NET_V4 RACK_NET_V6    the rack LAN prefixes
#   EDGE_NET_V4 EDGE_NET_V6    the edge (client) LAN prefixes
#   DOCKER_GW                  per prefix above, in that order, an unused address
#                              Docker may call the gateway (it insists on one and
#                              would otherwise take .1, which is r1's; docker only)
#   CLIENT_V4 CLIENT_V6        the client's edge addresses with prefix length
#   VIP_NET_V4 VIP_NET_V6      the VIP ranges, routed by the client via r1 and r2
#   FRR_IMAGE                  the pinned upstream FRR image (docker only)
# Arguments: one per router, NAME,CONFIG,RACK_V4,RACK_V6,EDGE_V4,EDGE_V6 with CONFIG
# relative to $REPO, e.g. r1,tests/integration/frr/r1.conf,198.51.100.1,...
set -euo pipefail
: "${REPO:?}" "${CORE_ROUTERS:?}" "${RACK_MAC:?}" "${EDGE_MAC:?}" "${FRR_IMAGE:?}" "${DOCKER_GW:?}"
: "${RACK_NET_V4:?}" "${RACK_NET_V6:?}" "${EDGE_NET_V4:?}" "${EDGE_NET_V6:?}"
: "${CLIENT_V4:?}" "${CLIENT_V6:?}" "${VIP_NET_V4:?}" "${VIP_NET_V6:?}"
LAB_NODE=core
# shellcheck source=scripts/provision/lib.sh
source "$REPO/scripts/provision/lib.sh"
(($#)) || die "no routers given"

case $CORE_ROUTERS in
  debian) apt_install frr iproute2 curl ;;
  docker) apt_install docker.io iproute2 curl ;;
  *) die "CORE_ROUTERS=$CORE_ROUTERS: debian or docker" ;;
esac
rack=$(iface_by_mac "$RACK_MAC")
edge=$(iface_by_mac "$EDGE_MAC")
read -r rack_gw4 rack_gw6 edge_gw4 edge_gw6 <<<"$DOCKER_GW"
say "rack LAN on $rack, edge LAN on $edge"

# ------------------------------------------------------------------ links, client
# Before Docker starts (the macvlan parents must be up) and at every boot: the
# namespace and its macvlan do not survive a reboot, the containers do.
routers=() edge4=() edge6=()
for spec in "$@"; do
  IFS=, read -r name _ _ _ e4 e6 <<<"$spec"
  routers+=("$name")
  edge4+=(nexthop via "$e4")
  edge6+=(nexthop via "$e6")
done
{
  echo "ip link set $rack up"
  echo "ip link set $edge up"
  echo "sysctl -qw net.ipv6.conf.$rack.accept_ra=0 net.ipv6.conf.$edge.accept_ra=0"
  if [[ $CORE_ROUTERS == debian ]]; then
    # Each router's namespace: a macvlan on each LAN, its addresses, the sysctls
    # tests/integration/lab.py sets (forwarding, no rp_filter, L4 ECMP hash, no DAD).
    for spec in "$@"; do
      IFS=, read -r name _ r4 r6 e4 e6 <<<"$spec"
      echo "[[ -e /run/netns/$name ]] || ip netns add $name"
      echo "ip netns exec $name sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \\"
      echo "  net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \\"
      echo "  net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1 \\"
      echo "  net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
      echo "ip -n $name link set lo up"
      for lan in "rack|$rack|$r4/${RACK_NET_V4#*/}|$r6/${RACK_NET_V6#*/}" \
        "edge|$edge|$e4/${EDGE_NET_V4#*/}|$e6/${EDGE_NET_V6#*/}"; do
        IFS='|' read -r dev parent v4 v6 <<<"$lan"
        echo "if ! ip -n $name link show $dev >/dev/null 2>&1; then"
        echo "  ip link add $name-$dev link $parent type macvlan mode bridge"
        echo "  ip link set $name-$dev netns $name name $dev"
        echo "fi"
        echo "ip -n $name link set $dev up"
        echo "ip -n $name addr replace $v4 dev $dev"
        echo "ip -n $name -6 addr replace $v6 dev $dev nodad"
      done
    done
  fi
  echo "[[ -e /run/netns/client ]] || ip netns add client"
  echo "if ! ip -n client link show client0 >/dev/null 2>&1; then"
  echo "  ip link add client0 link $edge type macvlan mode bridge"
  echo "  ip link set client0 netns client"
  echo "fi"
  echo "ip netns exec client sysctl -qw net.ipv6.conf.all.accept_dad=0 \\"
  echo "  net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1"
  echo "ip -n client link set lo up"
  echo "ip -n client link set client0 up"
  echo "ip -n client addr replace $CLIENT_V4 dev client0"
  echo "ip -n client -6 addr replace $CLIENT_V6 dev client0 nodad"
  # Like the netns lab's client: the VIPs over both routers, hashed per connection.
  echo "ip -n client route replace $VIP_NET_V4 ${edge4[*]}"
  echo "ip -n client -6 route replace $VIP_NET_V6 ${edge6[*]}"
} | boot_script announcer-lab-net "Announcer lab: LAN links and the client namespace on core"

# ------------------------------------------------------------------ routers: Debian's FRR
# zebra and bgpd of router rN run in namespace rN (made by announcer-lab-net above) from
# template units, with their sockets and PID files under /run/announcer-lab-frr/rN (not
# /run/frr, which Debian's own frr.service uses), as tests/integration/lab.py runs them:
# bgpd reads the integrated config itself, zebra needs nothing from it (the namespace's
# sysctls do what its `ip forwarding` lines would). `lab-vtysh rN ...` is vtysh for rN.
debian_routers() {
  local spec name config daemon config_file after
  # Debian's frr.service would run a third FRR in the VM's own namespace.
  systemctl disable --quiet --now frr.service 2>/dev/null || true
  install -d -m 0755 /etc/announcer-lab/frr
  : >/etc/announcer-lab/frr/empty.conf
  for spec in "$@"; do
    IFS=, read -r name config _ <<<"$spec"
    [[ -r $REPO/$config ]] || die "$name: $REPO/$config not readable"
    install -d -m 0755 "/etc/announcer-lab/frr/$name"
    install -m 0640 -o frr -g frr "$REPO/$config" "/etc/announcer-lab/frr/$name/frr.conf"
  done
  for daemon in zebra bgpd; do
    config_file=/etc/announcer-lab/frr/empty.conf
    after=announcer-lab-net.service
    if [[ $daemon == bgpd ]]; then
      config_file=/etc/announcer-lab/frr/%i/frr.conf
      after=announcer-lab-zebra@%i.service
    fi
    cat >"/etc/systemd/system/announcer-lab-$daemon@.service" <<EOF
[Unit]
Description=Announcer lab: $daemon of router %i (Debian's FRR, network namespace %i)
After=$after
BindsTo=$after

[Service]
ExecStartPre=/usr/bin/install -d -o frr -g frr -m 0755 /run/announcer-lab-frr/%i
ExecStart=/usr/bin/ip netns exec %i /usr/lib/frr/$daemon --vty_socket /run/announcer-lab-frr/%i \\
  -z /run/announcer-lab-frr/%i/zserv.api -i /run/announcer-lab-frr/%i/$daemon.pid -P 0 \\
  -f $config_file --log stdout --log-level info
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
  done
  cat >/usr/local/bin/lab-vtysh <<'EOF'
#!/bin/sh
# vtysh of one of the announcer lab's routers: lab-vtysh r1 -c 'show ip bgp'
router=${1:?usage: lab-vtysh r1|r2 [vtysh arguments]}
shift
exec vtysh --vty_socket "/run/announcer-lab-frr/$router" "$@"
EOF
  chmod 0755 /usr/local/bin/lab-vtysh
  systemctl daemon-reload
  for name in "${routers[@]}"; do
    systemctl enable --quiet "announcer-lab-zebra@$name" "announcer-lab-bgpd@$name"
    systemctl restart "announcer-lab-zebra@$name" "announcer-lab-bgpd@$name"
  done
  # Ready when bgpd has read the config (the same test as lab.py's).
  for name in "${routers[@]}"; do
    for _ in $(seq 60); do
      lab-vtysh "$name" -c 'show running-config' 2>/dev/null | grep -q '^router bgp ' && break
      sleep 1
    done
    lab-vtysh "$name" -c 'show running-config' | grep -q '^router bgp ' ||
      die "$name: bgpd has no config after 60 s: $(journalctl -u "announcer-lab-bgpd@$name" -n 30 --no-pager)"
    lab-vtysh "$name" -c 'show bgp summary'
  done
  say "done. The LBs' sessions come up as lb1 and lb2 are provisioned:"
  say "  lab-vtysh r1 -c 'show ip bgp'; ip netns exec client curl -s http://192.0.2.10/"
}

# ------------------------------------------------------------------ routers: FRR_IMAGE
docker_routers() {
  local spec name config r4 r6 e4 e6
  systemctl enable --quiet --now docker
  say "pulling $FRR_IMAGE"
  docker pull -q "$FRR_IMAGE" >/dev/null

  # What the upstream image lacks: its daemons file enables no routing daemon, and
  # vtysh wants a vtysh.conf. frr.conf is the netns lab's file itself, mounted
  # read-only (FRR applies it with `vtysh -b` once the daemons are up).
  mkdir -p /etc/announcer-lab/frr
  cat >/etc/announcer-lab/frr/daemons <<'EOF'
# FRR daemons of the announcer lab's routers (zebra and watchfrr always run).
bgpd=yes
vtysh_enable=yes
zebra_options="  -A 127.0.0.1 -s 90000000"
bgpd_options="   -A 127.0.0.1"
EOF
  echo "service integrated-vtysh-config" >/etc/announcer-lab/frr/vtysh.conf

  # Recreated from scratch on every provisioning: a network cannot be removed while a
  # container is attached, and a container keeps the config it was created with.
  for name in "${routers[@]}"; do docker rm -f "$name" >/dev/null 2>&1 || true; done
  for net in announcer-rack announcer-edge; do docker network rm "$net" >/dev/null 2>&1 || true; done
  docker network create -d macvlan -o parent="$rack" -o macvlan_mode=bridge --ipv6 \
    --subnet "$RACK_NET_V4" --gateway "$rack_gw4" --subnet "$RACK_NET_V6" --gateway "$rack_gw6" \
    announcer-rack >/dev/null
  docker network create -d macvlan -o parent="$edge" -o macvlan_mode=bridge --ipv6 \
    --subnet "$EDGE_NET_V4" --gateway "$edge_gw4" --subnet "$EDGE_NET_V6" --gateway "$edge_gw6" \
    announcer-edge >/dev/null

  for spec in "$@"; do
    IFS=, read -r name config r4 r6 e4 e6 <<<"$spec"
    [[ -r $REPO/$config ]] || die "$name: $REPO/$config not readable"
    say "$name: $r4 $r6 (rack), $e4 $e6 (edge), config $config"
    # --privileged: zebra programs routes and applies `ip forwarding` in the
    # container's own network namespace; the sysctls make the router side explicit,
    # as tests/integration/lab.py sets them (forwarding, no rp_filter, L4 ECMP hash).
    docker create --name "$name" --hostname "$name" --restart unless-stopped --privileged \
      --network announcer-rack --ip "$r4" --ip6 "$r6" \
      --sysctl net.ipv4.ip_forward=1 --sysctl net.ipv6.conf.all.forwarding=1 \
      --sysctl net.ipv4.conf.all.rp_filter=0 --sysctl net.ipv4.conf.default.rp_filter=0 \
      --sysctl net.ipv4.fib_multipath_hash_policy=1 --sysctl net.ipv6.fib_multipath_hash_policy=1 \
      --sysctl net.ipv6.conf.all.accept_dad=0 --sysctl net.ipv6.conf.default.accept_dad=0 \
      -v "$REPO/$config:/etc/frr/frr.conf:ro" \
      -v /etc/announcer-lab/frr/daemons:/etc/frr/daemons:ro \
      -v /etc/announcer-lab/frr/vtysh.conf:/etc/frr/vtysh.conf:ro \
      "$FRR_IMAGE" >/dev/null
    docker network connect --ip "$e4" --ip6 "$e6" announcer-edge "$name"
    docker start "$name" >/dev/null
  done

  # Ready when bgpd has read the config (the same test as lab.py's); a config line FRR
  # rejected shows in the container's log.
  for name in "${routers[@]}"; do
    for _ in $(seq 60); do
      docker exec "$name" vtysh -c 'show running-config' 2>/dev/null | grep -q '^router bgp ' && break
      sleep 1
    done
    docker exec "$name" vtysh -c 'show running-config' | grep -q '^router bgp ' ||
      die "$name: bgpd has no config after 60 s; docker logs $name:$(docker logs --tail 30 "$name" 2>&1)"
    docker exec "$name" vtysh -c 'show bgp summary'
  done
  say "done. The LBs' sessions come up as lb1 and lb2 are provisioned:"
  say "  docker exec r1 vtysh -c 'show ip bgp'; ip netns exec client curl -s http://192.0.2.10/"
}

"${CORE_ROUTERS}_routers" "$@"
