"""Instructions per operation, counted by callgrind: steady where wall time is not.

``python benchmarks/instructions.py [--impl-path DIR] [--pure] [WORKLOAD ...]`` runs each
workload (``bounce``, ``echo``, ``scan``; default: all) on pyasyncore (``select`` for
bounce and echo, ``poll`` for scan, whose 1,000 fds ``select()`` may not hold) and on ours
(the package in ``DIR``, default this checkout; ``--pure`` adds a row with
``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS=1``), each under ``valgrind --tool=callgrind`` at two
sizes, and prints the difference of the two totals divided by the difference of the sizes:
the cost of one operation without the start-up.  User space only: the kernel's share of a
syscall is not counted.  Ours runs with bursts and verifying scans made endless, so that
no count depends on the clock (valgrind runs 50x slower than the clock they read).

* ``bounce``: one 64-byte message bounced between two dispatchers; per round trip.
* ``echo``: 100 ``async_chat`` pairs echoing 64-byte lines; per round trip.
* ``scan``: ``loop(0, count=1)`` over 1,000 idle dispatchers with their own ``writable()``.
* ``step``: ``loop(0, count=1)`` over one idle ``async_chat`` (a host loop stepping asyncore);
  per call.  Ours gives the event loop no iteration here (``STEP_INTERVAL`` made endless).
* ``churn``: connections accepted by a listener, 50 at a time, each served one line by an
  ``async_chat`` that pushes it back and closes when done; per connection.  The clients
  are blocking sockets in the same process: their work is counted in every row alike.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZES = {"bounce": (500, 1500), "echo": (1000, 3000), "scan": (20, 60), "step": (2000, 6000), "churn": (200, 600)}


def _modules(variant: str) -> tuple[Any, Any, bool]:
    if variant.startswith("pyasyncore"):
        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat
        import asyncore

        return asyncore, asynchat, variant.endswith("poll")
    from asyncore_on_asyncio import _driver, _scan, asynchat, asyncore

    _driver.BURST_SECONDS = 1e9  # type: ignore[misc]
    _driver.STEP_INTERVAL = 1e9  # type: ignore[misc]
    _scan._FULL_SCAN_INTERVAL = 1e9
    return asyncore, asynchat, False


def _bounce(asyncore: Any, asynchat: Any, use_poll: bool, n: int) -> None:
    class Bouncer(asyncore.dispatcher):  # type: ignore[misc]
        pending = b""

        def writable(self) -> bool:
            return bool(self.pending)

        def handle_read(self) -> None:
            self.pending += self.recv(4096)

        def handle_write(self) -> None:
            self.pending = self.pending[self.send(self.pending) :]

    left, right = socket.socketpair()
    map: dict[int, Any] = {}
    first, _ = Bouncer(left, map), Bouncer(right, map)
    first.pending = b"x" * 64
    asyncore.loop(timeout=1.0, use_poll=use_poll, map=map, count=2 * n)  # 2 cycles a hop


def _echo(asyncore: Any, asynchat: Any, use_poll: bool, n: int) -> None:
    left = [n]

    class Echo(asynchat.async_chat):  # type: ignore[misc]
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.set_terminator(b"\n")
            self.received: list[bytes] = []

        def collect_incoming_data(self, data: bytes) -> None:
            self.received.append(data)

        def found_terminator(self) -> None:
            line, self.received = b"".join(self.received), []
            self.push(line + b"\n")

    class Client(Echo):
        def found_terminator(self) -> None:
            self.received = []
            left[0] -= 1
            if left[0] <= 0:
                raise asyncore.ExitNow()
            self.push(b"x" * 63 + b"\n")

    map: dict[int, Any] = {}
    for _ in range(100):
        mine, theirs = socket.socketpair()
        Echo(mine, map)
        Client(theirs, map).push(b"x" * 63 + b"\n")
    try:
        asyncore.loop(timeout=1.0, use_poll=use_poll, map=map)
    except asyncore.ExitNow:
        pass


def _scan(asyncore: Any, asynchat: Any, use_poll: bool, n: int) -> None:
    class Idle(asyncore.dispatcher):  # type: ignore[misc]
        def writable(self) -> bool:
            return False

    map: dict[int, Any] = {}
    peers = []
    for _ in range(1000):
        mine, theirs = socket.socketpair()
        Idle(mine, map)
        peers.append(theirs)
    for _ in range(n):
        asyncore.loop(0, use_poll, map, 1)


def _step(asyncore: Any, asynchat: Any, use_poll: bool, n: int) -> None:
    class Idle(asynchat.async_chat):  # type: ignore[misc]
        def collect_incoming_data(self, data: bytes) -> None:
            pass

        def found_terminator(self) -> None:
            pass

    map: dict[int, Any] = {}
    mine, theirs = socket.socketpair()
    Idle(mine, map).set_terminator(b"\n")
    for _ in range(n):
        asyncore.loop(0, use_poll, map, 1)
    theirs.close()


def _churn(asyncore: Any, asynchat: Any, use_poll: bool, n: int) -> None:
    class Echo(asynchat.async_chat):  # type: ignore[misc]
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.set_terminator(b"\n")
            self.line = b""

        def collect_incoming_data(self, data: bytes) -> None:
            self.line += data

        def found_terminator(self) -> None:
            served[0] += 1
            self.push(self.line + b"\n")
            self.close_when_done()

    class Listener(asyncore.dispatcher):  # type: ignore[misc]
        def handle_accept(self) -> None:
            while (pair := self.accept()) is not None:
                Echo(pair[0], self._map)

    map: dict[int, Any] = {}
    served = [0]
    server = Listener(map=map)
    server.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    address = server.socket.getsockname()
    for _ in range(n // 50):
        clients = [socket.create_connection(address) for _ in range(50)]
        for client in clients:
            client.sendall(b"x" * 63 + b"\n")
        goal = served[0] + 50
        while served[0] < goal or len(map) > 1:
            asyncore.loop(timeout=5.0, use_poll=use_poll, map=map, count=1)
        for client in clients:
            assert client.recv(100) == b"x" * 63 + b"\n"
            client.close()
    server.close()


WORKLOADS = {"bounce": _bounce, "echo": _echo, "scan": _scan, "step": _step, "churn": _churn}


def _count(variant: str, path: str, workload: str, n: int) -> int:
    # A fixed hash seed: with random ones the same run's counts moved by up to 2 % (dict probes).
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")])))
    variant, pure, _ = variant.partition("+pure")
    if pure:
        env["ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS"] = "1"
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--worker", variant, workload, str(n)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(re.findall(r"Collected : (\d+)", out.stderr)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD", help=f"of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--impl-path", default=str(HERE.parent))
    parser.add_argument("--pure", action="store_true")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, workload, n = args.worker
        asyncore, asynchat, use_poll = _modules(variant)
        WORKLOADS[workload](asyncore, asynchat, use_poll, int(n))
        return
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    for workload in args.workloads or list(WORKLOADS):
        frozen = "pyasyncore-poll" if workload == "scan" else "pyasyncore-select"
        variants = [(frozen, ""), ("ours", args.impl_path)] + ([("ours+pure", args.impl_path)] if args.pure else [])
        small, large = SIZES[workload]
        for variant, path in variants:
            per_op = (_count(variant, path, workload, large) - _count(variant, path, workload, small)) / (large - small)
            print(f"{workload:8} {variant:20} {per_op / 1000:10.1f}k instructions per operation", flush=True)


if __name__ == "__main__":
    main()
