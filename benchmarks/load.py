"""Load generator for the echo servers: asyncio (uvloop when installed) clients, one process.

Workloads (each measured over a fixed window after a short warm-up):

- ``w1`` ping-pong: ``--conns`` (100) connections, each sends one ``--line`` (64) byte line
  and waits for its echo before sending the next; result: round trips/s.
- ``w2`` bulk: ``--conns`` (8) connections, each keeps ``--window`` bytes of pipelined
  ``--line``-byte lines in flight; result: echoed MiB/s.
- ``w3`` idle scaling: ``--idle`` idle connections are opened first, then ``--conns`` (10)
  active ping-pong connections are measured; result: round trips/s, or an error (a
  ``select()`` server cannot take fd 1024 and dies).
- ``w4`` churn: ``--conns`` (16) workers each loop connect / send one line / read its echo
  / close; result: connections/s.
- ``w5`` threaded HTTP (the server's ``wsgi`` handler): ``--mode keepalive``: ``--conns``
  (100) persistent HTTP/1.1 connections, each sending its next request as soon as the
  whole reply is in (never pipelined); ``--mode close``: ``--conns`` (16) workers each loop
  connect / send one request with ``Connection: close`` / read the reply / wait for the
  server to close.  GET requests, or POSTs with a ``--body``-byte body.  Every reply is
  checked (status 200, its Content-Length, no byte beyond it); result: requests/s.

Every result also gives the CPU time this process and the server (``--server-pid``, read
from ``/proc``) used inside the window, so that one can tell whether the load generator
was the bottleneck, and the server's CPU time per operation.

One measurement: ``load.py w1 --port PORT [--server-pid PID]`` prints one JSON line.
``load.py --worker`` reads one JSON request per line on stdin (the same keys as the
options) and answers each with one JSON line; ``run.py`` drives it that way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"
DEFAULTS: dict[str, dict[str, Any]] = {
    "w1": {"conns": 100, "line": 64},
    "w2": {"conns": 8, "line": 1024, "window": 256 * 1024, "chunk": 64 * 1024},
    "w3": {"conns": 10, "line": 64, "idle": 1000, "setup_timeout": 120.0},
    "w4": {"conns": 16, "line": 64},
    "w5": {"mode": "keepalive", "conns": 0, "body": 0},  # conns 0: W5_CONNS[mode]
}
W5_CONNS = {"keepalive": 100, "close": 16}
"""W5's default connections (keep-alive) or workers (close)."""
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _line(size: int) -> bytes:
    return b"x" * (size - 1) + b"\n"


def server_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) the process ``pid`` has used, or None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # not Linux, or the server is gone
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _server_cpu_number(pid: int | None) -> int | None:
    """The one CPU the server is pinned to, or None (not pinned, not Linux, gone)."""
    if pid is None or not hasattr(os, "sched_getaffinity"):
        return None
    try:
        cpus = os.sched_getaffinity(pid)
    except OSError:  # the server is gone
        return None
    return next(iter(cpus)) if len(cpus) == 1 else None


def cpu_times(cpu: int | None) -> tuple[int, int] | None:
    """(idle, total) clock ticks of CPU ``cpu`` since boot, from /proc/stat, or None."""
    if cpu is None:
        return None
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{cpu} "):
                    ticks = [int(t) for t in line.split()[1:9]]
                    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all but guest
    except OSError:  # not Linux
        pass
    return None


def _runnable_ns() -> int | None:
    """Nanoseconds this (single-threaded) process has run or waited for a CPU, or None."""
    try:
        with open("/proc/self/schedstat") as f:
            run, wait = f.read().split()[:2]
    except (OSError, ValueError):  # not Linux, or no scheduler statistics
        return None
    return int(run) + int(wait)


