"""When the daemon is stuck: the rule systemd's watchdog is fed by. Pure.

The watchdog loop running says the event loop is alive. What announcer also needs to
keep the routers' view true: checks that produce results, and reconciles with gobgpd
that finish. DataPlaneAPI is deliberately *not* part of it: an API that hangs or
drips changes nothing (the last VIP set stays), while a watchdog abort over it would
withdraw every route through the keeper and loop for ever (issue 11).
"""

from __future__ import annotations

from collections.abc import Iterable

# The watchdog stops pinging when no check produced a result for this long (or three
# of the slowest check's interval + timeout), or one reconcile pass runs this long;
# gRPC calls to gobgpd time out long before (gobgp.timeout per call).
CHECKS_STUCK_AFTER = 10.0
RECONCILE_STUCK_AFTER = 120.0


def stuck_reason(
    now: float,
    *,
    checks: int,
    last_result: float,
    check_bound: float,
    reconcile_since: float | None,
    reconcile_bound: float,
) -> str | None:
    """Why the daemon is stuck (the watchdog must stop pinging), or None."""
    if checks and now - last_result > check_bound:
        return f"no health check finished for {now - last_result:.0f}s ({checks} checks)"
    if reconcile_since is not None and now - reconcile_since > reconcile_bound:
        return f"a reconcile with gobgpd has been running for {now - reconcile_since:.0f}s"
    return None


def check_bound(periods: Iterable[float]) -> float:
    """How long without any check result means the scheduler is stuck, from the checks'
    interval + timeout (a sample is enough: they come from a few config sections)."""
    return max(CHECKS_STUCK_AFTER, 3 * max(periods, default=1.0))
