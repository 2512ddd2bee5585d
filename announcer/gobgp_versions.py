"""gobgpd's two wire formats: V3Codec for 3.x, V4Codec for 4.x, and CODECS by version.

The only module that imports the generated protobuf code (announcer._proto); every
rule shared by both formats lives in their base, announcer.gobgp_codec.Codec. Each
codec here supplies its version's service, RPC and enum tables and the hooks that
wrap and unwrap NLRI and attributes.

The two APIs are wire-incompatible (gobgp-api-notes section 5):

* 3.x: package `apipb`, service `GobgpApi`; a path's NLRI and attributes are
  google.protobuf.Any, told apart by type URL; RPCs without a result return Empty.
* 4.x: package `api`, service `GoBgpService`; `NLRI` and `Attribute` are typed
  oneofs; every RPC has its own response; most enums gained an UNSPECIFIED = 0,
  so TABLE_TYPE_GLOBAL, ADMIN_STATE_UP, ... are one higher than in 3.x.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from google.protobuf import any_pb2, empty_pb2

from ._proto import gobgp_v3_pb2 as v3
from ._proto import gobgp_v4_pb2 as v4
from .gobgp_codec import ApiVersion, Codec, EventKind
from .model import SessionState

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
    table_adj_out = v3.ADJ_OUT
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
    table_adj_out = v4.TABLE_TYPE_ADJ_OUT
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

    _bfd_states: ClassVar[dict[int, str]] = {
        v4.BFD_SESSION_STATE_UP: "up",
        v4.BFD_SESSION_STATE_DOWN: "down",
        v4.BFD_SESSION_STATE_ADMIN_DOWN: "admin-down",
        v4.BFD_SESSION_STATE_INIT: "init",
    }

    def bfd_state(self, peer: Any) -> str | None:
        if not peer.bfd.enabled:
            return None
        return self._bfd_states.get(peer.state.bfd_state.session_state, "unknown")

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
