"""The `announcer` command. The only place where errors become exit codes (sysexits)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, collector, eventloop
from .config import Config, ServiceConfig
from .configfile import load_config, read_password
from .drainwait import (
    Goal,
    Progress,
    default_timeout,
    final_lines,
    parse_timeout,
    poll_interval,
    timeout_lines,
)
from .errors import AnnouncerError, ConfigError, ControlError
from .instance import AlreadyRunning
from .target import parse_target
from .text import printable

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65  # the service refused a control request (unknown VIP, ...)
EX_UNAVAILABLE = 69  # the service is not running or not reachable
EX_SOFTWARE = 70
EX_CANTCREAT = 73  # migrate: the output files could not be written
EX_IOERR = 74  # a drain or undrain took effect but could not be saved
EX_TEMPFAIL = 75  # run: another announcer runs (lock held); drain --wait: timed out
EX_CONFIG = 78  # systemd: RestartPreventExitStatus=78, a bad config is not retried

log = logging.getLogger("announcer")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="announcer", description="Announce healthy HAProxy VIPs through gobgpd.")
    p.add_argument("--version", action="version", version=f"announcer {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the service")
    run.add_argument("-c", "--config", required=True, help="YAML configuration file")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    chk = sub.add_parser("check-config", help="validate a configuration and exit")
    chk.add_argument("-c", "--config", required=True, help="YAML configuration file")

    def control(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        where = c.add_mutually_exclusive_group()
        where.add_argument("-c", "--config", help="take the control socket from this config")
        where.add_argument(
            "--socket", type=Path, help=f"control socket (default {ServiceConfig().control_socket})"
        )
        return c

    pd = sub.add_parser(
        "peers-down",
        help="disable gobgpd's peers (fate-sharing backstop for ExecStopPost=)",
    )
    pd.add_argument("-c", "--config", required=True, help="YAML configuration file")
    pd.add_argument(
        "--if-failed",
        action="store_true",
        help="do nothing when systemd says the service stopped cleanly"
        " ($SERVICE_RESULT, or $MONITOR_SERVICE_RESULT in an OnFailure= unit)",
    )
    from .migrate_cli import add_parser as add_migrate

    add_migrate(sub)
    st = control("status", help="show every VIP, its checks, gobgpd and the peers")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    done = {
        "drain": "65535:0 sent, drain.delay over, withdrawn or kept as bgp.drained says",
        "undrain": "announced again without 65535:0, or DOWN (said so)",
    }
    for name, verb in (("drain", "drain"), ("undrain", "stop draining")):
        d = control(name, help=f"{verb} VIPs on the running service")
        d.add_argument("vips", nargs="*", metavar="VIP", help="VIP addresses")
        d.add_argument("--all", action="store_true", help=f"{verb} the whole host")
        d.add_argument(
            "--wait",
            action="store_true",
            help=f"return once gobgpd has it for every VIP ({done[name]}); exit 75 on timeout",
        )
        d.add_argument(
            "--timeout",
            type=_timeout,
            metavar="S",
            help="with --wait: give up after S seconds (default: "
            + ("drain.delay + 30" if name == "drain" else "30")
            + "; 0: look once)",
        )
    return p


def _timeout(text: str) -> float:
    try:
        return parse_timeout(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _check_config(path: str) -> int:
    cfg = load_config(path)
    read_password(cfg.dataplaneapi)  # same code as `run`: an unreadable password fails here too
    loop = eventloop.choose(cfg.service.event_loop)  # a required uvloop that is missing too
    nets = ", ".join(map(str, cfg.allowed_prefixes))
    # The parsed form: load_config refuses credentials in the URL, and this form could
    # not show them anyway.
    api = parse_target(cfg.dataplaneapi.url).base
    print(
        f"{path}: OK (allowed prefixes {nets}; DataPlaneAPI {api}; gobgpd {cfg.gobgp.address}; "
        f"event loop {loop.name})"
    )
    return EX_OK


class _Printable(logging.Filter):
    """Escapes control characters in every message (text.py): a frontend name with a
    newline must not forge a log line. Tracebacks are added later and keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = printable(message)
        if safe is not message:
            record.msg, record.args = safe, None
        return True


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Printable())


def _scrub_environment(cfg: Config) -> None:
    """Secrets leave the environment once read: the keeper and command checks inherit it
    (and `env` in a command check used to print the DataPlaneAPI password)."""
    if cfg.dataplaneapi.password_env is not None:
        os.environ.pop(cfg.dataplaneapi.password_env, None)


