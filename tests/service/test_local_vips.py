"""The local-VIP check in the service (locality.py): a VIP the kernel does not deliver
to this host is never announced, whatever its probe says, and is announced as soon as
the address appears; without netlink, VIPs go by their checks and an ERROR says so."""

from __future__ import annotations

import logging

import pytest

from tests.support.fakes import FakeKernel, FakeSource, Harness, frontend, run, until


def test_a_vip_not_local_at_the_start_is_never_announced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kernel = FakeKernel("192.0.2.11")

    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10"), frontend("api", "192.0.2.11"))
        async with Harness(src, kernel=kernel) as h:
            await until(lambda: h.svc.synced.is_set() and h.prefixes() == {"192.0.2.10/32"})
            await until(lambda: all(str(v.state) == "UP" for v in h.svc.vips.values()))
            report = await h.svc.report(fresh=False)
            by = {v["address"]: v for v in report["vips"]}
            assert by["192.0.2.11"]["state"] == "UP" and not by["192.0.2.11"]["local"]
            assert not by["192.0.2.11"]["wanted"] and by["192.0.2.10"]["local"]
            assert report["local_check"] == {"ok": True, "error": "", "not_local": ["192.0.2.11"]}
            sent = {str(r.prefix) for _, announced in h.table.applies for r in announced}
            assert "192.0.2.11/32" not in sent

    run(go())
    lines = [r for r in caplog.records if "not local to this host" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR  # one line, not one per check
    kernel.close()


def test_a_vip_that_leaves_lo_is_withdrawn_at_once_and_back_when_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    kernel = FakeKernel()

    async def go() -> None:
        src = FakeSource(frontend("web", "192.0.2.10", "192.0.2.11"))
        async with Harness(src, kernel=kernel) as h:
            both = {"192.0.2.10/32", "192.0.2.11/32"}
            await until(lambda: h.prefixes() == both)
            sweeps = kernel.lookups
            kernel.set_local("192.0.2.11", False)  # `ip addr del 192.0.2.11/32 dev lo`
            await until(lambda: h.prefixes() == {"192.0.2.10/32"}, timeout=1.0)
            assert kernel.lookups == sweeps + 1  # the event's VIP only, not a sweep
            kernel.set_local("192.0.2.11", True)
            await until(lambda: h.prefixes() == both, timeout=1.0)

    run(go())
    text = caplog.text
    assert text.count("VIP 192.0.2.11 is not local") == 1 and "is local again" in text
    kernel.close()


def test_without_netlink_vips_go_by_their_checks_and_an_error_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refused() -> object:
        raise PermissionError(1, "Operation not permitted")  # RestrictAddressFamilies

    class NoNetlink(FakeKernel):
        def routes(self) -> object:
            return refused()

    kernel = NoNetlink("192.0.2.10")

    async def go() -> None:
        async with Harness(FakeSource(frontend("web", "192.0.2.10")), kernel=kernel) as h:
            await until(lambda: h.prefixes() == {"192.0.2.10/32"})
            report = await h.svc.report(fresh=False)
            assert report["local_check"]["ok"] is False
            assert "Operation not permitted" in report["local_check"]["error"]
            assert report["vips"][0]["local"]

    run(go())
    assert "local-VIP check off" in caplog.text
    kernel.close()
