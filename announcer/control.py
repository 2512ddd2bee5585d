"""The control socket: `announcer status`, `drain` and `undrain` talk to the running service.

A unix stream socket (service.control_socket, /run/announcer/control.sock under
systemd's RuntimeDirectory=), mode 0660, so only root and the service's group reach
it. One JSON object per line each way:

    {"command": "status"}                          -> {"ok": true, "result": {...}}
    {"command": "drain", "vips": ["192.0.2.10"]}   -> {"ok": true, "result": {...}}
    {"command": "undrain", "all": true}            -> {"ok": true, "result": {...}}
    {"command": "progress", "of": "drain", "all": true}
                                                   -> {"ok": true, "result": {...}}
    anything wrong                                 -> {"ok": false, "error": "..."}

`progress` says how far a drain or undrain of the VIPs named (or with "all", every VIP
announcer knows) has taken effect in gobgpd: counts, and the VIPs not done yet with
why, at most drainwait.LIMIT of them. `announcer drain --wait` asks it a few times a
second until done: every request, this one too, is one line in and one line out
within the bounds below, so a waiting client holds nothing in the service.

The server side runs on the service's event loop; the client side is plain blocking
sockets for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import fds
from .errors import AnnouncerError, ControlError
from .text import printable

if TYPE_CHECKING:
    # Only the server half needs the service; the CLI's client half must not load it
    # (nor grpc through it) just to print `announcer status`.
    from .service import Service

log = logging.getLogger("announcer.control")

MAX_REQUEST = 65536


class ControlUnavailable(AnnouncerError):
    """The CLI cannot reach the running service."""


# ------------------------------------------------------------------- server


class ControlSocket:
    """The listening control socket, removed on close only if the path is still ours."""

    def __init__(self, server: asyncio.Server, path: Path, inode: tuple[int, int]) -> None:
        self.server = server
        self.path = path
        self._inode = inode

    def close(self) -> None:
        self.server.close()
        try:
            st = self.path.lstat()
        except OSError:
            return
        # Another process may have put its own socket there since (it should not: the
        # instance lock says who owns the path); never delete what is not ours.
        if (st.st_dev, st.st_ino) == self._inode:
            self.path.unlink(missing_ok=True)


async def serve(path: Path, service: Service, *, test_hooks: bool = False) -> ControlSocket:
    """Listen on `path`; raises OSError if it cannot.

    Call with the instance lock held (instance.py): whatever is at `path` then is a
    leftover of a previous run of ours, and is replaced.
    """
    _take_over(path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not fds.admit(writer.get_extra_info("socket").fileno()):
            writer.transport.abort()  # it would take a descriptor the probes need
            return
        try:
            async with asyncio.timeout(10):
                line = await reader.readline()
            answer = await _answer(line, service, test_hooks)
        except (TimeoutError, ValueError, asyncio.LimitOverrunError) as e:
            answer = {"ok": False, "error": f"bad request: {e}"}
        try:
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, str(path), limit=MAX_REQUEST)
    os.chmod(path, 0o660)
    st = path.lstat()
    return ControlSocket(server, path, (st.st_dev, st.st_ino))


def _take_over(path: Path) -> None:
    """Clear the path for our socket: under the instance lock anything there is stale."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OSError(f"{path} is a directory, not a place for the control socket")
    if not stat.S_ISSOCK(st.st_mode):
        log.warning("replacing %s (not a socket) with the control socket", path)
    path.unlink()


async def _answer(line: bytes, service: Service, test_hooks: bool) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        return {"ok": False, "error": "bad request: not a JSON object"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "bad request: not a JSON object"}
    command = request.get("command")
    vips = request.get("vips") or []
    everything = bool(request.get("all", False))
    if not isinstance(vips, list) or not all(isinstance(v, str) for v in vips):
        return {"ok": False, "error": "bad request: vips must be a list of addresses"}
    try:
        if command == "status":
            return {"ok": True, "result": await service.report()}
        if command in ("drain", "undrain"):
            if not vips and not everything:
                return {"ok": False, "error": f"{command}: give VIP addresses or all"}
            do = service.drain if command == "drain" else service.undrain
            return {"ok": True, "result": do(vips, everything)}
        if command == "progress":
            if not vips and not everything:
                return {"ok": False, "error": "progress: give VIP addresses or all"}
            of = str(request.get("of"))
            return {"ok": True, "result": await service.progress(of, vips, everything)}
        if command == "freeze" and test_hooks:
            seconds = float(request.get("seconds", 0))
            asyncio.get_running_loop().call_soon(service.freeze, seconds)
            return {"ok": True, "result": {"freezing": seconds}}
    except ControlError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": False, "error": f"unknown command {command!r}"}


# ------------------------------------------------------------------- client