def _peers_down(args: argparse.Namespace) -> int:
    # ExecStopPost= gets $SERVICE_RESULT; an OnFailure= unit (announcer-peers-down.service)
    # gets the failed unit's as $MONITOR_SERVICE_RESULT.
    result = os.environ.get("SERVICE_RESULT") or os.environ.get("MONITOR_SERVICE_RESULT")
    if args.if_failed and result == "success":
        print("announcer peers-down: the service stopped cleanly; peers left as they are")
        return EX_OK
    cfg = load_config(args.config)
    if not cfg.gobgp.fate_sharing:
        print("announcer peers-down: gobgp.fate_sharing is off; peers left as they are")
        return EX_OK
    from .keeper import withdraw_and_disable

    g = cfg.gobgp
    routes, peers = withdraw_and_disable(
        g.address, g.api_version, g.timeout, g.peers, cfg.allowed_prefixes, 10.0
    )
    why = f" (service result: {result})" if result else ""
    print(f"announcer peers-down: withdrew {routes} routes, disabled {peers} gobgpd peers{why}")
    return EX_OK


def _control(args: argparse.Namespace) -> int:
    from .control import ControlUnavailable, render, request

    if args.socket is not None:
        path = args.socket
    elif args.config is not None:
        path = load_config(args.config).service.control_socket
    else:
        path = ServiceConfig().control_socket
    payload: dict[str, Any] = {"command": args.command}
    if args.command in ("drain", "undrain"):
        if not args.vips and not args.all:
            print(f"announcer {args.command}: give VIP addresses or --all", file=sys.stderr)
            return EX_USAGE
        if args.timeout is not None and not args.wait:
            print(f"announcer {args.command}: --timeout needs --wait", file=sys.stderr)
            return EX_USAGE
        payload.update(vips=args.vips, all=args.all)
    started = time.monotonic()  # --timeout counts from here
    try:
        result = request(path, payload)
    except ControlUnavailable as e:
        print(f"announcer: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    except ControlError as e:
        print(f"announcer {args.command}: {e}", file=sys.stderr)
        return EX_DATAERR
    if args.command == "status":
        print(json.dumps(result, indent=2) if args.json else render(result))
        return EX_OK
    what = result.get("draining", result.get("undrained", []))
    scope = "the whole host" if result.get("all") else ", ".join(what)
    if args.command == "drain":
        print(f"draining {scope}: GRACEFUL_SHUTDOWN now, withdrawn after {result['delay']}s")
    else:
        print(f"undrained {scope or 'nothing'}")
    sys.stdout.flush()  # before --wait's lines on stderr
    if result.get("warning"):
        print(f"warning: {result['warning']}", file=sys.stderr)
    status = EX_OK
    if result.get("unsaved"):
        print(
            f"announcer {args.command}: ERROR: in effect now, but NOT SAVED "
            f"({result['unsaved']}): a restart of announcer would undo it",
            file=sys.stderr,
        )
        status = EX_IOERR
    if args.wait:
        goal = Goal(args.command)
        timeout = args.timeout
        if timeout is None:
            timeout = default_timeout(goal, float(result.get("delay", 0.0)))
        progress = {"command": "progress", "of": goal.value, "vips": args.vips, "all": args.all}
        waited = _wait(lambda t: request(path, progress, t), goal, timeout, started=started)
        if waited != EX_OK:
            return waited  # timed out (75) takes precedence over not saved (74)
    return status


def _wait(
    ask: Callable[[float], Any],
    goal: Goal,
    timeout: float,
    *,
    started: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """`--wait`: ask the service how far the drain or undrain got (`progress`,
    drainwait.py) until every VIP is done (0), the timeout ends (75; 69 if the service
    could not be asked at the end), or the service refuses (65). `ask(t)` sends one
    request with a socket timeout of `t`."""
    from .control import ControlUnavailable

    deadline = started + timeout
    progress = Progress()
    result: Any = None
    unreachable = ""
    while True:
        try:
            result = ask(min(15.0, max(1.0, deadline - clock())))
            unreachable = ""
        except ControlUnavailable as e:
            # A restart of announcer, say: its drains are saved, so ask again until the
            # deadline rather than give up on the first refused connection.
            if not unreachable:
                print(f"announcer {goal.value} --wait: {e}; asking again", file=sys.stderr)
            unreachable = str(e)
        except ControlError as e:  # e.g. an older announcer without `progress`
            print(f"announcer {goal.value} --wait: {e}", file=sys.stderr)
            return EX_DATAERR
        now = clock()
        if not unreachable and result["done"] == result["total"]:
            for line in final_lines(result, now - started):
                print(line)
            return EX_OK
        if now >= deadline:
            if unreachable or result is None:
                print(
                    f"announcer {goal.value} --wait: timed out after {timeout:g}s: {unreachable}",
                    file=sys.stderr,
                )
                return EX_UNAVAILABLE
            for line in timeout_lines(result, timeout):
                print(line, file=sys.stderr)
            return EX_TEMPFAIL
        if not unreachable and (shown := progress.line(result, now - started)) is not None:
            print(shown, file=sys.stderr)
        total = result["total"] if result is not None else 0
        sleep(min(poll_interval(total), deadline - now))


async def _reload(path: str, svc: Any, notifier: Any) -> None:
    notifier.reloading()
    try:
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as e:
        log.error(
            "reload: %s is invalid; the running configuration stays: %s",
            path,
            "; ".join(e.problems),
        )
    else:
        svc.reload(new)
        logging.getLogger().setLevel(new.log_level)
    notifier.ready(svc._status_line())


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: one keep-alive connection per check, and
    the usual soft limit of 1024 would leave 10 000 checks reconnecting every time."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, e)


async def _serve(cfg: Config, config_path: str) -> None:
    # Imported here so that `check-config` works without grpc or requests loaded.
    from . import control, fds, metrics_http
    from . import metrics as m
    from .dataplane import DataPlaneClient
    from .gobgp import GobgpClient
    from .instance import InstanceLock, lock_path
    from .keeper import Keeper
    from .locality import Locality
    from .probes import Prober
    from .sdnotify import Notifier
    from .service import Service

    # Before anything else: a second announcer must touch nothing (instance.py).
    lock = InstanceLock(lock_path(cfg.service.control_socket))
    lock.acquire()
    _raise_fd_limit()
    fds.configure(cfg.metrics.fd_reserve)  # for the control and metrics servers
    dp = cfg.dataplaneapi
    verify: bool | str = str(dp.ca_file) if dp.ca_file is not None else dp.tls_verify
    source = DataPlaneClient(
        dp.url,
        username=dp.username,
        password=read_password(dp),
        api_version=dp.api_version,
        timeout=dp.timeout,
        discovery_timeout=dp.discovery_timeout,
        verify=verify,
        max_response_bytes=dp.max_response_bytes,
        max_frontends=dp.max_frontends,
        max_binds=dp.max_binds,
        server_users=dp.server_users,
    )
    table = GobgpClient(
        cfg.gobgp.address,
        timeout=cfg.gobgp.timeout,
        batch_size=cfg.gobgp.batch_size,
        api_version=cfg.gobgp.api_version,
    )
    prober = Prober(
        max_commands=cfg.service.max_concurrent_commands,
        max_sockets=cfg.service.max_concurrent_probes,
    )
    _scrub_environment(cfg)  # the password is read: before the keeper is spawned
    notifier = Notifier.from_env()
    mc = cfg.metrics
    metrics = m.Metrics(min_interval=mc.min_render_interval) if mc.enabled else None
    svc = Service(
        cfg,
        source=source,
        table=table,
        prober=prober,
        notifier=notifier,
        metrics=metrics,
        locality=Locality,
    )
    servers: list[asyncio.Server] = []
    sock = cfg.service.control_socket
    try:
        hooks = os.environ.get("ANNOUNCER_TEST_HOOKS") == "1"
        ctl = await control.serve(sock, svc, test_hooks=hooks)
    except OSError as e:
        # Fatal, and before the keeper or gobgpd are touched: a service nobody can
        # drain or inspect is not one to run on an LB.
        raise AnnouncerError(f"control socket {sock}: {e}") from None
    # The keeper next: from here on, a dead announcer takes this LB's routes with it.
    try:
        svc.keeper = Keeper(cfg.gobgp, cfg.allowed_prefixes) if cfg.gobgp.fate_sharing else None
    except OSError as e:
        ctl.close()
        raise AnnouncerError(f"cannot start the fate-sharing keeper: {e}") from None
    if metrics is not None:
        metrics.attach(svc)
        try:
            limits = metrics_http.Limits(mc.max_connections, mc.timeout)
            servers.append(await metrics_http.serve(metrics, mc.address, limits))
        except OSError as e:
            log.error("metrics on %s: %s; no metrics", cfg.metrics.address, e)
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        # The handler only sets events; the shutdown itself runs in Service.run. A
        # second SIGTERM cuts the drain delay short.
        (hurry if stop.is_set() else stop).set()

    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        t = loop.create_task(_reload(config_path, svc, notifier))
        reloads.add(t)
        t.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await svc.run(stop, hurry)
    finally:
        for srv in servers:
            srv.close()
        ctl.close()
        table.close()
        await source.aclose()
        lock.release()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.config)
        if args.command in ("status", "drain", "undrain"):
            return _control(args)
        if args.command == "peers-down":
            return _peers_down(args)
        if args.command == "migrate":
            from . import migrate_cli

            try:
                return migrate_cli.run(args)
            except OSError as e:  # the output could not be written (nothing half-written)
                print(f"announcer migrate: {e}", file=sys.stderr)
                return EX_CANTCREAT
        # No garbage collection while the start builds 10 000 VIPs' objects; the
        # service turns it on once the start is done (collector.py).
        collector.hold()
        cfg = load_config(args.config)
        _setup_logging(args.log_level or cfg.log_level)
        loop = eventloop.choose(cfg.service.event_loop)
        log.info("event loop: %s (%s)", loop.name, loop.why)
        with asyncio.Runner(loop_factory=loop.factory) as runner:
            runner.run(_serve(cfg, args.config))
        return EX_OK
    except ConfigError as e:
        where = args.exabgp_conf if args.command == "migrate" else args.config
        print(f"announcer: configuration error in {where}:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    except AlreadyRunning as e:
        print(f"announcer: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    except AnnouncerError as e:
        log.critical("%s", e)
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
