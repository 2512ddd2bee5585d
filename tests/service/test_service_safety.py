"""Issue 11 in the service, against the fakes of tests/support/fakes.py: a shrunken VIP list
is held, the watchdog does not depend on DataPlaneAPI, peers taken down by someone
else raise the alarm, drains that cannot be saved say so."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from announcer import gobgp_sync, liveness
from announcer.metrics import Metrics
from announcer.model import PeerStatus, SessionState
from tests.support.fakes import FakeSource, Harness, frontend, render, run, until

N = ipaddress.ip_network
HOLD = {"vip_loss": {"confirmations": 3, "min_seconds": 1.0}}


def test_an_empty_answer_withdraws_nothing_until_it_is_confirmed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        src = FakeSource(frontend("a", "192.0.2.10"), frontend("b", "192.0.2.11", "192.0.2.12"))
        h = Harness(src, dataplaneapi=HOLD)
        metrics = Metrics()
        h.svc.metrics = metrics
        metrics.attach(h.svc)
        async with h:
            await until(lambda: len(h.table.routes) == 3)
            assert "announcer_vip_loss_held_vips 0.0" in render(metrics).decode()
            src.set()  # DataPlaneAPI answers [] (a half-written config, an impostor, a bug)
            await until(lambda: h.svc.core.hold is not None)
            report = await h.svc.report(fresh=False)
            assert report["vip_loss_hold"]["vips"] == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
            assert "announcer_vip_loss_held_vips 3.0" in render(metrics).decode()
            await asyncio.sleep(0.6)
            assert len(h.table.routes) == 3 and not h.table.withdrawn  # held
            # Confirmed by 3 answers over 1 s: the loss is real, the routes go.
            await until(lambda: not h.table.routes, timeout=5)
            assert h.svc.core.hold is None

    run(go())
    held = [r for r in caplog.records if "lost 3 of 3 VIPs" in r.getMessage()]
    assert len(held) == 1 and held[0].levelname == "ERROR"
    assert any("loss of 3 VIPs confirmed" in r.getMessage() for r in caplog.records)


def test_the_vips_coming_back_end_the_hold_without_a_flap() -> None:
    async def go() -> None:
        fes = (frontend("a", "192.0.2.10"), frontend("b", "192.0.2.11"))
        src = FakeSource(*fes)
        async with Harness(src, dataplaneapi=HOLD) as h:
            await until(lambda: len(h.table.routes) == 2)
            applies = len(h.table.applies)
            src.set(frontend("c", "192.0.2.99"))  # both old VIPs gone, a new one
            await until(lambda: h.svc.core.hold is not None)
            src.set(*fes, frontend("c", "192.0.2.99"))
            await until(lambda: h.svc.core.hold is None)
            await until(lambda: len(h.table.routes) == 3)
            assert not h.table.withdrawn
            assert len(h.table.applies) == applies + 1  # only 192.0.2.99 was announced

    run(go())


def test_removing_one_vip_of_several_is_as_fast_as_a_poll() -> None:
    async def go() -> None:
        src = FakeSource(frontend("a", "192.0.2.10", "192.0.2.11", "192.0.2.12"))
        async with Harness(src, dataplaneapi=HOLD) as h:
            await until(lambda: len(h.table.routes) == 3)
            src.set(frontend("a", "192.0.2.10", "192.0.2.11"))
            await until(lambda: len(h.table.routes) == 2, timeout=0.8)
            assert h.svc.core.hold is None

    run(go())


class FakeNotifier:
    watchdog_interval = 0.2

    def __init__(self) -> None:
        self.pings = 0

    def ready(self, status: str = "") -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def watchdog(self) -> None:
        self.pings += 1

    def stopping(self) -> None:
        pass


class HangingSource(FakeSource):
    """A DataPlaneAPI that never answers (a drip the client could not bound)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.hang = False

    async def configuration_version(self) -> int:
        if self.hang:
            await asyncio.Event().wait()
        return await super().configuration_version()


def test_watchdog_pings_while_dataplaneapi_hangs_and_stops_when_checks_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(liveness, "CHECKS_STUCK_AFTER", 1.0)

    async def go() -> None:
        src = HangingSource(frontend("a", "192.0.2.10"))
        h = Harness(src)
        notifier = FakeNotifier()
        h.svc.notifier = notifier
        async with h:
            await until(lambda: len(h.table.routes) == 1)
            src.hang = True
            before = notifier.pings
            await asyncio.sleep(1.5)
            assert notifier.pings >= before + 5  # DataPlaneAPI hangs: we live on
            assert len(h.table.routes) == 1
            h.prober.delay = 3600.0  # every probe hangs: the machinery is stuck
            await asyncio.sleep(1.6)
            stalled = notifier.pings
            await asyncio.sleep(0.6)
            assert notifier.pings == stalled  # no more pings: systemd will restart us
            h.prober.delay = 0.0

    run(go())


def test_a_peer_disabled_by_someone_else_raises_the_alarm_and_stays_so_by_default(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gobgp_sync, "PEER_POLL", 0.05)
    peer = "198.51.100.1"

    async def go(reenable: bool) -> None:
        src = FakeSource(frontend("a", "192.0.2.10"))
        h = Harness(src, gobgp={"reenable_peers": reenable})
        metrics = Metrics()
        h.svc.metrics = metrics
        metrics.attach(h.svc)
        h.table.peer_list = [PeerStatus(peer, 65530, SessionState.IDLE, True)]
        async with h:
            await until(lambda: h.table.enabled == [peer])  # fate-sharing enabled it
            h.table.peer_list = [PeerStatus(peer, 65530, SessionState.ESTABLISHED, False)]
            await asyncio.sleep(0.2)
            assert h.svc.sync.peer_alarms == {}
            # `gobgp neighbor 198.51.100.1 disable` by someone else:
            h.table.peer_list = [PeerStatus(peer, 65530, SessionState.IDLE, True)]
            if reenable:
                await until(lambda: h.table.enabled == [peer, peer])
            else:
                await until(lambda: h.svc.sync.peer_alarms == {peer: "admin-down"})
                report = await h.svc.report(fresh=False)
                assert report["peers"][0]["alarm"] == "admin-down"
                page = render(metrics).decode()
                assert f'announcer_bgp_peer_alarm{{peer="{peer}",reason="admin-down"}} 1.0' in page
                await asyncio.sleep(0.3)
                assert h.table.enabled == [peer]  # left as the operator set it

    run(go(False))
    alarms = [r for r in caplog.records if "is admin-down" in r.getMessage()]
    assert len(alarms) == 1 and alarms[0].levelname == "ERROR"  # once, not every poll
    assert "gobgp.reenable_peers is false" in alarms[0].getMessage()
    run(go(True))


def test_drains_are_neither_loaded_from_nor_saved_to_a_directory_others_can_write(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    (state / "drains.json").write_text(json.dumps({"all": True, "vips": []}))  # planted

    async def go() -> None:
        src = FakeSource(frontend("a", "192.0.2.10"))
        async with Harness(src, service={"state_dir": str(state)}) as h:
            await until(lambda: len(h.table.routes) == 1)
            assert h.svc.drains.host is None  # the planted file was not believed
            result = h.svc.drain(["192.0.2.10"])
            assert "unusable" in result["unsaved"]

    run(go())
    assert json.loads((state / "drains.json").read_text()) == {"all": True, "vips": []}
