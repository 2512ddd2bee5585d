"""The GoBGP codecs without a daemon: encoding, the decoding edge cases, 3.x and 4.x alike."""

from __future__ import annotations

import inspect
import ipaddress
from typing import Any

import pytest

from announcer import gobgp, gobgp_codec, gobgp_paths, gobgp_rpc, gobgp_versions
from announcer._proto import gobgp_v3_pb2, gobgp_v4_pb2
from announcer.gobgp_codec import UNREPRESENTABLE_PREPEND, Codec
from announcer.gobgp_versions import CODECS, V3, V4, _pack
from announcer.model import Community, LargeCommunity, Origin, Route, SessionState, host_prefix

ASN = 65001
net = ipaddress.ip_network
ip = ipaddress.ip_address


@pytest.fixture(params=sorted(CODECS), ids=lambda v: f"v{v}")
def codec(request: pytest.FixtureRequest) -> Codec:
    return CODECS[request.param]


def v6_path(
    codec: Codec, *extra: tuple[str, Any], next_hops: tuple[str, ...] = ("2001:db8::1",)
) -> Any:
    """A v6 host path in `codec`'s format, with extra (kind, attribute message) pairs."""
    pb = codec.pb
    nlri = codec._nlri(net("2001:db8::5/128"))
    reach = pb.MpReachNLRIAttribute(
        family=pb.Family(afi=pb.Family.AFI_IP6, safi=pb.Family.SAFI_UNICAST),
        next_hops=list(next_hops),
        nlris=[nlri],
    )
    attrs = [
        codec._wrap_attr("origin", pb.OriginAttribute(origin=0)),
        codec._wrap_attr("mp_reach", reach),
        *(codec._wrap_attr(kind, message) for kind, message in extra),
    ]
    return pb.Path(nlri=nlri, pattrs=attrs)


@pytest.mark.parametrize(
    "route",
    [
        Route(net("192.0.2.1/32")),
        Route(net("192.0.2.1/32"), next_hop=ip("192.0.2.9"), origin=Origin.INCOMPLETE, med=0),
        Route(
            net("2001:db8::1/128"),
            next_hop=ip("2001:db8::2"),
            local_pref=7,
            communities=(Community(1, 2), Community(65535, 65535)),
            large_communities=(LargeCommunity(2**32 - 1, 0, 1),),
            as_path_prepend=10,
        ),
    ],
)
def test_encode_decode_round_trip(codec: Codec, route: Route) -> None:
    path = codec.announce_path(route, ASN)
    # Through the wire format, as gobgpd would hand it back.
    wire = type(path).FromString(path.SerializeToString())
    assert codec.decode_route(wire, ASN) == route


def unrepresentable_extras(codec: Codec) -> list[tuple[str, Any]]:
    pb = codec.pb
    seq = codec.as_sequence
    as_set = pb.AsSegment.Type.Value("AS_SET" if codec.version == 3 else "TYPE_AS_SET")
    return [
        ("communities", pb.CommunitiesAttribute()),  # present but empty
        ("large_communities", pb.LargeCommunitiesAttribute()),
        ("as_path", pb.AsPathAttribute(segments=[pb.AsSegment(type=seq, numbers=[ASN, 65123])])),
        ("as_path", pb.AsPathAttribute(segments=[pb.AsSegment(type=as_set, numbers=[ASN])])),
        ("as_path", pb.AsPathAttribute(segments=[pb.AsSegment(type=seq, numbers=[ASN] * 11)])),
    ]


@pytest.mark.parametrize("case", range(5))
def test_unrepresentable_never_equals_a_valid_route(codec: Codec, case: int) -> None:
    route = codec.decode_route(v6_path(codec, unrepresentable_extras(codec)[case]), ASN)
    assert route is not None and route.as_path_prepend == UNREPRESENTABLE_PREPEND


