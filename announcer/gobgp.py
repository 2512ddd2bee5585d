"""The GoBGP adapter: the only module that imports grpc or the generated protobuf code.

Talks to gobgpd 3.x (package `apipb`, service `GobgpApi`) over gRPC. RPCs are bound by
path with `channel.unary_unary(...)` and friends instead of generated `_pb2_grpc` stubs,
so grpcio's generated-version check never applies and the module loads on Debian
bookworm's python3-grpcio 1.51 as well as on current grpcio (gobgp-api-notes 2.3.17).

Operational traps this module is built around (details in gobgp-api-notes):

* `DeletePath` without `path` deletes *every* locally originated path, other tools'
  included. This module never calls DeletePath: withdraws go through AddPathStream
  with `is_withdraw=True`, which cannot be turned into a delete-all.
* gobgpd 3.10 crashes or stores garbage on some malformed paths and does not
  cross-check family against NLRI, so every route is validated before anything is
  sent, and `family` is always set.
* gobgpd keeps API paths in memory only. The caller re-reads `local_routes()` each
  cycle instead of trusting what it sent, and `watch()` ends when gobgpd goes away.
* gobgpd reports its errors as `UNKNOWN` with free text: never branch on the code.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import grpc
from google.protobuf import any_pb2, empty_pb2

from ._proto import gobgp_v3_pb2 as pb
from .errors import GobgpError, InvalidRoute
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
    validate_route,
)

log = logging.getLogger("announcer.gobgp")

_SERVICE = "/apipb.GobgpApi/"

# The as_path_prepend of a decoded route whose attributes announcer cannot express
# (an AS_PATH with another AS or an AS_SET, an attribute type we do not model, a
# link-local v6 next hop, an empty communities attribute, an unknown ORIGIN ...).
# validate_route() only accepts 0..MAX_PREPEND, so a route carrying this value never
# equals a route announcer would send: the planner sees a difference and re-announces,
# and the re-announce replaces the whole path (same source, same path id), dropping
# whatever we could not represent.
UNREPRESENTABLE_PREPEND = -1

# Reads of the whole RIB: gobgpd 3.10 buffers all of ListPath before sending it,
# about 10 s per 100k paths on a small VM (notes 6.1), so they get a long deadline.
_LIST_DEADLINE = 120.0

_AFI_SAFI = {
    4: pb.Family(afi=pb.Family.AFI_IP, safi=pb.Family.SAFI_UNICAST),
    6: pb.Family(afi=pb.Family.AFI_IP6, safi=pb.Family.SAFI_UNICAST),
}
_SELF = {4: "0.0.0.0", 6: "::"}

_SESSION_STATES = {
    pb.PeerState.UNKNOWN: SessionState.UNKNOWN,
    pb.PeerState.IDLE: SessionState.IDLE,
    pb.PeerState.CONNECT: SessionState.CONNECT,
    pb.PeerState.ACTIVE: SessionState.ACTIVE,
    pb.PeerState.OPENSENT: SessionState.OPENSENT,
    pb.PeerState.OPENCONFIRM: SessionState.OPENCONFIRM,
    pb.PeerState.ESTABLISHED: SessionState.ESTABLISHED,
}


# ------------------------------------------------------------------ errors


def _describe(err: grpc.RpcError) -> str:
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = err.details() if callable(getattr(err, "details", None)) else None
    name = code.name if code is not None else "?"
    return f"{name}: {details or 'no details'}"


def _raise(op: str, target: str, err: grpc.RpcError, done: int = 0) -> NoReturn:
    raise GobgpError(f"{op} on {target} failed ({_describe(err)})", done=done) from err


# --------------------------------------------------------------- encoding


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    # Pack() writes type.googleapis.com/apipb.<Name>, the only form gobgpd 3.x resolves.
    packed.Pack(message)
    return packed


def _nlri(prefix: HostPrefix) -> any_pb2.Any:
    return _pack(
        pb.IPAddressPrefix(prefix=str(prefix.network_address), prefix_len=prefix.prefixlen)
    )


def _withdraw_path(prefix: HostPrefix) -> Any:
    # Only nlri, family and is_withdraw: gobgpd matches withdraws on (local source,
    # path id 0) and ignores attributes. source_asn and identifier stay unset so the
    # withdraw addresses exactly the paths _announce_path() creates.
    return pb.Path(nlri=_nlri(prefix), family=_AFI_SAFI[prefix.version], is_withdraw=True)


def _announce_path(route: Route, local_asn: int | None) -> Any:
    version = route.prefix.version
    next_hop = str(route.next_hop) if route.next_hop is not None else _SELF[version]
    attrs: list[any_pb2.Any] = [_pack(pb.OriginAttribute(origin=int(route.origin)))]
    if version == 4:
        attrs.append(_pack(pb.NextHopAttribute(next_hop=next_hop)))
    else:
        # MP_REACH is the canonical v6 form; its nlris must not be empty
        # ("invalid mp reach attribute") although gobgpd rebuilds it from Path.nlri.
        attrs.append(
            _pack(
                pb.MpReachNLRIAttribute(
                    family=_AFI_SAFI[6], next_hops=[next_hop], nlris=[_nlri(route.prefix)]
                )
            )
        )
    if route.as_path_prepend:
        if not local_asn:
            raise GobgpError("cannot prepend: gobgpd reports no local AS (not configured yet?)")
        # gobgpd puts its own AS in front toward eBGP peers, so n copies here make the
        # peer see n + 1: exactly "n extra copies".
        segment = pb.AsSegment(
            type=pb.AsSegment.AS_SEQUENCE, numbers=[local_asn] * route.as_path_prepend
        )
        attrs.append(_pack(pb.AsPathAttribute(segments=[segment])))
    if route.med is not None:
        attrs.append(_pack(pb.MultiExitDiscAttribute(med=route.med)))
    if route.local_pref is not None:
        attrs.append(_pack(pb.LocalPrefAttribute(local_pref=route.local_pref)))
    if route.communities:
        attrs.append(
            _pack(pb.CommunitiesAttribute(communities=[c.value for c in route.communities]))
        )
    if route.large_communities:
        large = [
            pb.LargeCommunity(
                global_admin=c.global_admin, local_data1=c.local_data1, local_data2=c.local_data2
            )
            for c in route.large_communities
        ]
        attrs.append(_pack(pb.LargeCommunitiesAttribute(communities=large)))
    return pb.Path(nlri=_nlri(route.prefix), pattrs=attrs, family=_AFI_SAFI[version])


# --------------------------------------------------------------- decoding


def _type_name(packed: any_pb2.Any) -> str:
    return str(packed.type_url).rsplit("/", 1)[-1]


def _unpack(packed: any_pb2.Any, cls: Any) -> Any:
    message = cls()
    if not packed.Unpack(message):
        raise ValueError(f"expected {cls.DESCRIPTOR.full_name}, got {packed.type_url}")
    return message


def _is_ours_to_manage(path: Any) -> bool:
    """Whether a ListPath path is locally originated and addressable by our withdraws.

    Verified on 3.10 with an eBGP peer sending the same prefix: paths learned from a
    neighbor carry neighbor_ip=<peer address>, source_asn=<peer AS> and
    source_id=<peer router id>; paths added over the API or the CLI carry
    neighbor_ip="<nil>" (Go's nil net.IP), source_asn=0, source_id="<nil>".
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


def _decode_route(path: Any, local_asn: int) -> Route | None:
    """The Route a ListPath path stands for, or None if it is not a unicast host route."""
    if _type_name(path.nlri) != "apipb.IPAddressPrefix":
        return None
    nlri = _unpack(path.nlri, pb.IPAddressPrefix)
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

    for packed in path.pattrs:
        kind = _type_name(packed)
        if kind == "apipb.OriginAttribute":
            value = int(_unpack(packed, pb.OriginAttribute).origin)
            if value in Origin._value2member_map_:
                origin = Origin(value)
            else:
                unrepresentable.append(f"origin {value}")
        elif kind == "apipb.NextHopAttribute":
            parse_next_hop(str(_unpack(packed, pb.NextHopAttribute).next_hop))
        elif kind == "apipb.MpReachNLRIAttribute":
            hops = list(_unpack(packed, pb.MpReachNLRIAttribute).next_hops)
            if len(hops) != 1:
                unrepresentable.append(f"MP_REACH next hops {hops}")  # e.g. a link-local
            if hops:
                parse_next_hop(str(hops[0]))
        elif kind == "apipb.AsPathAttribute":
            segments = list(_unpack(packed, pb.AsPathAttribute).segments)
            numbers = [int(n) for s in segments for n in s.numbers]
            if all(s.type == pb.AsSegment.AS_SEQUENCE for s in segments) and all(
                n == local_asn for n in numbers
            ):
                prepend = len(numbers)
            else:
                unrepresentable.append("AS_PATH with another AS or a set")
        elif kind == "apipb.MultiExitDiscAttribute":
            med = int(_unpack(packed, pb.MultiExitDiscAttribute).med)
        elif kind == "apipb.LocalPrefAttribute":
            local_pref = int(_unpack(packed, pb.LocalPrefAttribute).local_pref)
        elif kind == "apipb.CommunitiesAttribute":
            values = [int(v) for v in _unpack(packed, pb.CommunitiesAttribute).communities]
            if not values:
                unrepresentable.append("empty COMMUNITIES")
            communities = tuple(Community.from_value(v) for v in values)
        elif kind == "apipb.LargeCommunitiesAttribute":
            msgs = list(_unpack(packed, pb.LargeCommunitiesAttribute).communities)
            if not msgs:
                unrepresentable.append("empty LARGE_COMMUNITY")
            large = tuple(
                LargeCommunity(int(m.global_admin), int(m.local_data1), int(m.local_data2))
                for m in msgs
            )
        else:
            unrepresentable.append(kind)
    if origin is None:
        unrepresentable.append("no ORIGIN")
    if prepend > MAX_PREPEND:
        unrepresentable.append(f"AS_PATH of {prepend} local AS copies")
    if unrepresentable:
        log.debug("path %s has attributes announcer cannot express: %s", prefix, unrepresentable)
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


def _peer_status(peer: Any, now: float) -> PeerStatus:
    state = _SESSION_STATES.get(peer.state.session_state, SessionState.UNKNOWN)
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
        admin_down=peer.state.admin_state != pb.PeerState.UP,
        uptime_s=uptime,
    )


