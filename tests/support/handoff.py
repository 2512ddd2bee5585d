"""docs/migration.md's stray hand-off, set up in the lab exactly as the document says.

The document gives lb1's commands and ruleset (the lab's addresses); lb2's are the same
with lb1's and lb2's addresses swapped. `install` runs them in each LB's namespace,
`arm`/`disarm` are the document's two commands, `handed_off` reads the counter of
packets an LB passed on. The namespaces (and with them the overlay device and the
tables) go when the lab is torn down.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.lab import Lab
from tests.integration.stack import REPO

MIGRATION = REPO / "docs" / "migration.md"
CLIENT = REPO / "tests" / "support" / "keepalive_client.py"
# lb1's addresses in the document -> lb2's: underlay, overlay v4, overlay v6.
SWAP = (("198.51.100.11", "198.51.100.12"), ("198.51.100.241", "198.51.100.242"),
        ("2001:db8:4f::11", "2001:db8:4f::12"))  # fmt: skip


def block(name: str) -> str:
    """The fenced block between <!-- begin NAME --> and <!-- end NAME --> in migration.md."""
    m = re.search(
        rf"<!-- begin {re.escape(name)} -->\n```[a-z]*\n(.*?)```\n<!-- end {re.escape(name)} -->",
        MIGRATION.read_text(),
        re.S,
    )
    assert m, f"docs/migration.md: the marked block {name!r} is missing"
    return m.group(1)


def for_lb(text: str, lb: str) -> str:
    if lb == "lb1":
        return text
    assert lb == "lb2", lb
    for a, b in SWAP:
        text = text.replace(a, "\0").replace(b, a).replace("\0", b)
    return text


def commands(name: str, lb: str) -> list[list[str]]:
    """The shell lines of a block (comments and continuations handled) as argv lists."""
    text = re.sub(r"\\\n\s*", " ", for_lb(block(name), lb))
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [shlex.split(line) for line in lines if line]


def install(lab: Lab, lbs: tuple[str, ...] = ("lb1", "lb2")) -> None:
    """The overlay and the (disarmed) tables on each LB, as the document sets them up;
    the ruleset file is the document's `handoff.nft` block."""
    assert lab.tmp is not None
    for lb in lbs:
        rules = lab.tmp / lb / "handoff.nft"
        rules.write_text(for_lb(block("handoff.nft"), lb))
        for argv in commands("handoff setup", lb):
            argv = [str(rules) if a == "/etc/nftables.d/handoff.nft" else a for a in argv]
            lab.exec(lb, argv)


def run_block(lab: Lab, name: str, lbs: tuple[str, ...] = ("lb1", "lb2")) -> None:
    """Run the commands of a marked block of the document on each LB."""
    for lb in lbs:
        for argv in commands(name, lb):
            lab.exec(lb, argv)


def arm(lab: Lab, lbs: tuple[str, ...] = ("lb1", "lb2")) -> None:
    run_block(lab, "handoff arm", lbs)


def disarm(lab: Lab, lbs: tuple[str, ...] = ("lb1", "lb2")) -> None:
    run_block(lab, "handoff disarm", lbs)


def handed_off(lab: Lab, lb: str) -> int:
    """Packets `lb` has passed to the other LBs: the counters of the rules that `dup`."""
    total = 0
    for family in ("ip", "ip6"):
        out = lab.exec(lb, ["nft", "-j", "list", "table", family, "handoff"]).stdout
        for item in json.loads(out)["nftables"]:
            exprs = item.get("rule", {}).get("expr", [])
            if any("dup" in e for e in exprs):
                total += sum(e["counter"]["packets"] for e in exprs if "counter" in e)
    return total


@contextlib.contextmanager
def keepalive_load(lab: Lab, hosts: tuple[str, ...], per_host: int = 8) -> Iterator[list[Any]]:
    """tests/support/keepalive_client.py in the client's namespace; yields the list its
    results are put in when the block ends ([start, ok, answer, host, connection])."""
    assert lab.tmp is not None
    name = "client-keepalive"
    log = Path(lab.tmp) / "client" / f"{name}.log"  # where Lab.start appends its output
    offset = log.stat().st_size if log.exists() else 0
    lab.start("client", [sys.executable, str(CLIENT), ",".join(hosts), str(per_host)], name=name)
    results: list[Any] = []
    try:
        yield results
    finally:
        lab.stop(name, timeout=5)
        with log.open("rb") as f:
            f.seek(offset)
            for line in f.read().decode().splitlines():
                with contextlib.suppress(ValueError):
                    results.append(json.loads(line))
