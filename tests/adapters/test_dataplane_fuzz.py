"""Property tests on the DataPlaneAPI client over real HTTP: whatever a server answers
(any status, any Configuration-Version header, any body, cut short or not), the
client returns a result or raises DataPlaneError, never anything else.

tests/unit/test_discovery.py fuzzes the pure parsers with decoded JSON; this goes
through the asyncio/h11 transport, the status and header handling and the v2/v3 read
sequences. Every error also carries a known `kind`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.dataplane import DataPlaneClient
from announcer.errors import DataPlaneError


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    version_header: str | None
    truncate: bool  # promise more body than is sent, then hang up


class Script:
    """The answers the server gives, in turn (cycling), and the requests it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: Iterator[Answer] = iter(())
        self.paths: list[str] = []

    def play(self, answers: list[Answer]) -> None:
        with self.lock:
            self.answers = itertools.cycle(answers)
            self.paths = []

    def next(self, path: str) -> Answer:
        with self.lock:
            self.paths.append(path)
            return next(self.answers)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        a = self.server.script.next(self.path)
        self.send_response(a.status)
        if a.version_header is not None:
            self.send_header("Configuration-Version", a.version_header)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(a.body) + (10 if a.truncate else 0)))
        if a.truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(a.body)
        if a.truncate:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    script: Script


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Script]]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.script = Script()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", srv.script
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


# ------------------------------------------------------------------ strategies

_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=15,
)
_bind = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=8),
        "address": st.sampled_from(["192.0.2.10", "*", "", "::", "unix@/x", "2001:db8::1", "x"])
        | st.text(max_size=12),
        "port": st.integers(-5, 70000) | _scalar,
        "ssl": _scalar,
        "accept_proxy": _scalar,
    },
)
_frontend = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=8) | _scalar,
        "mode": st.sampled_from(["http", "tcp", "log"]) | _scalar,
        "monitor_uri": st.text(max_size=8) | _scalar,
        "disabled": _scalar,
        "binds": st.dictionaries(st.text(max_size=5), _bind, max_size=3) | _json,
    },
)
_frontends = st.lists(_frontend, max_size=4)
_payload = st.one_of(
    _json,
    _frontends,
    st.lists(_bind, max_size=4),
    st.fixed_dictionaries(
        {"_version": st.integers(-2, 10**12) | _scalar, "data": _json | _frontends}
    ),
    st.integers(-2, 10**20),
)
_body = st.one_of(
    _payload.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
    _payload.map(lambda v: json.dumps(v).encode()[:-1]),  # cut one byte short
)
_answer = st.builds(
    Answer,
    status=st.sampled_from([200, 200, 200, 201, 204, 301, 302, 400, 401, 403, 404, 500, 503])
    | st.integers(200, 599),
    body=_body,
    version_header=st.none() | st.integers(-3, 10**20).map(str) | st.text(max_size=6),
    truncate=st.booleans(),
)


PASSWORD = "s3cret-fuzz-Pa55"


KINDS = {"auth", "unreachable", "timeout", "too_big", "tls", "bad_answer", "unstable"}


async def exercise(url: str, api: int | str) -> None:
    async with DataPlaneClient(
        url,
        username="admin",
        password=PASSWORD,
        api_version=api,  # type: ignore[arg-type]
        timeout=2.0,
    ) as client:
        for call in (client.configuration_version, client.discover):
            try:
                await call()
            except DataPlaneError as e:
                assert str(e).startswith("DataPlaneAPI: ")
                assert PASSWORD not in str(e)
                assert e.kind in KINDS or e.kind.startswith("http_"), e.kind


@settings(max_examples=250, deadline=None)
@given(answers=st.lists(_answer, min_size=1, max_size=5), api=st.sampled_from([2, 3, "auto"]))
def test_any_answer_gives_a_result_or_a_dataplane_error(
    server: tuple[str, Script], answers: list[Answer], api: int | str
) -> None:
    url, script = server
    script.play(answers)
    asyncio.run(exercise(url, api))


def test_the_harness_can_answer_well(server: tuple[str, Script]) -> None:
    """Not vacuous: with good answers the same client succeeds (v3, one frontend)."""
    url, script = server
    frontends = [
        {
            "name": "fe",
            "mode": "http",
            "binds": {"b": {"name": "b", "address": "192.0.2.10", "port": 80}},
        }
    ]
    script.play(
        [Answer(200, b"7", None, False), Answer(200, json.dumps(frontends).encode(), "7", False)]
    )

    async def main() -> Any:
        async with DataPlaneClient(
            url, username="admin", password=PASSWORD, api_version=3
        ) as client:
            assert await client.configuration_version() == 7
            return await client.discover()

    found = asyncio.run(main())
    assert [f.name for f in found.frontends] == ["fe"]
    assert any("full_section=true" in p for p in script.paths)