# ------------------------------------------------------------------ watch


@dataclass(frozen=True)
class PeerEvent:
    """One WatchEvent peer event; `peer` is None for end_of_init."""

    kind: Literal["init", "end_of_init", "state", "unknown"]
    peer: PeerStatus | None


_EVENT_KINDS: dict[int, Literal["init", "end_of_init", "state", "unknown"]] = {
    pb.WatchEventResponse.PeerEvent.INIT: "init",
    pb.WatchEventResponse.PeerEvent.END_OF_INIT: "end_of_init",
    pb.WatchEventResponse.PeerEvent.STATE: "state",
}


class Watch:
    """A WatchEvent(peer={}) stream: its end means gobgpd restarted or went away.

    Iterate it (or call wait_closed()) in a thread. gobgpd 3.10 first sends one INIT
    event per configured peer, then END_OF_INIT: from then on the watch is registered
    and no change is missed. When the stream ends for any reason other than cancel(),
    iteration raises GobgpError: the caller must re-read gobgpd and re-inject
    everything (API paths do not survive a gobgpd restart). After cancel() iteration
    stops quietly. cancel() is safe from any thread, any number of times.
    """

    def __init__(self, call: Any, target: str) -> None:
        self._call = call
        self._target = target
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """End the stream; a thread blocked in iteration returns without error."""
        self._cancelled.set()
        self._call.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[PeerEvent]:
        try:
            for response in self._call:
                if response.WhichOneof("event") != "peer":
                    continue
                event = response.peer
                kind = _EVENT_KINDS.get(event.type, "unknown")
                peer = None if kind == "end_of_init" else _peer_status(event.peer, time.time())
                yield PeerEvent(kind, peer)
        except grpc.RpcError as e:
            if self._cancelled.is_set():
                return
            _raise("WatchEvent", self._target, e)
        if not self._cancelled.is_set():
            raise GobgpError(f"WatchEvent on {self._target} ended: gobgpd closed the stream")

    def wait_closed(self) -> None:
        """Block until the stream ends: return after cancel(), raise GobgpError otherwise."""
        for _ in self:
            pass


