"""From DataPlaneAPI JSON to frontends and bind addresses: pure parsing, no I/O.

What those frontends mean for announcer (which addresses are VIPs, their checks and
policies) is vips.py's.

Rules of this module:

* Parsers take decoded JSON (whatever `json.loads` returned) and either return model
  values or raise `DataPlaneError` naming the JSON path of the first problem
  (`frontends[3].binds["x"].port: expected integer 1-65535 or null, got "80"`). They never
  raise anything else, whatever the input: a property test holds them to that.
* Unknown keys are ignored: every DataPlaneAPI release adds fields, and the specs mark the
  objects `additionalProperties: false`, so a strict reader would break on each upgrade.
  Wrong types of the keys we do read are errors: they mean we misunderstand the API.
* Response shapes (reference/dataplaneapi-notes.md §2-§4):
  v2 lists are wrapped `{"_version": N, "data": [...]}`; v3 lists are bare; v3
  `frontends?full_section=true` embeds `binds` as a map keyed by bind name; a v3.4 bind
  list may be `null` for a frontend without `bind` lines (treated as empty).
* Bind addresses are raw strings in many forms (notes §5); `parse_bind_address` turns them
  into a literal IP or a reason why not. Only literal, announceable IPs become VIPs.

Decisions:

* Port ranges (`bind 192.0.2.10:8000-8010`): the bind's first port is what vips.py
  checks (HAProxy binds every port of the range with the same options, so checking one
  tells whether the proxy serves the VIP).
* IPv6 zone ids (`fe80::1%eth0`): rejected. A zone makes the address link-scoped, and a
  link-scoped address cannot be announced as a /128.
* Loopback, link-local, multicast and IPv4-mapped IPv6 literals are skipped with a reason:
  announcing them would be wrong whatever HAProxy does with them.
* A frontend's `mode`, when absent, comes from the defaults section named by its `from`,
  else from the last defaults section DataPlaneAPI lists (HAProxy uses the last one
  *before* the frontend; DataPlaneAPI does not tell us the order, notes §4.2). An unknown
  `from` or no defaults at all leaves the mode unknown (None) rather than failing.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .errors import DataPlaneError
from .model import Frontend, IPAddress, RawBind

Mode = Literal["http", "tcp"]
AddressKind = Literal[
    "ip",  # a literal IP address: a VIP candidate
    "wildcard",  # `*`, empty, 0.0.0.0, :: - every local address, not a VIP
    "local",  # unix sockets, abstract sockets, inherited fds, socket pairs
    "not-tcp",  # QUIC / UDP listeners: a TCP check cannot see them
    "unresolved",  # hostnames, environment variables: DataPlaneAPI does not expand them
    "invalid",  # anything else (comma lists, unknown prefixes, garbage)
    "unannounceable",  # a literal IP that must never be routed (loopback, link-local, ...)
]

PORT_MIN = 1
PORT_MAX = 65535


# ------------------------------------------------------------------- path helpers


def _fmt_value(value: Any) -> str:
    """A short JSON rendering of an offending value for an error message."""
    try:
        text = json.dumps(value, allow_nan=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    """The JSON name of a Python value's type, for `expected X, got Y` messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _key(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` when the key is not a plain identifier."""
    if key.replace("_", "a").isalnum() and key.isascii():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _fail(path: str, expected: str, value: Any) -> DataPlaneError:
    """The error for a value of the wrong type or shape at `path`."""
    shown = _fmt_value(value) if not isinstance(value, dict | list) else _type_name(value)
    return DataPlaneError(f"{path}: expected {expected}, got {shown}")


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "object", value)
    return value


def _list(value: Any, path: str, *, nullable: bool = False) -> list[Any]:
    if value is None and nullable:
        return []
    if not isinstance(value, list):
        raise _fail(path, "array" + (" or null" if nullable else ""), value)
    return value


def _opt_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _fail(_key(path, key), "string or null", value)


def _req_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    if isinstance(value, str) and value:
        return value
    if key not in obj:
        raise DataPlaneError(f"{_key(path, key)}: missing")
    raise _fail(_key(path, key), "non-empty string", value)


