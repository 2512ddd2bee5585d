"""`drain --wait` (drainwait.py, pure): when a drain or undrain has taken effect in
gobgpd, what the answer to `progress` holds, and the CLI's side: its arguments, what it
prints and when, and its exit statuses, with the clock and the service faked."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from announcer import cli
from announcer.control import ControlUnavailable
from announcer.drains import Drains
from announcer.drainwait import (
    LIMIT,
    MARGIN,
    Goal,
    Progress,
    Seen,
    default_timeout,
    final_lines,
    judge,
    parse_timeout,
    poll_interval,
    report,
    timeout_lines,
)
from announcer.errors import ControlError
from announcer.health import State
from announcer.model import Route
from announcer.planner import GRACEFUL_SHUTDOWN, Adjust, Drain, VipPolicy, route_for

A = ipaddress.ip_address
V10, V11 = A("192.0.2.10"), A("192.0.2.11")
DRAIN, UNDRAIN = Goal.DRAIN, Goal.UNDRAIN
PLAIN = VipPolicy()
KEEP = VipPolicy(drained=Adjust(announce=True, med=500))  # bgp.drained: {announce: true}


def seen(
    phase: Drain,
    state: State | None = State.UP,
    *,
    actual: Drain | Route | None = None,  # gobgpd has this, or a healthy VIP's route in it
    policy: VipPolicy = PLAIN,
    left: float | None = 5.0,
    causes: tuple[str, ...] = (),
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = V10,
) -> Seen:
    """A VIP as the service sees it: the core wants the route of (state, phase)."""
    wanted = None if state is None else route_for(address, state, phase, policy)
    have = route_for(address, State.UP, actual, policy) if isinstance(actual, Drain) else actual
    return Seen(address, phase, state, wanted, have, left, causes)


# ------------------------------------------------------------ has it taken effect


def test_a_drain_is_done_once_drained_and_gobgpd_has_the_drained_route() -> None:
    # At once: 65535:0 wanted; not in gobgpd until the reconcile sent it.
    j = judge(DRAIN, seen(Drain.DRAINING, actual=Drain.NONE, left=9.5), True)
    assert not j.done and j.why == "draining: 65535:0 not in gobgpd yet, 9.5s of drain.delay left"
    j = judge(DRAIN, seen(Drain.DRAINING, actual=Drain.DRAINING, left=4.0), True)
    assert not j.done and j.why == "draining: 65535:0 in gobgpd, 4.0s of drain.delay left"
    assert j.in_gobgp is True
    # The delay is over, but gobgpd still has the 65535:0 route: not yet.
    j = judge(DRAIN, seen(Drain.DRAINED, actual=Drain.DRAINING, left=0.0), True)
    assert not j.done and j.why == "drained: gobgpd not updated yet"
    j = judge(DRAIN, seen(Drain.DRAINED, actual=None, left=0.0), True)
    assert j.done and j.outcome == "withdrawn" and j.why == "" and j.in_gobgp is False


def test_a_drain_kept_by_bgp_drained_is_done_when_gobgpd_has_that_route() -> None:
    j = judge(DRAIN, seen(Drain.DRAINED, actual=Drain.DRAINING, policy=KEEP), True)
    assert not j.done  # the DRAINING route lacks bgp.drained's MED
    j = judge(DRAIN, seen(Drain.DRAINED, actual=Drain.DRAINED, policy=KEEP), True)
    assert j.done and j.outcome == "kept"
    kept = route_for(V10, State.UP, Drain.DRAINED, KEEP)
    assert kept is not None and GRACEFUL_SHUTDOWN in kept.communities and kept.med == 500


def test_a_drain_is_not_done_while_undrained_or_only_stopping() -> None:
    j = judge(DRAIN, seen(Drain.NONE, actual=Drain.NONE), True)
    assert not j.done and "not drained" in j.why
    j = judge(DRAIN, seen(Drain.DRAINING, actual=Drain.DRAINING, left=None), True)
    assert not j.done and j.why == "draining for a stop of announcer"


def test_a_down_vip_drains_with_nothing_to_send() -> None:
    j = judge(DRAIN, seen(Drain.DRAINING, State.DOWN, left=1.0), True)
    assert not j.done and j.why.startswith("draining: not announced")
    j = judge(DRAIN, seen(Drain.DRAINED, State.DOWN), True)
    assert j.done and j.outcome == "withdrawn"


def test_nothing_is_done_while_gobgpds_routes_are_unknown() -> None:
    for goal, v in ((DRAIN, seen(Drain.DRAINED)), (UNDRAIN, seen(Drain.NONE, actual=Drain.NONE))):
        j = judge(goal, v, False)
        assert not j.done and "not known yet" in j.why and j.in_gobgp is None


def test_an_undrain_is_done_when_announced_again() -> None:
    j = judge(UNDRAIN, seen(Drain.NONE, actual=Drain.DRAINED, policy=KEEP), True)
    assert not j.done and j.why == "undrained: gobgpd not updated yet"
    j = judge(UNDRAIN, seen(Drain.NONE, actual=Drain.DRAINING), True)
    assert not j.done  # 65535:0 still on it
    j = judge(UNDRAIN, seen(Drain.NONE, actual=Drain.NONE), True)
    assert j.done and j.outcome == "announced" and j.why == ""
    j = judge(UNDRAIN, seen(Drain.NONE, State.FALLING, actual=Drain.NONE), True)
    assert j.done and j.outcome == "announced"


def test_an_undrain_waits_for_other_causes_and_undecided_checks() -> None:
    file = ("the disable file",)
    j = judge(UNDRAIN, seen(Drain.DRAINED, causes=file), True)
    assert not j.done and j.why == "still drained by the disable file"
    for state in (State.INIT, State.RISING):
        j = judge(UNDRAIN, seen(Drain.NONE, state), True)
        assert not j.done and j.why == f"{state}: waiting for its checks' verdict"


def test_an_undrain_of_a_down_vip_is_done_and_says_so() -> None:
    """A broken backend must not block the wait: DOWN is as announced as it can be."""
    j = judge(UNDRAIN, seen(Drain.NONE, State.DOWN), True)
    assert j.done and j.outcome == "down" and "DOWN" in j.why and "once they pass" in j.why
    shown = VipPolicy(down=Adjust(announce=True, med=1000))  # bgp.down: {announce: true}
    down = route_for(V10, State.DOWN, Drain.NONE, shown)
    j = judge(UNDRAIN, seen(Drain.NONE, State.DOWN, actual=down, policy=shown), True)
    assert j.done and j.why == "DOWN (its checks fail): kept announced, with worse attributes"
    j = judge(UNDRAIN, seen(Drain.NONE, State.DOWN, actual=Drain.NONE), True)
    assert not j.done  # gobgpd still has the healthy route: the withdrawal is due


def test_healthy_but_wanted_nowhere_and_unknown_vips() -> None:
    v = Seen(V10, Drain.NONE, State.UP, None, None, None)  # outside the allow-list, say
    j = judge(UNDRAIN, v, True)
    assert j.done and j.outcome == "unannounced" and "not announced" in j.why
    gone = Seen(V11, Drain.DRAINED, None, None, None, 0.0)  # gone from HAProxy
    for goal in Goal:
        j = judge(goal, gone, True)
        assert j.done and j.outcome == "absent"
    still = Seen(V11, Drain.NONE, None, None, route_for(V11, State.UP, Drain.NONE, VipPolicy()), 0)
    assert not judge(UNDRAIN, still, True).done


def test_drains_say_how_long_and_why() -> None:
    d = Drains(delay=10.0)
    assert d.until_drained(V10, 0.0) is None and d.causes(V10) == ()
    d.drain([V10], False, 100.0)
    d.drain([], True, 104.0)
    assert d.until_drained(V10, 103.0) == 7.0 and d.until_drained(V10, 200.0) == 0.0
    assert d.until_drained(V11, 105.0) == 9.0  # the host drain only
    assert d.causes(V10) == ("the operator (this VIP)", "the operator (--all)")
    d.disable_file(True, 106.0)
    d.stop = 107.0
    assert d.causes(V11) == ("the operator (--all)", "the disable file", "a stop of announcer")
    d.undrain([], True)
    d.disable_file(False, 108.0)
    assert d.until_drained(V11, 108.0) is None and d.causes(V11) == ("a stop of announcer",)


# --------------------------------------------------------------------- the answer


def test_the_answer_counts_every_vip_and_lists_a_few() -> None:
    many = [A(f"192.0.2.{i}") for i in range(1, 121)]
    gs = Drain.DRAINING  # gobgpd still has the 65535:0 route
    judged = [judge(DRAIN, seen(Drain.DRAINED, actual=gs, address=a), True) for a in many[:100]]
    judged += [judge(DRAIN, seen(Drain.DRAINED, address=a), True) for a in many[100:]]
    r = report(DRAIN, judged, known=True, delay=10.0)
    assert (r["of"], r["total"], r["done"], r["outcomes"]) == ("drain", 120, 20, {"withdrawn": 20})
    assert len(r["vips"]) == LIMIT and r["omitted"] == 100 - LIMIT
    assert [v["vip"] for v in r["vips"][:2]] == ["192.0.2.1", "192.0.2.2"]
    assert r["vips"][0] == {
        "vip": "192.0.2.1",
        "done": False,
        "outcome": "pending",
        "phase": "drained",
        "state": "UP",
        "in_gobgp": True,
        "why": "drained: gobgpd not updated yet",
    }
    # Done VIPs with something to say come after the pending ones.
    down = judge(UNDRAIN, seen(Drain.NONE, State.DOWN, address=V11), True)
    up = judge(UNDRAIN, seen(Drain.NONE, actual=Drain.NONE), True)
    r = report(UNDRAIN, [down, up], known=True, delay=10.0)
    assert r["done"] == r["total"] == 2 and r["outcomes"] == {"down": 1, "announced": 1}
    assert [v["vip"] for v in r["vips"]] == ["192.0.2.11"] and r["omitted"] == 0


# ---------------------------------------------------------------- the CLI's side


def test_timeouts() -> None:
    assert parse_timeout("0") == 0.0 and parse_timeout("2.5") == 2.5
    for bad in ("-1", "nan", "inf", "-inf", "soon", ""):
        with pytest.raises(ValueError):
            parse_timeout(bad)
    assert default_timeout(DRAIN, 10.0) == 10.0 + MARGIN
    assert default_timeout(UNDRAIN, 10.0) == MARGIN
    assert poll_interval(4) < poll_interval(10_000)


def result(done: int, total: int, *pending: str, of: str = "drain", **more: Any) -> dict[str, Any]:
    vips = [
        {"vip": v, "done": False, "phase": "draining", "state": "UP", "in_gobgp": True, "why": w}
        for v, w in (p.split("|") for p in pending)
    ]
    out = {
        "of": of,
        "total": total,
        "done": done,
        "outcomes": {"withdrawn": done} if done else {},
        "gobgp_known": True,
        "delay": 10.0,
        "vips": vips,
        "omitted": 0,
    }
    return {**out, **more}


def test_progress_lines_are_sparing() -> None:
    p = Progress()
    waiting = result(0, 3, "192.0.2.10|draining: 65535:0 in gobgpd, 9.0s of drain.delay left")
    assert p.line(waiting, 0.2) is None  # nothing in the first second (a quick undrain)
    first = p.line(waiting, 1.0)
    assert first == (
        "drain: 0 of 3 VIPs drained in gobgpd after 1.0s; waiting for 192.0.2.10 "
        "(draining: 65535:0 in gobgpd, 9.0s of drain.delay left) and 2 more"
    )
    # The same picture (only the seconds left move): nothing until EVERY seconds passed.
    assert p.line(waiting, 1.5) is None and p.line(waiting, 10.0) is None
    assert p.line(waiting, 11.0) is not None
    # A change shows, but not twice within a second.
    one = result(1, 3, "192.0.2.11|drained: gobgpd not updated yet")
    assert p.line(one, 11.5) is None
    assert p.line(one, 12.1) is not None
    assert p.line(result(2, 3, "192.0.2.12|x"), 12.2) is None


def test_final_and_timeout_lines() -> None:
    done = result(3, 3)
    assert final_lines(done, 10.34) == [
        "drain: done after 10.3s: 3 VIPs drained in gobgpd (3 withdrawn)"
    ]
    down = result(2, 2, of="undrain", outcomes={"announced": 1, "down": 1})
    down["vips"] = [{"vip": "192.0.2.11", "done": True, "why": "DOWN (its checks fail): ..."}]
    assert final_lines(down, 0.4) == [
        "undrain: done after 0.4s: 2 VIPs undrained in gobgpd (1 announced, 1 DOWN)",
        "  192.0.2.11: DOWN (its checks fail): ...",
    ]
    assert final_lines(result(0, 0), 0.0) == ["drain: done: no VIPs to wait for"]
    late = result(1, 4, "192.0.2.10|draining: x", "192.0.2.11|draining: y")
    assert timeout_lines(late, 2.0) == [
        "announcer drain --wait: timed out after 2s: 1 of 4 VIPs drained in gobgpd; 3 not yet:",
        "  192.0.2.10: draining: x",
        "  192.0.2.11: draining: y",
        "  ... and 1 more (`announcer status`)",
        "the drain itself stays in effect; only the wait gave up",
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept.append(seconds)
        self.now += seconds


def wait(answers: list[Any], timeout: float, clock: Clock) -> int:
    """cli._wait against a list of answers (an exception is raised), one per request."""
    asked: list[float] = []

    def ask(t: float) -> Any:
        asked.append(t)
        a = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(a, Exception):
            raise a
        return a

    rc = cli._wait(ask, DRAIN, timeout, started=clock.now, clock=clock, sleep=clock.sleep)
    assert all(1.0 <= t <= 15.0 for t in asked)
    return rc


def test_wait_returns_0_when_done(capsys: pytest.CaptureFixture[str]) -> None:
    c = Clock()
    pending = result(0, 2, "192.0.2.10|draining: x")
    assert wait([pending] * 6 + [result(2, 2)], 30.0, c) == cli.EX_OK
    out = capsys.readouterr()
    assert out.out == "drain: done after 1.5s: 2 VIPs drained in gobgpd (2 withdrawn)\n"
    assert out.err.count("\n") == 1 and "after 1.0s; waiting for 192.0.2.10" in out.err
    assert c.slept == [0.25] * 6


def test_wait_times_out_with_75_and_says_what_is_left(capsys: pytest.CaptureFixture[str]) -> None:
    c = Clock()
    assert wait([result(0, 1, "192.0.2.10|draining: x")], 1.1, c) == cli.EX_TEMPFAIL
    assert c.now == pytest.approx(101.1)  # the last sleep ends at the deadline
    err = capsys.readouterr().err
    assert "timed out after 1.1s: 0 of 1 VIP drained" in err and "192.0.2.10: draining" in err
    # --timeout 0: one look, no sleep.
    c = Clock()
    assert wait([result(0, 1, "192.0.2.10|draining: x")], 0.0, c) == cli.EX_TEMPFAIL
    assert c.slept == []
    assert wait([result(1, 1)], 0.0, Clock()) == cli.EX_OK


def test_wait_rides_out_a_restart_but_not_a_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    gone = ControlUnavailable("no control socket at /run/x: is announcer running?")
    c = Clock()
    assert wait([gone, gone, result(1, 1)], 30.0, c) == cli.EX_OK
    assert capsys.readouterr().err.count("asking again") == 1  # said once
    c = Clock()
    assert wait([gone], 1.0, c) == cli.EX_UNAVAILABLE
    assert "timed out after 1s: no control socket" in capsys.readouterr().err
    assert wait([ControlError("unknown command 'progress'")], 30.0, Clock()) == cli.EX_DATAERR


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["drain", "--all", "--timeout", "5"], "--timeout needs --wait"),
        (["undrain", "192.0.2.10", "--timeout", "0"], "--timeout needs --wait"),
        (["drain", "--wait"], "give VIP addresses or --all"),
    ],
)
def test_argument_errors_exit_64_before_anything_is_sent(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No service at this socket: had anything been sent, the status would be 69.
    assert cli.main([*argv, "--socket", "/nonexistent/control.sock"]) == cli.EX_USAGE
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-1", "nan", "NaN", "inf", "soon"])
def test_bad_timeouts_exit_64(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["drain", "--all", "--wait", "--timeout", bad, "--socket", "/nonexistent"])
    assert e.value.code == cli.EX_USAGE
    assert "argument --timeout" in capsys.readouterr().err
