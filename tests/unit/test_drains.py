"""Drains (drains.py): pure, `now` passed in. What the service tests checked on real time."""

from __future__ import annotations

import ipaddress

import pytest

from announcer.drains import LONG_AGO, Drains, drain_phase
from announcer.planner import Drain

A = ipaddress.ip_address
V10, V11 = A("192.0.2.10"), A("192.0.2.11")


def test_phase_from_the_earliest_cause() -> None:
    assert drain_phase([None, None], 5.0, 10.0) is Drain.NONE
    assert drain_phase([0.0, None], 5.0, 10.0) is Drain.DRAINING
    assert drain_phase([0.0, 4.0], 10.0, 10.0) is Drain.DRAINED  # the earliest counts


def test_operator_drain_then_delay_then_undrain() -> None:
    d = Drains(delay=10.0)
    assert not d.any() and d.phase(V10, 0.0) is Drain.NONE
    assert d.drain([V10], False, 100.0) == ["VIP 192.0.2.10 drained by the operator"]
    assert d.drain([V10], False, 105.0) == []  # already: its start stays
    assert d.phase(V10, 109.9) is Drain.DRAINING and d.phase(V11, 109.9) is Drain.NONE
    assert d.phase(V10, 110.0) is Drain.DRAINED
    assert d.next_wake(105.0) == pytest.approx(1.0)  # capped
    assert d.next_wake(109.5) == pytest.approx(0.5)
    targets, lines = d.undrain([V10], False)
    assert targets == [V10] and lines == ["VIP 192.0.2.10 undrained by the operator"]
    assert not d.any()


def test_host_file_and_stop() -> None:
    d = Drains(delay=1.0)
    d.drain([], True, 0.0)
    assert d.phases([V10, V11], 0.5) == {V10: Drain.DRAINING, V11: Drain.DRAINING}
    targets, lines = d.undrain([], True)
    assert targets == [] and lines == ["host undrained by the operator"]
    assert d.disable_file(True, 2.0) and not d.disable_file(True, 3.0)
    assert d.phase(V10, 3.5) is Drain.DRAINED
    assert d.disable_file(False, 4.0) and d.phases([V10], 4.0) == {}
    d.stop = 5.0
    assert d.phase(V10, 100.0) is Drain.DRAINING  # a stop never becomes DRAINED


def test_saved_drains_come_back_already_drained() -> None:
    d = Drains(delay=10.0)
    d.drain([V11, V10], True, 50.0)
    d.disable_file(True, 50.0)
    doc = d.document()
    assert doc == {"all": True, "vips": ["192.0.2.10", "192.0.2.11"]}  # not the file's
    back = Drains(delay=10.0)
    back.restore(doc)
    assert back.vips == {V10: LONG_AGO, V11: LONG_AGO} and back.host == LONG_AGO
    assert back.phase(V10, 0.0) is Drain.DRAINED and back.file is None
    for bad in ([], {"vips": ["nope"]}, {"vips": 3}):
        with pytest.raises((ValueError, TypeError)):
            Drains(delay=1.0).restore(bad)
