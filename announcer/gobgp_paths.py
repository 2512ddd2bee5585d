"""AddPathStream requests as bytes, from paths encoded once and kept (PathCache).

Paths are built once: PathCache keeps each prefix's last announced path (and its
withdraw) as wire bytes, and an AddPathStreamRequest is sent as bytes made by
concatenation (see Codec.encoded_path in announcer.gobgp_codec). Routes are
immutable values, so a re-sync after a gobgpd restart, which re-announces what was
announced before, builds no message at all. No I/O: announcer.gobgp sends the bytes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from typing import TypeVar

from .gobgp_codec import Codec
from .model import HostPrefix, Route

# How many prefixes a PathCache holds by default (the same bound as model.host_prefix).
DEFAULT_PATH_CACHE_SIZE = 1 << 16


_V = TypeVar("_V")


class PathCache:
    """AddPathStreamRequests of one codec as bytes, from paths encoded once and kept.

    One entry per prefix: the encoded path of the last route announced for it (with
    the local AS it was built with, when it prepends) and, separately, its encoded
    withdraw. A re-sync after a gobgpd restart re-announces exactly the last routes
    sent, so it finds every path here; a route that changed is encoded again and
    replaces its prefix's entry. The size is therefore one entry per prefix ever
    announced or withdrawn, whatever the number of states a VIP goes through; to
    bound prefixes that are no longer used, each table drops its oldest half (by
    when an entry was encoded) when it reaches `max_prefixes`. `max_prefixes=0`
    keeps nothing: every request is encoded afresh.

    Safe to use from several threads. The routes must be validated already.
    """

    def __init__(self, codec: Codec, max_prefixes: int = DEFAULT_PATH_CACHE_SIZE) -> None:
        if max_prefixes < 0:
            raise ValueError("max_prefixes must not be negative")
        self.codec = codec
        self.max_prefixes = max_prefixes
        # prefix -> (route, local AS used or 0, encoded path)
        self._announce: dict[HostPrefix, tuple[Route, int, bytes]] = {}
        self._withdraw: dict[HostPrefix, bytes] = {}
        self._lock = threading.Lock()
        self.hits = 0  # paths taken from the cache, for tests and benchmarks
        self.misses = 0  # paths encoded

    def __len__(self) -> int:
        """Entries held, announces and withdraws."""
        return len(self._announce) + len(self._withdraw)

    def clear(self) -> None:
        with self._lock:
            self._announce.clear()
            self._withdraw.clear()

    def known(self, route: Route) -> Route:
        """The route last encoded here for `route`'s prefix if it equals `route`, else
        `route`: the paths read back from gobgpd then share the objects announced
        instead of holding an equal copy each (issue 16: 10 000 routes)."""
        entry = self._announce.get(route.prefix)  # one dict read: no lock needed
        return entry[0] if entry is not None and entry[0] == route else route

    def announce_request(self, routes: Iterable[Route], local_asn: int | None) -> bytes:
        """The serialized AddPathStreamRequest announcing `routes`.

        `local_asn` is needed only for routes that prepend (as for announce_path).
        """
        codec = self.codec
        table = self._announce
        encoded: list[bytes] = []
        misses = 0
        with self._lock:
            for route in routes:
                asn = (local_asn or 0) if route.as_path_prepend else 0
                entry = table.get(route.prefix)
                if (
                    entry is not None
                    and entry[1] == asn
                    and (entry[0] is route or entry[0] == route)
                ):
                    encoded.append(entry[2])
                    continue
                data = codec.encoded_path(codec.announce_path(route, local_asn))
                self._store(table, route.prefix, (route, asn, data))
                encoded.append(data)
                misses += 1
            self.misses += misses
            self.hits += len(encoded) - misses
        return codec.encoded_add_path_stream_request(encoded)

    def withdraw_request(self, prefixes: Iterable[HostPrefix]) -> bytes:
        """The serialized AddPathStreamRequest withdrawing our paths for `prefixes`."""
        codec = self.codec
        table = self._withdraw
        encoded: list[bytes] = []
        misses = 0
        with self._lock:
            for prefix in prefixes:
                data = table.get(prefix)
                if data is None:
                    data = codec.encoded_path(codec.withdraw_path(prefix))
                    self._store(table, prefix, data)
                    misses += 1
                encoded.append(data)
            self.misses += misses
            self.hits += len(encoded) - misses
        return codec.encoded_add_path_stream_request(encoded)

    def _store(self, table: dict[HostPrefix, _V], prefix: HostPrefix, value: _V) -> None:
        if not self.max_prefixes:
            return
        # Re-inserted rather than overwritten, so the dict's order is encoding order.
        if table.pop(prefix, None) is None and len(table) >= self.max_prefixes:
            for old in list(itertools.islice(table, max(1, len(table) // 2))):
                del table[old]
        table[prefix] = value
