"""The HTTP probe's pooled parsers (probe_http_connection._borrow/_give_back).

A parser is lent to a connection for an exchange and goes back to the pool only when
the response is complete, the connection may carry another and nothing followed the
response: a parser in any other state must never parse another connection's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from announcer import probe_http_connection as phc
from announcer.probe_http_connection import HttpConnection

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno"


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        """No socket to close: these tests feed the answers by hand."""

    def abort(self) -> None:
        """No socket to abort."""


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    phc._IDLE_PARSERS.clear()
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
    phc._IDLE_PARSERS.clear()


def connection(loop: asyncio.AbstractEventLoop) -> HttpConnection:
    conn = HttpConnection(loop, False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    return conn


def exchange(conn: HttpConnection, *reads: bytes) -> None:
    conn.send()
    for data in reads:
        conn.received(memoryview(data))


def pooled() -> list[Any]:
    return [lender.parser for lender in phc._IDLE_PARSERS]


def test_a_finished_keepalive_answer_gives_its_parser_to_the_next_connection(
    loop: asyncio.AbstractEventLoop,
) -> None:
    a = connection(loop)
    a.send()
    assert a.parser is None  # nothing has arrived: nothing lent yet
    a.received(memoryview(OK))
    assert (a.status, a.keep, a.finished) == (200, True, True)
    (parser,) = pooled()
    assert a.parser is None
    b = connection(loop)
    b.send()
    b.received(memoryview(UNAVAILABLE[:20]))
    assert b.parser is parser and pooled() == []  # lent while the answer arrives
    b.received(memoryview(UNAVAILABLE[20:]))
    assert (b.status, b.keep, b.finished) == (503, True, True)
    # and back to the first connection, which borrows it again for its next answer
    exchange(a, UNAVAILABLE)
    assert a.status == 503 and pooled() == [parser]


def test_a_burst_of_requests_is_answered_with_one_parser(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Every check's request at once (the start): the answers, read one after the
    other, need one parser between them, not one each."""
    conns = [connection(loop) for _ in range(1000)]
    for c in conns:
        c.send()
    assert all(c.parser is None for c in conns)
    for c in conns:
        c.received(memoryview(OK))
    assert all((c.status, c.keep, c.finished) == (200, True, True) for c in conns)
    assert len(pooled()) == 1


def test_a_parser_stays_with_its_connection_until_the_body_is_over(
    loop: asyncio.AbstractEventLoop,
) -> None:
    a = connection(loop)
    exchange(a, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
    assert a.status == 200 and not a.finished and a.parser is not None
    b = connection(loop)
    exchange(b, OK)
    assert pooled() and a.parser not in pooled()  # not lent twice
    a.received(memoryview(b"llo"))
    assert a.finished and a.keep and a.parser is None and len(pooled()) == 2


@pytest.mark.parametrize(
    "reads",
    [
        # another answer begins after the one asked for: out of step
        (OK + b"HTTP/1.1 2",),
        (OK + OK,),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe",),  # body still to come
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",),  # malformed header
        (b"HTTP/1.1 2000 OK\r\n\r\n",),  # malformed status line
    ],
)
def test_a_parser_in_any_other_state_is_not_pooled(
    loop: asyncio.AbstractEventLoop, reads: tuple[bytes, ...]
) -> None:
    a = connection(loop)
    exchange(a, *reads)
    assert pooled() == []
    # a new connection parses its answer with a fresh parser
    b = connection(loop)
    exchange(b, OK)
    assert (b.status, b.keep, b.finished) == (200, True, True)


def test_a_connection_lost_mid_answer_drops_its_parser(loop: asyncio.AbstractEventLoop) -> None:
    a = connection(loop)
    exchange(a, b"HTTP/1.1 200 OK\r\nContent-Len")
    lender = a.lender
    assert lender is not None
    a.connection_lost(None)
    assert lender.conn is None and a.parser is None and pooled() == []
    lender.parser.feed_data(b"gth: 0\r\n\r\n")  # nobody to call: ignored, no error


def test_idle_parsers_beyond_the_limit_are_freed(loop: asyncio.AbstractEventLoop) -> None:
    conns = [connection(loop) for _ in range(phc._POOL_LIMIT + 10)]
    for c in conns:  # every answer begun at once: a parser each
        exchange(c, OK[:10])
    assert len({id(c.parser) for c in conns}) == len(conns)
    for c in conns:
        c.received(memoryview(OK[10:]))
    assert len(pooled()) == phc._POOL_LIMIT
    assert all(c.parser is None and c.status == 200 for c in conns)
