"""`announcer drain --wait` / `undrain --wait` end to end on real time: the CLI's
`main` against the control socket of a Service on the fakes. What gobgpd holds when
the command returns is the fake table's content (the rules: tests/unit/test_drainwait.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from announcer import cli, control
from announcer.errors import ControlError
from announcer.planner import GRACEFUL_SHUTDOWN
from tests.support.fakes import FakeSource, Harness, N, frontend, run, until

GS = GRACEFUL_SHUTDOWN
P10 = N("192.0.2.10/32")
P11 = N("192.0.2.11/32")


async def cli_main(*argv: str) -> tuple[int, float]:
    """`announcer ARGV` in a thread, as an operator runs it; returns (status, seconds)."""
    t0 = time.monotonic()
    rc = await asyncio.to_thread(cli.main, list(argv))
    return rc, time.monotonic() - t0


def test_drain_wait_returns_once_withdrawn_and_undrain_wait_once_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = str(tmp_path / "control.sock")

    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src, drain={"delay": 0.6}) as h:
            server = await control.serve(Path(sock), h.svc)
            await until(lambda: len(h.table.routes) == 2)
            rc, took = await cli_main("drain", "192.0.2.10", "--wait", "--socket", sock)
            assert rc == cli.EX_OK and took >= 0.6
            # When it returns, gobgpd has it: withdrawn (after 65535:0 for the delay).
            assert P10 not in h.table.routes and P11 in h.table.routes
            assert any(GS in r.communities for _, a in h.table.applies for r in a)
            out = capsys.readouterr().out
            assert "drain: done after" in out and "1 VIP drained in gobgpd (1 withdrawn)" in out
            rc, took = await cli_main("undrain", "--all", "--wait", "--socket", sock)
            assert rc == cli.EX_OK and took < 2
            assert P10 in h.table.routes and GS not in h.table.routes[P10].communities
            assert "2 VIPs undrained in gobgpd (2 announced)" in capsys.readouterr().out
            server.close()

    run(go())


def test_drain_wait_kept_routes_and_a_down_vip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bgp.drained keeps the route: done when gobgpd has that one. A DOWN VIP does not
    block `undrain --wait`: it is as announced as it can be, and the CLI says so."""
    sock = str(tmp_path / "control.sock")

    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        bgp = {"drained": {"announce": True, "med": 500}}
        async with Harness(src, drain={"delay": 0.3}, bgp=bgp) as h:
            server = await control.serve(Path(sock), h.svc)
            await until(lambda: len(h.table.routes) == 2)
            h.prober.bad.add("192.0.2.11")
            await until(lambda: P11 not in h.table.routes)
            rc, _ = await cli_main("drain", "--all", "--wait", "--socket", sock)
            assert rc == cli.EX_OK
            kept = h.table.routes[P10]
            assert kept.med == 500 and GS in kept.communities
            out = capsys.readouterr().out
            assert "(1 kept with bgp.drained's attributes and 65535:0, 1 withdrawn)" in out
            rc, _ = await cli_main("undrain", "--all", "--wait", "--timeout", "5", "--socket", sock)
            assert rc == cli.EX_OK
            assert h.table.routes[P10].med is None and GS not in h.table.routes[P10].communities
            out = capsys.readouterr().out
            assert "(1 announced, 1 DOWN)" in out
            assert "192.0.2.11: DOWN (its checks fail): announced once they pass" in out
            server.close()

    run(go())


def test_drain_wait_times_out_with_75_and_the_drain_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = str(tmp_path / "control.sock")

    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src, drain={"delay": 30, "on_stop": False}) as h:
            server = await control.serve(Path(sock), h.svc)
            await until(lambda: len(h.table.routes) == 2)
            rc, took = await cli_main(
                "drain", "--all", "--wait", "--timeout", "0.5", "--socket", sock
            )
            assert rc == cli.EX_TEMPFAIL and 0.5 <= took < 2
            err = capsys.readouterr().err
            assert "timed out after 0.5s: 0 of 2 VIPs drained in gobgpd; 2 not yet:" in err
            assert "192.0.2.10: draining: 65535:0 in gobgpd, 29." in err
            assert all(GS in r.communities for r in h.table.routes.values())  # still draining
            # The control protocol: `progress` needs a goal and VIPs.
            ask = control.request
            with pytest.raises(ControlError, match="say drain or undrain"):
                await asyncio.to_thread(ask, Path(sock), {"command": "progress", "all": True})
            with pytest.raises(ControlError, match="give VIP addresses or all"):
                await asyncio.to_thread(ask, Path(sock), {"command": "progress", "of": "drain"})
            with pytest.raises(ControlError, match="not an IP address"):
                await asyncio.to_thread(
                    ask, Path(sock), {"command": "progress", "of": "drain", "vips": ["web"]}
                )
            r = await asyncio.to_thread(
                ask, Path(sock), {"command": "progress", "of": "undrain", "vips": ["192.0.2.10"]}
            )
            assert (r["total"], r["done"], r["gobgp_known"]) == (1, 0, True)
            assert r["vips"][0]["why"] == "still drained by the operator (--all)"
            server.close()

    run(go())
