"""`announcer` with experimental changes switched on, to measure proposals (A/B).

    python -m tests.bench.announcer_variant [--no-keepalive] [--cached-planner] run -c ...

* `--no-keepalive`: probes connect once per check (what announcer did before the
  keep-alive pool): the baseline of the keep-alive measurement.
* `--cached-planner`: memoises `host_prefix` and `allowed` (the planner builds an
  `ipaddress` network and walks the allow-list for every VIP on every reconcile).
  It only shows what caching them would save; the real change belongs in
  planner.py/service.py (docs/performance.md, "What limits what").

Nothing here is used by announcer itself.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

from announcer import cli, model, planner, probes, service
from announcer.model import HostPrefix, IPAddress, IPNetwork


def _no_keepalive() -> None:
    probes.Prober.__init__ = functools.partialmethod(  # type: ignore[method-assign,assignment]
        probes.Prober.__init__, keepalive=False
    )


def _cached_planner() -> None:
    host_prefix = functools.lru_cache(maxsize=1 << 17)(model.host_prefix)
    original_allowed = planner.allowed

    @functools.lru_cache(maxsize=1 << 17)
    def _allowed(prefix: IPNetwork, allow_list: tuple[IPNetwork, ...]) -> bool:
        return original_allowed(prefix, allow_list)

    def allowed(prefix: IPNetwork, allow_list: Sequence[IPNetwork]) -> bool:
        return _allowed(prefix, tuple(allow_list))

    def cached_host_prefix(address: IPAddress) -> HostPrefix:
        return host_prefix(address)

    for module in (model, planner):
        module.host_prefix = cached_host_prefix  # type: ignore[attr-defined]
    for module in (planner, service):
        module.allowed = allowed  # type: ignore[attr-defined]


SWITCHES = {"--no-keepalive": _no_keepalive, "--cached-planner": _cached_planner}


def main(argv: list[str]) -> int:
    while argv and argv[0] in SWITCHES:
        SWITCHES[argv.pop(0)]()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