# ----------------------------------------------------------------- client


def _bind(kind: Any, rpc: str, request: Any, response: Any) -> Any:
    """One RPC of GobgpApi bound by its path (no generated grpc stubs, so no version gate)."""
    return kind(
        _SERVICE + rpc,
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )


class GobgpClient:
    """gobgpd's global RIB and neighbors over gRPC; implements model.RouteTable."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        batch_size: int = 500,
        api_version: Literal["auto", 3, 4] = "auto",
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.target = target
        self.timeout = timeout
        self.batch_size = batch_size
        self.api_version = api_version
        # No keepalive options on purpose: gobgpd enforces grpc-go's defaults (pings
        # at most every 5 min) and answers more frequent pings with GOAWAY
        # too_many_pings, killing the WatchEvent stream (notes 2.3.16). A local
        # daemon's exit closes the socket, which ends the stream at once anyway.
        # `target` is host:port or unix:///path; insecure_channel takes both.
        # Reconnect backoff capped at 1 s: grpc's default grows to 120 s, so after a
        # long gobgpd outage the channel would keep failing fast for up to two
        # minutes after gobgpd is back, and the re-sync (due within ~2 s) would wait.
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        ch = self._channel
        Empty = empty_pb2.Empty
        self._get_bgp = _bind(ch.unary_unary, "GetBgp", pb.GetBgpRequest, pb.GetBgpResponse)
        self._list_path = _bind(
            ch.unary_stream, "ListPath", pb.ListPathRequest, pb.ListPathResponse
        )
        self._add_path_stream = _bind(
            ch.stream_unary, "AddPathStream", pb.AddPathStreamRequest, Empty
        )
        self._list_peer = _bind(
            ch.unary_stream, "ListPeer", pb.ListPeerRequest, pb.ListPeerResponse
        )
        self._enable_peer = _bind(ch.unary_unary, "EnablePeer", pb.EnablePeerRequest, Empty)
        self._disable_peer = _bind(ch.unary_unary, "DisablePeer", pb.DisablePeerRequest, Empty)
        self._watch_event = _bind(
            ch.unary_stream, "WatchEvent", pb.WatchEventRequest, pb.WatchEventResponse
        )
        # DeletePath is deliberately not bound: see the module docstring.
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._watch_lock = threading.Lock()
        self._watch_stopped = False

    # -------------------------------------------------------------- global

    def local_asn(self) -> int:
        """gobgpd's own AS (0 while it runs without a configuration)."""
        # Not cached: one GetBgp per reconcile is cheap, and a restarted gobgpd may
        # come back with another configuration without the channel reporting anything.
        try:
            response = self._get_bgp(pb.GetBgpRequest(), timeout=self.timeout)
        except grpc.RpcError as e:
            _raise("GetBgp", self.target, e)
        return int(getattr(response, "global").asn)  # `global` is a Python keyword

    # -------------------------------------------------------------- routes

    def local_routes(self) -> dict[HostPrefix, Route]:
        """Host routes originated locally (not learned from a peer) in gobgpd's global RIB.

        A path whose attributes cannot be expressed as a Route comes back with
        as_path_prepend == UNREPRESENTABLE_PREPEND, so it never equals a desired route.
        """
        asn = self.local_asn()
        routes: dict[HostPrefix, Route] = {}
        for version in (4, 6):
            request = pb.ListPathRequest(table_type=pb.GLOBAL, family=_AFI_SAFI[version])
            try:
                for response in self._list_path(request, timeout=max(_LIST_DEADLINE, self.timeout)):
                    for path in response.destination.paths:
                        if not _is_ours_to_manage(path):
                            continue
                        route = _decode_route(path, asn)
                        if route is not None:
                            routes[route.prefix] = route
            except grpc.RpcError as e:
                _raise(f"ListPath(ipv{version})", self.target, e)
        return routes

    def apply(self, withdraw: Sequence[HostPrefix], announce: Sequence[Route]) -> None:
        """Withdraw, then announce; raises GobgpError (with `.done`) on partial failure.

        Everything is validated first: on InvalidRoute nothing at all is sent.
        """
        for prefix in withdraw:
            if not isinstance(prefix, ipaddress.IPv4Network | ipaddress.IPv6Network) or not (
                is_host_prefix(prefix)
            ):
                raise InvalidRoute(f"{prefix!r}: only /32 and /128 host routes are withdrawn")
        for route in announce:
            validate_route(route)
        if not withdraw and not announce:
            return
        asn = self.local_asn() if any(r.as_path_prepend for r in announce) else None
        withdraws = [_withdraw_path(p) for p in withdraw]
        announces = [_announce_path(r, asn) for r in announce]

        done = 0
        # Withdraws and announces never share a batch, so a prefix in both lists is
        # withdrawn and re-added in that order. One AddPathStream call per batch: the
        # call returns only after gobgpd installed every path of it, so `done` is
        # exact. (gobgpd rejects a whole batch if one path fails and aborts the stream,
        # so on a single stream we could not tell how many batches went in.)
        for paths in (withdraws, announces):
            for start in range(0, len(paths), self.batch_size):
                batch = paths[start : start + self.batch_size]
                request = pb.AddPathStreamRequest(table_type=pb.GLOBAL, paths=batch)
                try:
                    # AddPathStream needs table_type GLOBAL explicitly (notes 2.3.11).
                    self._add_path_stream(iter([request]), timeout=self.timeout)
                except grpc.RpcError as e:
                    _raise(
                        f"AddPathStream ({done} of {len(withdraws) + len(announces)} changes done)",
                        self.target,
                        e,
                        done=done,
                    )
                done += len(batch)
        log.debug("applied %d withdraws and %d announces", len(withdraws), len(announces))

    # --------------------------------------------------------------- peers

    def peers(self) -> list[PeerStatus]:
        """gobgpd's neighbors and their session states."""
        now = time.time()
        try:
            return [
                _peer_status(r.peer, now)
                for r in self._list_peer(pb.ListPeerRequest(), timeout=self.timeout)
            ]
        except grpc.RpcError as e:
            _raise("ListPeer", self.target, e)

    def enable_peer(self, address: str) -> None:
        """Start the session with a neighbor configured admin-down."""
        try:
            self._enable_peer(pb.EnablePeerRequest(address=address), timeout=self.timeout)
        except grpc.RpcError as e:
            _raise(f"EnablePeer({address})", self.target, e)

    def disable_peer(self, address: str, communication: str = "") -> None:
        """Shut a session down; `communication` is the RFC 8203 message the peer logs."""
        request = pb.DisablePeerRequest(address=address, communication=communication)
        try:
            self._disable_peer(request, timeout=self.timeout)
        except grpc.RpcError as e:
            _raise(f"DisablePeer({address})", self.target, e)

    # --------------------------------------------------------------- watch

    def watch(self) -> Watch:
        """Open WatchEvent(peer={}) now; see Watch for how its end signals a restart."""
        # No deadline: the stream is meant to live as long as gobgpd does. Opening it
        # does not wait for gobgpd; if it is down, the first iteration raises.
        request = pb.WatchEventRequest(peer=pb.WatchEventRequest.Peer())
        watch = Watch(self._watch_event(request), self.target)
        self._watches.add(watch)
        return watch

    def wait_closed(self) -> None:
        """Block until gobgpd's event stream ends (it restarted or went away).

        Raises GobgpError when the stream ends, which is the restart signal; returns
        quietly once cancel_watch() or close() was called. Meant for a worker thread.
        """
        with self._watch_lock:
            if self._watch_stopped:
                return
            watch = self.watch()
        watch.wait_closed()

    def cancel_watch(self) -> None:
        """Make a blocked wait_closed() return, and every later one return at once.

        Sticky on purpose: it is the shutdown path, and a wait_closed() whose thread
        starts just after it must not block forever.
        """
        with self._watch_lock:
            self._watch_stopped = True
            watches = list(self._watches)
        for watch in watches:
            watch.cancel()

    def close(self) -> None:
        """Cancel open watches (their waits end quietly), then close the channel."""
        self.cancel_watch()
        self._channel.close()

    def __enter__(self) -> GobgpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
