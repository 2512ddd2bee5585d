"""HTTP to DataPlaneAPI, the only module that speaks it (asyncio streams plus h11).

`HttpSession` keeps one proven keep-alive connection; its `get` sends one GET below the
API root and returns the decoded 2xx answer (the JSON body and the Configuration-Version
header) or raises a `DataPlaneError` (or `DataPlaneAuthError` for 401/403) carrying the
URL, the HTTP status and a `kind` for metrics. What the answers mean is dataplane.py's
business; this module only moves bytes.

Operational rules:

* Nothing a server does can hold a request: every request runs under one total deadline
  (connect, proof, send, headers and body together; a server dripping one byte a second
  cannot stretch it), and the bytes read for one answer are capped while they stream in.
* The password only goes to a server that proved who it is, before any request byte is
  sent: over `https://` by its certificate; over `http://` (loopback only) by the uid
  owning the server side of *this* TCP connection in /proc/self/net/tcp{,6}; over
  `unix://` by SO_PEERCRED (the lookups are in target.py). The uid must be one of
  `server_users`. While DataPlaneAPI is down, any local user could otherwise listen on
  its port and collect the password.
* The password never appears in a log line, an exception or a repr: it lives only in the
  prepared Authorization header. URLs we report never carry credentials.
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import h11

from . import discovery
from .errors import DataPlaneAuthError, DataPlaneError
from .target import (
    Target,
    is_loopback_host,
    resolve_server_users,
    tcp_server_uid,
    unix_peer_uid,
    user_name,
)

# The same logger as dataplane.py and target.py: one adapter, one name for operators.
log = logging.getLogger("announcer.dataplane")

# Error bodies are shown in exceptions; keep them to one readable line.
MAX_MESSAGE = 300
READ_CHUNK = 65536


@dataclass(frozen=True)
class Response:
    """A decoded 2xx answer: the JSON body and the Configuration-Version header."""

    url: str
    status: int
    body: Any
    header_version: int | None


class _Stale(Exception):
    """Internal: the connection was closed before any byte of an answer arrived."""


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


class HttpSession:
    """GETs to one DataPlaneAPI over one keep-alive connection, proven before use."""

    def __init__(
        self,
        target: Target,
        *,
        username: str,
        password: str,
        timeout: float,
        verify: bool | str,
        max_response_bytes: int,
        server_users: Iterable[str | int],
    ) -> None:
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
        self._timeout = timeout
        self._max_bytes = max_response_bytes
        self._uids = resolve_server_users(server_users) if target.scheme != "https" else frozenset()
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the connection."""
        self.drop()
        await asyncio.sleep(0)  # let the transport finish closing

    def drop(self) -> None:
        """Abort the connection, if any; the next request opens (and proves) a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Response:
        """One GET of `path` (below the prefix) under the total deadline."""
        if params:
            path += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        url = self._base + path
        log.debug("GET %s", url)
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._request(self._target.prefix + path, url)
            except TimeoutError:
                self.drop()
                raise DataPlaneError(
                    f"timed out after {self._timeout:g}s", url=url, kind="timeout"
                ) from None

    async def _request(self, target: str, url: str) -> Response:
        while True:
            conn, reused = self._conn, self._conn is not None
            if conn is None:
                conn = self._conn = await self._connect(url)
            try:
                status, headers, body = await self._exchange(conn, target, url)
            except _Stale:
                self.drop()
                if reused:
                    continue  # the server closed the idle keep-alive connection
                raise DataPlaneError(
                    "connection failed: closed by the server without an answer",
                    url=url,
                    kind="unreachable",
                ) from None
            except OSError as exc:  # reset, TLS failure mid-answer
                self.drop()
                raise DataPlaneError(
                    f"bad response: connection lost ({_short(exc)})", url=url, kind="bad_answer"
                ) from None
            except h11.ProtocolError as exc:
                self.drop()
                raise DataPlaneError(
                    f"bad response: {_short(exc)}", url=url, kind="bad_answer"
                ) from None
            except BaseException:
                self.drop()  # too big, cancelled, deadline: this connection is done
                raise
            if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                conn.h11.start_next_cycle()
            else:
                self.drop()
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
    ) -> Response:
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
        return Response(url=url, status=status, body=body, header_version=header_version)


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


__all__ = ["HttpSession", "Response"]
