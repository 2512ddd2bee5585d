"""`announcer migrate`: the shell around migrate.py. Reads the inputs, writes the outputs.

All the work that can fail on the input happens before the first byte is written: the
ExaBGP configuration is parsed and mapped, every file rendered. Then each file goes to
a temporary file in the output directory (its final mode set before any content is in
it, so a secret is never readable by others even for a moment) and only when every one
is complete are they renamed into place. A failure on the way removes the temporary
files: the directory holds the old files or the new ones, never a half-written one.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .migrate import DEFAULT_PASSWORD_REF, junos_route_filters, migrate
from .migrate_exabgp import MigrateError, read_config
from .migrate_render import ANNOUNCER, GOBGPD, PASSWORD, REPORT, files
from .model import IPNetwork


def add_parser(sub: Any) -> None:
    """The `migrate` subcommand's arguments."""
    mg = sub.add_parser(
        "migrate",
        help="turn an ExaBGP configuration and its healthcheck into gobgpd.toml + announcer.yaml",
    )
    mg.add_argument("--exabgp-conf", required=True, help="ExaBGP 4.x configuration file")
    mg.add_argument("--process", help="the healthcheck process to migrate (default: the only one)")
    mg.add_argument("--out", default=".", help="output directory (default: the current one)")
    mg.add_argument(
        "--allowed-prefix",
        action="append",
        default=[],
        metavar="NET",
        help="a network VIPs may be announced from (repeat); default: the healthcheck's --ip, "
        "else --junos-config's import route-filters",
    )
    mg.add_argument(
        "--junos-config",
        help="the routers' Junos `set` configuration: its import route-filters give the allow-list",
    )
    mg.add_argument(
        "--password-file",
        default=DEFAULT_PASSWORD_REF,
        help="dataplaneapi.password_file to write into announcer.yaml (default "
        f"{DEFAULT_PASSWORD_REF}: the credential announcer.service loads)",
    )
    mg.add_argument("--force", action="store_true", help="replace files already in --out")


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path}: not UTF-8 text") from None


def _networks(texts: list[str]) -> tuple[IPNetwork, ...]:
    out = []
    for t in texts:
        try:
            out.append(ipaddress.ip_network(t))
        except ValueError as e:
            raise MigrateError(f"--allowed-prefix {t}: {e}") from None
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    """Migrate; raises ConfigError (exit 78) on bad input, OSError when writing fails."""
    cfg = read_config(_read(args.exabgp_conf, "ExaBGP configuration"))
    filters: tuple[IPNetwork, ...] = ()
    if args.junos_config:
        filters = tuple(junos_route_filters(_read(args.junos_config, "Junos configuration")))
        if not filters:
            raise MigrateError(f"--junos-config {args.junos_config}: no import route-filter found")
    m = migrate(
        cfg,
        source=Path(args.exabgp_conf).name,
        process=args.process,
        allowed_prefixes=_networks(args.allowed_prefix),
        router_filters=filters,
        password_ref=args.password_file,
    )
    out = Path(args.out)
    rendered = files(m)
    if not args.force:
        there = [n for n, _, _ in rendered if (out / n).exists()]
        if there:
            raise MigrateError(f"{out}: {', '.join(there)} already there (--force replaces them)")
    write_all(out, rendered)
    print(next(text for name, text, _ in rendered if name == REPORT), end="")
    wrote = [GOBGPD, ANNOUNCER, REPORT] + ([PASSWORD] if m.password is not None else [])
    print(f"wrote {', '.join(str(out / n) for n in wrote)}")
    return 0


def write_all(out: Path, rendered: list[tuple[str, str, int]]) -> None:
    """Write every file to a temporary name, then rename them all; nothing half-written."""
    out.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[str, Path]] = []
    try:
        for name, text, mode in rendered:
            fd, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{name}.")
            temps.append((name, Path(tmp_name)))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), mode)
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for name, tmp in temps:
            os.replace(tmp, out / name)
    finally:
        for _, tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
