"""The DataPlaneAPI adapter: the only module that speaks HTTP (asyncio streams plus h11).

It implements `model.VipSource` against DataPlaneAPI 2.x (`/v2`) and 3.x (`/v3`), as the
specs in shared/reference/dataplaneapi describe them (notes: dataplaneapi-notes.md).
All shape checking is done by the pure parsers in `discovery.py`; this module only moves
bytes and turns every failure into a `DataPlaneError` (or `DataPlaneAuthError` for
401/403) carrying the URL, the HTTP status and a `kind` for metrics.

Operational rules:

* A failure here must never look like "no VIPs": the daemon keeps its last good
  discovery when this raises, so every error path raises, none returns an empty result.
* Nothing a server does can hold discovery: every request runs under one total deadline
  (connect, proof, send, headers and body together; a server dripping one byte a second
  cannot stretch it), one whole discovery runs under another, the bytes read for one
  answer are capped while they stream in, and so is the number of frontends and binds
  (v2 makes one request per frontend).
* The password only goes to a server that proved who it is, before any request byte is
  sent: over `https://` by its certificate; over `http://` (loopback only) by the uid
  owning the server side of *this* TCP connection in /proc/self/net/tcp{,6}; over
  `unix://` by SO_PEERCRED. The uid must be one of `server_users`. While DataPlaneAPI is
  down, any local user could otherwise listen on its port and collect the password.
* The password never appears in a log line, an exception or a repr: it lives only in the
  prepared Authorization header. URLs we report never carry credentials.
* One discovery reflects one configuration version. v2 needs one request per frontend,
  and DataPlaneAPI may reload the file between them: when the versions reported by the
  responses disagree, the whole read is retried (bounded) instead of mixing versions.
* One keep-alive connection is reused; requests are serialised on it by a lock. A reused
  connection that the server closed while idle is retried once on a fresh connection
  (GET is idempotent); a fresh one that fails is an error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import h11

from . import discovery
from .errors import DataPlaneAuthError, DataPlaneError
from .model import Discovery, RawBind
from .target import (
    ApiVersion,
    is_loopback_host,
    parse_target,
    resolve_server_users,
    tcp_server_uid,
    unix_peer_uid,
    user_name,
)

_T = TypeVar("_T")

log = logging.getLogger("announcer.dataplane")

CONFIG = "/services/haproxy/configuration"
# Reads are retried this many extra times when the configuration changed under us.
DEFAULT_CONSISTENCY_RETRIES = 3
DEFAULT_TIMEOUT = 5.0
DEFAULT_DISCOVERY_TIMEOUT = 30.0
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_FRONTENDS = 20_000
DEFAULT_MAX_BINDS = 100_000
DEFAULT_SERVER_USERS: tuple[str | int, ...] = ("root", "haproxy")
# Error bodies are shown in exceptions; keep them to one readable line.
MAX_MESSAGE = 300
READ_CHUNK = 65536


# --------------------------------------------------------------------- HTTP/1.1


@dataclass(frozen=True)
class _Response:
    """A decoded 2xx answer: the JSON body and the Configuration-Version header."""

    url: str
    status: int
    body: Any
    header_version: int | None


class _Stale(Exception):
    """Internal: the connection was closed before any byte of an answer arrived."""


class _VersionChanged(Exception):
    """Internal: the configuration changed during one discovery (retry it)."""

    def __init__(self, versions: set[int]) -> None:
        self.versions = versions
        super().__init__(f"versions {sorted(versions)}")


class _Conn:
    """One proven connection and its h11 state."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    def abort(self) -> None:
        # abort, not close: nothing is owed to a server we are giving up on, and a
        # graceful TLS close could wait on it.
        self.writer.transport.abort()


