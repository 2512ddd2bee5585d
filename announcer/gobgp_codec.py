"""The rules between model values and gobgpd's gRPC messages, shared by 3.x and 4.x.

Pure: no I/O. Codec turns a Route into a path and back, and a Peer or a peer event
into the model's PeerStatus; announcer.gobgp_versions holds its two concrete
subclasses (and is the only module that imports the generated protobuf code), and
announcer.gobgp owns the channel and picks a codec when it connects.

The messages inside the version wrappers (IPAddressPrefix, OriginAttribute,
AsSegment, ...) have the same names and fields in 3.x and 4.x. So the rules for
turning a Route into a path and back are written once, in Codec, over three hooks
per version (wrap an NLRI, wrap an attribute, unwrap both) and a few enum tables.
Nothing outside the adapter (gobgp, gobgp_rpc) and the codec modules (gobgp_codec,
gobgp_versions, gobgp_paths) knows which version gobgpd speaks.

Operational traps the encoding is built around (details in gobgp-api-notes):

* DeletePath without `path` deletes *every* locally originated path, other tools'
  included. No codec can build a DeletePath request: withdraws are paths with
  `is_withdraw=True`, sent through AddPathStream.
* gobgpd 3.10 crashes or stores garbage on some malformed paths and does not
  cross-check family against NLRI, so `family` is always set and only attributes
  with every field filled in are sent (the caller validates routes first).

Paths are encoded once and kept as bytes by announcer.gobgp_paths.PathCache; the
wire-format trick it relies on is Codec.encoded_path.
"""

from __future__ import annotations

import abc
import functools
import ipaddress
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
    host_prefix,
)

log = logging.getLogger("announcer.gobgp")

# Next hops read back from gobgpd, one address object per distinct text: an LB has
# one or two, and 10 000 paths would otherwise hold 10 000 equal objects (issue 16).
_NEXT_HOPS: dict[str, IPAddress] = {}
_NEXT_HOPS_LIMIT = 64


def _next_hop_address(text: str) -> IPAddress:
    """The address a next hop's text names (ValueError if it names none)."""
    address = _NEXT_HOPS.get(text)
    if address is None:
        address = ipaddress.ip_address(text)
        if len(_NEXT_HOPS) < _NEXT_HOPS_LIMIT:
            _NEXT_HOPS[text] = address
    return address

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
    table_adj_out: ClassVar[int]
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

    def adj_out_request(self, family: Literal[4, 6], peer: str) -> Any:
        """What gobgpd has sent (or would send) to one neighbor."""
        return self.pb.ListPathRequest(
            table_type=self.table_adj_out, name=peer, family=self._family[family]
        )

    def path_prefix(self, path: Any) -> HostPrefix | None:
        """A path's prefix if it is a unicast host route."""
        nlri = self._unicast_prefix(path)
        if nlri is None:
            return None
        try:
            address = ipaddress.ip_address(nlri.prefix)
        except ValueError:
            return None
        # The planner's own network object for this address (host_prefix is memoised):
        # one per VIP rather than one more for every path read back from gobgpd.
        return host_prefix(address) if nlri.prefix_len == address.max_prefixlen else None

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
        prefix = self.path_prefix(path)
        if prefix is None:
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
                addr = _next_hop_address(text)
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
        gr = peer.graceful_restart
        return PeerStatus(
            address=str(peer.conf.neighbor_address or peer.state.neighbor_address),
            peer_asn=int(peer.conf.peer_asn or peer.state.peer_asn),
            state=state,
            admin_down=peer.state.admin_state != self.admin_up,
            uptime_s=uptime,
            # gobgpd's default restart time is 120 s when GR is on without one.
            graceful_restart_s=(gr.restart_time or 120) if gr.enabled else 0,
            bfd=self.bfd_state(peer),
        )

    def bfd_state(self, peer: Any) -> str | None:
        """The BFD session's state; None where gobgpd has no BFD or it is off."""
        return None

    def peer_event(self, response: Any, now: float) -> PeerEvent | None:
        """The peer event in a WatchEventResponse, or None for other events."""
        if response.WhichOneof("event") != "peer":
            return None
        event = response.peer
        kind = self.event_kinds.get(event.type, "unknown")
        peer = None if kind == "end_of_init" else self.peer_status(event.peer, now)
        return PeerEvent(kind, peer)
