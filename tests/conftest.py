"""The test tiers (tests/README.md): every test is marked with its tier, the directory
it lives in (`pytest -m "unit or packaging"`), and a test module outside every tier is
an error rather than a test that silently never runs (testpaths lists the tiers)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# In the order they run: fastest first. Also in pyproject.toml (testpaths, markers)
# and scripts/test.
TIERS = ("unit", "service", "adapters", "packaging", "integration")


def pytest_sessionstart(session: pytest.Session) -> None:
    stray = sorted(
        str(p.relative_to(TESTS.parent))
        for p in TESTS.rglob("test_*.py")
        if p.relative_to(TESTS).parts[0] not in TIERS
    )
    if stray:
        raise pytest.UsageError(f"test modules outside every tier (tests/README.md): {stray}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        item.add_marker(parts[0])
