"""The healthcheck command line of an ExaBGP `process`: argv in, `Healthcheck` out.

Pure: no I/O. It reads ExaBGP's own `healthcheck.py` (`exabgp-healthcheck`, `python -m
exabgp healthcheck`) options, with their defaults, and the seed's variant that lists
the VIPs from DataPlaneAPI (`--api-password`; user `dataplaneapi` at
http://127.0.0.1:5555, as that script has them). Options are matched exactly, long or
short, `--opt value` or `--opt=value`: argparse's abbreviations are not guessed at, an
unknown option is an error. `--cmd` is further read by `curl_check`: a recognisable
`curl --fail ... http://%s/PATH` becomes a native HTTP check.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from .migrate_exabgp import MigrateError

# ExaBGP healthcheck.py's defaults (what a missing option means).
DEFAULTS: dict[str, str] = {
    "interval": "5",
    "fast-interval": "1",
    "timeout": "5",
    "rise": "3",
    "fall": "3",
    "up-metric": "100",
    "down-metric": "1000",
    "disabled-metric": "500",
    "increase": "1",
    "local-preference": "-1",
    "start-ip": "0",
}

# long name -> (short aliases, takes a value, repeatable)
_OPTIONS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "help": (("-h",), False, False),
    "silent": (("-s",), False, False),
    "syslog-facility": (("-sF",), True, False),
    "no-syslog": ((), False, False),
    "no-ack": (("-a",), False, False),
    "sudo": ((), False, False),
    "debug": (("-d",), False, False),
    "name": (("-n",), True, False),
    "config": (("-F",), True, False),
    "pid": (("-p",), True, False),
    "user": ((), True, False),
    "group": ((), True, False),
    "interval": (("-i",), True, False),
    "fast-interval": (("-f",), True, False),
    "timeout": (("-t",), True, False),
    "rise": ((), True, False),
    "fall": ((), True, False),
    "disable": ((), True, False),
    "command": (("--cmd", "-c"), True, False),
    "next-hop": (("-N",), True, False),
    "ip": ((), True, True),
    "local-preference": ((), True, False),
    "deaggregate-networks": ((), False, False),
    "no-ip-setup": ((), False, False),
    "dynamic-ip-setup": ((), False, False),
    "label": ((), True, False),
    "start-ip": ((), True, False),
    "up-metric": ((), True, False),
    "down-metric": ((), True, False),
    "disabled-metric": ((), True, False),
    "increase": ((), True, False),
    "community": ((), True, False),
    "extended-community": ((), True, False),
    "large-community": ((), True, False),
    "disabled-community": ((), True, False),
    "as-path": ((), True, False),
    "up-as-path": ((), True, False),
    "down-as-path": ((), True, False),
    "disabled-as-path": ((), True, False),
    "withdraw-on-down": ((), False, False),
    "path-id": ((), True, False),
    "neighbor": ((), True, True),
    "execute": ((), True, True),
    "up-execute": ((), True, True),
    "down-execute": ((), True, True),
    "disabled-execute": ((), True, True),
    # the seed's variant
    "api-password": ((), True, False),
}
_ALIASES = {alias: name for name, (aliases, _, _) in _OPTIONS.items() for alias in aliases}
SECRET_OPTIONS = frozenset(["api-password"])
VARIANT_USER = "dataplaneapi"
VARIANT_URL = "http://127.0.0.1:5555"


@dataclass(frozen=True)
class Healthcheck:
    """The options given (in order, repeatable ones once per use) and the program."""

    program: str
    given: tuple[tuple[str, str | None], ...]
    placeholder_password: bool = False
    values: dict[str, list[str]] = field(default_factory=dict)
    by_name: bool = True  # False: a script of another name, known by its options

    def has(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str) -> str | None:
        """The last value given, else ExaBGP's default, else None."""
        v = self.values.get(name)
        return v[-1] if v else DEFAULTS.get(name)

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, []))

    @property
    def variant(self) -> bool:
        """The seed's DataPlaneAPI variant: VIPs listed from DataPlaneAPI."""
        return self.has("api-password")


