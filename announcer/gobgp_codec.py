"""The wire formats of gobgpd's gRPC API, 3.x and 4.x: model values to protobuf and back.

The only module that imports the generated protobuf code, and it does no I/O:
announcer.gobgp owns the channel and picks a codec when it connects.

The two APIs are wire-incompatible (gobgp-api-notes section 5):

* 3.x: package `apipb`, service `GobgpApi`; a path's NLRI and attributes are
  google.protobuf.Any, told apart by type URL; RPCs without a result return Empty.
* 4.x: package `api`, service `GoBgpService`; `NLRI` and `Attribute` are typed
  oneofs; every RPC has its own response; most enums gained an UNSPECIFIED = 0,
  so TABLE_TYPE_GLOBAL, ADMIN_STATE_UP, ... are one higher than in 3.x.

The messages inside the wrappers (IPAddressPrefix, OriginAttribute, AsSegment, ...)
have the same names and fields in both. So the rules for turning a Route into a
path and back are written once, in Codec, over three hooks per version (wrap an
NLRI, wrap an attribute, unwrap both) and a few enum tables. Nothing outside this
module and announcer.gobgp knows which version gobgpd speaks.

Operational traps the encoding is built around (details in gobgp-api-notes):

* DeletePath without `path` deletes *every* locally originated path, other tools'
  included. No codec can build a DeletePath request: withdraws are paths with
  `is_withdraw=True`, sent through AddPathStream.
* gobgpd 3.10 crashes or stores garbage on some malformed paths and does not
  cross-check family against NLRI, so `family` is always set and only attributes
  with every field filled in are sent (the caller validates routes first).

Paths are built once: PathCache keeps each prefix's last announced path (and its
withdraw) as wire bytes, and an AddPathStreamRequest is sent as bytes made by
concatenation (see Codec.encoded_path). Routes are immutable values, so a re-sync
after a gobgpd restart, which re-announces what was announced before, builds no
message at all.
"""

from __future__ import annotations

import abc
import functools
import ipaddress
import itertools
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from google.protobuf import any_pb2, empty_pb2

from ._proto import gobgp_v3_pb2 as v3
from ._proto import gobgp_v4_pb2 as v4
from .errors import GobgpError
from .model import (
    MAX_PREPEND,
    Community,
    HostPrefix,
    IPAddress,
    LargeCommunity,
    Origin,
    PeerStatus,
    Route,
    SessionState,
    is_host_prefix,
)

log = logging.getLogger("announcer.gobgp")

ApiVersion = Literal[3, 4]
EventKind = Literal["init", "end_of_init", "state", "unknown"]

# The as_path_prepend of a decoded route whose attributes announcer cannot express
# (an AS_PATH with another AS or an AS_SET, an attribute type we do not model, a
# link-local v6 next hop, an empty communities attribute, an unknown ORIGIN ...).
# validate_route() only accepts 0..MAX_PREPEND, so a route carrying this value never
# equals a route announcer would send: the planner sees a difference and re-announces,
# and the re-announce replaces the whole path (same source, same path id), dropping
# whatever we could not represent.
UNREPRESENTABLE_PREPEND = -1

_SELF = {4: "0.0.0.0", 6: "::"}

# How many prefixes a PathCache holds by default (the same bound as model.host_prefix).
DEFAULT_PATH_CACHE_SIZE = 1 << 16


@functools.lru_cache(maxsize=256)
def _address_text(address: IPAddress) -> str:
    """str() of a next hop: nearly every route shares one, and an IPv6 str() costs ~7 us."""
    return str(address)


@dataclass(frozen=True)
class PeerEvent:
    """One WatchEvent peer event; `peer` is None for end_of_init."""

    kind: EventKind
    peer: PeerStatus | None


