"""The GoBGP adapter: GobgpClient, gobgpd's global RIB and neighbors over gRPC.

Together with announcer.gobgp_rpc (the RPCs bound by path, the grpc error mapping,
the Watch stream) the only code that imports grpc; the messages are in
announcer.gobgp_codec and announcer.gobgp_versions.

Talks to gobgpd 3.x (package `apipb`, service `GobgpApi`) or 4.x (package `api`,
service `GoBgpService`) over gRPC; the two are wire-incompatible. Which one gobgpd
speaks is found out when the client first needs it (`api_version="auto"`): a GetBgp
on the 4.x service, and on UNIMPLEMENTED one on the 3.x service. The version can be
pinned instead (`api_version=3|4`, config key `gobgp.api_version`). Everything
version-specific lives in a gobgp_codec.Codec (the two are in gobgp_versions); the
channel, the batching, the watch and the error handling here are shared. The rest
of announcer never learns which version it talks to.

An upgrade (3.10 stopped, 4.8 started on the same address) or a downgrade under a
running client makes the next call fail with UNIMPLEMENTED ("unknown service"): the
client then detects the version again and retries that call once. With a pinned
version it raises a GobgpError that says what gobgpd speaks instead.

Operational traps this module is built around (details in gobgp-api-notes):

* gobgpd keeps API paths in memory only. The caller re-reads `local_routes()` each
  cycle instead of trusting what it sent, and `wait_closed()` ends when gobgpd goes
  away.
* gobgpd reports its errors as `UNKNOWN` with free text: never branch on the code,
  except for UNIMPLEMENTED, which gRPC itself sends for an unknown service.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import grpc

from .errors import GobgpError, InvalidRoute
from .gobgp_codec import UNREPRESENTABLE_PREPEND, ApiVersion, Codec
from .gobgp_paths import DEFAULT_PATH_CACHE_SIZE, PathCache
from .gobgp_rpc import BoundApi, Watch, is_unimplemented, raise_gobgp_error
from .gobgp_versions import CODECS
from .model import HostPrefix, PeerStatus, Route, is_host_prefix, validate_route

__all__ = ["UNREPRESENTABLE_PREPEND", "GobgpClient"]

log = logging.getLogger("announcer.gobgp")

T = TypeVar("T")
X = TypeVar("X")

# Reads of the whole RIB: gobgpd 3.10 buffers all of ListPath before sending it,
# about 10 s per 100k paths on a small VM (notes 6.1), so they get a long deadline.
_LIST_DEADLINE = 120.0

# The longest the gRPC channel waits between connects while gobgpd is away (issue 16:
# with 1 000 ms, a restarted gobgpd was noticed 0.3 - 1.1 s after its API was up).
RECONNECT_MAX_MS = 200

# Detection order: 4.x first, the current upstream; a 3.x gobgpd costs one extra
# round trip when the client first connects.
_DETECTION_ORDER: tuple[ApiVersion, ...] = (4, 3)


class GobgpClient:
    """gobgpd's global RIB and neighbors over gRPC; implements model.RouteTable.

    Construction does no I/O: the API version is detected (or the pinned one taken)
    by the first call that needs gobgpd. `path_cache_size` bounds how many prefixes'
    encoded paths are kept per API version (gobgp_paths.PathCache; 0 keeps none).
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        batch_size: int = 500,
        api_version: Literal["auto", 3, 4] = "auto",
        path_cache_size: int = DEFAULT_PATH_CACHE_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if api_version not in ("auto", 3, 4):
            raise ValueError(f"api_version must be 'auto', 3 or 4, not {api_version!r}")
        if path_cache_size < 0:
            raise ValueError("path_cache_size must not be negative")
        self.target = target
        self.timeout = timeout
        self.batch_size = batch_size
        self.api_version = api_version
        self._channel = self._new_channel()
        self._apis = {
            version: BoundApi(codec, self._channel, PathCache(codec, path_cache_size))
            for version, codec in CODECS.items()
        }
        # The API in use; None until the first call needs it, and again after
        # gobgpd answered UNIMPLEMENTED (another version took over the address).
        self._api: BoundApi | None = None
        self._api_lock = threading.Lock()
        self._announced: ApiVersion | None = None  # last version logged
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._watch_lock = threading.Lock()
        self._watch_stopped = False

    def _new_channel(self) -> grpc.Channel:
        """A gRPC channel to gobgpd (at start, and at each reconnect())."""
        # No keepalive options on purpose: gobgpd enforces grpc-go's defaults (pings
        # at most every 5 min) and answers more frequent pings with GOAWAY
        # too_many_pings, killing the WatchEvent stream (notes 2.3.16). A local
        # daemon's exit closes the socket, which ends the stream at once anyway.
        # `target` is host:port or unix:///path; insecure_channel takes both.
        # Reconnect backoff capped at RECONNECT_MAX_MS: grpc's default grows to 120 s,
        # so after a long gobgpd outage the channel would keep failing fast for up to
        # two minutes after gobgpd is back, and the re-sync would wait. Until the
        # channel tries again, every call fails without trying: the cap is how late
        # announcer can notice a restarted gobgpd. A connect to a local daemon costs
        # microseconds; a few a second while it is away cost nothing.
        return grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
            ],
        )

    def reconnect(self) -> None:
        """Use a new gRPC channel from now on (what gobgpd answers or refuses next).

        grpc-python 1.51 (Debian 12's and 13's python3-grpcio) kept a channel failing
        every connection attempt ("timed out before receiving SETTINGS frame") for
        5 s after gobgpd was killed and started again by systemd, while the `gobgp`
        CLI, or a new channel, got an answer at once (docs/operations.md). The watch
        calls this after each failed attempt to reopen gobgpd's event stream, so a
        channel in that state is never the one that waits for gobgpd. The API
        version stays, and so do the encoded paths. The old channel is not closed
        here: a call in flight on another thread keeps it until it ends, and it is
        closed when the last reference goes.
        """
        channel = self._new_channel()
        with self._api_lock:
            self._apis = {
                version: BoundApi(api.codec, channel, api.paths)
                for version, api in self._apis.items()
            }
            if self._api is not None:
                self._api = self._apis[self._api.version]
            self._channel = channel

    # ------------------------------------------------------ API version

    def _current(self, op: str, done: int = 0) -> BoundApi:
        """The API in use, detecting it first if needed; raises GobgpError."""
        with self._api_lock:
            if self._api is None:
                self._api = self._detect(op, done)
                self._log_version(self._api)
            return self._api

    def _detect(self, op: str, done: int) -> BoundApi:
        if self.api_version != "auto":
            return self._apis[self.api_version]
        for version in _DETECTION_ORDER:
            api = self._apis[version]
            try:
                api.get_bgp(api.codec.get_bgp_request(), timeout=self.timeout)
            except grpc.RpcError as e:
                if is_unimplemented(e):
                    continue
                raise_gobgp_error(
                    f"{op} (detecting the API version with GetBgp)", self.target, e, done
                )
            return api
        raise GobgpError(
            f"{self.target} serves neither GoBGP API ({self._apis[4].codec.service} for 4.x, "
            f"{self._apis[3].codec.service} for 3.x): is it gobgpd?",
            done=done,
        )

    def _log_version(self, api: BoundApi) -> None:
        if api.version == self._announced:
            return
        how = "pinned by gobgp.api_version" if self.api_version != "auto" else "detected"
        if self._announced is None:
            log.info(
                "gobgpd at %s: GoBGP %d.x API (%s, %s)",
                self.target,
                api.version,
                api.codec.service,
                how,
            )
        else:
            log.warning(
                "gobgpd at %s now speaks the GoBGP %d.x API (%s), was %d.x: upgraded or downgraded",
                self.target,
                api.version,
                api.codec.service,
                self._announced,
            )
        if api.version == 3:
            # BFD came with GoBGP 4.6: with 3.x a dead LB host stays at the routers for
            # the BGP hold time (docs/operations.md, BFD).
            log.info(
                "gobgpd at %s has no BFD (GoBGP 3.x): a dead LB host leaves the routers only "
                "after the BGP hold time; gobgpd 4.6 or later has BFD",
                self.target,
            )
        self._announced = api.version

    def _forget(self, api: BoundApi) -> None:
        """Detect again at the next call, unless another thread already did."""
        with self._api_lock:
            if self._api is api:
                self._api = None

    def _serves(self, api: BoundApi) -> bool | None:
        """Whether gobgpd answers GetBgp on this API (None: could not tell)."""
        try:
            api.get_bgp(api.codec.get_bgp_request(), timeout=self.timeout)
        except grpc.RpcError as e:
            return False if is_unimplemented(e) else None
        return True

    def _mismatch(self, op: str, pinned: BoundApi, done: int) -> GobgpError:
        other = self._apis[3 if pinned.version == 4 else 4]
        message = (
            f"{op} on {self.target}: gobgpd does not serve the GoBGP {pinned.version}.x API "
            f"({pinned.codec.service}) that gobgp.api_version pins"
        )
        serves = self._serves(other)
        if serves:
            message += (
                f"; it serves {other.version}.x ({other.codec.service}): set "
                f"gobgp.api_version to {other.version} or auto"
            )
        elif serves is False:
            message += f"; nor the {other.version}.x API ({other.codec.service}): is it gobgpd?"
        return GobgpError(message, done=done)

    def _call(self, op: str, fn: Callable[[BoundApi], T], *, done: int = 0) -> T:
        """fn(api) with grpc errors turned into GobgpError, following a version change.

        On UNIMPLEMENTED the version is detected again and fn runs once more with
        the new API; every fn here is safe to repeat (reads, enable/disable, and an
        AddPathStream batch that gobgpd refused before reading it).
        """
        api = self._current(op, done)
        try:
            return fn(api)
        except grpc.RpcError as e:
            if not is_unimplemented(e):
                raise_gobgp_error(op, self.target, e, done)
            self._forget(api)
            if self.api_version != "auto":
                raise self._mismatch(op, api, done) from e
            fresh = self._current(op, done)
            if fresh is api:  # same version again: this RPC itself is missing
                raise_gobgp_error(op, self.target, e, done)
        try:
            return fn(fresh)
        except grpc.RpcError as e:
            raise_gobgp_error(op, self.target, e, done)

    # -------------------------------------------------------------- global

    def local_asn(self) -> int:
        """gobgpd's own AS (0 while it runs without a configuration)."""
        # Not cached: one GetBgp per reconcile is cheap, and a restarted gobgpd may
        # come back with another configuration without the channel reporting anything.
        return self._call(
            "GetBgp",
            lambda api: api.codec.local_asn(
                api.get_bgp(api.codec.get_bgp_request(), timeout=self.timeout)
            ),
        )

    # -------------------------------------------------------------- routes

    def local_routes(self) -> dict[HostPrefix, Route]:
        """Host routes originated locally (not learned from a peer) in gobgpd's global RIB.

        A path whose attributes cannot be expressed as a Route comes back with
        as_path_prepend == UNREPRESENTABLE_PREPEND, so it never equals a desired route.
        """
        asn = self.local_asn()

        def route(api: BoundApi, path: Any) -> Route | None:
            if not api.codec.is_ours_to_manage(path):
                return None
            decoded = api.codec.decode_route(path, asn)
            # The route this client sent, if it is that one: not held twice.
            return api.paths.known(decoded) if decoded is not None else None

        found = self._list_paths(
            "", lambda c, f: c.list_path_request(f), route, max(_LIST_DEADLINE, self.timeout)
        )
        return {r.prefix: r for r in found}

    def advertised(self, peer: str) -> set[HostPrefix]:
        """The host routes gobgpd's Adj-RIB-Out holds for one neighbor (both families)."""
        return set(
            self._list_paths(
                f"adj-out {peer} ",
                lambda c, f: c.adj_out_request(f, peer),
                lambda api, path: api.codec.path_prefix(path),
                self.timeout,
            )
        )

    def _list_paths(
        self,
        what: str,
        request: Callable[[Codec, Literal[4, 6]], Any],
        take: Callable[[BoundApi, Any], T | None],
        timeout: float,
    ) -> list[T]:
        """ListPath for both families: `take` of every path, where it is not None."""
        out: list[T] = []
        family: Literal[4, 6]
        for family in (4, 6):

            def read(api: BoundApi, family: Literal[4, 6] = family) -> list[T]:
                return [
                    x
                    for response in api.list_path(request(api.codec, family), timeout=timeout)
                    for path in response.destination.paths
                    if (x := take(api, path)) is not None
                ]

            out += self._call(f"ListPath({what}ipv{family})", read)
        return out

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
        asn: int | None = None
        if any(r.as_path_prepend for r in announce):
            asn = self.local_asn()
            if not asn:  # checked before the first batch, not in the middle of apply
                raise GobgpError("cannot prepend: gobgpd reports no local AS (not configured yet?)")

        total = len(withdraw) + len(announce)
        # Withdraws and announces never share a batch, so a prefix in both lists is
        # withdrawn and re-added in that order.
        done = self._send_batches(withdraw, lambda api, b: api.paths.withdraw_request(b), 0, total)
        self._send_batches(announce, lambda api, b: api.paths.announce_request(b, asn), done, total)
        log.debug("applied %d withdraws and %d announces", len(withdraw), len(announce))

    def _send_batches(
        self,
        items: Sequence[X],
        encode: Callable[[BoundApi, Sequence[X]], bytes],
        done: int,
        total: int,
    ) -> int:
        """AddPathStream `items` in batches; returns `done` plus what went through.

        One AddPathStream call per batch: the call returns only after gobgpd
        installed every path of it, so `done` is exact. (gobgpd rejects a whole batch
        if one path fails and aborts the stream, so on a single stream we could not
        tell how many batches went in.) A batch is encoded (from the path cache, see
        gobgp_paths.PathCache) for the API in use when it is sent, so a batch retried
        after a version change goes out in the new format.
        """
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]

            def send(api: BoundApi, batch: Sequence[X] = batch) -> None:
                api.add_path_stream(iter([encode(api, batch)]), timeout=self.timeout)

            self._call(f"AddPathStream ({done} of {total} changes done)", send, done=done)
            done += len(batch)
        return done

    # --------------------------------------------------------------- peers

    def peers(self) -> list[PeerStatus]:
        """gobgpd's neighbors and their session states."""

        def read(api: BoundApi) -> list[PeerStatus]:
            now = time.time()
            responses = api.list_peer(api.codec.list_peer_request(), timeout=self.timeout)
            return [api.codec.peer_status(r.peer, now) for r in responses]

        return self._call("ListPeer", read)

    def enable_peer(self, address: str) -> None:
        """Start the session with a neighbor configured admin-down."""
        self._call(
            f"EnablePeer({address})",
            lambda api: api.enable_peer(
                api.codec.enable_peer_request(address), timeout=self.timeout
            ),
        )

    def disable_peer(self, address: str, communication: str = "") -> None:
        """Shut a session down; `communication` is the RFC 8203 message the peer logs."""
        self._call(
            f"DisablePeer({address})",
            lambda api: api.disable_peer(
                api.codec.disable_peer_request(address, communication), timeout=self.timeout
            ),
        )

    # --------------------------------------------------------------- watch

    def _open_watch(self, api: BoundApi) -> Watch:
        # No deadline: the stream is meant to live as long as gobgpd does.
        call = api.watch_event(api.codec.watch_peers_request())
        watch = Watch(call, api.codec, self.target, lambda: self._watch_unimplemented(api))
        self._watches.add(watch)
        return watch

    def _watch_unimplemented(self, api: BoundApi) -> GobgpError | None:
        self._forget(api)
        if self.api_version != "auto":
            return self._mismatch("WatchEvent", api, 0)
        return None

    def wait_closed(self, on_open: Callable[[], None] | None = None) -> None:
        """Block until gobgpd's event stream ends (it restarted or went away).

        Raises GobgpError when the stream ends, which is the restart signal; returns
        quietly once cancel_watch() or close() was called. Meant for a worker thread.
        `on_open` is called (in this thread) at END_OF_INIT: gobgpd is up, configured
        and watched, the moment to re-inject after a restart.
        """
        if self._watch_stopped:
            return
        # Detection (a network call) happens outside _watch_lock, so cancel_watch()
        # never waits for it.
        api = self._current("WatchEvent")
        with self._watch_lock:
            if self._watch_stopped:
                return
            watch = self._open_watch(api)
        for event in watch:
            if on_open is not None and event.kind == "end_of_init":
                on_open()
                on_open = None

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
