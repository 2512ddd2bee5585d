"""Drains: who drains what since when, the phase of each VIP, and the state file.

Pure except `load`/`save` (the state file, through statefile.py). Times are the
service's monotonic clock, passed in.

A VIP drains when any of these covers it: the operator drained it (`announcer drain
VIP`), the operator drained the whole host (`--all`), the disable file exists, or
announcer is stopping gracefully. Its phase comes from the *earliest* cause still in
force: DRAINING (GRACEFUL_SHUTDOWN, 65535:0) for `delay` seconds from that start,
then DRAINED (withdrawn, or kept with bgp.drained's attributes). A stop keeps every
VIP DRAINING: it ends with the withdrawal of everything, not with a phase change.

Operator drains survive a restart (drains.json in service.state_dir) and come back
already DRAINED: the delay passed before the restart.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import statefile
from .model import IPAddress
from .planner import Drain

LONG_AGO = float("-inf")  # the start time of a drain restored from the state file


def drain_phase(starts: Iterable[float | None], now: float, delay: float) -> Drain:
    """The drain phase of a VIP from the start times of the drains that cover it."""
    present = [s for s in starts if s is not None]
    if not present:
        return Drain.NONE
    return Drain.DRAINING if now - min(present) < delay else Drain.DRAINED


@dataclass
class Drains:
    """Every drain cause in force, by the time it started."""

    delay: float
    vips: dict[IPAddress, float] = field(default_factory=dict)  # by the operator, per VIP
    host: float | None = None  # the whole host, by the operator
    file: float | None = None  # the disable file exists
    stop: float | None = None  # a graceful stop is under way

    def any(self) -> bool:
        """Whether anything drains (checked before any per-VIP work)."""
        return (
            bool(self.vips)
            or self.host is not None
            or self.file is not None
            or (self.stop is not None)
        )

    def phase(self, address: IPAddress, now: float) -> Drain:
        """The drain phase of one VIP now."""
        if not self.any():
            return Drain.NONE  # the common case, asked for every VIP on every plan
        phase = drain_phase((self.vips.get(address), self.host, self.file), now, self.delay)
        if phase is Drain.NONE and self.stop is not None:
            return Drain.DRAINING
        return phase

    def phases(self, addresses: Iterable[IPAddress], now: float) -> dict[IPAddress, Drain]:
        """The VIPs that drain, with their phase (empty at once when nothing drains)."""
        if not self.any():
            return {}
        out: dict[IPAddress, Drain] = {}
        for a in addresses:
            if (p := self.phase(a, now)) is not Drain.NONE:
                out[a] = p
        return out

    def drain(self, targets: Iterable[IPAddress], everything: bool, now: float) -> list[str]:
        """The operator drains VIPs (or the host); returns what changed, for the log."""
        events = []
        if everything and self.host is None:
            self.host = now
            events.append("host drained by the operator: every VIP drains")
        for a in targets:
            if a not in self.vips:
                self.vips[a] = now
                events.append(f"VIP {a} drained by the operator")
        return events

    def undrain(
        self, targets: Iterable[IPAddress], everything: bool
    ) -> tuple[list[IPAddress], list[str]]:
        """The operator undrains VIPs (or all of theirs); returns the VIPs and log lines."""
        events = []
        targets = list(self.vips) if everything else list(targets)
        if everything:
            if self.host is not None:
                events.append("host undrained by the operator")
            self.host = None
        for a in targets:
            if self.vips.pop(a, None) is not None:
                events.append(f"VIP {a} undrained by the operator")
        return targets, events

    def disable_file(self, present: bool, now: float) -> bool:
        """The disable file is (or is not) there; True if that changed anything."""
        if present and self.file is None:
            self.file = now
            return True
        if not present and self.file is not None:
            self.file = None
            return True
        return False

    def until_drained(self, address: IPAddress, now: float) -> float | None:
        """Seconds until a draining VIP is DRAINED (0 if it is); None if no timed cause
        covers it (nothing, or only a stop, which never ends in DRAINED)."""
        starts = [s for s in (self.vips.get(address), self.host, self.file) if s is not None]
        if not starts:
            return None
        return max(0.0, min(starts) + self.delay - now)

    def causes(self, address: IPAddress) -> tuple[str, ...]:
        """What drains a VIP now, in words (`announcer undrain --wait` says what is left)."""
        found = (
            (self.vips.get(address), "the operator (this VIP)"),
            (self.host, "the operator (--all)"),
            (self.file, "the disable file"),
            (self.stop, "a stop of announcer"),
        )
        return tuple(why for start, why in found if start is not None)

    def next_wake(self, now: float, longest: float = 1.0) -> float:
        """Seconds until the next drain delay ends (at most `longest`)."""
        starts = [*self.vips.values(), self.host, self.file]
        ends = [s + self.delay for s in starts if s is not None]
        pending = [e - now for e in ends if e > now]
        return max(0.01, min([longest, *pending]))

    # ------------------------------------------------------------ state file

    def document(self) -> dict[str, object]:
        """What is saved: the operator's drains (the file's and a stop's are not)."""
        return {"all": self.host is not None, "vips": sorted(map(str, self.vips))}

    def restore(self, doc: object) -> None:
        """Take the operator's drains from a saved document, as already DRAINED; raises
        ValueError (or TypeError) if the document is not one."""
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        vips = [ipaddress.ip_address(v) for v in doc.get("vips", [])]
        self.vips = dict.fromkeys(vips, LONG_AGO)
        if bool(doc.get("all", False)):
            self.host = LONG_AGO


def state_path(state_dir: Path) -> Path:
    return state_dir / "drains.json"


def save(state_dir: Path, drains: Drains) -> None:
    """Write the operator's drains durably; raises statefile.StateError."""
    data = (json.dumps(drains.document()) + "\n").encode()
    statefile.write_atomic(state_path(state_dir), data)


def load(state_dir: Path, drains: Drains) -> bool:
    """Restore the operator's drains from `state_dir` (checked by statefile.check_dir
    first, drainer.py) into `drains`; True if a file was there. Raises
    statefile.StateError (unreadable) or ValueError."""
    raw = statefile.read(state_path(state_dir))
    if raw is None:
        return False
    try:
        drains.restore(json.loads(raw))
    except (AttributeError, TypeError) as e:
        raise ValueError(str(e)) from None
    return True