def request(path: Path, payload: dict[str, Any], timeout: float = 15.0) -> Any:
    """Send one request to the running service; returns its result or raises."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except FileNotFoundError:
            raise ControlUnavailable(
                f"no control socket at {path}: is announcer running? (service.control_socket)"
            ) from None
        except PermissionError:
            raise ControlUnavailable(f"{path}: permission denied (run as root)") from None
        except OSError as e:
            raise ControlUnavailable(f"{path}: {e.strerror or e}: is announcer running?") from None
        s.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        with contextlib.suppress(TimeoutError):
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlUnavailable(f"{path}: no answer from announcer") from None
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "refused")))
    return answer.get("result")


# ---------------------------------------------------------------- rendering


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    s = max(0.0, now - ts)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def _yes(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def render(report: dict[str, Any], now: float | None = None) -> str:
    """The human table of `announcer status`."""
    now = time.time() if now is None else now
    rows = [("VIP", "STATE", "DRAIN", "GOBGPD", "FRONTENDS", "CHECK", "LAST RESULT")]
    for v in report["vips"]:
        gobgp = _yes(v["in_gobgp"])
        if v["in_sync"] is False:
            gobgp += " (syncing)"
        checks = v["checks"] or [{"target": "-", "ok": None, "detail": "", "duration_ms": None}]
        for i, c in enumerate(checks):
            result = "-" if c["ok"] is None else ("ok" if c["ok"] else "FAIL")
            if c.get("detail"):
                result += f" {c['detail']}"
            if c.get("duration_ms") is not None:
                result += f" {c['duration_ms']:.1f}ms"
            first = i == 0
            state = v["state"] + (f" ({_ago(v['since'], now)})" if v.get("since") else "")
            state += "".join(
                f" {tag}"
                for tag, on in (
                    ("NOT-LOCAL", v.get("local") is False),
                    ("GUARDED", v.get("guarded")),
                    ("DAMPED", v.get("damped_until")),
                )
                if on
            )
            rows.append(
                (
                    v["address"] if first else "",
                    state if first else "",
                    (v["drain"] if v["drain"] != "none" else "-") if first else "",
                    gobgp if first else "",
                    ",".join(v["frontends"]) if first else "",
                    c["target"],
                    result,
                )
            )
    # Frontend names and details come from HAProxy's configuration and the network:
    # escape control characters before they reach the operator's terminal.
    safe = [[printable(cell) for cell in r] for r in rows]
    widths = [max(len(r[i]) for r in safe) for i in range(len(safe[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in safe
    ]
    g, d, dr = report["gobgp"], report["dataplaneapi"], report["drain"]
    lines.append("")
    reach = {True: "reachable", False: f"UNREACHABLE ({g['error']})", None: "not tried yet"}
    lines.append(
        f"gobgpd {g['address']}: {reach[g['reachable']]}, {g['routes']} routes, "
        f"{g['resyncs']} re-syncs, last sync {_ago(g['last_sync'], now)}"
    )
    for p in report["peers"]:
        up = f", up {p['uptime_s']:.0f}s" if p.get("uptime_s") else ""
        admin = " (admin-down)" if p["admin_down"] else ""
        alarm = f"  ALARM: {p['alarm']}" if p.get("alarm") else ""
        bfd = f", BFD {p['bfd']}" if p.get("bfd") else ""
        gr = f", GRACEFUL RESTART {p['graceful_restart_s']}s" if p.get("graceful_restart_s") else ""
        lines.append(
            f"  peer {p['address']} AS{p['asn']}: {p['state']}{admin}{up}{bfd}{gr}{alarm}"
        )
    dstate = {True: "ok", False: f"FAILING ({d['error']})", None: "not tried yet"}
    lines.append(
        f"DataPlaneAPI {d['url']}: {dstate[d['ok']]}, configuration version {d['version']}, "
        f"last success {_ago(d['last_success'], now)}"
    )
    causes = [
        c
        for c, on in (
            ("by the operator", dr["host_by_operator"]),
            (f"by {dr['disable_file']}", dr["host_by_file"]),
            ("stopping", dr["stopping"]),
        )
        if on
    ]
    if causes:
        lines.append(f"drain: WHOLE HOST DRAINED ({', '.join(causes)}), delay {dr['delay']}s")
    elif dr["vips"]:
        lines.append(f"drain: {', '.join(dr['vips'])} (delay {dr['delay']}s)")
    else:
        lines.append("drain: none")
    hold = report.get("vip_loss_hold")
    if hold:
        lines.append(
            f"VIP-LOSS HOLD: DataPlaneAPI's answers lost {len(hold['vips'])} VIPs "
            f"({_ago(hold['since'], now)}); kept until {hold['needed']} answers over "
            f"{hold['min_seconds']:.0f}s agree ({hold['answers']} so far)"
        )
    if not dr.get("saved", True):
        lines.append("drain state: NOT SAVED (state directory unusable, see the log)")
    guard = report.get("guard")
    if guard and guard["engaged"]:
        lines.append(
            f"MASS-WITHDRAWAL GUARD: {guard['failing']} of {guard['vips']} VIPs failing "
            f"({_ago(guard['since'], now)}); {len(guard['guarded'])} kept announced with "
            "65535:0 and more prepends instead of withdrawn"
        )
    local = report.get("local_check")
    if local and local["ok"] is False:
        lines.append(f"local-VIP check: OFF ({local['error']}); VIPs go by their checks alone")
    elif local and local["not_local"]:
        lines.append(f"not local to this host, not announced: {', '.join(local['not_local'])}")
    if not report["synced"]:
        lines.append("not yet synced with gobgpd (waiting for discovery and first verdicts)")
    return "\n".join(printable(line) for line in lines)
