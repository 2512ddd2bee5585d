"""Long-lived client connections for the lab: K HTTP/1.1 keep-alive connections to each
host, each sending `GET /` every PERIOD seconds (0.1) on the same connection, closed
after LIFETIME seconds (5) and opened again, until SIGTERM.

A connection lives across the moments an LB leaves or rejoins the routers' ECMP set, so
unlike curl's one request per connection it shows what happens to established flows;
the connections of each moment were opened at different times (the routers' set then).
One JSON line per request on stdout: [monotonic start, ok, first bytes of the answer or
the error's name, host, connection number]. A failed connection is closed and the next
request opens a new one. Stdlib only (tests/support/handoff.py runs it in the
client's namespace).

    python3 keepalive_client.py 192.0.2.10,2001:db8:0:1::10 8 [PERIOD [LIFETIME]]
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time

stop = threading.Event()
lock = threading.Lock()


def worker(host: str, n: int, period: float, lifetime: float) -> None:
    conn: http.client.HTTPConnection | None = None
    opened = 0.0
    while not stop.is_set():
        started = time.monotonic()
        try:
            if conn is not None and started - opened > lifetime:
                conn.close()
                conn = None
            if conn is None:
                conn = http.client.HTTPConnection(host, 80, timeout=1)
                opened = started
            conn.request("GET", "/")
            answer = conn.getresponse()
            body = answer.read().decode(errors="replace")[:16]
            ok = answer.status == 200
        except (OSError, http.client.HTTPException) as e:
            ok, body = False, type(e).__name__
            if conn is not None:
                conn.close()
            conn = None
        with lock:
            print(json.dumps([started, ok, body, host, n]), flush=True)
        stop.wait(period)
    if conn is not None:
        conn.close()


def main() -> None:
    hosts, k = sys.argv[1].split(","), int(sys.argv[2])
    period = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    lifetime = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [
        threading.Thread(target=worker, args=(h, i, period, lifetime))
        for h in hosts
        for i in range(k)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
