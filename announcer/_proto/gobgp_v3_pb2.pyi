from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

ADJ_IN: TableType
ADJ_OUT: TableType
DESCRIPTOR: _descriptor.FileDescriptor
EXTERNAL: PeerType
GLOBAL: TableType
INTERNAL: PeerType
LOCAL: TableType
REMOVE_ALL: RemovePrivate
REMOVE_NONE: RemovePrivate
REPLACE: RemovePrivate
VRF: TableType

class AddPathRequest(_message.Message):
    __slots__ = ["path", "table_type", "vrf_id"]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VRF_ID_FIELD_NUMBER: _ClassVar[int]
    path: Path
    table_type: TableType
    vrf_id: str
    def __init__(self, table_type: _Optional[_Union[TableType, str]] = ..., vrf_id: _Optional[str] = ..., path: _Optional[_Union[Path, _Mapping]] = ...) -> None: ...

class AddPathResponse(_message.Message):
    __slots__ = ["uuid"]
    UUID_FIELD_NUMBER: _ClassVar[int]
    uuid: bytes
    def __init__(self, uuid: _Optional[bytes] = ...) -> None: ...

class AddPathStreamRequest(_message.Message):
    __slots__ = ["paths", "table_type", "vrf_id"]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    TABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VRF_ID_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedCompositeFieldContainer[Path]
    table_type: TableType
    vrf_id: str
    def __init__(self, table_type: _Optional[_Union[TableType, str]] = ..., vrf_id: _Optional[str] = ..., paths: _Optional[_Iterable[_Union[Path, _Mapping]]] = ...) -> None: ...

class AsPathAttribute(_message.Message):
    __slots__ = ["segments"]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[AsSegment]
    def __init__(self, segments: _Optional[_Iterable[_Union[AsSegment, _Mapping]]] = ...) -> None: ...

class AsSegment(_message.Message):
    __slots__ = ["numbers", "type"]
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    AS_CONFED_SEQUENCE: AsSegment.Type
    AS_CONFED_SET: AsSegment.Type
    AS_SEQUENCE: AsSegment.Type
    AS_SET: AsSegment.Type
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN: AsSegment.Type
    numbers: _containers.RepeatedScalarFieldContainer[int]
    type: AsSegment.Type
    def __init__(self, type: _Optional[_Union[AsSegment.Type, str]] = ..., numbers: _Optional[_Iterable[int]] = ...) -> None: ...

class CommunitiesAttribute(_message.Message):
    __slots__ = ["communities"]
    COMMUNITIES_FIELD_NUMBER: _ClassVar[int]
    communities: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, communities: _Optional[_Iterable[int]] = ...) -> None: ...

class DeletePathRequest(_message.Message):
    __slots__ = ["family", "path", "table_type", "uuid", "vrf_id"]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    VRF_ID_FIELD_NUMBER: _ClassVar[int]
    family: Family
    path: Path
    table_type: TableType
    uuid: bytes
    vrf_id: str
    def __init__(self, table_type: _Optional[_Union[TableType, str]] = ..., vrf_id: _Optional[str] = ..., family: _Optional[_Union[Family, _Mapping]] = ..., path: _Optional[_Union[Path, _Mapping]] = ..., uuid: _Optional[bytes] = ...) -> None: ...

class Destination(_message.Message):
    __slots__ = ["paths", "prefix"]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedCompositeFieldContainer[Path]
    prefix: str
    def __init__(self, prefix: _Optional[str] = ..., paths: _Optional[_Iterable[_Union[Path, _Mapping]]] = ...) -> None: ...