def _opt_bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise _fail(_key(path, key), "boolean or null", value)


def _opt_port(obj: Mapping[str, Any], key: str, path: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int subclass in Python; JSON true is not a port.
    if isinstance(value, int) and not isinstance(value, bool) and PORT_MIN <= value <= PORT_MAX:
        return value
    raise _fail(_key(path, key), f"integer {PORT_MIN}-{PORT_MAX} or null", value)


def _opt_version(obj: Mapping[str, Any], key: str, path: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _fail(_key(path, key), "integer or null", value)


# ------------------------------------------------------------------ value parsers


def parse_version(value: Any, path: str = "version") -> int:
    """The bare integer of `/services/haproxy/configuration/version`."""
    # bool is an int subclass; a JSON `true` or `7.0` is not what the spec allows.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _fail(path, "integer", value)


def parse_version_header(value: str | None, path: str = "Configuration-Version") -> int | None:
    """The `Configuration-Version` response header (a decimal string), None if absent."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    raise _fail(f"header {path}", "decimal integer", value)


def unwrap_v2(value: Any, path: str) -> tuple[int | None, Any]:
    """Split a v2 envelope `{"_version": N, "data": X}` into (N, X)."""
    obj = _obj(value, path)
    if "data" not in obj:
        raise DataPlaneError(f"{path}.data: missing (expected the v2 envelope)")
    return _opt_version(obj, "_version", path), obj["data"]


def parse_bind(value: Any, path: str, *, default_name: str | None = None) -> RawBind:
    """One bind object; `default_name` is the map key when the bind came from a v3 map."""
    obj = _obj(value, path)
    name = _opt_str(obj, "name", path)
    address = _opt_str(obj, "address", path)
    if address is None:
        raise DataPlaneError(f"{_key(path, 'address')}: missing")
    port = _opt_port(obj, "port", path)
    end = _opt_port(obj, "port-range-end", path)
    if end is not None and (port is None or end < port):
        raise DataPlaneError(
            f'{path}["port-range-end"]: {end} without a lower port ({_fmt_value(port)})'
        )
    if not name:
        # v2.9/v3.0 do not require `name`; DataPlaneAPI defaults it to the address token.
        name = default_name or (address if port is None else f"{address}:{port}")
    return RawBind(
        name=name,
        address=address,
        port=port,
        port_range_end=end if end != port else None,
        ssl=_opt_bool(obj, "ssl", path),
        accept_proxy=_opt_bool(obj, "accept_proxy", path),
        v4v6=_opt_bool(obj, "v4v6", path),
    )


def parse_binds(value: Any, path: str) -> tuple[RawBind, ...]:
    """A bind list (v2 `data` or a v3 bare list); `null` is an empty list (v3.4)."""
    items = _list(value, path, nullable=True)
    return tuple(parse_bind(item, f"{path}[{i}]") for i, item in enumerate(items))


def parse_bind_map(value: Any, path: str) -> tuple[RawBind, ...]:
    """The v3 `full_section` `binds` map `{name: bind}`; `null` is empty."""
    if value is None:
        return ()
    obj = _obj(value, path)
    binds = []
    for key in sorted(obj):
        # Map keys are data (bind names), so always bracketed: binds["*:80"].
        binds.append(parse_bind(obj[key], f"{path}[{json.dumps(key)}]", default_name=key))
    return tuple(binds)


@dataclass(frozen=True)
class FrontendEntry:
    """A frontend as listed, before its binds and inherited mode are known."""

    name: str
    mode: Mode | None
    disabled: bool
    monitor_uri: str | None
    defaults_from: str | None
    binds: tuple[RawBind, ...] | None  # None: not embedded in this response


@dataclass(frozen=True)
class DefaultsSection:
    """The part of a `defaults` section that frontends inherit and we care about."""

    name: str | None
    mode: Mode | None


def _mode(obj: Mapping[str, Any], path: str) -> Mode | None:
    value = _opt_str(obj, "mode", path)
    if value is None:
        return None
    if value == "http":
        return "http"
    if value == "tcp":
        return "tcp"
    raise _fail(_key(path, "mode"), '"http", "tcp" or null', value)


def parse_frontend(value: Any, path: str) -> FrontendEntry:
    """One frontend object (v2 or v3, with or without `full_section` children)."""
    obj = _obj(value, path)
    name = _req_str(obj, "name", path)
    binds: tuple[RawBind, ...] | None = None
    if "binds" in obj:
        binds = parse_bind_map(obj["binds"], _key(path, "binds"))
    return FrontendEntry(
        name=name,
        mode=_mode(obj, path),
        disabled=_opt_bool(obj, "disabled", path),
        monitor_uri=_opt_str(obj, "monitor_uri", path) or None,
        defaults_from=_opt_str(obj, "from", path) or None,
        binds=binds,
    )


def parse_frontends(value: Any, path: str = "frontends") -> tuple[FrontendEntry, ...]:
    """A frontend list (v2 `data` or a v3 bare list); names must be unique."""
    items = _list(value, path, nullable=True)
    entries = tuple(parse_frontend(item, f"{path}[{i}]") for i, item in enumerate(items))
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if entry.name in seen:
            raise DataPlaneError(f"{path}[{i}].name: duplicate frontend {entry.name!r}")
        seen.add(entry.name)
    return entries


def parse_defaults(value: Any, path: str) -> DefaultsSection:
    """One defaults section object."""
    obj = _obj(value, path)
    mode_value = _opt_str(obj, "mode", path)
    # Defaults may say `mode log` (v2.9 enum): no frontend can inherit that, so it
    # counts as "unknown" instead of failing the whole discovery.
    mode: Mode | None = None
    if mode_value == "http":
        mode = "http"
    elif mode_value == "tcp":
        mode = "tcp"
    return DefaultsSection(name=_opt_str(obj, "name", path) or None, mode=mode)


def parse_defaults_list(value: Any, path: str = "defaults") -> tuple[DefaultsSection, ...]:
    """v2 `named_defaults` data or the v3 `defaults` list."""
    items = _list(value, path, nullable=True)
    return tuple(parse_defaults(item, f"{path}[{i}]") for i, item in enumerate(items))


def parse_v2_single_defaults(value: Any, path: str = "defaults") -> tuple[DefaultsSection, ...]:
    """v2's deprecated `/defaults` (one object in the envelope's `data`; `{}` if none)."""
    if value is None:
        return ()
    obj = _obj(value, path)
    if not obj:
        return ()
    return (parse_defaults(obj, path),)


def build_frontends(
    entries: Sequence[FrontendEntry],
    binds_by_frontend: Mapping[str, Sequence[RawBind]],
    defaults: Sequence[DefaultsSection],
) -> tuple[Frontend, ...]:
    """Complete model Frontends: embedded or separately fetched binds, inherited mode."""
    by_name = {d.name: d for d in defaults if d.name is not None}
    result = []
    for entry in entries:
        mode = entry.mode
        if mode is None:
            section: DefaultsSection | None
            if entry.defaults_from is not None:
                section = by_name.get(entry.defaults_from)
            else:
                section = defaults[-1] if defaults else None
            mode = section.mode if section is not None else None
        binds = entry.binds
        if binds is None:
            binds = tuple(binds_by_frontend.get(entry.name, ()))
        result.append(
            Frontend(
                name=entry.name,
                mode=mode,
                disabled=entry.disabled,
                monitor_uri=entry.monitor_uri,
                binds=binds,
            )
        )
    return tuple(result)


def needs_defaults(entries: Iterable[FrontendEntry]) -> bool:
    """True if some enabled frontend has no `mode` of its own (so defaults must be read)."""
    return any(e.mode is None and not e.disabled for e in entries)


# ---------------------------------------------------------------- bind addresses


class ParsedAddress(NamedTuple):
    """The outcome of `parse_bind_address`: an IP, or None and why not."""

    ip: IPAddress | None
    kind: AddressKind
    reason: str | None


# Prefixes that only select the address family / TCP: strip them and parse the rest.
_TCP_PREFIXES: dict[str, int | None] = {
    "ipv4": 4,
    "ipv6": 6,
    "tcp": None,
    "tcp4": 4,
    "tcp6": 6,
    # MPTCP (HAProxy 3.1+) falls back to TCP, so a TCP check still works.
    "mptcp": None,
    "mptcp4": 4,
    "mptcp6": 6,
}
_UNEXPANDED = re.compile(r"[$\"'{}]")  # what HAProxy would expand or unquote
_LOCAL_PREFIXES = frozenset({"unix", "abns", "abnsz", "fd", "sockpair", "uxst", "uxdg"})
# quicv4/quicv6 are client-native's 2025 spelling (notes §5); HAProxy says quic4/quic6.
_NOT_TCP_PREFIXES = frozenset(
    {"quic", "quic4", "quic6", "quicv4", "quicv6", "udp", "udp4", "udp6", "rhttp"}
)


def _ok(ip: IPAddress) -> ParsedAddress:
    return ParsedAddress(ip, "ip", None)


def _no(kind: AddressKind, reason: str) -> ParsedAddress:
    return ParsedAddress(None, kind, reason)


def parse_bind_address(address: str) -> ParsedAddress:
    """A literal IP from a DataPlaneAPI bind `address`, or None with the kind and reason."""
    raw = address
    if not isinstance(raw, str):  # defensive: callers hold RawBind, but never raise
        return _no("invalid", f"address is not a string: {_fmt_value(raw)}")
    text = raw.strip()
    if text.startswith("/"):
        return _no("local", "unix socket path")
    if _UNEXPANDED.search(text):
        return _no("unresolved", "environment variable or quoted value, not expanded by DPAPI")
    if "," in text:
        return _no("invalid", "comma-separated address list (DPAPI does not split these)")
    family: int | None = None
    if "@" in text:
        prefix, _, rest = text.partition("@")
        prefix = prefix.lower()
        if prefix in _LOCAL_PREFIXES:
            return _no("local", f"{prefix}@ socket, not an IP listener")
        if prefix in _NOT_TCP_PREFIXES:
            return _no("not-tcp", f"{prefix}@ listener is not TCP")
        if prefix not in _TCP_PREFIXES:
            return _no("invalid", f"unknown address prefix {prefix}@")
        family = _TCP_PREFIXES[prefix]
        text = rest
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text in ("", "*", "0.0.0.0", "::"):
        return _no("wildcard", "wildcard address (all local addresses), not a VIP")
    if "%" in text:
        return _no("unannounceable", "IPv6 zone id: a link-scoped address cannot be announced")
    try:
        # What ipaddress.ip_address does, without trying (and failing) IPv4 first for
        # every IPv6 address: an exception per VIP was a fifth of a discovery's specs.
        ip: IPAddress = ipaddress.IPv6Address(text) if ":" in text else ipaddress.IPv4Address(text)
    except ValueError:
        looks_numeric = all(c.isdigit() or c == "." for c in text)
        if text.isascii() and not looks_numeric and all(c.isalnum() or c in "-._" for c in text):
            return _no("unresolved", f"hostname {text!r} (DPAPI does not resolve names)")
        return _no("invalid", f"not an IP address: {_fmt_value(text)}")
    if family is not None and ip.version != family:
        return _no("invalid", f"IPv{ip.version} address behind an IPv{family}-only prefix")
    if ip.is_unspecified:
        return _no("wildcard", "wildcard address (all local addresses), not a VIP")
    reason = unannounceable_reason(ip)
    if reason is not None:
        return ParsedAddress(None, "unannounceable", reason)
    return _ok(ip)


def unannounceable_reason(ip: IPAddress) -> str | None:
    """Why a literal IP must never become a BGP route, or None if it may."""
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_multicast:
        return "multicast address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "IPv4-mapped IPv6 address (bind the IPv4 address instead)"
    return None