def _program(argv: tuple[str, ...]) -> tuple[str, int]:
    """The healthcheck program in argv and where its options start."""
    i = 0
    if i < len(argv) and argv[i].rsplit("/", 1)[-1] in ("sudo", "env"):
        raise MigrateError(f"run {argv[i]} ...: give the healthcheck command itself")
    if i < len(argv) and argv[i].rsplit("/", 1)[-1].startswith("python"):
        i += 1
        if argv[i : i + 3] == ("-m", "exabgp", "healthcheck"):
            return "python -m exabgp healthcheck", i + 3
        if argv[i : i + 2] == ("-m", "exabgp.application.healthcheck"):
            return "python -m exabgp.application.healthcheck", i + 2
    if i < len(argv) and "healthcheck" in argv[i].rsplit("/", 1)[-1]:
        return argv[i], i + 1
    if i + 1 < len(argv) and argv[i + 1].startswith("-"):
        # A script of another name (a site's own copy): taken as a healthcheck if every
        # option it is given is one (parse_healthcheck refuses anything else).
        return argv[i], i + 1
    shown = " ".join(argv[:3])
    raise MigrateError(f"run {shown} ...: not an ExaBGP healthcheck command line")


def parse_healthcheck(argv: tuple[str, ...]) -> Healthcheck:
    """Read a healthcheck command line; raises MigrateError on what it cannot read."""
    program, i = _program(argv)
    by_name = "healthcheck" in program
    given: list[tuple[str, str | None]] = []
    values: dict[str, list[str]] = {}
    placeholder = False
    while i < len(argv):
        arg = argv[i]
        i += 1
        inline: str | None = None
        if arg.startswith("--") and "=" in arg:
            arg, inline = arg.split("=", 1)
        name = arg[2:] if arg.startswith("--") and arg[2:] in _OPTIONS else _ALIASES.get(arg)
        if name is None:
            raise MigrateError(f"healthcheck option {arg!r}: unknown")
        _, takes, repeat = _OPTIONS[name]
        value: str | None = None
        if not takes:
            if inline is not None:
                raise MigrateError(f"healthcheck option --{name} takes no value")
        elif inline is not None:
            value = inline
        elif i < len(argv):
            value = argv[i]
            i += 1
            if name in SECRET_OPTIONS and value.startswith("<") and not value.endswith(">"):
                # `<set a password>` unquoted in `run`: three words, one placeholder.
                while i < len(argv) and not argv[i - 1].endswith(">"):
                    value += " " + argv[i]
                    i += 1
        else:
            raise MigrateError(f"healthcheck option --{name} needs a value")
        if value is not None and name in SECRET_OPTIONS:
            placeholder = placeholder or (value.startswith("<") and value.endswith(">"))
        if value is not None and not repeat and name in values:
            values[name] = [value]  # argparse: the last one wins
        else:
            values.setdefault(name, []).append(value if value is not None else "")
        given.append((name, None if name in SECRET_OPTIONS else value))
    for name in ("interval", "fast-interval"):
        _number(values, name, float)
    for name in ("timeout", "rise", "fall", "up-metric", "down-metric", "disabled-metric",
                 "increase", "local-preference", "start-ip", "path-id"):  # fmt: skip
        _number(values, name, int)
    if not by_name and not ({"command", "ip", "api-password"} & values.keys()):
        shown = " ".join(argv[:3])
        raise MigrateError(f"run {shown} ...: not an ExaBGP healthcheck command line")
    return Healthcheck(program, tuple(given), placeholder, values, by_name)


def _number(values: dict[str, list[str]], name: str, kind: type[int] | type[float]) -> None:
    for v in values.get(name, []):
        try:
            kind(v)
        except ValueError:
            raise MigrateError(f"healthcheck option --{name} {v!r}: not a number") from None