class DisablePeerRequest(_message.Message):
    __slots__ = ["address", "communication"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    COMMUNICATION_FIELD_NUMBER: _ClassVar[int]
    address: str
    communication: str
    def __init__(self, address: _Optional[str] = ..., communication: _Optional[str] = ...) -> None: ...

class EnablePeerRequest(_message.Message):
    __slots__ = ["address"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class Family(_message.Message):
    __slots__ = ["afi", "safi"]
    class Afi(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    class Safi(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    AFI_FIELD_NUMBER: _ClassVar[int]
    AFI_IP: Family.Afi
    AFI_IP6: Family.Afi
    AFI_L2VPN: Family.Afi
    AFI_LS: Family.Afi
    AFI_OPAQUE: Family.Afi
    AFI_UNKNOWN: Family.Afi
    SAFI_ENCAPSULATION: Family.Safi
    SAFI_EVPN: Family.Safi
    SAFI_FIELD_NUMBER: _ClassVar[int]
    SAFI_FLOW_SPEC_UNICAST: Family.Safi
    SAFI_FLOW_SPEC_VPN: Family.Safi
    SAFI_KEY_VALUE: Family.Safi
    SAFI_LS: Family.Safi
    SAFI_MPLS_LABEL: Family.Safi
    SAFI_MPLS_VPN: Family.Safi
    SAFI_MPLS_VPN_MULTICAST: Family.Safi
    SAFI_MULTICAST: Family.Safi
    SAFI_MUP: Family.Safi
    SAFI_ROUTE_TARGET_CONSTRAINTS: Family.Safi
    SAFI_SR_POLICY: Family.Safi
    SAFI_UNICAST: Family.Safi
    SAFI_UNKNOWN: Family.Safi
    SAFI_VPLS: Family.Safi
    afi: Family.Afi
    safi: Family.Safi
    def __init__(self, afi: _Optional[_Union[Family.Afi, str]] = ..., safi: _Optional[_Union[Family.Safi, str]] = ...) -> None: ...

class GetBgpRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GetBgpResponse(_message.Message):
    __slots__ = []
    GLOBAL_FIELD_NUMBER: _ClassVar[int]
    def __init__(self, **kwargs) -> None: ...

class Global(_message.Message):
    __slots__ = ["asn", "bind_to_device", "families", "listen_addresses", "listen_port", "router_id", "use_multiple_paths"]
    ASN_FIELD_NUMBER: _ClassVar[int]
    BIND_TO_DEVICE_FIELD_NUMBER: _ClassVar[int]
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    LISTEN_PORT_FIELD_NUMBER: _ClassVar[int]
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    USE_MULTIPLE_PATHS_FIELD_NUMBER: _ClassVar[int]
    asn: int
    bind_to_device: str
    families: _containers.RepeatedScalarFieldContainer[int]
    listen_addresses: _containers.RepeatedScalarFieldContainer[str]
    listen_port: int
    router_id: str
    use_multiple_paths: bool
    def __init__(self, asn: _Optional[int] = ..., router_id: _Optional[str] = ..., listen_port: _Optional[int] = ..., listen_addresses: _Optional[_Iterable[str]] = ..., families: _Optional[_Iterable[int]] = ..., use_multiple_paths: bool = ..., bind_to_device: _Optional[str] = ...) -> None: ...

class GracefulRestart(_message.Message):
    __slots__ = ["enabled", "helper_only", "notification_enabled", "restart_time"]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    HELPER_ONLY_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_ENABLED_FIELD_NUMBER: _ClassVar[int]
    RESTART_TIME_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    helper_only: bool
    notification_enabled: bool
    restart_time: int
    def __init__(self, enabled: bool = ..., restart_time: _Optional[int] = ..., helper_only: bool = ..., notification_enabled: bool = ...) -> None: ...

class IPAddressPrefix(_message.Message):
    __slots__ = ["prefix", "prefix_len"]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    prefix_len: int
    def __init__(self, prefix_len: _Optional[int] = ..., prefix: _Optional[str] = ...) -> None: ...

class LargeCommunitiesAttribute(_message.Message):
    __slots__ = ["communities"]
    COMMUNITIES_FIELD_NUMBER: _ClassVar[int]
    communities: _containers.RepeatedCompositeFieldContainer[LargeCommunity]
    def __init__(self, communities: _Optional[_Iterable[_Union[LargeCommunity, _Mapping]]] = ...) -> None: ...

class LargeCommunity(_message.Message):
    __slots__ = ["global_admin", "local_data1", "local_data2"]
    GLOBAL_ADMIN_FIELD_NUMBER: _ClassVar[int]
    LOCAL_DATA1_FIELD_NUMBER: _ClassVar[int]
    LOCAL_DATA2_FIELD_NUMBER: _ClassVar[int]
    global_admin: int
    local_data1: int
    local_data2: int
    def __init__(self, global_admin: _Optional[int] = ..., local_data1: _Optional[int] = ..., local_data2: _Optional[int] = ...) -> None: ...

class ListPathRequest(_message.Message):
    __slots__ = ["enable_attribute_binary", "enable_filtered", "enable_nlri_binary", "enable_only_binary", "family", "name", "prefixes", "sort_type", "table_type"]
    class SortType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    ENABLE_ATTRIBUTE_BINARY_FIELD_NUMBER: _ClassVar[int]
    ENABLE_FILTERED_FIELD_NUMBER: _ClassVar[int]
    ENABLE_NLRI_BINARY_FIELD_NUMBER: _ClassVar[int]
    ENABLE_ONLY_BINARY_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NONE: ListPathRequest.SortType
    PREFIX: ListPathRequest.SortType
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    SORT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    enable_attribute_binary: bool
    enable_filtered: bool
    enable_nlri_binary: bool
    enable_only_binary: bool
    family: Family
    name: str
    prefixes: _containers.RepeatedCompositeFieldContainer[TableLookupPrefix]
    sort_type: ListPathRequest.SortType
    table_type: TableType
    def __init__(self, table_type: _Optional[_Union[TableType, str]] = ..., name: _Optional[str] = ..., family: _Optional[_Union[Family, _Mapping]] = ..., prefixes: _Optional[_Iterable[_Union[TableLookupPrefix, _Mapping]]] = ..., sort_type: _Optional[_Union[ListPathRequest.SortType, str]] = ..., enable_filtered: bool = ..., enable_nlri_binary: bool = ..., enable_attribute_binary: bool = ..., enable_only_binary: bool = ...) -> None: ...

class ListPathResponse(_message.Message):
    __slots__ = ["destination"]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    destination: Destination
    def __init__(self, destination: _Optional[_Union[Destination, _Mapping]] = ...) -> None: ...

class ListPeerRequest(_message.Message):
    __slots__ = ["address", "enableAdvertised"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ENABLEADVERTISED_FIELD_NUMBER: _ClassVar[int]
    address: str
    enableAdvertised: bool
    def __init__(self, address: _Optional[str] = ..., enableAdvertised: bool = ...) -> None: ...

class ListPeerResponse(_message.Message):
    __slots__ = ["peer"]
    PEER_FIELD_NUMBER: _ClassVar[int]
    peer: Peer
    def __init__(self, peer: _Optional[_Union[Peer, _Mapping]] = ...) -> None: ...

class LocalPrefAttribute(_message.Message):
    __slots__ = ["local_pref"]
    LOCAL_PREF_FIELD_NUMBER: _ClassVar[int]
    local_pref: int
    def __init__(self, local_pref: _Optional[int] = ...) -> None: ...

class MpReachNLRIAttribute(_message.Message):
    __slots__ = ["family", "next_hops", "nlris"]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOPS_FIELD_NUMBER: _ClassVar[int]
    NLRIS_FIELD_NUMBER: _ClassVar[int]
    family: Family
    next_hops: _containers.RepeatedScalarFieldContainer[str]
    nlris: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, family: _Optional[_Union[Family, _Mapping]] = ..., next_hops: _Optional[_Iterable[str]] = ..., nlris: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...

class MultiExitDiscAttribute(_message.Message):
    __slots__ = ["med"]
    MED_FIELD_NUMBER: _ClassVar[int]
    med: int
    def __init__(self, med: _Optional[int] = ...) -> None: ...

class NextHopAttribute(_message.Message):
    __slots__ = ["next_hop"]
    NEXT_HOP_FIELD_NUMBER: _ClassVar[int]
    next_hop: str
    def __init__(self, next_hop: _Optional[str] = ...) -> None: ...

class OriginAttribute(_message.Message):
    __slots__ = ["origin"]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    origin: int
    def __init__(self, origin: _Optional[int] = ...) -> None: ...

class Path(_message.Message):
    __slots__ = ["age", "best", "family", "filtered", "identifier", "is_from_external", "is_nexthop_invalid", "is_withdraw", "local_identifier", "neighbor_ip", "nlri", "nlri_binary", "no_implicit_withdraw", "pattrs", "pattrs_binary", "source_asn", "source_id", "stale", "uuid"]
    AGE_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FILTERED_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    IS_FROM_EXTERNAL_FIELD_NUMBER: _ClassVar[int]
    IS_NEXTHOP_INVALID_FIELD_NUMBER: _ClassVar[int]
    IS_WITHDRAW_FIELD_NUMBER: _ClassVar[int]
    LOCAL_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_IP_FIELD_NUMBER: _ClassVar[int]
    NLRI_BINARY_FIELD_NUMBER: _ClassVar[int]
    NLRI_FIELD_NUMBER: _ClassVar[int]
    NO_IMPLICIT_WITHDRAW_FIELD_NUMBER: _ClassVar[int]
    PATTRS_BINARY_FIELD_NUMBER: _ClassVar[int]
    PATTRS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ASN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    age: _timestamp_pb2.Timestamp
    best: bool
    family: Family
    filtered: bool
    identifier: int
    is_from_external: bool
    is_nexthop_invalid: bool
    is_withdraw: bool
    local_identifier: int
    neighbor_ip: str
    nlri: _any_pb2.Any
    nlri_binary: bytes
    no_implicit_withdraw: bool
    pattrs: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    pattrs_binary: _containers.RepeatedScalarFieldContainer[bytes]
    source_asn: int
    source_id: str
    stale: bool
    uuid: bytes
    def __init__(self, nlri: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., pattrs: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ..., age: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., best: bool = ..., is_withdraw: bool = ..., no_implicit_withdraw: bool = ..., family: _Optional[_Union[Family, _Mapping]] = ..., source_asn: _Optional[int] = ..., source_id: _Optional[str] = ..., filtered: bool = ..., stale: bool = ..., is_from_external: bool = ..., neighbor_ip: _Optional[str] = ..., uuid: _Optional[bytes] = ..., is_nexthop_invalid: bool = ..., identifier: _Optional[int] = ..., local_identifier: _Optional[int] = ..., nlri_binary: _Optional[bytes] = ..., pattrs_binary: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ["conf", "graceful_restart", "state", "timers", "transport"]
    CONF_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_RESTART_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIMERS_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    conf: PeerConf
    graceful_restart: GracefulRestart
    state: PeerState
    timers: Timers
    transport: Transport
    def __init__(self, conf: _Optional[_Union[PeerConf, _Mapping]] = ..., state: _Optional[_Union[PeerState, _Mapping]] = ..., timers: _Optional[_Union[Timers, _Mapping]] = ..., transport: _Optional[_Union[Transport, _Mapping]] = ..., graceful_restart: _Optional[_Union[GracefulRestart, _Mapping]] = ...) -> None: ...

class PeerConf(_message.Message):
    __slots__ = ["admin_down", "allow_own_asn", "auth_password", "description", "local_asn", "neighbor_address", "neighbor_interface", "peer_asn", "peer_group", "remove_private", "replace_peer_asn", "route_flap_damping", "send_community", "type", "vrf"]
    ADMIN_DOWN_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OWN_ASN_FIELD_NUMBER: _ClassVar[int]
    AUTH_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ASN_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_INTERFACE_FIELD_NUMBER: _ClassVar[int]
    PEER_ASN_FIELD_NUMBER: _ClassVar[int]
    PEER_GROUP_FIELD_NUMBER: _ClassVar[int]
    REMOVE_PRIVATE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_PEER_ASN_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FLAP_DAMPING_FIELD_NUMBER: _ClassVar[int]
    SEND_COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VRF_FIELD_NUMBER: _ClassVar[int]
    admin_down: bool
    allow_own_asn: int
    auth_password: str
    description: str
    local_asn: int
    neighbor_address: str
    neighbor_interface: str
    peer_asn: int
    peer_group: str
    remove_private: RemovePrivate
    replace_peer_asn: bool
    route_flap_damping: bool
    send_community: int
    type: PeerType
    vrf: str
    def __init__(self, auth_password: _Optional[str] = ..., description: _Optional[str] = ..., local_asn: _Optional[int] = ..., neighbor_address: _Optional[str] = ..., peer_asn: _Optional[int] = ..., peer_group: _Optional[str] = ..., type: _Optional[_Union[PeerType, str]] = ..., remove_private: _Optional[_Union[RemovePrivate, str]] = ..., route_flap_damping: bool = ..., send_community: _Optional[int] = ..., neighbor_interface: _Optional[str] = ..., vrf: _Optional[str] = ..., allow_own_asn: _Optional[int] = ..., replace_peer_asn: bool = ..., admin_down: bool = ...) -> None: ...

class PeerState(_message.Message):
    __slots__ = ["admin_state", "description", "flops", "local_asn", "neighbor_address", "out_q", "peer_asn", "peer_group", "router_id", "session_state", "type"]
    class AdminState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    ACTIVE: PeerState.SessionState
    ADMIN_STATE_FIELD_NUMBER: _ClassVar[int]
    CONNECT: PeerState.SessionState
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DOWN: PeerState.AdminState
    ESTABLISHED: PeerState.SessionState
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    IDLE: PeerState.SessionState
    LOCAL_ASN_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOR_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OPENCONFIRM: PeerState.SessionState
    OPENSENT: PeerState.SessionState
    OUT_Q_FIELD_NUMBER: _ClassVar[int]
    PEER_ASN_FIELD_NUMBER: _ClassVar[int]
    PEER_GROUP_FIELD_NUMBER: _ClassVar[int]
    PFX_CT: PeerState.AdminState
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_STATE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN: PeerState.SessionState
    UP: PeerState.AdminState
    admin_state: PeerState.AdminState
    description: str
    flops: int
    local_asn: int
    neighbor_address: str
    out_q: int
    peer_asn: int
    peer_group: str
    router_id: str
    session_state: PeerState.SessionState
    type: PeerType
    def __init__(self, description: _Optional[str] = ..., local_asn: _Optional[int] = ..., neighbor_address: _Optional[str] = ..., peer_asn: _Optional[int] = ..., peer_group: _Optional[str] = ..., type: _Optional[_Union[PeerType, str]] = ..., session_state: _Optional[_Union[PeerState.SessionState, str]] = ..., admin_state: _Optional[_Union[PeerState.AdminState, str]] = ..., out_q: _Optional[int] = ..., flops: _Optional[int] = ..., router_id: _Optional[str] = ...) -> None: ...

class TableLookupPrefix(_message.Message):
    __slots__ = ["prefix", "type"]
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    EXACT: TableLookupPrefix.Type
    LONGER: TableLookupPrefix.Type
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    SHORTER: TableLookupPrefix.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    type: TableLookupPrefix.Type
    def __init__(self, prefix: _Optional[str] = ..., type: _Optional[_Union[TableLookupPrefix.Type, str]] = ...) -> None: ...

class Timers(_message.Message):
    __slots__ = ["config", "state"]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    config: TimersConfig
    state: TimersState
    def __init__(self, config: _Optional[_Union[TimersConfig, _Mapping]] = ..., state: _Optional[_Union[TimersState, _Mapping]] = ...) -> None: ...

class TimersConfig(_message.Message):
    __slots__ = ["connect_retry", "hold_time", "idle_hold_time_after_reset", "keepalive_interval", "minimum_advertisement_interval"]
    CONNECT_RETRY_FIELD_NUMBER: _ClassVar[int]
    HOLD_TIME_FIELD_NUMBER: _ClassVar[int]
    IDLE_HOLD_TIME_AFTER_RESET_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_ADVERTISEMENT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    connect_retry: int
    hold_time: int
    idle_hold_time_after_reset: int
    keepalive_interval: int
    minimum_advertisement_interval: int
    def __init__(self, connect_retry: _Optional[int] = ..., hold_time: _Optional[int] = ..., keepalive_interval: _Optional[int] = ..., minimum_advertisement_interval: _Optional[int] = ..., idle_hold_time_after_reset: _Optional[int] = ...) -> None: ...

class TimersState(_message.Message):
    __slots__ = ["connect_retry", "downtime", "hold_time", "keepalive_interval", "minimum_advertisement_interval", "negotiated_hold_time", "uptime"]
    CONNECT_RETRY_FIELD_NUMBER: _ClassVar[int]
    DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    HOLD_TIME_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_ADVERTISEMENT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATED_HOLD_TIME_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    connect_retry: int
    downtime: _timestamp_pb2.Timestamp
    hold_time: int
    keepalive_interval: int
    minimum_advertisement_interval: int
    negotiated_hold_time: int
    uptime: _timestamp_pb2.Timestamp
    def __init__(self, connect_retry: _Optional[int] = ..., hold_time: _Optional[int] = ..., keepalive_interval: _Optional[int] = ..., minimum_advertisement_interval: _Optional[int] = ..., negotiated_hold_time: _Optional[int] = ..., uptime: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., downtime: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Transport(_message.Message):
    __slots__ = ["bind_interface", "local_address", "local_port", "mtu_discovery", "passive_mode", "remote_address", "remote_port", "tcp_mss"]
    BIND_INTERFACE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    MTU_DISCOVERY_FIELD_NUMBER: _ClassVar[int]
    PASSIVE_MODE_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORT_FIELD_NUMBER: _ClassVar[int]
    TCP_MSS_FIELD_NUMBER: _ClassVar[int]
    bind_interface: str
    local_address: str
    local_port: int
    mtu_discovery: bool
    passive_mode: bool
    remote_address: str
    remote_port: int
    tcp_mss: int
    def __init__(self, local_address: _Optional[str] = ..., local_port: _Optional[int] = ..., mtu_discovery: bool = ..., passive_mode: bool = ..., remote_address: _Optional[str] = ..., remote_port: _Optional[int] = ..., tcp_mss: _Optional[int] = ..., bind_interface: _Optional[str] = ...) -> None: ...

class WatchEventRequest(_message.Message):
    __slots__ = ["peer", "table"]
    class Peer(_message.Message):
        __slots__ = []
        def __init__(self) -> None: ...
    class Table(_message.Message):
        __slots__ = ["filters"]
        class Filter(_message.Message):
            __slots__ = ["init", "type"]
            class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
                __slots__ = []
            ADJIN: WatchEventRequest.Table.Filter.Type
            BEST: WatchEventRequest.Table.Filter.Type
            INIT_FIELD_NUMBER: _ClassVar[int]
            POST_POLICY: WatchEventRequest.Table.Filter.Type
            TYPE_FIELD_NUMBER: _ClassVar[int]
            init: bool
            type: WatchEventRequest.Table.Filter.Type
            def __init__(self, type: _Optional[_Union[WatchEventRequest.Table.Filter.Type, str]] = ..., init: bool = ...) -> None: ...
        FILTERS_FIELD_NUMBER: _ClassVar[int]
        filters: _containers.RepeatedCompositeFieldContainer[WatchEventRequest.Table.Filter]
        def __init__(self, filters: _Optional[_Iterable[_Union[WatchEventRequest.Table.Filter, _Mapping]]] = ...) -> None: ...
    PEER_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    peer: WatchEventRequest.Peer
    table: WatchEventRequest.Table
    def __init__(self, peer: _Optional[_Union[WatchEventRequest.Peer, _Mapping]] = ..., table: _Optional[_Union[WatchEventRequest.Table, _Mapping]] = ...) -> None: ...

class WatchEventResponse(_message.Message):
    __slots__ = ["peer", "table"]
    class PeerEvent(_message.Message):
        __slots__ = ["peer", "type"]
        class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = []
        END_OF_INIT: WatchEventResponse.PeerEvent.Type
        INIT: WatchEventResponse.PeerEvent.Type
        PEER_FIELD_NUMBER: _ClassVar[int]
        STATE: WatchEventResponse.PeerEvent.Type
        TYPE_FIELD_NUMBER: _ClassVar[int]
        UNKNOWN: WatchEventResponse.PeerEvent.Type
        peer: Peer
        type: WatchEventResponse.PeerEvent.Type
        def __init__(self, type: _Optional[_Union[WatchEventResponse.PeerEvent.Type, str]] = ..., peer: _Optional[_Union[Peer, _Mapping]] = ...) -> None: ...
    class TableEvent(_message.Message):
        __slots__ = ["paths"]
        PATHS_FIELD_NUMBER: _ClassVar[int]
        paths: _containers.RepeatedCompositeFieldContainer[Path]
        def __init__(self, paths: _Optional[_Iterable[_Union[Path, _Mapping]]] = ...) -> None: ...
    PEER_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    peer: WatchEventResponse.PeerEvent
    table: WatchEventResponse.TableEvent
    def __init__(self, peer: _Optional[_Union[WatchEventResponse.PeerEvent, _Mapping]] = ..., table: _Optional[_Union[WatchEventResponse.TableEvent, _Mapping]] = ...) -> None: ...

class TableType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class PeerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class RemovePrivate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