class Window:
    """Wall time, own CPU time and server CPU time between start() and stop(); the share
    of the window this process was running *or waiting for a CPU* (``client_busy``: near 1,
    it always had work, so it set the pace even if a shared CPU gave it less than 90 %);
    and the idle share of the CPU the server is pinned to: near 0 while the server used well
    under a whole CPU means other processes ran there (a shared machine); clearly above 0,
    the server itself waited (for its clients, or between threads)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.cpu = _server_cpu_number(server_pid)

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        self.s0 = server_cpu(self.server_pid)
        self.idle0 = cpu_times(self.cpu)
        self.busy0 = _runnable_ns()

    def stop(self, ops: float) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        client = time.process_time() - self.c0
        s1 = server_cpu(self.server_pid)
        srv = None if self.s0 is None or s1 is None else s1 - self.s0
        idle1 = cpu_times(self.cpu)
        idle = None
        if self.idle0 is not None and idle1 is not None and idle1[1] > self.idle0[1]:
            idle = (idle1[0] - self.idle0[0]) / (idle1[1] - self.idle0[1])
        busy1 = _runnable_ns()
        busy = None if self.busy0 is None or busy1 is None else (busy1 - self.busy0) / 1e9 / wall
        return {
            "server_cpu_idle": idle,
            "client_busy": busy,
            "ops": ops,
            "wall_s": wall,
            "rate": ops / wall,
            "client_cpu_s": client,
            "client_util": client / wall,
            "server_cpu_s": srv,
            "server_util": None if srv is None else srv / wall,
            "server_cpu_us_per_op": None if srv is None or not ops else srv / ops * 1e6,
        }


class _State:
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.lost = 0
        self.stopping = False


class PingPong(asyncio.Protocol):
    def __init__(self, state: _State, line: bytes) -> None:
        self.state = state
        self.line = line
        self.got = 0
        self.first_echo = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.line)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        n = len(self.line)
        while self.got >= n:
            self.got -= n
            self.state.count += 1
            if not self.first_echo.done():
                self.first_echo.set_result(None)
            if not self.state.stopping:
                self.transport.write(self.line)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.first_echo.done():
            self.first_echo.set_exception(ConnectionError(f"closed before an echo: {exc!r}"))
        if not self.state.stopping:
            self.state.lost += 1


async def _all_echoed(transports: list[Any]) -> None:
    """Wait until every ping-pong connection had one echo: the server accepted them all."""
    await asyncio.gather(*(t.get_protocol().first_echo for t in transports))


class Bulk(asyncio.Protocol):
    def __init__(self, state: _State, chunk: bytes, window: int) -> None:
        self.state = state
        self.chunk = chunk
        self.window = window
        self.inflight = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.fill()

    def fill(self) -> None:
        while not self.state.stopping and self.inflight + len(self.chunk) <= self.window:
            self.transport.write(self.chunk)
            self.inflight += len(self.chunk)

    def data_received(self, data: bytes) -> None:
        self.state.bytes += len(data)
        self.inflight -= len(data)
        self.fill()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.state.stopping:
            self.state.lost += 1


class OneShot(asyncio.Protocol):
    def __init__(self, line: bytes, echoed: asyncio.Future[None]) -> None:
        self.line = line
        self.echoed = echoed
        self.closed = echoed.get_loop().create_future()
        self.got = 0

    def connection_made(self, transport: Any) -> None:
        transport.write(self.line)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= len(self.line) and not self.echoed.done():
            self.echoed.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.echoed.done():
            self.echoed.set_exception(ConnectionError(f"closed before the echo: {exc!r}"))
        self.closed.set_result(None)


class Idle(asyncio.Protocol):
    def __init__(self, state: _State) -> None:
        self.state = state

    def connection_made(self, transport: Any) -> None:
        self.state.bytes += 1  # W3 counts its idle connections here

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.state.stopping:
            self.state.lost += 1


async def _connect_all(
    port: int, n: int, factory: Callable[[], asyncio.Protocol], parallel: int = 100
) -> list[Any]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)

    async def one() -> Any:
        async with gate:
            transport, _ = await loop.create_connection(factory, HOST, port)
            return transport

    return list(await asyncio.gather(*(one() for _ in range(n))))


def _close_all(transports: list[Any]) -> None:
    for t in transports:
        t.close()


async def _measure(
    state: _State, meter: Window, warmup: float, duration: float, bulk: bool = False
) -> dict[str, Any]:
    await asyncio.sleep(warmup)
    c0, b0 = state.count, state.bytes
    meter.start()
    await asyncio.sleep(duration)
    c1, b1 = state.count, state.bytes
    if bulk:
        result = meter.stop((b1 - b0) / 2**20)
        result["mib_s"] = result["rate"]
    else:
        result = meter.stop(c1 - c0)
    state.stopping = True
    if state.lost:
        result["error"] = f"{state.lost} connection(s) lost during the measurement"
    return result


async def w1(port: int, meter: Window, warmup: float, duration: float, **p: Any) -> dict:
    state = _State()
    line = _line(p["line"])
    transports = await _connect_all(port, p["conns"], lambda: PingPong(state, line))
    try:
        await _all_echoed(transports)
        return await _measure(state, meter, warmup, duration)
    finally:
        state.stopping = True
        _close_all(transports)


async def w2(port: int, meter: Window, warmup: float, duration: float, **p: Any) -> dict:
    state = _State()
    line = _line(p["line"])
    chunk = line * max(1, p["chunk"] // len(line))
    transports = await _connect_all(port, p["conns"], lambda: Bulk(state, chunk, p["window"]))
    try:
        return await _measure(state, meter, warmup, duration, bulk=True)
    finally:
        state.stopping = True
        _close_all(transports)


async def w3(port: int, meter: Window, warmup: float, duration: float, **p: Any) -> dict:
    state = _State()
    idle: list[Any] = []
    active: list[Any] = []
    line = _line(p["line"])
    try:
        async with asyncio.timeout(p["setup_timeout"]):
            idle = await _connect_all(port, p["idle"], lambda: Idle(state))
            active = await _connect_all(port, p["conns"], lambda: PingPong(state, line))
            # The server may still be accepting the idle connections (asyncore accepts
            # one per pass): the window starts only when the active ones are served.
            await _all_echoed(active)
        if state.lost:
            return {"error": f"server dropped {state.lost} connection(s) during setup"}
        result = await _measure(state, meter, warmup, duration)
        result["idle"] = p["idle"]
        return result
    except TimeoutError:
        return {"error": f"setup of {p['idle']} idle connections took > {p['setup_timeout']} s"}
    except OSError as exc:
        return {"error": f"failed after {state.bytes} idle connections: {exc!r}"}
    finally:
        state.stopping = True
        _close_all(idle)
        _close_all(active)


async def w4(port: int, meter: Window, warmup: float, duration: float, **p: Any) -> dict:
    loop = asyncio.get_running_loop()
    state = _State()
    line = _line(p["line"])
    errors: list[str] = []

    async def worker() -> None:
        while not state.stopping:
            echoed: asyncio.Future[None] = loop.create_future()
            protocol = OneShot(line, echoed)
            try:
                async with asyncio.timeout(5.0):
                    transport, _ = await loop.create_connection(lambda p=protocol: p, HOST, port)
                    try:
                        await echoed
                    finally:
                        transport.close()
                        await protocol.closed
            except (OSError, TimeoutError) as exc:
                errors.append(repr(exc))
                await asyncio.sleep(0.01)
            else:
                state.count += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(p["conns"])]
    try:
        result = await _measure(state, meter, warmup, duration)
    finally:
        state.stopping = True
        await asyncio.gather(*workers, return_exceptions=True)
    if errors:
        result["error"] = f"{len(errors)} failed connection(s), first: {errors[0]}"
    return result


def http_request(keep_alive: bool, body: int) -> bytes:
    """W5's request: a GET, or a POST with a ``body``-byte body; HTTP/1.1, so the
    connection persists unless ``Connection: close`` says otherwise."""
    lines = [
        f"{'POST' if body else 'GET'} /bench HTTP/1.1",
        f"Host: {HOST}",
        "User-Agent: load.py",
        "Accept: */*",
    ]
    if body:
        lines.append(f"Content-Length: {body}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + b"x" * body


class HttpClient(asyncio.Protocol):
    """Sends ``request`` on connecting, reads whole replies (status 200, Content-Length
    body; anything else is an error) and calls ``on_reply`` after each."""

    def __init__(self, request: bytes, on_reply: Callable[[HttpClient], None]) -> None:
        self.request = request
        self.on_reply = on_reply
        self.buffer = b""
        self.expected = 0  # the length of the reply being read, head included; 0: no head yet
        self.failure: str | None = None
        loop = asyncio.get_running_loop()
        self.first_reply = loop.create_future()
        self.closed = loop.create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.failure is None:
            if not self.expected:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                length = head.partition(b"\r\ncontent-length:")[2].partition(b"\r\n")[0]
                if not head.startswith(b"http/1.1 200 ") or not length.strip().isdigit():
                    self.fail(f"bad reply head {self.buffer[:end]!r}")
                    return
                self.expected = end + 4 + int(length)
            if len(self.buffer) < self.expected:
                return
            self.buffer, self.expected = self.buffer[self.expected :], 0
            if self.buffer:  # the client never pipelines: one reply per request
                self.fail(f"{len(self.buffer)} bytes after a whole reply")
                return
            if not self.first_reply.done():
                self.first_reply.set_result(None)
            self.on_reply(self)

    def fail(self, why: str) -> None:
        self.failure = why
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.first_reply.done():
            self.first_reply.set_exception(ConnectionError(f"closed before a reply: {exc!r}"))
        self.closed.set_result(None)


async def w5(port: int, meter: Window, warmup: float, duration: float, **p: Any) -> dict:
    """The threaded HTTP server: keep-alive (``--mode keepalive``: persistent
    connections, each sending its next request when the reply is in) or one connection
    per request (``--mode close``: ``Connection: close``, done when the server closes)."""
    if p["mode"] == "keepalive":
        return await _w5_keepalive(port, meter, warmup, duration, p["conns"], p["body"])
    return await _w5_close(port, meter, warmup, duration, p["conns"], p["body"])


async def _w5_keepalive(
    port: int, meter: Window, warmup: float, duration: float, conns: int, body: int
) -> dict:
    state = _State()
    request = http_request(True, body)

    def next_request(client: HttpClient) -> None:
        state.count += 1
        if not state.stopping:
            client.transport.write(request)

    clients: list[HttpClient] = []

    def connect() -> HttpClient:
        clients.append(HttpClient(request, next_request))
        return clients[-1]

    transports = await _connect_all(port, conns, connect)
    try:
        outcomes = await asyncio.gather(*(c.first_reply for c in clients), return_exceptions=True)
        refused = [o for o in outcomes if o is not None]
        if refused:
            return {"error": f"{len(refused)} connection(s) had no reply: {refused[0]!r}"}
        result = await _measure(state, meter, warmup, duration)
    finally:
        state.stopping = True
        _close_all(transports)
    failures = [c.failure for c in clients if c.failure]
    if failures:
        result["error"] = f"{len(failures)} bad repl(ies), first: {failures[0]}"
    elif any(c.closed.done() for c in clients):
        result.setdefault("error", "the server closed a keep-alive connection")
    return result


async def _w5_close(
    port: int, meter: Window, warmup: float, duration: float, conns: int, body: int
) -> dict:
    loop = asyncio.get_running_loop()
    state = _State()
    request = http_request(False, body)
    errors: list[str] = []

    async def worker() -> None:
        while not state.stopping:
            client = HttpClient(request, lambda _client: None)
            try:
                async with asyncio.timeout(5.0):
                    transport, _ = await loop.create_connection(lambda c=client: c, HOST, port)
                    try:
                        await client.first_reply
                        await client.closed  # the server closes once the reply is out
                    finally:
                        transport.close()
            except (OSError, TimeoutError) as exc:
                errors.append(repr(exc))
                await asyncio.sleep(0.01)
            else:
                if client.failure:
                    errors.append(client.failure)
                else:
                    state.count += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(conns)]
    try:
        result = await _measure(state, meter, warmup, duration)
    finally:
        state.stopping = True
        await asyncio.gather(*workers, return_exceptions=True)
    if errors:
        result["error"] = f"{len(errors)} failed request(s), first: {errors[0]}"
    return result


WORKLOADS = {"w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5}


def _params(request: dict[str, Any]) -> dict[str, Any]:
    params = dict(DEFAULTS[request["workload"]])
    params.update({k: v for k, v in request.items() if k in params and v is not None})
    if request["workload"] == "w5":
        if params["mode"] not in W5_CONNS:
            raise ValueError(f"W5 mode {params['mode']!r}: one of {', '.join(W5_CONNS)}")
        params["conns"] = params["conns"] or W5_CONNS[params["mode"]]
    return params


async def run_one(request: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by ``request`` and return its result."""
    workload = request["workload"]
    params = _params(request)
    meter = Window(request.get("server_pid"))
    try:
        result = await WORKLOADS[workload](
            request["port"],
            meter,
            request.get("warmup", 0.5),
            request.get("duration", 2.0),
            **params,
        )
    except OSError as exc:
        result = {"error": repr(exc)}
    result.update(workload=workload, params=params)
    return result


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the default loop will do, more slowly
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _setup(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as exc:  # CPU not in our cpuset: run unpinned, say so
            print(f"load: cannot pin to CPU {cpu}: {exc}", file=sys.stderr)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", nargs="?", choices=sorted(WORKLOADS))
    parser.add_argument("--worker", action="store_true", help="serve JSON requests on stdin")
    parser.add_argument("--port", type=int)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--cpu", type=int, help="pin to this CPU if possible")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--conns", type=int)
    parser.add_argument("--line", type=int)
    parser.add_argument("--idle", type=int)
    parser.add_argument("--window", type=int)
    parser.add_argument("--mode", choices=("keepalive", "close"), help="W5's connections")
    parser.add_argument("--body", type=int, help="W5: bytes of request body (0: GET)")
    args = parser.parse_args(argv)
    _setup(args.cpu)
    loop = _new_loop()
    try:
        if args.worker:
            for raw in sys.stdin:
                if raw.strip():
                    result = loop.run_until_complete(run_one(json.loads(raw)))
                    sys.stdout.write(json.dumps(result) + "\n")
                    sys.stdout.flush()
        else:
            if args.workload is None or args.port is None:
                parser.error("a workload and --port are needed (or --worker)")
            request = {k: v for k, v in vars(args).items() if v is not None}
            print(json.dumps(loop.run_until_complete(run_one(request))))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
