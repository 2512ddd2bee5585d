"""The migration documents against what they describe (issue 15): docs/routers.md's FRR
configuration is tests/integration/frr/r1.conf, byte for byte; docs/migration.md names
every healthcheck option migrate reads and only `announcer` commands and options that
exist; the README points to both."""

from __future__ import annotations

import re
from pathlib import Path

from announcer.cli import _parser
from announcer.migrate_healthcheck import _OPTIONS

ROOT = Path(__file__).resolve().parents[2]
ROUTERS = ROOT / "docs" / "routers.md"
MIGRATION = ROOT / "docs" / "migration.md"
R1 = ROOT / "tests" / "integration" / "frr" / "r1.conf"


def test_the_frr_configuration_in_routers_md_is_the_labs() -> None:
    doc = ROUTERS.read_text()
    m = re.search(
        r"<!-- begin tests/integration/frr/r1.conf -->\n```\n(.*?)```\n"
        r"<!-- end tests/integration/frr/r1.conf -->",
        doc,
        re.S,
    )
    assert m, "routers.md: the marked r1.conf block is missing"
    assert m.group(1) == R1.read_text()


def test_every_frr_line_is_explained() -> None:
    """Each configuration keyword of r1.conf appears in the explanation below the block."""
    doc = ROUTERS.read_text()
    explanation = doc.split("<!-- end tests/integration/frr/r1.conf -->", 1)[1]
    explanation = explanation.split("## Arista EOS", 1)[0]
    for line in R1.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("!") or line in ("exit", "exit-address-family"):
            continue
        # The words after the neighbor/group name: "neighbor LB4 timers 3 9" -> "timers 3 9".
        words = line.split()
        key = " ".join(words[2:]) if words[0] == "neighbor" and len(words) > 2 else line
        assert key.split(" seq ")[0].split(" permit ")[0] in explanation, line


def test_migration_md_names_every_healthcheck_option() -> None:
    doc = MIGRATION.read_text()
    missing = [f"--{name}" for name in _OPTIONS if name != "help" and f"`--{name}" not in doc]
    assert missing == []


def _code(text: str) -> list[str]:
    """Lines of fenced code blocks and inline `code` spans."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [line.strip() for b in blocks for line in b.splitlines()] + spans


def test_announcer_commands_in_the_documents_exist() -> None:
    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    migrate_opts = set(sub.choices["migrate"]._option_string_actions)  # type: ignore[index]
    seen = set()
    for path in (MIGRATION, ROUTERS):
        for line in _code(path.read_text()):
            for cmd in re.findall(r"^(?:\S*/)?announcer ([a-z][a-z-]*)", line):
                seen.add(cmd)
                assert cmd in commands, (path.name, line)
            if line.startswith("announcer migrate"):
                for opt in re.findall(r"--[a-z][a-z-]+", line):
                    assert opt in migrate_opts, (path.name, opt)
    assert {"migrate", "check-config", "status"} <= seen
    usage = MIGRATION.read_text().split("```", 2)[1]
    for opt in re.findall(r"--[a-z][a-z-]+", usage):
        assert opt in migrate_opts, opt


def test_the_readme_points_to_both_documents() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/migration.md" in readme and "docs/routers.md" in readme
    assert "announcer migrate --exabgp-conf" in readme
