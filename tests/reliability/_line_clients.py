"""Line clients for the big scale tests, run as a separate process (not a test module).

    python _line_clients.py hold  HOST PORT N WINDOW
    python _line_clients.py churn HOST PORT N BATCH

Every client connects, sends ``b"client %d says hello\\n"`` and expects exactly that line
back. At most WINDOW (hold) or BATCH (churn) connections are waiting for their echo at any
time, so the server's accept queue never overflows (a dropped SYN costs a 1 s retransmit).

hold:  all N connections stay open once echoed; when all are, prints ``echoed N`` and waits
       for a line ``close`` on stdin, then closes them all and prints ``closed``.
churn: batches of BATCH; each connection waits for the server to close it (EOF) after the
       echo, then is closed; prints ``churned N`` at the end.

Separate from the server's process so that each side has its own RLIMIT_NOFILE (10,000
connections need 20,000 fds in one process) and its own CPU. Any error prints ``error ...``
and exits 1; the whole run gives up after DEADLINE seconds (exit 2).
"""

from __future__ import annotations

import errno
import resource
import select
import selectors
import socket
import sys
import time

DEADLINE = 60.0


def fail(code: int, message: str) -> None:
    print(message, flush=True)
    sys.exit(code)


def line(i: int) -> bytes:
    return b"client %d says hello\n" % i


class Clients:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.selector = selectors.DefaultSelector()  # epoll on Linux, kqueue on macOS
        self.socks: dict[int, socket.socket] = {}
        self.index: dict[int, int] = {}
        self.got: dict[int, bytes] = {}
        self.sent: set[int] = set()
        self.waiting = 0  # connections whose echo (hold) or EOF (churn) is outstanding
        self.deadline = time.monotonic() + DEADLINE

    def open(self, i: int) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE: RLIMIT_NOFILE's hard limit is too low
            fail(1, f"error socket() for client {i}: {exc}")
        sock.setblocking(False)
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            fail(1, f"error connect: {errno.errorcode.get(err, err)}")
        fd = sock.fileno()
        self.socks[fd] = sock
        self.index[fd] = i
        self.got[fd] = b""
        self.selector.register(fd, selectors.EVENT_WRITE)
        self.waiting += 1

    def poll(self, churn: bool) -> None:
        if time.monotonic() > self.deadline:
            fail(2, f"error deadline: {self.waiting} connections still waiting")
        for key, _ in self.selector.select(0.5):
            fd = key.fd
            sock = self.socks[fd]
            if fd not in self.sent:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(1, f"error connect: {errno.errorcode.get(err, err)}")
                sock.send(line(self.index[fd]))  # a few bytes into an empty buffer
                self.sent.add(fd)
                self.selector.modify(fd, selectors.EVENT_READ)
                continue
            data = sock.recv(4096)
            self.got[fd] += data
            expected = line(self.index[fd])
            if not expected.startswith(self.got[fd]):
                fail(1, f"error echo: client {self.index[fd]} got {self.got[fd]!r}")
            if churn:
                if not data:
                    if self.got[fd] != expected:
                        fail(1, f"error eof: client {self.index[fd]} got {self.got[fd]!r}")
                    self.selector.unregister(fd)
                    sock.close()
                    del self.socks[fd], self.index[fd], self.got[fd]
                    self.sent.discard(fd)
                    self.waiting -= 1
            elif not data:
                fail(1, f"error eof: client {self.index[fd]} closed early")
            elif self.got[fd] == expected:
                self.selector.unregister(fd)  # echoed: held open, no longer watched
                self.waiting -= 1


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hold(clients: Clients, n: int, window: int) -> None:
    opened = 0
    while opened < n or clients.waiting:
        while opened < n and clients.waiting < window:
            clients.open(opened)
            opened += 1
        clients.poll(churn=False)
    print(f"echoed {n}", flush=True)
    readable, _, _ = select.select([sys.stdin], [], [], DEADLINE)
    if not readable or sys.stdin.readline().strip() != "close":
        fail(2, "error: no close command")
    for sock in clients.socks.values():
        sock.close()
    print("closed", flush=True)


def churn(clients: Clients, n: int, batch: int) -> None:
    done = 0
    while done < n:
        for i in range(done, min(n, done + batch)):
            clients.open(i)
        while clients.waiting:
            clients.poll(churn=True)
        done = min(n, done + batch)
    print(f"churned {n}", flush=True)


def main() -> None:
    mode, host, port, n, size = sys.argv[1:]
    raise_fd_limit()
    clients = Clients((host, int(port)))
    if mode == "hold":
        hold(clients, int(n), int(size))
    elif mode == "churn":
        churn(clients, int(n), int(size))
    else:
        fail(1, f"error: unknown mode {mode}")


if __name__ == "__main__":
    main()
