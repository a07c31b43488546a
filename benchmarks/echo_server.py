"""One echo server variant, in its own process: ``echo_server.py VARIANT HANDLER PORTFILE``.

VARIANT is where the server runs:

- ``pyasyncore-select`` / ``pyasyncore-poll``: the frozen 3.11 modules from PyPI
  (``pyasyncore``/``pyasynchat``; on 3.11 the standard library's own), ``use_poll`` off/on;
- ``ours-asyncio`` / ``ours-uvloop``: this project's modules on the default loop / uvloop;
- ``ours-uvloop-coalesce``: the same on uvloop with ``async_chat.coalesce_pushes`` on (the
  opt-in that sends the replies of one read in one ``send()``; ``plain`` is unaffected);
- ``native-asyncio`` / ``native-uvloop``: an ``asyncio.Protocol`` rewrite on either loop.

HANDLER is the handler flavour: ``chat`` (``async_chat`` line echo, terminator ``b"\\n"``) or
``plain`` (a ``dispatcher`` with its own ``bytearray`` and ``writable() = bool(buffer)``).
The asyncore variants run the *same* handler source (:func:`make_handlers`); the native
rewrite of ``chat`` echoes line by line, of ``plain`` echoes whatever arrives.

HANDLER ``wsgi`` is not an echo but W5's threaded HTTP server (:func:`make_wsgi_handlers`):
an ``async_chat`` per connection parses HTTP/1.x requests (terminator ``b"\\r\\n\\r\\n"``,
then a Content-Length body if any) and puts them on a ``queue.Queue``; a pool of
:data:`WORKERS` threads calls a small WSGI application, ``push()``-es the reply from the
worker's thread (``close_when_done()`` too unless the connection is kept alive), then
writes one byte to a pipe whose read end is a ``file_dispatcher`` in the same map (the
trigger that wakes a ``select()`` loop; its ``handle_read()`` drains the pipe).  The
channel's ``initiate_send()`` takes a per-channel lock: without it 3.11's async_chat,
sending from two threads, sends a reply twice (measured: duplicate replies and an
IndexError from the fifo within a second).  The native rewrite parses the same way and
has the workers hand the reply to the loop with ``call_soon_threadsafe``.

The server binds 127.0.0.1 on a free port, writes the port to PORTFILE, pins itself to one
CPU (``--cpu``) when it can, and serves until SIGTERM, on which it prints its CPU time as
one JSON line and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import queue
import resource
import signal
import socket
import sys
import threading
import time
from typing import Any

VARIANTS = (
    "pyasyncore-select",
    "pyasyncore-poll",
    "ours-asyncio",
    "ours-uvloop",
    "ours-uvloop-coalesce",
    "native-asyncio",
    "native-uvloop",
)
HANDLERS = ("chat", "plain")
THREADED = "wsgi"
"""W5's handler: a threaded HTTP server, not an echo; only W5 runs on it."""
BACKLOG = 1024


def make_handlers(asyncore: Any, asynchat: Any) -> dict[str, type]:
    """The asyncore-style handlers, written once and run on either implementation."""

    class ChatEcho(asynchat.async_chat):
        def __init__(self, sock, map=None):
            asynchat.async_chat.__init__(self, sock, map=map)
            self.set_terminator(b"\n")
            self.ibuffer = []

        def collect_incoming_data(self, data):
            self.ibuffer.append(data)

        def found_terminator(self):
            line = b"".join(self.ibuffer)
            self.ibuffer = []
            self.push(line + b"\n")

        def handle_close(self):
            self.close()

    class PlainEcho(asyncore.dispatcher):
        def __init__(self, sock, map=None):
            asyncore.dispatcher.__init__(self, sock, map=map)
            self.buffer = bytearray()

        def writable(self):
            return bool(self.buffer)

        def handle_read(self):
            self.buffer += self.recv(65536)

        def handle_write(self):
            sent = self.send(self.buffer)
            del self.buffer[:sent]

        def handle_close(self):
            self.close()

    class EchoServer(asyncore.dispatcher):
        def __init__(self, handler, map=None):
            asyncore.dispatcher.__init__(self, map=map)
            self.handler = handler
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(BACKLOG)

        def handle_accepted(self, sock, addr):
            # The native variants get TCP_NODELAY from asyncio; give it to all, so that
            # no variant pays Nagle/delayed-ACK stalls the others do not.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.handler(sock, map=self._map)

    return {"chat": ChatEcho, "plain": PlainEcho, "server": EchoServer}


