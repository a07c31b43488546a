"""PyMOTW's asyncore HTTP client, ported to Python 3 and run on asyncio.

Legacy-style script: it imports plain ``asyncore``. Run it unchanged on an asyncio event
loop with::

    python -m asyncore_on_asyncio examples/pymotw/asyncore_http_client.py
    python -m asyncore_on_asyncio --loop uvloop examples/pymotw/asyncore_http_client.py

The original downloaded two pages from the internet. This version starts a local
``http.server`` in a thread on 127.0.0.1 (serving a temporary directory with two generated
pages of known sizes), downloads both pages at once with two ``HttpClient`` dispatchers,
prints ``URL got N bytes`` for each and exits non-zero if a body is not what was served.

Changes from the Python 2 original, besides print() and bytes:

* ``cStringIO`` -> ``io.BytesIO``, ``urlparse`` -> ``urllib.parse``;
* the port comes from the URL instead of always being 80;
* the request line carries the path (``GET /page HTTP/1.0``) plus a ``Host`` header, which
  is what an origin server expects (the original sent the absolute URL);
* the byte count is that of the body; the original counted the headers too.

``asyncore_loop.py`` imports ``HttpClient``, ``PAGES`` and ``local_web_server`` from here.
Debug logging goes to stderr, results to stdout.
"""

from __future__ import annotations

import asyncore
import contextlib
import functools
import http.server
import io
import logging
import socket
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

# Name -> size in bytes of the pages the local server serves.
PAGES: dict[str, int] = {"small.html": 1_000, "large.html": 120_000}


class HttpClient(asyncore.dispatcher):
    def __init__(self, url: str) -> None:
        self.url = url
        self.logger = logging.getLogger(self.url)
        self.parsed_url = urllib.parse.urlsplit(url)
        asyncore.dispatcher.__init__(self)
        path = self.parsed_url.path or "/"
        request = f"GET {path} HTTP/1.0\r\nHost: {self.parsed_url.netloc}\r\n\r\n"
        self.write_buffer = request.encode("ascii")
        self.read_buffer = io.BytesIO()
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (self.parsed_url.hostname, self.parsed_url.port or 80)
        self.logger.debug("connecting to %s", address)
        self.connect(address)

    def handle_connect(self) -> None:
        self.logger.debug("handle_connect()")

    def handle_close(self) -> None:
        self.logger.debug("handle_close()")
        self.close()

    def writable(self) -> bool:
        is_writable = len(self.write_buffer) > 0
        if is_writable:
            self.logger.debug("writable() -> %s", is_writable)
        return is_writable

    def readable(self) -> bool:
        self.logger.debug("readable() -> True")
        return True

    def handle_write(self) -> None:
        sent = self.send(self.write_buffer)
        self.logger.debug("handle_write() -> %r", self.write_buffer[:sent])
        self.write_buffer = self.write_buffer[sent:]

    def handle_read(self) -> None:
        data = self.recv(8192)
        self.logger.debug("handle_read() -> %d bytes", len(data))
        self.read_buffer.write(data)

    def response(self) -> tuple[int, bytes]:
        """The status code and the body of the response read so far."""
        head, _, body = self.read_buffer.getvalue().partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]  # b"HTTP/1.0 200 OK"
        parts = status_line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return status, body


def page_content(name: str, size: int) -> bytes:
    """Deterministic HTML of exactly ``size`` bytes."""
    head = f"<html><head><title>{name}</title></head><body><pre>\n".encode("ascii")
    tail = b"</pre></body></html>\n"
    lines = b"".join(b"line %06d of %s\n" % (i, name.encode("ascii")) for i in range(size // 16))
    return (head + lines)[: size - len(tail)] + tail


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        # Into logging (stderr) instead of straight to stderr, like the rest of the trace.
        logging.getLogger("http.server").debug(format, *args)


@contextlib.contextmanager
def local_web_server(pages: dict[str, int]) -> Iterator[str]:
    """Serve generated pages from a temporary directory; yield the base URL."""
    with tempfile.TemporaryDirectory() as root:
        for name, size in pages.items():
            Path(root, name).write_bytes(page_content(name, size))
        handler = functools.partial(_QuietHandler, directory=root)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # so that shutdown() returns quickly
            name="http.server",
            daemon=True,
        )
        thread.start()
        try:
            host, port = httpd.server_address[:2]
            yield f"http://{host!s}:{port}/"
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join()


def report(clients: Sequence[HttpClient]) -> int:
    """Print ``URL got N bytes`` per client; return 0 if every body is what was served."""
    failures = 0
    for c in clients:
        status, response_body = c.response()
        print(c.url, "got", len(response_body), "bytes")
        name = urllib.parse.urlsplit(c.url).path.lstrip("/")
        expected = page_content(name, PAGES[name])
        if status != 200 or response_body != expected:
            print(f"  MISMATCH: status {status}, expected {len(expected)} bytes", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def main() -> int:
    logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    with local_web_server(PAGES) as base_url:
        clients = [HttpClient(base_url + name) for name in PAGES]
        logging.debug("LOOP STARTING")
        asyncore.loop()
        logging.debug("LOOP DONE")
    return report(clients)


if __name__ == "__main__":
    sys.exit(main())