# Options that differ between ExaBGP's one-process-per-service healthchecks.
_PER_SERVICE = frozenset(["ip", "name", "command"])


def merge(checks: list[tuple[str, Healthcheck]]) -> Healthcheck:
    """Several healthcheck processes (ExaBGP's one per service) as one, or MigrateError.

    They merge when every option but --ip and --name is the same, and their --cmd
    differs only by the process's own address (which becomes `%s`, as the DataPlaneAPI
    variant has it): then one announcer check is what each of them did for its VIP.
    """
    if len(checks) == 1:
        return checks[0][1]
    first_name, first = checks[0]
    ips: list[str] = []
    command: str | None = None
    for name, hc in checks:
        mine = hc.all("ip")
        if len(mine) != 1:
            raise MigrateError(
                f"process {name}: {len(mine)} --ip options; several processes merge only "
                "with one --ip each (or give --process)"
            )
        ips += mine
        cmd = hc.get("command")
        if cmd is not None:
            addr = mine[0].split("/")[0]
            cmd = cmd.replace(f"[{addr}]", "[%s]").replace(addr, "%s")
        if name != first_name and cmd != command:
            raise MigrateError(
                f"processes {first_name} and {name}: --cmd differs beyond the address; "
                "migrate them one at a time with --process"
            )
        command = cmd
        for opt in (hc.values.keys() | first.values.keys()) - _PER_SERVICE:
            if hc.values.get(opt) != first.values.get(opt):
                raise MigrateError(
                    f"processes {first_name} and {name} differ in --{opt}: migrate them one "
                    "at a time with --process (and per-VIP `overrides` by hand)"
                )
    values = {k: list(v) for k, v in first.values.items() if k not in _PER_SERVICE}
    values["ip"] = ips
    if command is not None:
        values["command"] = [command]
    given = tuple((k, v) for k, v in first.given if k not in _PER_SERVICE)
    given += tuple(("ip", ip) for ip in ips)
    if command is not None:
        given += (("command", command),)
    return replace(first, values=values, given=given)


@dataclass(frozen=True)
class HttpCheck:
    """What a recognised curl command checks."""

    path: str
    port: int | None
    timeout: float | None


_CURL_FLAGS = frozenset("fsSvq")  # short flags that change nothing a check sees
_CURL_LONG = frozenset(["--fail", "--silent", "--show-error", "--verbose", "--globoff"])


def curl_check(command: str) -> HttpCheck | None:
    """`curl --fail [quiet flags] [--max-time N] [-o /dev/null] http://%s[:PORT]/PATH`, else None.

    --fail is required: without it curl succeeds on an HTTP 503, so the check only ever
    tested the TCP connect and a native check would not be the same.
    """
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or words[0].rsplit("/", 1)[-1] != "curl":
        return None
    fail, timeout, url = False, None, None
    i = 1
    while i < len(words):
        w = words[i]
        i += 1
        if w in _CURL_LONG:
            fail = fail or w == "--fail"
        elif (
            w.startswith("-")
            and not w.startswith("--")
            and len(w) > 1
            and set(w[1:]) <= _CURL_FLAGS
        ):
            fail = fail or "f" in w
        elif w in ("--max-time", "-m", "--connect-timeout") and i < len(words):
            try:
                seconds = float(words[i])
            except ValueError:
                return None
            if w != "--connect-timeout":
                timeout = seconds
            i += 1
        elif w in ("-o", "--output") and i < len(words) and words[i] == "/dev/null":
            i += 1
        elif not w.startswith("-") and url is None:
            url = w
        else:
            return None
    if not fail or url is None:
        return None
    parts = urlsplit(url.replace("[%s]", "%s").replace("%s", "vip.invalid"))
    if parts.scheme != "http" or parts.hostname != "vip.invalid" or parts.query or parts.fragment:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return HttpCheck(parts.path or "/", port, timeout)