@pytest.mark.parametrize("next_hops", [("2001:db8::1", "fe80::1"), ("not-an-address",)])
def test_unrepresentable_next_hops(codec: Codec, next_hops: tuple[str, ...]) -> None:
    route = codec.decode_route(v6_path(codec, next_hops=next_hops), ASN)
    assert route is not None and route.as_path_prepend == UNREPRESENTABLE_PREPEND


def test_unknown_origin_is_unrepresentable(codec: Codec) -> None:
    path = v6_path(codec)
    path.pattrs[0].CopyFrom(codec._wrap_attr("origin", codec.pb.OriginAttribute(origin=7)))
    route = codec.decode_route(path, ASN)
    assert route is not None and route.as_path_prepend == UNREPRESENTABLE_PREPEND


def test_v3_attribute_of_an_unmodelled_type_is_unrepresentable() -> None:
    path = v6_path(V3)
    path.pattrs.append(_pack(gobgp_v3_pb2.IPAddressPrefix(prefix="192.0.2.1", prefix_len=32)))
    route = V3.decode_route(path, ASN)
    assert route is not None and route.as_path_prepend == UNREPRESENTABLE_PREPEND


def test_v4_attribute_missing_from_our_oneof_is_unrepresentable() -> None:
    # Attribute field 8 (AGGREGATOR upstream) is not in protos/gobgp_v4.proto: it
    # arrives as an unknown field and the oneof reads as unset.
    aggregator = gobgp_v4_pb2.Attribute.FromString(bytes([8 << 3 | 2, 0]))
    assert aggregator.WhichOneof("attr") is None
    path = v6_path(V4)
    path.pattrs.append(aggregator)
    route = V4.decode_route(path, ASN)
    assert route is not None and route.as_path_prepend == UNREPRESENTABLE_PREPEND


def test_non_host_and_non_unicast_paths_are_skipped(codec: Codec) -> None:
    wide = codec.pb.Path(nlri=codec._nlri(net("192.0.2.0/24")))
    assert codec.decode_route(wide, ASN) is None


def test_non_unicast_nlri_is_skipped() -> None:
    assert (
        V3.decode_route(gobgp_v3_pb2.Path(nlri=_pack(gobgp_v3_pb2.OriginAttribute())), ASN) is None
    )
    # NLRI field 2 (a labeled prefix upstream) is not in our oneof.
    labeled = gobgp_v4_pb2.NLRI.FromString(bytes([2 << 3 | 2, 0]))
    assert V4.decode_route(gobgp_v4_pb2.Path(nlri=labeled), ASN) is None


def test_learned_paths_are_not_ours(codec: Codec) -> None:
    Path = codec.pb.Path
    assert codec.is_ours_to_manage(Path(neighbor_ip="<nil>", source_id="<nil>"))  # 3.10
    assert codec.is_ours_to_manage(Path())  # 4.8: empty neighbor_ip and source_id
    assert not codec.is_ours_to_manage(Path(neighbor_ip="127.0.0.1", source_asn=65002))
    assert not codec.is_ours_to_manage(Path(neighbor_ip="2001:db8::1", source_asn=65002))
    assert not codec.is_ours_to_manage(Path(neighbor_ip="<nil>", identifier=5))
    assert not codec.is_ours_to_manage(Path(neighbor_ip="<nil>", is_from_external=True))


def test_withdraw_path_carries_only_nlri_family_and_flag(codec: Codec) -> None:
    path = codec.withdraw_path(net("2001:db8::7/128"))
    assert {f.name for f, _ in path.ListFields()} == {"nlri", "family", "is_withdraw"}
    assert path.family.afi == codec.pb.Family.AFI_IP6 and path.is_withdraw


def test_requests_name_the_global_table_explicitly() -> None:
    # GLOBAL moved from 0 (3.x) to 1 (4.x); 4.x refuses UNSPECIFIED in AddPathStream.
    assert V3.add_path_stream_request([]).table_type == 0
    assert V4.add_path_stream_request([]).table_type == 1
    assert V4.list_path_request(6).table_type == 1
    assert V4.list_path_request(6).family.afi == gobgp_v4_pb2.Family.AFI_IP6