class Codec(abc.ABC):
    """Requests, paths and peers in one API version's messages; see the module docstring.

    Subclasses set the class attributes and implement the four wrap/unwrap hooks;
    everything else is shared.
    """

    version: ClassVar[ApiVersion]
    service: ClassVar[str]  # full gRPC service name, e.g. "api.GoBgpService"
    pb: ClassVar[Any]  # the generated module
    # RPC name -> (request class, response class): exactly the RPCs the client binds.
    rpcs: ClassVar[dict[str, tuple[Any, Any]]]
    table_global: ClassVar[int]
    as_sequence: ClassVar[int]
    admin_up: ClassVar[int]
    session_states: ClassVar[dict[int, SessionState]]
    event_kinds: ClassVar[dict[int, EventKind]]

    def __init__(self) -> None:
        family = self.pb.Family
        self._family = {
            4: family(afi=family.AFI_IP, safi=family.SAFI_UNICAST),
            6: family(afi=family.AFI_IP6, safi=family.SAFI_UNICAST),
        }
        # An AddPathStreamRequest's fields other than `paths`, serialized; see encoded_path.
        self._request_head: bytes = self.add_path_stream_request([]).SerializeToString()

    def __repr__(self) -> str:
        return f"<GoBGP {self.version}.x codec ({self.service})>"

    # --------------------------------------------------------- version hooks

    @abc.abstractmethod
    def _wrap_nlri(self, prefix: Any) -> Any:
        """Path.nlri (or an MP_REACH nlris entry) carrying an IPAddressPrefix."""

    @abc.abstractmethod
    def _wrap_attr(self, kind: str, message: Any) -> Any:
        """One Path.pattrs entry; `kind` is the 4.x oneof member name (origin, mp_reach ...)."""

    @abc.abstractmethod
    def _unicast_prefix(self, path: Any) -> Any | None:
        """The IPAddressPrefix of a path, or None if its NLRI is of another kind."""

    @abc.abstractmethod
    def _attributes(self, path: Any) -> Iterator[tuple[str | None, Any]]:
        """(kind, attribute message) per attribute; (None, label) for kinds not modelled."""

    # ------------------------------------------------------------- requests

    def get_bgp_request(self) -> Any:
        return self.pb.GetBgpRequest()

    def local_asn(self, response: Any) -> int:
        """The AS in a GetBgpResponse (0 while gobgpd runs without a configuration)."""
        return int(getattr(response, "global").asn)  # `global` is a Python keyword

    def list_path_request(self, family: Literal[4, 6]) -> Any:
        return self.pb.ListPathRequest(table_type=self.table_global, family=self._family[family])

    def add_path_stream_request(self, paths: Sequence[Any]) -> Any:
        # table_type must be GLOBAL explicitly: 3.x and 4.x both refuse anything but
        # GLOBAL and VRF here, and 4.x's default (UNSPECIFIED) is neither.
        return self.pb.AddPathStreamRequest(table_type=self.table_global, paths=paths)

    def encoded_path(self, path: Any) -> bytes:
        """`path` as one encoded element of AddPathStreamRequest.paths (tag, length, bytes).

        In the protobuf wire format a repeated message field is the concatenation of
        its encoded elements, and a message may be sent as several concatenated
        pieces (they merge, repeated fields appending). So
        encoded_add_path_stream_request() of these is the serialized
        add_path_stream_request() of the paths, built without any message.
        """
        # A request holding only this path: table_type 0 and vrf_id "" are defaults and
        # not written, which leaves exactly the `paths` element.
        return bytes(self.pb.AddPathStreamRequest(paths=[path]).SerializeToString())

    def encoded_add_path_stream_request(self, encoded_paths: Iterable[bytes]) -> bytes:
        """The serialized AddPathStreamRequest (table GLOBAL) of encoded_path() elements."""
        return self._request_head + b"".join(encoded_paths)

    def list_peer_request(self) -> Any:
        return self.pb.ListPeerRequest()

    def enable_peer_request(self, address: str) -> Any:
        return self.pb.EnablePeerRequest(address=address)

    def disable_peer_request(self, address: str, communication: str) -> Any:
        return self.pb.DisablePeerRequest(address=address, communication=communication)

    def watch_peers_request(self) -> Any:
        return self.pb.WatchEventRequest(peer=self.pb.WatchEventRequest.Peer())

    # ------------------------------------------------------------- encoding

    def _nlri(self, prefix: HostPrefix) -> Any:
        return self._wrap_nlri(
            self.pb.IPAddressPrefix(prefix=str(prefix.network_address), prefix_len=prefix.prefixlen)
        )

    def withdraw_path(self, prefix: HostPrefix) -> Any:
        """The path that withdraws our path for `prefix` when sent through AddPathStream."""
        # Only nlri, family and is_withdraw: gobgpd matches withdraws on (local source,
        # path id 0) and ignores attributes. source_asn and identifier stay unset so the
        # withdraw addresses exactly the paths announce_path() creates.
        return self.pb.Path(
            nlri=self._nlri(prefix), family=self._family[prefix.version], is_withdraw=True
        )

    def announce_path(self, route: Route, local_asn: int | None) -> Any:
        """The path for a validated Route; `local_asn` is needed only for a prepend."""
        pb = self.pb
        version = route.prefix.version
        nlri = self._nlri(route.prefix)  # copied by each message it is put in
        next_hop = _address_text(route.next_hop) if route.next_hop is not None else _SELF[version]
        attrs = [self._wrap_attr("origin", pb.OriginAttribute(origin=int(route.origin)))]
        if version == 4:
            attrs.append(self._wrap_attr("next_hop", pb.NextHopAttribute(next_hop=next_hop)))
        else:
            # MP_REACH is the canonical v6 form; its nlris must not be empty
            # ("invalid mp reach attribute") although gobgpd rebuilds it from Path.nlri.
            reach = pb.MpReachNLRIAttribute(
                family=self._family[6], next_hops=[next_hop], nlris=[nlri]
            )
            attrs.append(self._wrap_attr("mp_reach", reach))
        if route.as_path_prepend:
            if not local_asn:
                raise GobgpError("cannot prepend: gobgpd reports no local AS (not configured yet?)")
            # gobgpd puts its own AS in front toward eBGP peers, so n copies here make
            # the peer see n + 1: exactly "n extra copies".
            segment = pb.AsSegment(
                type=self.as_sequence, numbers=[local_asn] * route.as_path_prepend
            )
            attrs.append(self._wrap_attr("as_path", pb.AsPathAttribute(segments=[segment])))
        if route.med is not None:
            attrs.append(
                self._wrap_attr("multi_exit_disc", pb.MultiExitDiscAttribute(med=route.med))
            )
        if route.local_pref is not None:
            pref = pb.LocalPrefAttribute(local_pref=route.local_pref)
            attrs.append(self._wrap_attr("local_pref", pref))
        if route.communities:
            values = [c.value for c in route.communities]
            attrs.append(
                self._wrap_attr("communities", pb.CommunitiesAttribute(communities=values))
            )
        if route.large_communities:
            large = [
                pb.LargeCommunity(
                    global_admin=c.global_admin,
                    local_data1=c.local_data1,
                    local_data2=c.local_data2,
                )
                for c in route.large_communities
            ]
            attrs.append(
                self._wrap_attr(
                    "large_communities", pb.LargeCommunitiesAttribute(communities=large)
                )
            )
        return pb.Path(nlri=nlri, pattrs=attrs, family=self._family[version])

    # ------------------------------------------------------------- decoding

    @staticmethod
    def is_ours_to_manage(path: Any) -> bool:
        """Whether a ListPath path is locally originated and addressable by our withdraws.

        Verified with an eBGP peer sending the same prefix: paths learned from a
        neighbor carry neighbor_ip=<peer address>, source_asn=<peer AS> and
        source_id=<peer router id>. Paths added over the API or the CLI carry
        neighbor_ip "<nil>" (3.10, Go's nil net.IP) or "" (4.8), and source_asn 0.
        is_from_external is false for both: it marks routes redistributed from zebra,
        which are not ours either. Local paths with a path identifier or a source_asn
        (another client's choice) are not matched by our plain withdraws, so they are
        left out rather than withdrawn in vain every cycle.
        """
        try:
            ipaddress.ip_address(str(path.neighbor_ip))
            return False  # learned from a neighbor
        except ValueError:
            pass
        return not path.is_from_external and path.source_asn == 0 and path.identifier == 0

    def decode_route(self, path: Any, local_asn: int) -> Route | None:
        """The Route a ListPath path stands for, or None if it is not a unicast host route."""
        nlri = self._unicast_prefix(path)
        if nlri is None:
            return None
        try:
            prefix = ipaddress.ip_network(f"{nlri.prefix}/{nlri.prefix_len}")
        except ValueError:
            return None
        if not is_host_prefix(prefix):
            return None

        unrepresentable: list[str] = []
        origin: Origin | None = None
        next_hop: IPAddress | None = None
        med: int | None = None
        local_pref: int | None = None
        communities: tuple[Community, ...] = ()
        large: tuple[LargeCommunity, ...] = ()
        prepend = 0

        def parse_next_hop(text: str) -> None:
            nonlocal next_hop
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                unrepresentable.append(f"next hop {text!r}")
                return
            next_hop = None if addr.is_unspecified else addr

        for kind, attr in self._attributes(path):
            if kind == "origin":
                value = int(attr.origin)
                if value in Origin._value2member_map_:
                    origin = Origin(value)
                else:
                    unrepresentable.append(f"origin {value}")
            elif kind == "next_hop":
                parse_next_hop(str(attr.next_hop))
            elif kind == "mp_reach":
                hops = list(attr.next_hops)
                if len(hops) != 1:
                    unrepresentable.append(f"MP_REACH next hops {hops}")  # e.g. a link-local
                if hops:
                    parse_next_hop(str(hops[0]))
            elif kind == "as_path":
                segments = list(attr.segments)
                numbers = [int(n) for s in segments for n in s.numbers]
                if all(s.type == self.as_sequence for s in segments) and all(
                    n == local_asn for n in numbers
                ):
                    prepend = len(numbers)
                else:
                    unrepresentable.append("AS_PATH with another AS or a set")
            elif kind == "multi_exit_disc":
                med = int(attr.med)
            elif kind == "local_pref":
                local_pref = int(attr.local_pref)
            elif kind == "communities":
                values = [int(v) for v in attr.communities]
                if not values:
                    unrepresentable.append("empty COMMUNITIES")
                communities = tuple(Community.from_value(v) for v in values)
            elif kind == "large_communities":
                msgs = list(attr.communities)
                if not msgs:
                    unrepresentable.append("empty LARGE_COMMUNITY")
                large = tuple(
                    LargeCommunity(int(m.global_admin), int(m.local_data1), int(m.local_data2))
                    for m in msgs
                )
            else:
                unrepresentable.append(str(attr))
        if origin is None:
            unrepresentable.append("no ORIGIN")
        if prepend > MAX_PREPEND:
            unrepresentable.append(f"AS_PATH of {prepend} local AS copies")
        if unrepresentable:
            log.debug(
                "path %s has attributes announcer cannot express: %s", prefix, unrepresentable
            )
            prepend = UNREPRESENTABLE_PREPEND
        return Route(
            prefix=prefix,
            next_hop=next_hop,
            origin=origin if origin is not None else Origin.IGP,
            med=med,
            local_pref=local_pref,
            communities=communities,
            large_communities=large,
            as_path_prepend=prepend,
        )

    def peer_status(self, peer: Any, now: float) -> PeerStatus:
        """A Peer message as the model's PeerStatus; `now` is time.time()."""
        state = self.session_states.get(peer.state.session_state, SessionState.UNKNOWN)
        uptime: float | None = None
        if state is SessionState.ESTABLISHED and peer.timers.state.HasField("uptime"):
            # timers.state.uptime is the absolute time the session came up.
            since = float(peer.timers.state.uptime.seconds) + peer.timers.state.uptime.nanos / 1e9
            if since > 0:
                uptime = max(0.0, now - since)
        return PeerStatus(
            address=str(peer.conf.neighbor_address or peer.state.neighbor_address),
            peer_asn=int(peer.conf.peer_asn or peer.state.peer_asn),
            state=state,
            admin_down=peer.state.admin_state != self.admin_up,
            uptime_s=uptime,
        )

    def peer_event(self, response: Any, now: float) -> PeerEvent | None:
        """The peer event in a WatchEventResponse, or None for other events."""
        if response.WhichOneof("event") != "peer":
            return None
        event = response.peer
        kind = self.event_kinds.get(event.type, "unknown")
        peer = None if kind == "end_of_init" else self.peer_status(event.peer, now)
        return PeerEvent(kind, peer)