# --------------------------------------------------------------------------- W5: "wsgi"

WORKERS = 4
"""Threads in the W5 server's pool."""


class Request:
    """One parsed HTTP/1.x request head (and body); parsed in the loop's thread."""

    __slots__ = ("body", "headers", "keep_alive", "method", "target", "version")

    def __init__(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.method, self.target, self.version = lines[0].split(b" ", 2)
        self.headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()
        connection = self.headers.get(b"connection", b"").lower()
        if self.version == b"HTTP/1.1":
            self.keep_alive = connection != b"close"
        else:
            self.keep_alive = connection == b"keep-alive"
        self.body = b""

    def length(self) -> int:
        return int(self.headers.get(b"content-length", b"0"))


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The WSGI application every W5 server runs: a small text reply."""
    body = b"Hello, %s! (%d bytes read)\n" % (
        environ["PATH_INFO"].encode("latin-1"),
        len(environ["wsgi.input"].read()),
    )
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def respond(request: Request) -> bytes:
    """What a worker thread does with a request: the WSGI call, then the reply's bytes."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "PATH_INFO": request.target.decode("latin-1").partition("?")[0],
        "SERVER_PROTOCOL": request.version.decode("latin-1"),
        "wsgi.input": io.BytesIO(request.body),
    }
    for name, value in request.headers.items():
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        environ[key] = value.decode("latin-1")
    started: list[Any] = []
    chunks = hello_app(environ, lambda status, headers: started.extend((status, headers)))
    status, headers = started
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
    if not request.keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + b"".join(chunks)


def start_pool(requests: queue.Queue[Any], deliver: Any) -> None:
    """WORKERS daemon threads: take ``(channel, request)``, build the reply, and hand it to
    ``deliver(channel, reply, keep_alive)`` in the worker's thread."""

    def work() -> None:
        while True:
            channel, request = requests.get()
            deliver(channel, respond(request), request.keep_alive)

    for n in range(WORKERS):
        threading.Thread(target=work, name=f"worker-{n}", daemon=True).start()


def make_wsgi_handlers(asyncore: Any, asynchat: Any) -> dict[str, Any]:
    """W5's server on either asyncore implementation: requests parsed by an async_chat,
    answered by the pool, which pushes each reply from its thread, then pulls a pipe
    trigger (a ``file_dispatcher`` in the same map) to wake the loop, as medusa, Zope and
    supervisor did."""

    class Trigger(asyncore.file_dispatcher):
        def __init__(self, map=None):
            read_end, self.write_end = os.pipe()
            os.set_blocking(self.write_end, False)
            asyncore.file_dispatcher.__init__(self, read_end, map=map)
            os.close(read_end)  # file_dispatcher keeps its own dup

        def writable(self):
            return False

        def handle_read(self):
            self.recv(8192)

        def pull(self):
            try:
                os.write(self.write_end, b"x")
            except BlockingIOError:  # the pipe is full: a wake-up is pending anyway
                pass

    class HttpChannel(asynchat.async_chat):
        def __init__(self, sock, map=None):
            self.send_lock = threading.Lock()
            asynchat.async_chat.__init__(self, sock, map=map)
            self.set_terminator(b"\r\n\r\n")
            self.incoming = []
            self.request = None  # a head whose body is still being read

        def initiate_send(self):
            # push() sends from the worker's thread, handle_write() from the loop's: 3.11's
            # initiate_send() reads the fifo's head, sends it, then drops it, and two threads
            # doing that at once send one reply twice.
            with self.send_lock:
                asynchat.async_chat.initiate_send(self)

        def collect_incoming_data(self, data):
            self.incoming.append(data)

        def found_terminator(self):
            data = b"".join(self.incoming)
            self.incoming = []
            request, self.request = self.request, None
            if request is None:
                request = Request(data)
                if request.length():
                    self.request = request
                    self.set_terminator(request.length())
                    return
            else:
                request.body = data
                self.set_terminator(b"\r\n\r\n")
            requests.put((self, request))

        def handle_close(self):
            self.close()

    requests: queue.Queue[Any] = queue.Queue()
    trigger = Trigger()

    def deliver(channel, reply, keep_alive):
        channel.push(reply)
        if not keep_alive:
            channel.close_when_done()
        trigger.pull()

    start_pool(requests, deliver)
    return {"wsgi": HttpChannel}


