"""The `announcer` command. The only place where errors become exit codes (sysexits)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from . import __version__
from .config import Config, load_config, read_password
from .errors import AnnouncerError, ConfigError

EX_OK = 0
EX_SOFTWARE = 70
EX_USAGE = 64
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
    return p


def _check_config(path: str) -> int:
    cfg = load_config(path)
    read_password(cfg.dataplaneapi)  # same code as `run`: an unreadable password fails here too
    nets = ", ".join(map(str, cfg.allowed_prefixes))
    print(
        f"{path}: OK (allowed prefixes {nets}; DataPlaneAPI {cfg.dataplaneapi.url}; "
        f"gobgpd {cfg.gobgp.address})"
    )
    return EX_OK


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def _serve(cfg: Config) -> None:
    # Imported here so that `check-config` works without grpc or requests loaded.
    from .dataplane import DataPlaneClient
    from .gobgp import GobgpClient
    from .probes import Prober
    from .service import Service

    dp = cfg.dataplaneapi
    verify: bool | str = str(dp.ca_file) if dp.ca_file is not None else dp.tls_verify
    source = DataPlaneClient(
        dp.url,
        username=dp.username,
        password=read_password(dp),
        api_version=dp.api_version,
        timeout=dp.timeout,
        verify=verify,
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The handler only sets the event; the shutdown itself runs in Service.run.
        loop.add_signal_handler(sig, stop.set)
    try:
        await Service(cfg, source=source, table=table, prober=prober).run(stop)
    finally:
        table.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.config)
        cfg = load_config(args.config)
        _setup_logging(args.log_level or cfg.log_level)
        asyncio.run(_serve(cfg))
        return EX_OK
    except ConfigError as e:
        print(f"announcer: configuration error in {args.config}:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    except AnnouncerError as e:
        log.critical("%s", e)
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