# ------------------------------------------------------------ encoded paths

_V = TypeVar("_V")


class PathCache:
    """AddPathStreamRequests of one codec as bytes, from paths encoded once and kept.

    One entry per prefix: the encoded path of the last route announced for it (with
    the local AS it was built with, when it prepends) and, separately, its encoded
    withdraw. A re-sync after a gobgpd restart re-announces exactly the last routes
    sent, so it finds every path here; a route that changed is encoded again and
    replaces its prefix's entry. The size is therefore one entry per prefix ever
    announced or withdrawn, whatever the number of states a VIP goes through; to
    bound prefixes that are no longer used, each table drops its oldest half (by
    when an entry was encoded) when it reaches `max_prefixes`. `max_prefixes=0`
    keeps nothing: every request is encoded afresh.

    Safe to use from several threads. The routes must be validated already.
    """

    def __init__(self, codec: Codec, max_prefixes: int = DEFAULT_PATH_CACHE_SIZE) -> None:
        if max_prefixes < 0:
            raise ValueError("max_prefixes must not be negative")
        self.codec = codec
        self.max_prefixes = max_prefixes
        # prefix -> (route, local AS used or 0, encoded path)
        self._announce: dict[HostPrefix, tuple[Route, int, bytes]] = {}
        self._withdraw: dict[HostPrefix, bytes] = {}
        self._lock = threading.Lock()
        self.hits = 0  # paths taken from the cache, for tests and benchmarks
        self.misses = 0  # paths encoded

    def __len__(self) -> int:
        """Entries held, announces and withdraws."""
        return len(self._announce) + len(self._withdraw)

    def clear(self) -> None:
        with self._lock:
            self._announce.clear()
            self._withdraw.clear()

    def announce_request(self, routes: Iterable[Route], local_asn: int | None) -> bytes:
        """The serialized AddPathStreamRequest announcing `routes`.

        `local_asn` is needed only for routes that prepend (as for announce_path).
        """
        codec = self.codec
        table = self._announce
        encoded: list[bytes] = []
        misses = 0
        with self._lock:
            for route in routes:
                asn = (local_asn or 0) if route.as_path_prepend else 0
                entry = table.get(route.prefix)
                if (
                    entry is not None
                    and entry[1] == asn
                    and (entry[0] is route or entry[0] == route)
                ):
                    encoded.append(entry[2])
                    continue
                data = codec.encoded_path(codec.announce_path(route, local_asn))
                self._store(table, route.prefix, (route, asn, data))
                encoded.append(data)
                misses += 1
            self.misses += misses
            self.hits += len(encoded) - misses
        return codec.encoded_add_path_stream_request(encoded)

    def withdraw_request(self, prefixes: Iterable[HostPrefix]) -> bytes:
        """The serialized AddPathStreamRequest withdrawing our paths for `prefixes`."""
        codec = self.codec
        table = self._withdraw
        encoded: list[bytes] = []
        misses = 0
        with self._lock:
            for prefix in prefixes:
                data = table.get(prefix)
                if data is None:
                    data = codec.encoded_path(codec.withdraw_path(prefix))
                    self._store(table, prefix, data)
                    misses += 1
                encoded.append(data)
            self.misses += misses
            self.hits += len(encoded) - misses
        return codec.encoded_add_path_stream_request(encoded)

    def _store(self, table: dict[HostPrefix, _V], prefix: HostPrefix, value: _V) -> None:
        if not self.max_prefixes:
            return
        # Re-inserted rather than overwritten, so the dict's order is encoding order.
        if table.pop(prefix, None) is None and len(table) >= self.max_prefixes:
            for old in list(itertools.islice(table, max(1, len(table) // 2))):
                del table[old]
        table[prefix] = value


# --------------------------------------------------------------------- 3.x


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    # Pack() writes type.googleapis.com/apipb.<Name>, the only form gobgpd 3.x resolves.
    packed.Pack(message)
    return packed


def _type_name(packed: any_pb2.Any) -> str:
    return str(packed.type_url).rsplit("/", 1)[-1]


def _unpack(packed: any_pb2.Any, cls: Any) -> Any:
    message = cls()
    if not packed.Unpack(message):
        raise ValueError(f"expected {cls.DESCRIPTOR.full_name}, got {packed.type_url}")
    return message


class V3Codec(Codec):
    """gobgpd 3.x: package apipb, service GobgpApi, Any-packed NLRI and attributes."""

    version = 3
    service = "apipb.GobgpApi"
    pb: ClassVar[Any] = v3
    rpcs: ClassVar[dict[str, tuple[Any, Any]]] = {
        "GetBgp": (v3.GetBgpRequest, v3.GetBgpResponse),
        "ListPath": (v3.ListPathRequest, v3.ListPathResponse),
        "AddPathStream": (v3.AddPathStreamRequest, empty_pb2.Empty),
        "ListPeer": (v3.ListPeerRequest, v3.ListPeerResponse),
        "EnablePeer": (v3.EnablePeerRequest, empty_pb2.Empty),
        "DisablePeer": (v3.DisablePeerRequest, empty_pb2.Empty),
        "WatchEvent": (v3.WatchEventRequest, v3.WatchEventResponse),
    }
    table_global = v3.GLOBAL
    as_sequence = v3.AsSegment.AS_SEQUENCE
    admin_up = v3.PeerState.UP
    session_states: ClassVar[dict[int, SessionState]] = {
        v3.PeerState.UNKNOWN: SessionState.UNKNOWN,
        v3.PeerState.IDLE: SessionState.IDLE,
        v3.PeerState.CONNECT: SessionState.CONNECT,
        v3.PeerState.ACTIVE: SessionState.ACTIVE,
        v3.PeerState.OPENSENT: SessionState.OPENSENT,
        v3.PeerState.OPENCONFIRM: SessionState.OPENCONFIRM,
        v3.PeerState.ESTABLISHED: SessionState.ESTABLISHED,
    }
    event_kinds: ClassVar[dict[int, EventKind]] = {
        v3.WatchEventResponse.PeerEvent.INIT: "init",
        v3.WatchEventResponse.PeerEvent.END_OF_INIT: "end_of_init",
        v3.WatchEventResponse.PeerEvent.STATE: "state",
    }
    # Type name in the Any's URL -> (our attribute kind, message class).
    _ATTRIBUTES: ClassVar[dict[str, tuple[str, Any]]] = {
        "apipb.OriginAttribute": ("origin", v3.OriginAttribute),
        "apipb.NextHopAttribute": ("next_hop", v3.NextHopAttribute),
        "apipb.MpReachNLRIAttribute": ("mp_reach", v3.MpReachNLRIAttribute),
        "apipb.AsPathAttribute": ("as_path", v3.AsPathAttribute),
        "apipb.MultiExitDiscAttribute": ("multi_exit_disc", v3.MultiExitDiscAttribute),
        "apipb.LocalPrefAttribute": ("local_pref", v3.LocalPrefAttribute),
        "apipb.CommunitiesAttribute": ("communities", v3.CommunitiesAttribute),
        "apipb.LargeCommunitiesAttribute": ("large_communities", v3.LargeCommunitiesAttribute),
    }

    def _wrap_nlri(self, prefix: Any) -> Any:
        return _pack(prefix)

    def _wrap_attr(self, kind: str, message: Any) -> Any:
        return _pack(message)

    def _unicast_prefix(self, path: Any) -> Any | None:
        if _type_name(path.nlri) != "apipb.IPAddressPrefix":
            return None
        return _unpack(path.nlri, v3.IPAddressPrefix)

    def _attributes(self, path: Any) -> Iterator[tuple[str | None, Any]]:
        for packed in path.pattrs:
            name = _type_name(packed)
            known = self._ATTRIBUTES.get(name)
            if known is None:
                yield None, name
            else:
                yield known[0], _unpack(packed, known[1])


# --------------------------------------------------------------------- 4.x


class V4Codec(Codec):
    """gobgpd 4.x: package api, service GoBgpService, typed NLRI and Attribute oneofs."""

    version = 4
    service = "api.GoBgpService"
    pb: ClassVar[Any] = v4
    rpcs: ClassVar[dict[str, tuple[Any, Any]]] = {
        "GetBgp": (v4.GetBgpRequest, v4.GetBgpResponse),
        "ListPath": (v4.ListPathRequest, v4.ListPathResponse),
        "AddPathStream": (v4.AddPathStreamRequest, v4.AddPathStreamResponse),
        "ListPeer": (v4.ListPeerRequest, v4.ListPeerResponse),
        "EnablePeer": (v4.EnablePeerRequest, v4.EnablePeerResponse),
        "DisablePeer": (v4.DisablePeerRequest, v4.DisablePeerResponse),
        "WatchEvent": (v4.WatchEventRequest, v4.WatchEventResponse),
    }
    table_global = v4.TABLE_TYPE_GLOBAL
    as_sequence = v4.AsSegment.TYPE_AS_SEQUENCE
    admin_up = v4.PeerState.ADMIN_STATE_UP
    session_states: ClassVar[dict[int, SessionState]] = {
        v4.PeerState.SESSION_STATE_UNSPECIFIED: SessionState.UNKNOWN,
        v4.PeerState.SESSION_STATE_IDLE: SessionState.IDLE,
        v4.PeerState.SESSION_STATE_CONNECT: SessionState.CONNECT,
        v4.PeerState.SESSION_STATE_ACTIVE: SessionState.ACTIVE,
        v4.PeerState.SESSION_STATE_OPENSENT: SessionState.OPENSENT,
        v4.PeerState.SESSION_STATE_OPENCONFIRM: SessionState.OPENCONFIRM,
        v4.PeerState.SESSION_STATE_ESTABLISHED: SessionState.ESTABLISHED,
    }
    event_kinds: ClassVar[dict[int, EventKind]] = {
        v4.WatchEventResponse.PeerEvent.TYPE_INIT: "init",
        v4.WatchEventResponse.PeerEvent.TYPE_END_OF_INIT: "end_of_init",
        v4.WatchEventResponse.PeerEvent.TYPE_STATE: "state",
    }

    def _wrap_nlri(self, prefix: Any) -> Any:
        return v4.NLRI(prefix=prefix)

    def _wrap_attr(self, kind: str, message: Any) -> Any:
        return v4.Attribute(**{kind: message})

    def _unicast_prefix(self, path: Any) -> Any | None:
        if path.nlri.WhichOneof("nlri") != "prefix":
            return None
        return path.nlri.prefix

    def _attributes(self, path: Any) -> Iterator[tuple[str | None, Any]]:
        for attr in path.pattrs:
            kind = attr.WhichOneof("attr")
            if kind is None:
                # A member protos/gobgp_v4.proto leaves out (aggregator, extended
                # communities ...): it arrived as an unknown field.
                yield None, "an attribute announcer does not model"
            else:
                yield kind, getattr(attr, kind)


V3 = V3Codec()
V4 = V4Codec()
CODECS: dict[ApiVersion, Codec] = {3: V3, 4: V4}
