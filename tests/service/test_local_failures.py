"""A check that fails for a reason of ours (EMFILE, a stalled loop) leaves the VIP alone."""

from __future__ import annotations

import asyncio

from announcer.health import State
from announcer.metrics import Metrics
from announcer.model import CheckResult, CheckSpec, Discovery
from announcer.service import Service
from tests.support import fakes as ts
from tests.support.fakes import render


class Source(ts.FakeSource):
    """DataPlaneAPI as the service sees it (async)."""

    async def configuration_version(self) -> int:  # type: ignore[override]
        return self.version

    async def discover(self) -> Discovery:  # type: ignore[override]
        return Discovery(self.version, self.frontends)


class Prober:
    """Healthy, or failing locally (as probes.py reports EMFILE) while `local` is set."""

    def __init__(self) -> None:
        self.local: str | None = None
        self.runs = 0

    async def run(self, spec: CheckSpec) -> CheckResult:
        self.runs += 1
        if self.local is not None:
            return CheckResult(
                False, "not counted: Too many open files (connecting)", 0.0, local=self.local
            )
        return CheckResult(True, "HTTP 200", 0.001)


def test_local_failures_keep_the_vip_up_and_are_retried_fast() -> None:
    async def go() -> None:
        prober, table, metrics = Prober(), ts.FakeTable(), Metrics()
        cfg = ts.config()  # interval 0.1 s, fast 0.05 s, fall 2
        svc = Service(
            cfg,
            source=Source(ts.frontend("fe", "192.0.2.10")),
            table=table,
            prober=prober,
            metrics=metrics,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        try:
            await ts.until(lambda: {str(p) for p in table.routes} == {"192.0.2.10/32"})
            (vs,) = svc.vips.values()
            assert vs.state is State.UP
            prober.local, before = "emfile", prober.runs
            await asyncio.sleep(0.6)  # fall x interval is 0.2 s: it would be DOWN by now
            assert vs.state is State.UP
            assert {str(p) for p in table.routes} == {"192.0.2.10/32"}
            assert table.withdrawn == []
            # Retried at the fast interval (0.05 s), not the normal one (0.1 s).
            assert prober.runs - before >= 8
            page = render(metrics).decode()
            assert 'announcer_check_local_failures_total{reason="emfile"}' in page
            assert 'result="fail"' not in page  # not a verdict on the VIP
            prober.local = None
            await asyncio.sleep(0.3)
            assert vs.state is State.UP and table.withdrawn == []
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

    asyncio.run(go())