class NativeHttp(asyncio.Protocol):
    """Native W5: the same parsing and pool; a worker hands its reply to the loop with
    ``call_soon_threadsafe`` (asyncio's own self-pipe wake-up)."""

    requests: queue.Queue[Any]

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = b""
        self.request: Request | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.request is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.request = Request(self.buffer[:end])
                self.buffer = self.buffer[end + 4 :]
            length = self.request.length()
            if len(self.buffer) < length:
                return
            self.request.body, self.buffer = self.buffer[:length], self.buffer[length:]
            self.requests.put((self, self.request))
            self.request = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None

    def reply(self, reply: bytes, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(reply)
        if not keep_alive:
            self.transport.close()

    @staticmethod
    def deliver(protocol: NativeHttp, reply: bytes, keep_alive: bool) -> None:
        protocol.loop.call_soon_threadsafe(protocol.reply, reply, keep_alive)


def _serve_asyncore(variant: str, handler: str, portfile: str) -> None:
    if variant.startswith("pyasyncore"):
        import asynchat
        import asyncore

        if getattr(asyncore, "__name__", "") != "asyncore" or "asyncore_on_asyncio" in getattr(
            asyncore, "__file__", ""
        ):
            raise SystemExit("import asyncore did not give the frozen pyasyncore module")
    else:
        import asyncore_on_asyncio
        from asyncore_on_asyncio import asynchat, asyncore

        # Reads ASYNCORE_ON_ASYNCIO_REPORT (run.py's "+report" variants), where install() does.
        asyncore_on_asyncio.install()

        if variant.startswith("ours-uvloop"):
            import uvloop

            asyncore_on_asyncio.set_loop_factory(uvloop.new_event_loop)
        else:
            asyncore_on_asyncio.set_loop_factory(asyncio.new_event_loop)
        # The opt-in of async_chat that sends the replies of one read together.
        asynchat.async_chat.coalesce_pushes = variant.endswith("-coalesce")

    classes: dict[str, Any] = make_handlers(asyncore, asynchat)
    if handler == THREADED:
        classes.update(make_wsgi_handlers(asyncore, asynchat))
    server = classes["server"](classes[handler])
    _write_port(portfile, server.socket.getsockname()[1])
    asyncore.loop(timeout=30.0, use_poll=(variant == "pyasyncore-poll"))


class LineEcho(asyncio.Protocol):
    """Native rewrite of the ``chat`` handler: every complete line is echoed."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.pending = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        if lines:
            self.transport.writelines([line + b"\n" for line in lines])

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class RawEcho(LineEcho):
    """Native rewrite of the ``plain`` handler: whatever arrives goes back."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _serve_native(variant: str, handler: str, portfile: str) -> None:
    if variant == "native-uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    protocol: Any = LineEcho if handler == "chat" else RawEcho
    if handler == THREADED:
        protocol = NativeHttp
        NativeHttp.requests = queue.Queue()
        start_pool(NativeHttp.requests, NativeHttp.deliver)
    server = loop.run_until_complete(loop.create_server(protocol, "127.0.0.1", 0, backlog=BACKLOG))
    _write_port(portfile, server.sockets[0].getsockname()[1])
    loop.run_forever()


def _write_port(portfile: str, port: int) -> None:
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, portfile)


def _on_sigterm(signum: int, frame: Any) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "pid": os.getpid(),
        "cpu_user_s": usage.ru_utime,
        "cpu_sys_s": usage.ru_stime,
        "max_rss_kib": usage.ru_maxrss,
        "wall_s": time.monotonic() - _STARTED,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)


_STARTED = time.monotonic()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("handler", choices=(*HANDLERS, THREADED))
    parser.add_argument("portfile")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU if possible")
    args = parser.parse_args(argv)

    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError as exc:  # CPU not in our cpuset: run unpinned, say so
            print(f"echo_server: cannot pin to CPU {args.cpu}: {exc}", file=sys.stderr)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, _on_sigterm)

    if args.variant.startswith("native"):
        _serve_native(args.variant, args.handler, args.portfile)
    else:
        _serve_asyncore(args.variant, args.handler, args.portfile)


if __name__ == "__main__":
    main()
