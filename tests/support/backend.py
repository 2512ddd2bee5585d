"""The lab's HTTP backend: `python -m http.server`'s file server with a listen backlog.

`http.server`'s command line listens with a backlog of 5 (socketserver's default): a
burst of HAProxy's server connections (a new one per request, the handler speaks
HTTP/1.0) overflowed it, the kernel dropped the SYN and the client's request waited
a second for the retransmission (TcpExtListenOverflows counted it). Otherwise the same
server: threads, the files of one directory.

    python backend.py --bind 127.0.0.1 --directory DIR PORT
"""

from __future__ import annotations

import argparse
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # listen(2)'s backlog; the kernel caps it at somaxconn


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--directory", required=True)
    p.add_argument("port", type=int)
    a = p.parse_args()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=a.directory)
    with Server((a.bind, a.port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