class DataPlaneClient:
    """A `VipSource` backed by HAProxy's DataPlaneAPI 2.x or 3.x (asyncio, one event loop)."""

    def __init__(
        self,
        url: str,
        *,
        username: str,
        password: str,
        api_version: Literal["auto", 2, 3] = "auto",
        timeout: float = DEFAULT_TIMEOUT,
        discovery_timeout: float = DEFAULT_DISCOVERY_TIMEOUT,
        verify: bool | str = True,
        consistency_retries: int = DEFAULT_CONSISTENCY_RETRIES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_frontends: int = DEFAULT_MAX_FRONTENDS,
        max_binds: int = DEFAULT_MAX_BINDS,
        server_users: Iterable[str | int] = DEFAULT_SERVER_USERS,
    ) -> None:
        target = parse_target(url)
        pinned = api_version if api_version != "auto" else target.pinned
        if target.pinned is not None and pinned != target.pinned:
            raise ValueError(f"url ends in /v{target.pinned} but api_version is {api_version}")
        self._ssl: ssl.SSLContext | None = None
        if target.scheme == "https":
            if verify is False:
                # The certificate is the only proof an https server gives.
                raise ValueError(
                    "https without certificate verification would send the password "
                    "to any server; give a CA file instead"
                )
            cafile = verify if isinstance(verify, str) else None
            self._ssl = ssl.create_default_context(cafile=cafile)
        self._target = target
        self._base = target.base
        self._username = username
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._auth = f"Basic {token}".encode("ascii")
        self._pinned: ApiVersion | None = pinned
        self._detected: ApiVersion | None = pinned
        self._timeout = timeout
        self._discovery_timeout = discovery_timeout
        self._retries = max(0, consistency_retries)
        self._max_bytes = max_response_bytes
        self._max_frontends = max_frontends
        self._max_binds = max_binds
        self._uids = resolve_server_users(server_users) if target.scheme != "https" else frozenset()
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"DataPlaneClient({self._base!r}, username={self._username!r})"

    async def __aenter__(self) -> DataPlaneClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection."""
        self._drop()
        await asyncio.sleep(0)  # let the transport finish closing

    # ------------------------------------------------------------------ version

    async def api_version(self) -> ApiVersion:
        """The API generation in use (2 or 3), detecting it on first use."""
        if self._detected is None:
            self._detected = await self.detect_api_version()
        return self._detected

    async def detect_api_version(self) -> ApiVersion:
        """Ask /v3/info, then /v2/info on a 404 (notes §6.10): which API this server speaks."""
        for ver in (3, 2):
            path = f"/v{ver}/info"
            try:
                resp = await self._get_url(path)
            except DataPlaneError as exc:
                if exc.status == 404 and not isinstance(exc, DataPlaneAuthError):
                    continue
                raise
            if not isinstance(resp.body, dict):
                raise DataPlaneError("info: expected object", url=resp.url, status=resp.status)
            log.debug("DataPlaneAPI at %s speaks v%d", self._base, ver)
            return 3 if ver == 3 else 2
        raise DataPlaneError(
            "neither /v3/info nor /v2/info exists: not a DataPlaneAPI 2.x/3.x",
            url=self._base,
            status=404,
            kind="http_404",
        )

    async def configuration_version(self) -> int:
        """The configuration version (a bare integer); cheap enough to poll."""
        resp = await self._get(f"/v{await self.api_version()}{CONFIG}/version")
        with _blame(resp):
            return discovery.parse_version(resp.body)

    # ---------------------------------------------------------------- discovery

    async def discover(self) -> Discovery:
        """Every frontend with its binds and effective mode, from one configuration version."""
        try:
            async with asyncio.timeout(self._discovery_timeout):
                return await self._discover()
        except TimeoutError:
            self._drop()
            raise DataPlaneError(
                f"discovery took longer than {self._discovery_timeout:g}s "
                "(dataplaneapi.discovery_timeout)",
                url=self._base,
                kind="timeout",
            ) from None

    async def _discover(self) -> Discovery:
        ver = await self.api_version()
        last: _VersionChanged | None = None
        for attempt in range(self._retries + 1):
            try:
                return await (self._discover_v3() if ver == 3 else self._discover_v2())
            except _VersionChanged as exc:
                last = exc
                log.info(
                    "DataPlaneAPI configuration changed during discovery (versions %s), "
                    "retrying (%d/%d)",
                    sorted(exc.versions),
                    attempt + 1,
                    self._retries,
                )
        assert last is not None
        raise DataPlaneError(
            f"configuration kept changing during discovery ({self._retries + 1} attempts, "
            f"last versions seen {sorted(last.versions)})",
            url=self._base,
            kind="unstable",
        )

    async def _discover_v3(self) -> Discovery:
        versions: set[int] = set()
        fe_path = f"/v3{CONFIG}/frontends"
        try:
            resp = await self._get(fe_path, params={"full_section": "true"})
        except DataPlaneError as exc:
            # A server that rejects the parameter: read the plain list, binds per frontend.
            if exc.status not in (400, 422):
                raise
            resp = await self._get(fe_path)
        _note(versions, resp.header_version)
        with _blame(resp):
            entries = discovery.parse_frontends(resp.body)
        self._check_counts(resp.url, entries)
        binds: dict[str, tuple[RawBind, ...]] = {}
        for entry in entries:
            # No `binds` key: either a server that ignored full_section, or a frontend
            # without binds (Go omits empty maps). Ask, to be sure.
            if entry.binds is None:
                name = _segment(entry.name)
                b = await self._get(f"/v3{CONFIG}/frontends/{name}/binds")
                _note(versions, b.header_version)
                with _blame(b):
                    path = f"frontends[{json.dumps(entry.name)}].binds"
                    binds[entry.name] = discovery.parse_binds(b.body, path)
                self._check_counts(b.url, entries, binds)
        defaults: tuple[discovery.DefaultsSection, ...] = ()
        if discovery.needs_defaults(entries):
            d = await self._get(f"/v3{CONFIG}/defaults")
            _note(versions, d.header_version)
            with _blame(d):
                defaults = discovery.parse_defaults_list(d.body)
        return self._finish(versions, entries, binds, defaults)

    async def _discover_v2(self) -> Discovery:
        versions: set[int] = set()
        url, entries = await self._v2_read(
            versions, "frontends", "frontends", discovery.parse_frontends
        )
        # Checked before the per-frontend requests: the cap bounds how many there are.
        self._check_counts(url, entries)
        binds: dict[str, tuple[RawBind, ...]] = {}
        for entry in entries:
            if entry.binds is not None:
                continue
            # `frontend=` works on every 2.x (2.0-2.5 require it); it is URL-encoded.
            url, binds[entry.name] = await self._v2_read(
                versions,
                "binds",
                f"binds(frontend={entry.name})",
                discovery.parse_binds,
                params={"frontend": entry.name},
            )
            self._check_counts(url, entries, binds)
        defaults: tuple[discovery.DefaultsSection, ...] = ()
        if discovery.needs_defaults(entries):
            defaults = await self._v2_defaults(versions)
        return self._finish(versions, entries, binds, defaults)

    async def _v2_defaults(self, versions: set[int]) -> tuple[discovery.DefaultsSection, ...]:
        # named_defaults appeared late in 2.x; older servers only have the single /defaults.
        try:
            _, found = await self._v2_read(
                versions,
                "named_defaults",
                "named_defaults",
                discovery.parse_defaults_list,
                may_404=True,
            )
            return found
        except DataPlaneError as exc:
            if exc.status != 404 or isinstance(exc, DataPlaneAuthError):
                raise
        _, found = await self._v2_read(
            versions, "defaults", "defaults", discovery.parse_v2_single_defaults
        )
        return found

    async def _v2_read(
        self,
        versions: set[int],
        endpoint: str,
        root: str,
        parse: Callable[[Any, str], _T],
        *,
        params: Mapping[str, str] | None = None,
        may_404: bool = False,
    ) -> tuple[str, _T]:
        """GET a v2 configuration endpoint, unwrap `{_version, data}`, parse `data`.

        Both the header and the body version go into `versions`, so _finish can tell
        whether everything came from one configuration version.
        """
        resp = await self._get(f"/v2{CONFIG}/{endpoint}", params=params, may_404=may_404)
        _note(versions, resp.header_version)
        with _blame(resp):
            body_version, data = discovery.unwrap_v2(resp.body, root)
            parsed = parse(data, f"{root}.data")
        _note(versions, body_version)
        return resp.url, parsed

    def _check_counts(
        self,
        url: str,
        entries: Sequence[discovery.FrontendEntry],
        fetched: Mapping[str, Sequence[RawBind]] | None = None,
    ) -> None:
        """Refuse a configuration larger than dataplaneapi.max_frontends / max_binds."""
        if len(entries) > self._max_frontends:
            raise DataPlaneError(
                f"{len(entries)} frontends, more than dataplaneapi.max_frontends "
                f"({self._max_frontends})",
                url=url,
                kind="too_big",
            )
        binds = sum(len(e.binds) for e in entries if e.binds is not None)
        binds += sum(len(b) for b in (fetched or {}).values())
        if binds > self._max_binds:
            raise DataPlaneError(
                f"more than dataplaneapi.max_binds ({self._max_binds}) binds",
                url=url,
                kind="too_big",
            )

    def _finish(
        self,
        versions: set[int],
        entries: tuple[discovery.FrontendEntry, ...],
        binds: Mapping[str, tuple[RawBind, ...]],
        defaults: tuple[discovery.DefaultsSection, ...],
    ) -> Discovery:
        if len(versions) > 1:
            raise _VersionChanged(versions)
        frontends = discovery.build_frontends(entries, binds, defaults)
        version = next(iter(versions)) if versions else None
        log.debug("discovered %d frontends at configuration version %s", len(frontends), version)
        return Discovery(version=version, frontends=frontends)

    # --------------------------------------------------------------------- HTTP

    async def _get(
        self, path: str, params: Mapping[str, str] | None = None, *, may_404: bool = False
    ) -> _Response:
        if params:
            path += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        try:
            return await self._get_url(path)
        except DataPlaneError as exc:
            # In auto mode a 404 on a known path may mean DPAPI was upgraded (v2 -> v3):
            # detect again on the next call.
            if exc.status == 404 and self._pinned is None and not may_404:
                self._detected = None
            raise

    async def _get_url(self, path: str) -> _Response:
        """One GET of `path` (below the prefix) under the total deadline."""
        url = self._base + path
        log.debug("GET %s", url)
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._request(self._target.prefix + path, url)
            except TimeoutError:
                self._drop()
                raise DataPlaneError(
                    f"timed out after {self._timeout:g}s", url=url, kind="timeout"
                ) from None

    async def _request(self, target: str, url: str) -> _Response:
        while True:
            conn, reused = self._conn, self._conn is not None
            if conn is None:
                conn = self._conn = await self._connect(url)
            try:
                status, headers, body = await self._exchange(conn, target, url)
            except _Stale:
                self._drop()
                if reused:
                    continue  # the server closed the idle keep-alive connection
                raise DataPlaneError(
                    "connection failed: closed by the server without an answer",
                    url=url,
                    kind="unreachable",
                ) from None
            except OSError as exc:  # reset, TLS failure mid-answer
                self._drop()
                raise DataPlaneError(
                    f"bad response: connection lost ({_short(exc)})", url=url, kind="bad_answer"
                ) from None
            except h11.ProtocolError as exc:
                self._drop()
                raise DataPlaneError(
                    f"bad response: {_short(exc)}", url=url, kind="bad_answer"
                ) from None
            except BaseException:
                self._drop()  # too big, cancelled, deadline: this connection is done
                raise
            if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                conn.h11.start_next_cycle()
            else:
                self._drop()
            return self._decode(url, status, headers, body)

    async def _connect(self, url: str) -> _Conn:
        t = self._target
        try:
            if t.scheme == "unix":
                reader, writer = await asyncio.open_unix_connection(t.socket_path)
            else:
                reader, writer = await asyncio.open_connection(
                    t.host, t.port, ssl=self._ssl, server_hostname=t.host if self._ssl else None
                )
        except ssl.SSLError as exc:
            raise DataPlaneError(f"TLS error: {_short(exc)}", url=url, kind="tls") from None
        except OSError as exc:
            raise DataPlaneError(
                f"connection failed: {_short(exc)}", url=url, kind="unreachable"
            ) from None
        conn = _Conn(reader, writer)
        try:
            self._prove(writer, url)
        except BaseException:
            conn.abort()
            raise
        return conn

    def _prove(self, writer: asyncio.StreamWriter, url: str) -> None:
        """Raise unless the server is one of server_users (https: the handshake proved it)."""
        t = self._target
        if t.scheme == "https":
            return
        where = "its unix socket" if t.scheme == "unix" else "the server end of the connection"
        uid: int | None
        if t.scheme == "unix":
            uid = unix_peer_uid(writer.get_extra_info("socket"))
        else:
            peer = writer.get_extra_info("peername")
            mine = writer.get_extra_info("sockname")
            if not is_loopback_host(peer[0]):
                raise DataPlaneError(
                    f"refusing to send credentials: {peer[0]} is not a loopback address",
                    url=url,
                    kind="unverified_server",
                )
            uid = tcp_server_uid((peer[0], peer[1]), (mine[0], mine[1]))
            if uid is None:
                raise DataPlaneError(
                    "refusing to send credentials: cannot find the server end of the "
                    "connection in /proc/self/net/tcp (another network namespace?)",
                    url=url,
                    kind="unverified_server",
                )
        if uid not in self._uids:
            allowed = ", ".join(sorted(user_name(u) for u in self._uids)) or "none"
            raise DataPlaneError(
                f"refusing to send credentials: {where} is owned by uid {user_name(uid)}, "
                f"not one of dataplaneapi.server_users ({allowed}); is something else "
                "listening in DataPlaneAPI's place?",
                url=url,
                kind="unverified_server",
            )

    async def _exchange(
        self, conn: _Conn, target: str, url: str
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send one GET and read its answer, at most max_response_bytes read in all."""
        h = conn.h11
        request = h11.Request(
            method="GET",
            target=target.encode("ascii"),
            headers=[
                (b"Host", self._target.host_header.encode("ascii")),
                (b"Accept", b"application/json"),
                (b"User-Agent", b"announcer"),
                (b"Authorization", self._auth),
            ],
        )
        data = h.send(request) or b""
        data += h.send(h11.EndOfMessage()) or b""
        try:
            conn.writer.write(data)
            await conn.writer.drain()
        except ConnectionError:
            raise _Stale() from None
        received = 0
        status = 0
        headers: dict[bytes, bytes] = {}
        body = bytearray()
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                try:
                    chunk = await conn.reader.read(READ_CHUNK)
                except ConnectionResetError:
                    chunk = b""
                if not chunk and received == 0:
                    raise _Stale()
                received += len(chunk)
                if received > self._max_bytes:
                    raise self._too_big(url, f"more than {self._max_bytes} bytes")
                h.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = dict(event.headers)
                length = headers.get(b"content-length")
                if length is not None and length.isdigit() and int(length) > self._max_bytes:
                    raise self._too_big(url, f"Content-Length {int(length)}")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("connection closed before the end of the answer")
            # InformationalResponse (1xx): keep reading.

    def _too_big(self, url: str, what: str) -> DataPlaneError:
        return DataPlaneError(
            f"answer too big ({what}; dataplaneapi.max_response_bytes is {self._max_bytes})",
            url=url,
            kind="too_big",
        )

    def _decode(
        self, url: str, status: int, headers: dict[bytes, bytes], content: bytes
    ) -> _Response:
        if status in (401, 403):
            raise DataPlaneAuthError(
                f"user {self._username!r} was refused{_error_message(content)}",
                url=url,
                status=status,
            )
        if not 200 <= status < 300:
            where = headers.get(b"location", b"").decode("latin-1")
            extra = f" (redirect to {where[:MAX_MESSAGE]})" if where and 300 <= status < 400 else ""
            raise DataPlaneError(
                f"HTTP error{extra}{_error_message(content)}", url=url, status=status
            )
        try:
            body = json.loads(content)
        except (ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError and UnicodeDecodeError (truncated or garbage).
            raise DataPlaneError(
                f"response is not JSON ({_short(exc)}): {_snippet(content)}", url=url, status=status
            ) from None
        raw = headers.get(b"configuration-version")
        try:
            header_version = discovery.parse_version_header(
                raw.decode("latin-1") if raw is not None else None
            )
        except DataPlaneError as exc:
            raise DataPlaneError(str(exc.args[0]), url=url, status=status) from None
        return _Response(url=url, status=status, body=body, header_version=header_version)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


@contextmanager
def _blame(resp: _Response) -> Iterator[None]:
    """Attach the URL and status of `resp` to a parser's DataPlaneError."""
    try:
        yield
    except DataPlaneAuthError:
        raise
    except DataPlaneError as exc:
        raise DataPlaneError(
            str(exc.args[0]), url=resp.url, status=resp.status, kind=exc.kind
        ) from None


def _note(versions: set[int], version: int | None) -> None:
    if version is not None:
        versions.add(version)


def _segment(name: str) -> str:
    """A frontend name as one URL path segment (names may hold `:` and `.`)."""
    return urllib.parse.quote(name, safe="")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _snippet(content: bytes) -> str:
    text = content[:80].decode("utf-8", "replace")
    return repr(text) + ("..." if len(content) > 80 else "")


def _error_message(content: bytes) -> str:
    """`: <message>` from a `{"code", "message"}` error body, else a snippet of the body."""
    if not content:
        return ""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return f": {_snippet(content)}"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        msg = body["message"].strip()
        return f": {msg[:MAX_MESSAGE]}" if msg else ""
    return f": {_snippet(content)}"


__all__ = ["DataPlaneClient"]
