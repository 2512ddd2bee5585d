"""gRPC plumbing of the GoBGP adapter: RPCs bound by path, grpc errors, the watch stream.

BoundApi binds one API version's RPCs on a channel; raise_gobgp_error() and
is_unimplemented() turn grpc errors into GobgpError; Watch iterates a WatchEvent
stream. announcer.gobgp (GobgpClient) decides which API to use and when to retry;
announcer.gobgp_versions has the messages.

RPCs are bound by path with `channel.unary_unary(...)` and friends instead of
generated `_pb2_grpc` stubs, so grpcio's generated-version check never applies and
the module loads on Debian bookworm's python3-grpcio 1.51 as well as on current
grpcio (gobgp-api-notes 2.3.17). Only the RPCs in a codec's `rpcs` table are bound,
and DeletePath is in neither: without a path it deletes every local path, other
tools' included, so withdraws go through AddPathStream with `is_withdraw=True`.
AddPathStream is bound without a serializer: its requests are bytes that a
gobgp_paths.PathCache (one per API version) assembles from paths encoded once,
so re-announcing a route that was sent before builds no protobuf message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from .errors import GobgpError
from .gobgp_codec import ApiVersion, Codec, PeerEvent
from .gobgp_paths import PathCache

# ------------------------------------------------------------------ errors


def _code(err: grpc.RpcError) -> grpc.StatusCode | None:
    return err.code() if callable(getattr(err, "code", None)) else None


def _describe(err: grpc.RpcError) -> str:
    code = _code(err)
    details = err.details() if callable(getattr(err, "details", None)) else None
    name = code.name if code is not None else "?"
    return f"{name}: {details or 'no details'}"


def raise_gobgp_error(op: str, target: str, err: grpc.RpcError, done: int = 0) -> NoReturn:
    """Raise `err` as a GobgpError naming the operation, gobgpd's address and `done`."""
    raise GobgpError(f"{op} on {target} failed ({_describe(err)})", done=done) from err


def is_unimplemented(err: grpc.RpcError) -> bool:
    """Whether gRPC refused the call as an unknown service or method."""
    return _code(err) is grpc.StatusCode.UNIMPLEMENTED


# ------------------------------------------------------------------ watch


class Watch:
    """A WatchEvent(peer={}) stream: its end means gobgpd restarted or went away.

    GobgpClient.wait_closed() iterates it in a thread. gobgpd first sends one INIT
    event per configured peer, then END_OF_INIT (3.10 and 4.8 alike): from then on
    the watch is registered and no change is missed. When the stream ends for any
    reason other than cancel(), iteration raises GobgpError: the caller must re-read
    gobgpd and re-inject everything (API paths do not survive a gobgpd restart).
    After cancel() iteration stops quietly. cancel() is safe from any thread, any
    number of times.
    """

    def __init__(
        self,
        call: Any,
        codec: Codec,
        target: str,
        on_unimplemented: Callable[[], GobgpError | None] = lambda: None,
    ) -> None:
        self._call = call
        self._codec = codec
        self._target = target
        self._on_unimplemented = on_unimplemented
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """End the stream; a thread blocked in iteration returns without error."""
        self._cancelled.set()
        self._call.cancel()

    def __iter__(self) -> Iterator[PeerEvent]:
        try:
            for response in self._call:
                event = self._codec.peer_event(response, time.time())
                if event is not None:
                    yield event
        except grpc.RpcError as e:
            if self._cancelled.is_set():
                return
            if is_unimplemented(e):
                # Another gobgpd version took over the address: the client's next
                # call detects it again (or, with a pinned version, says so).
                better = self._on_unimplemented()
                if better is not None:
                    raise better from e
            raise_gobgp_error("WatchEvent", self._target, e)
        if not self._cancelled.is_set():
            raise GobgpError(f"WatchEvent on {self._target} ended: gobgpd closed the stream")


# ------------------------------------------------------------ bound RPCs


def _already_serialized(request: bytes) -> bytes:
    return request


class BoundApi:
    """One API version's RPCs, bound by path on the shared channel, and its path cache."""

    def __init__(self, codec: Codec, channel: grpc.Channel, paths: PathCache) -> None:
        self.codec = codec
        self.paths = paths  # kept across channels (GobgpClient.reconnect)

        def bind(kind: Any, rpc: str, serializer: Callable[[Any], bytes] | None = None) -> Any:
            request, response = codec.rpcs[rpc]
            return kind(
                f"/{codec.service}/{rpc}",
                request_serializer=serializer or request.SerializeToString,
                response_deserializer=response.FromString,
            )

        self.get_bgp = bind(channel.unary_unary, "GetBgp")
        self.list_path = bind(channel.unary_stream, "ListPath")
        # Takes serialized AddPathStreamRequests (bytes from self.paths).
        self.add_path_stream = bind(channel.stream_unary, "AddPathStream", _already_serialized)
        self.list_peer = bind(channel.unary_stream, "ListPeer")
        self.enable_peer = bind(channel.unary_unary, "EnablePeer")
        self.disable_peer = bind(channel.unary_unary, "DisablePeer")
        self.watch_event = bind(channel.unary_stream, "WatchEvent")

    @property
    def version(self) -> ApiVersion:
        return self.codec.version
