"""In-process microbenchmarks of one engine cycle, against the frozen copy (pyasyncore).

Measurements, each the median of ``--rounds`` interleaved rounds, reported as the
cost per operation and as a ratio to pyasyncore with ``select()`` in the same run:

* ``bounce``: two dispatchers bounce a 64-byte message over a socketpair, one ready fd
  per cycle (four cycles per round trip: a writes, b reads, b writes, a reads);
  microseconds per round trip.
* ``bounce-floor``: what is left of ``bounce`` when the engine costs nothing.  The same
  two dispatchers (the same class, built on the ``dispatcher`` of the variant's own
  module: pyasyncore's on the pyasyncore rows, which is issue 21's figure, ours on the
  ``ours-*`` rows, since a compiled engine leaves the public classes in Python; the
  event loop plays no part, so the asyncio and uvloop rows, like select and poll, run
  the same code) served by a hand loop in this process, with no ``loop()`` call.  Each
  cycle is exactly: both dispatchers' ``readable()`` and ``writable()`` in map order
  (the two objects unpacked from the map once, the four answers kept in local
  variables); one ``epoll.poll(0)`` on an epoll holding both fds for ``EPOLLIN |
  EPOLLOUT``, level-triggered, registered once before the first cycle (so both are
  reported writable every cycle and the answers filter); then, for each reported fd, the
  object found by comparing the fd with the first one's, and ``handle_read_event()`` /
  ``handle_write_event()`` on what is both ready and wanted, which runs the bouncer's
  ``handle_read`` / ``handle_write`` with their one ``recv`` / ``send``.  Not included:
  reading the map again, any per-cycle container (user-space instructions per round trip
  under callgrind, Python 3.12: this loop 47.0k; the same keeping the answers in a dict
  by fd 59.7k; pyasyncore's ``select()`` loop 77.1k), any registration change,
  ``readwrite()``'s wrapper call and error handling, hang-up / urgent-data / closed-fd
  checks, timeouts, an event loop.  Microseconds per round trip, printed with its ratio
  to pyasyncore-select's *bounce* of the same run and, per variant, how far that
  variant's own bounce is above its floor (asking for ``bounce-floor`` alone runs
  ``bounce`` too).
* ``step-1``: a host application calls ``loop(timeout=0, count=1)`` again and again with
  one idle ``async_chat`` dispatcher; microseconds per call.
* ``step-100``: the same with 100 idle ``async_chat`` dispatchers.
* ``echo-100``: W1's ``async_chat`` ping-pong in one process: 100 socketpairs, on one
  end a line echo, on the other a client that pushes its next 64-byte line when the
  echo is back; microseconds per round trip (two lines handled, every cycle serving
  many ready dispatchers).
* ``scan-5000``: ``loop(timeout=0, count=1)`` over 5,000 idle dispatchers of a class with
  its own ``writable()`` (W3's ``plain`` handler), so every cycle asks every dispatcher
  both predicates, as 3.11 did; microseconds per call.  Each worker also reports (on
  stderr) what the bare predicate calls over the same objects cost in its process: the
  floor of any design that keeps 3.11's contract.  ``select()`` cannot hold fd 1024, so
  pyasyncore-select reports nothing there and the ratios are to pyasyncore-poll.
* ``registered-io``: no cycle at all: 64-byte ``send()``/``recv()`` round trips over a
  socketpair whose ends are idle dispatchers after one ``loop(count=1)``, i.e. with the
  fds registered as each engine keeps them between cycles (pyasyncore: nowhere; ours:
  in the engine's epoll, itself watched by the event loop).  Microseconds per round
  trip: what the kernel charges every socket call for a registration that persists.
* ``churn``: connections churned through one listener (``--churn N``, default 20,000;
  the issue's figure is 100,000): each accepted by a listening dispatcher, its line echoed
  by an ``async_chat`` that then closes; the clients are the reliability suite's
  ``_line_clients.py churn`` in their own process.  Microseconds per connection, plus
  the server's open fds and VmRSS growth (KiB) after the churn.

Variants: ``pyasyncore-select``, ``pyasyncore-poll``, ``ours-asyncio``, ``ours-uvloop``
(each in its own subprocess, so one cannot warm or pollute another).  ``ours-*`` run on
whichever engine core the package has (compiled where it was built); ``--pure`` adds
``ours-*+pure`` rows, the same package with ``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS=1``.  Usage, from the
repository root::

    PYTHONPATH=. python benchmarks/micro.py [--rounds 5] [--seconds 0.5] [--json FILE]

``--impl-path DIR`` runs the ``ours-*`` variants on the package found in ``DIR`` instead
(to compare two checkouts in one run, e.g. ``--impl-path ../baseline``; repeatable).
``--clock cpu`` times every measurement by the worker process's CPU time (user + system,
``time.process_time()``) instead of wall time: on a shared machine a worker waiting for a
CPU is then not charged for the wait (the windows stay in wall time).  Everything measured
runs in the worker's one thread, except churn's clients (another process, never counted):
with ``cpu``, churn counts the server's work only, not its waits for the clients.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MEASUREMENTS = ("bounce", "bounce-floor", "step-1", "step-100", "echo-100", "scan-5000", "registered-io", "churn")
CLIENTS = HERE.parent / "tests" / "reliability" / "_line_clients.py"
FROZEN = ("pyasyncore-select", "pyasyncore-poll")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter
"""What the measurements' elapsed times are read from (``--clock``); windows and deadlines
are always wall time."""


def _modules(variant: str) -> tuple[Any, Any]:
    if variant.startswith("pyasyncore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import asynchat
            import asyncore
        return asyncore, asynchat
    import asyncore_on_asyncio
    from asyncore_on_asyncio import asynchat, asyncore

    if variant.endswith("uvloop"):
        import uvloop

        asyncore_on_asyncio.set_loop_factory(uvloop.new_event_loop)
    return asyncore, asynchat


def _run_for(asyncore: Any, use_poll: bool, map: dict[int, Any], stop_at: list[float], seconds: float) -> float:
    """Run ``loop()`` on ``map`` until a handler, seeing ``stop_at[0]`` passed, raises
    ExitNow ``seconds`` from now; the seconds it ran."""
    stop_at[0] = time.perf_counter() + seconds
    start = _clock()
    try:
        asyncore.loop(timeout=1.0, use_poll=use_poll, map=map)
    except asyncore.ExitNow:
        pass
    return _clock() - start


def _bounce_pair(asyncore: Any, done: list[int], stop_at: list[float]) -> tuple[dict[int, Any], Any, Any]:
    """The bounce's two dispatchers over a socketpair, in a new map, ``a`` holding the
    message: ``a``'s handle_write counts a round trip in ``done[0]`` and raises ExitNow
    once ``stop_at[0]`` has passed."""

    class Bouncer(asyncore.dispatcher):
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.pending = b""

        def writable(self) -> bool:
            return bool(self.pending)

        def handle_read(self) -> None:
            data = self.recv(4096)
            if data:
                self.pending += data

        def handle_write(self) -> None:
            sent = self.send(self.pending)
            self.pending = self.pending[sent:]
            if self is a:
                done[0] += 1
                if time.perf_counter() >= stop_at[0]:
                    raise asyncore.ExitNow()

    left, right = socket.socketpair()
    map: dict[int, Any] = {}
    a, b = Bouncer(left, map), Bouncer(right, map)
    a.pending = b"x" * 64
    return map, a, b


def _bounce(asyncore: Any, use_poll: bool, seconds: float) -> float:
    done = [0]
    stop_at = [float("inf")]
    map, a, b = _bounce_pair(asyncore, done, stop_at)
    try:
        asyncore.loop(timeout=1.0, use_poll=use_poll, map=map, count=2000)  # warm up
        done[0] = 0
        elapsed = _run_for(asyncore, use_poll, map, stop_at, seconds)
    finally:
        a.close()
        b.close()
    return elapsed / done[0] * 1e6


def _floor_cycles(map: dict[int, Any], epoll: select.epoll, cycles: int) -> None:
    """``cycles`` cycles of the bounce with no engine: both dispatchers' readable() and
    writable() in map order, one ``epoll.poll(0)``, then handle_read_event() /
    handle_write_event() on what is both ready and wanted.  ``epoll`` holds both fds for
    reading and writing (level-triggered, registered once), so it reports both writable
    every cycle and the answers filter.  The map is the bounce's two dispatchers, unpacked
    once: a cycle builds no container (see the module docstring)."""
    poll, read_flag, write_flag = epoll.poll, select.EPOLLIN, select.EPOLLOUT
    (fd_a, a), (_, b) = map.items()
    for _ in range(cycles):
        read_a, write_a, read_b, write_b = a.readable(), a.writable(), b.readable(), b.writable()
        for fd, flags in poll(0):
            if fd == fd_a:
                obj, readable, writable = a, read_a, write_a
            else:
                obj, readable, writable = b, read_b, write_b
            if readable and flags & read_flag:
                obj.handle_read_event()
            if writable and flags & write_flag:
                obj.handle_write_event()


def _bounce_floor(asyncore: Any, seconds: float) -> float:
    done = [0]
    stop_at = [float("inf")]
    map, a, b = _bounce_pair(asyncore, done, stop_at)
    epoll = select.epoll()
    try:
        for fd in map:
            epoll.register(fd, select.EPOLLIN | select.EPOLLOUT)
        _floor_cycles(map, epoll, 2000)  # warm up
        done[0] = 0
        stop_at[0] = time.perf_counter() + seconds
        start = _clock()
        try:
            while True:
                _floor_cycles(map, epoll, 1000)
        except asyncore.ExitNow:  # a's handle_write, once stop_at[0] has passed
            elapsed = _clock() - start
    finally:
        epoll.close()
        a.close()
        b.close()
    return elapsed / done[0] * 1e6


def _step(asyncore: Any, asynchat: Any, use_poll: bool, idle: int, seconds: float) -> float:
    class Idle(asynchat.async_chat):
        def collect_incoming_data(self, data: bytes) -> None:
            pass

        def found_terminator(self) -> None:
            pass

    map: dict[int, Any] = {}
    peers = []
    for _ in range(idle):
        mine, theirs = socket.socketpair()
        chat = Idle(mine, map)
        chat.set_terminator(b"\n")
        peers.append(theirs)
    loop = asyncore.loop
    try:
        for _ in range(2000):
            loop(0, use_poll, map, 1)
        calls = 0
        deadline = time.perf_counter() + seconds
        start = _clock()
        while True:
            for _ in range(200):
                loop(0, use_poll, map, 1)
            calls += 200
            if time.perf_counter() >= deadline:
                break
        elapsed = _clock() - start
    finally:
        for chat in list(map.values()):
            chat.close()
        for peer in peers:
            peer.close()
    return elapsed / calls * 1e6


def _echo(asyncore: Any, asynchat: Any, use_poll: bool, pairs: int, seconds: float) -> float:
    line = b"x" * 63 + b"\n"
    done = [0]
    stop_at = [float("inf")]

    class Echo(asynchat.async_chat):
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.set_terminator(b"\n")
            self.received: list[bytes] = []

        def collect_incoming_data(self, data: bytes) -> None:
            self.received.append(data)

        def found_terminator(self) -> None:
            got = b"".join(self.received)
            self.received = []
            self.push(got + b"\n")

    class Client(Echo):
        def found_terminator(self) -> None:
            self.received = []
            done[0] += 1
            if time.perf_counter() >= stop_at[0]:
                raise asyncore.ExitNow()
            self.push(line)

    map: dict[int, Any] = {}
    clients = []
    for _ in range(pairs):
        mine, theirs = socket.socketpair()
        Echo(mine, map)
        clients.append(Client(theirs, map))
    try:
        for client in clients:
            client.push(line)
        _run_for(asyncore, use_poll, map, stop_at, 0.2)  # warm up
        done[0] = 0
        elapsed = _run_for(asyncore, use_poll, map, stop_at, seconds)
    finally:
        asyncore.close_all(map)
    return elapsed / done[0] * 1e6


def _full_scan(asyncore: Any, use_poll: bool, dispatchers: int, seconds: float) -> float:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, dispatchers + 1000), hard))

    class Plain(asyncore.dispatcher):
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.buffer = bytearray()

        def writable(self) -> bool:
            return bool(self.buffer)

    map: dict[int, Any] = {}
    for _ in range(dispatchers // 2):
        for end in socket.socketpair():
            Plain(end, map)

    def predicates() -> None:
        for obj in list(map.values()):
            obj.readable()
            obj.writable() and not obj.accepting

    def cycle() -> None:
        asyncore.loop(0, use_poll, map, 1)

    try:
        cycle()
    except ValueError:  # select(): filedescriptor out of range
        asyncore.close_all(map)
        return float("nan")
    best = {cycle: float("inf"), predicates: float("inf")}
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            for measured in best:  # interleaved; the best of each: the least disturbed
                began = _clock()
                measured()
                best[measured] = min(best[measured], _clock() - began)
    finally:
        asyncore.close_all(map)
    print(f"predicates alone {best[predicates] * 1e6:.0f} us", file=sys.stderr)
    return best[cycle] * 1e6


def _registered_io(asyncore: Any, use_poll: bool, seconds: float) -> float:
    class Idle(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

    left, right = socket.socketpair()
    map: dict[int, Any] = {}
    idle = [Idle(left, map), Idle(right, map)]
    asyncore.loop(timeout=0, use_poll=use_poll, map=map, count=1)  # the engine registers both
    message = b"x" * 64
    trips = 0
    deadline = time.perf_counter() + seconds
    start = _clock()
    try:
        while time.perf_counter() < deadline:
            for _ in range(1000):
                left.send(message)
                right.recv(4096)
                right.send(message)
                left.recv(4096)
            trips += 1000
        elapsed = _clock() - start
    finally:
        for dispatcher in idle:
            dispatcher.close()
    return elapsed / trips * 1e6


def _vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _churn(asyncore: Any, asynchat: Any, use_poll: bool, connections: int) -> float:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))

    class Echo(asynchat.async_chat):
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.set_terminator(b"\n")
            self.line = b""

        def collect_incoming_data(self, data: bytes) -> None:
            self.line += data

        def found_terminator(self) -> None:
            self.push(self.line + b"\n")
            self.close_when_done()

    class Listener(asyncore.dispatcher):
        def handle_accept(self) -> None:
            while (pair := self.accept()) is not None:
                Echo(pair[0], self._map)

    map: dict[int, Any] = {}
    server = Listener(map=map)
    server.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    host, port = server.socket.getsockname()

    def churn(n: int) -> float:
        clients = subprocess.Popen(
            [sys.executable, str(CLIENTS), "churn", host, str(port), str(n), "500"],
            stdout=subprocess.PIPE,
        )
        assert clients.stdout is not None
        os.set_blocking(clients.stdout.fileno(), False)
        printed = b""
        start = _clock()
        while b"churned" not in printed or len(map) > 1:
            asyncore.loop(timeout=0.05, use_poll=use_poll, map=map, count=1)
            printed += clients.stdout.read() or b""
            if clients.poll() not in (None, 0) or b"error" in printed:
                raise RuntimeError(f"churn clients failed: {printed!r}")
        elapsed = _clock() - start
        clients.wait(30)
        return elapsed

    churn(500)  # warm up
    fds_before, rss_before = len(os.listdir("/proc/self/fd")), _vm_rss_kib()
    elapsed = churn(connections)
    fds_after, rss_after = len(os.listdir("/proc/self/fd")), _vm_rss_kib()
    server.close()
    print(f"fds {fds_before}->{fds_after} rss_growth_kib {rss_after - rss_before}", file=sys.stderr)
    return elapsed / connections * 1e6


def worker(variant: str, measurement: str, seconds: float) -> float:
    """One measurement in this process; microseconds per operation."""
    asyncore, asynchat = _modules(variant)
    use_poll = variant == "pyasyncore-poll"
    if measurement == "bounce":
        return _bounce(asyncore, use_poll, seconds)
    if measurement == "bounce-floor":
        return _bounce_floor(asyncore, seconds)
    if measurement.startswith("churn"):
        return _churn(asyncore, asynchat, use_poll, int(measurement.split(":")[1]))
    if measurement.startswith("echo"):
        return _echo(asyncore, asynchat, use_poll, int(measurement.split("-")[1]), seconds)
    if measurement.startswith("scan-"):
        return _full_scan(asyncore, use_poll, int(measurement.split("-")[1]), seconds)
    if measurement == "registered-io":
        return _registered_io(asyncore, use_poll, seconds)
    idle = int(measurement.split("-")[1])
    return _step(asyncore, asynchat, use_poll, idle, seconds)


def _run_worker(variant: str, path: str, measurement: str, seconds: float, clock: str) -> float:
    """One measurement in a fresh process; what it reported on stderr is printed too.

    A ``+pure`` variant runs with the pure-Python engine forced."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH", "")]))
    variant, pure, _ = variant.partition("+pure")
    if pure:
        env["ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS"] = "1"
    out = subprocess.run(
        [sys.executable, __file__, "--worker", variant, measurement, str(seconds), "--clock", clock],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    if out.stderr.strip():
        print(f"    {variant} {measurement}: {out.stderr.strip()}")
    return float(out.stdout.strip().splitlines()[-1])


def _summarize(results: dict[str, dict[str, list[float]]], names: list[str], rounds: int) -> dict[str, Any]:
    """Print each measurement's medians and ratios; the summary written by ``--json``.

    The reference is pyasyncore-select's median of the same measurement (pyasyncore-poll's
    where select() could not hold the fds), except for ``bounce-floor``: pyasyncore-select's
    *bounce*, with each variant's own bounce minus its floor beside it."""
    summary: dict[str, Any] = {}
    for measurement, by_name in results.items():
        against = "bounce" if measurement == "bounce-floor" else measurement
        reference = "pyasyncore-select"
        base = statistics.median(results[against][reference])
        if math.isnan(base):  # select() could not hold the fds
            reference = "pyasyncore-poll"
            base = statistics.median(results[against][reference])
        print(
            f"\n{measurement}: microseconds per operation (median of {rounds}), "
            f"ratio to {reference}" + ("'s bounce" if against != measurement else "")
        )
        summary[measurement] = {}
        for name in names:
            med = statistics.median(by_name[name])
            summary[measurement][name] = {"us": med, "ratio": med / base, "all": by_name[name]}
            line = f"  {name:32} {med:8.2f} us   {med / base:5.2f}x"
            if against != measurement:
                own = statistics.median(results[against][name])
                summary[measurement][name]["above_floor_us"] = own - med
                line += f"   (its bounce {own:.2f} us: {own - med:.2f} us above the floor)"
            print(line)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--impl-path", action="append", default=[])
    parser.add_argument("--churn", type=int, default=20_000, help="connections churned")
    parser.add_argument("--only", help="comma-separated measurements (default: all)")
    parser.add_argument("--json")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="time each measurement by wall time (default) or by the worker's CPU time",
    )
    parser.add_argument(
        "--pure", action="store_true", help="also run ours with the pure-Python engine forced (+pure rows)"
    )
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        global _clock
        _clock = CLOCKS[args.clock]
        variant, measurement, seconds = args.worker
        print(worker(variant, measurement, float(seconds)))
        return
    paths = args.impl_path or [str(HERE.parent)]
    variants: list[tuple[str, str]] = [(v, "") for v in FROZEN]
    for path in paths:
        label = "" if len(paths) == 1 else f"@{Path(path).name}"
        variants += [(f"ours-asyncio{label}", path), (f"ours-uvloop{label}", path)]
        if args.pure:
            variants += [(f"ours-asyncio+pure{label}", path), (f"ours-uvloop+pure{label}", path)]
    measurements = args.only.split(",") if args.only else list(MEASUREMENTS)
    if "bounce-floor" in measurements and "bounce" not in measurements:
        measurements.insert(measurements.index("bounce-floor"), "bounce")  # its reference
    results: dict[str, dict[str, list[float]]] = {m: {v: [] for v, _ in variants} for m in measurements}
    for _ in range(args.rounds):
        for measurement in measurements:
            asked = f"churn:{args.churn}" if measurement == "churn" else measurement
            for name, path in variants:
                variant = name.split("@")[0]
                results[measurement][name].append(_run_worker(variant, path, asked, args.seconds, args.clock))
    summary = _summarize(results, [name for name, _ in variants], args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