def test_peer_status_reads_each_versions_enums(codec: Codec) -> None:
    pb = codec.pb
    assert codec.session_states[6] is SessionState.ESTABLISHED  # 6 in both versions
    prefix = {3: "", 4: "SESSION_STATE_"}[codec.version]
    idle = pb.PeerState.SessionState.Value(prefix + "IDLE")
    down = pb.PeerState.AdminState.Value({3: "DOWN", 4: "ADMIN_STATE_DOWN"}[codec.version])
    peer = pb.Peer(
        conf=pb.PeerConf(neighbor_address="192.0.2.2", peer_asn=65002),
        state=pb.PeerState(session_state=idle, admin_state=down),
    )
    status = codec.peer_status(pb.Peer.FromString(peer.SerializeToString()), 0.0)
    assert (status.address, status.peer_asn, status.state, status.admin_down) == (
        "192.0.2.2",
        65002,
        SessionState.IDLE,
        True,
    )
    up = pb.Peer(state=pb.PeerState(admin_state=codec.admin_up))
    assert not codec.peer_status(up, 0.0).admin_down


def test_peer_status_reads_graceful_restart_and_bfd(codec: Codec) -> None:
    pb = codec.pb
    plain = codec.peer_status(pb.Peer(), 0.0)
    assert (plain.graceful_restart_s, plain.bfd) == (0, None)
    gr = pb.Peer(graceful_restart=pb.GracefulRestart(enabled=True, restart_time=3))
    assert codec.peer_status(gr, 0.0).graceful_restart_s == 3
    default = pb.Peer(graceful_restart=pb.GracefulRestart(enabled=True))
    assert codec.peer_status(default, 0.0).graceful_restart_s == 120  # gobgpd's default
    if codec.version == 4:
        on = pb.Peer(
            bfd=pb.BfdPeerConfig(enabled=True),
            state=pb.PeerState(bfd_state=pb.BfdPeerState(session_state=pb.BFD_SESSION_STATE_UP)),
        )
        wire = pb.Peer.FromString(on.SerializeToString())
        assert codec.peer_status(wire, 0.0).bfd == "up"
        off = pb.Peer(state=pb.PeerState(bfd_state=pb.BfdPeerState(session_state=1)))
        assert codec.peer_status(off, 0.0).bfd is None  # BFD not configured


def test_delete_path_is_never_bound() -> None:
    # DeletePath without `path` deletes every local path: the adapter must not use it.
    for codec in CODECS.values():
        assert "DeletePath" not in codec.rpcs
    assert not hasattr(gobgp_v4_pb2, "DeletePathRequest")  # not even declared for 4.x
    for module in (gobgp, gobgp_rpc, gobgp_codec, gobgp_versions, gobgp_paths):
        source = inspect.getsource(module)
        assert '"DeletePath"' not in source and "/DeletePath" not in source


def test_paths_read_back_share_their_next_hop_and_prefix_objects(codec: Codec) -> None:
    # 10 000 paths with one next hop must not hold 10 000 equal address objects, and
    # a prefix read back is the planner's own object (issue 16: memory).
    hop = ip("2001:db8::2")
    routes = [Route(net(f"2001:db8::{i:x}/128"), next_hop=hop) for i in range(1, 4)]
    decoded = []
    for route in routes:
        path = codec.announce_path(route, ASN)
        decoded.append(codec.decode_route(type(path).FromString(path.SerializeToString()), ASN))
    assert decoded == routes
    assert all(r is not None for r in decoded)
    assert len({id(r.next_hop) for r in decoded if r is not None}) == 1
    assert all(r is not None and r.prefix is host_prefix(r.prefix.network_address) for r in decoded)
