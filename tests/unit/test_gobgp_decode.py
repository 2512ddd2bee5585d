"""Decoding of ListPath paths in announcer.gobgp, without a daemon (the edge cases)."""

from __future__ import annotations

import inspect
import ipaddress
from typing import Any

import pytest

from announcer import gobgp
from announcer._proto import gobgp_v3_pb2 as pb
from announcer.gobgp import UNREPRESENTABLE_PREPEND, _announce_path, _decode_route, _pack
from announcer.model import Community, LargeCommunity, Origin, Route

ASN = 65001
net = ipaddress.ip_network
ip = ipaddress.ip_address


def v6_path(*extra: Any, next_hops: tuple[str, ...] = ("2001:db8::1",)) -> Any:
    nlri = pb.IPAddressPrefix(prefix="2001:db8::5", prefix_len=128)
    reach = pb.MpReachNLRIAttribute(
        family=pb.Family(afi=pb.Family.AFI_IP6, safi=pb.Family.SAFI_UNICAST),
        next_hops=list(next_hops),
        nlris=[_pack(nlri)],
    )
    attrs = [_pack(pb.OriginAttribute(origin=0)), _pack(reach), *(_pack(e) for e in extra)]
    return pb.Path(nlri=_pack(nlri), pattrs=attrs)


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
def test_encode_decode_round_trip(route: Route) -> None:
    assert _decode_route(_announce_path(route, ASN), ASN) == route


@pytest.mark.parametrize(
    "path",
    [
        v6_path(next_hops=("2001:db8::1", "fe80::1")),  # link-local second next hop
        v6_path(pb.CommunitiesAttribute()),  # present but empty
        v6_path(pb.LargeCommunitiesAttribute()),
        v6_path(
            pb.AsPathAttribute(
                segments=[pb.AsSegment(type=pb.AsSegment.AS_SEQUENCE, numbers=[ASN, 65123])]
            )
        ),
        v6_path(
            pb.AsPathAttribute(segments=[pb.AsSegment(type=pb.AsSegment.AS_SET, numbers=[ASN])])
        ),
        v6_path(
            pb.AsPathAttribute(
                segments=[pb.AsSegment(type=pb.AsSegment.AS_SEQUENCE, numbers=[ASN] * 11)]
            )
        ),
        v6_path(pb.IPAddressPrefix(prefix="192.0.2.1", prefix_len=32)),  # not an attribute
        v6_path(next_hops=("not-an-address",)),
    ],
)
def test_unrepresentable_never_equals_a_valid_route(path: Any) -> None:
    route = _decode_route(path, ASN)
    assert route is not None and route.as_path_prepend == UNREPRESENTABLE_PREPEND


def test_unknown_origin_is_unrepresentable() -> None:
    path = v6_path()
    path.pattrs[0].CopyFrom(_pack(pb.OriginAttribute(origin=7)))
    route = _decode_route(path, ASN)
    assert route is not None and route.as_path_prepend == UNREPRESENTABLE_PREPEND


def test_non_host_and_non_unicast_paths_are_skipped() -> None:
    wide = pb.Path(nlri=_pack(pb.IPAddressPrefix(prefix="192.0.2.0", prefix_len=24)))
    assert _decode_route(wide, ASN) is None
    other = pb.Path(nlri=_pack(pb.OriginAttribute(origin=0)))
    assert _decode_route(other, ASN) is None


def test_learned_paths_are_not_ours() -> None:
    local = pb.Path(neighbor_ip="<nil>", source_id="<nil>")
    assert gobgp._is_ours_to_manage(local)
    assert not gobgp._is_ours_to_manage(pb.Path(neighbor_ip="127.0.0.1", source_asn=65002))
    assert not gobgp._is_ours_to_manage(pb.Path(neighbor_ip="2001:db8::1", source_asn=65002))
    assert not gobgp._is_ours_to_manage(pb.Path(neighbor_ip="<nil>", identifier=5))
    assert not gobgp._is_ours_to_manage(pb.Path(neighbor_ip="<nil>", is_from_external=True))


def test_withdraw_path_carries_only_nlri_family_and_flag() -> None:
    path = gobgp._withdraw_path(net("2001:db8::7/128"))
    assert {f.name for f, _ in path.ListFields()} == {"nlri", "family", "is_withdraw"}
    assert path.family.afi == pb.Family.AFI_IP6 and path.is_withdraw


def test_delete_path_is_never_bound() -> None:
    # DeletePath without `path` deletes every local path: the adapter must not use it.
    assert '"DeletePath"' not in inspect.getsource(gobgp)
    assert "GobgpApi/DeletePath" not in inspect.getsource(gobgp)
