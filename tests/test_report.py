"""The handler report and slow-handler warnings (``enable_report``, ``--report``).

A scripted scenario with known counts checks every number of the report, on both loops
and with ``select()`` and ``poll()`` dispatch; the JSON is checked against its documented
shape; subprocesses check that it is written on every kind of exit, with the program's
own exit status kept.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio import _driver, _report, asyncore
from tests import helpers
from tests.helpers import listener, refused_address, socketpair

THRESHOLD = 0.05
MODULE = __name__


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[_report.Collector]:
    asyncore_on_asyncio.enable_report(tmp_path / "report.json", slow_handler=THRESHOLD)
    found = _report.collector()
    assert found is not None
    try:
        yield found
    finally:
        _report.disable()


def pump(predicate: Callable[[], object], use_poll: bool, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached: {predicate!r}"
        asyncore.loop(timeout=0.02, count=1, use_poll=use_poll)


# --------------------------------------------------------------------------- the scenario


class Listener(asyncore.dispatcher):
    def __init__(self) -> None:
        super().__init__()
        self.set_socket(listener())
        self.accepting = True
        self.readers: list[Reader] = []

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.readers.append(Reader(sock))


class Reader(asyncore.dispatcher):
    """Reads; ``slow`` makes it sleep past the threshold, ``boom`` makes it raise."""

    got: list[bytes]

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.got = []

    def writable(self) -> bool:  # stock readable(); writable() is stock's answer,
        return False  # but its own method: this class forces full scans too

    def handle_read(self) -> None:
        data = self.recv(100)
        if data == b"slow":
            time.sleep(THRESHOLD * 1.5)
        if data == b"boom":
            raise ValueError("boom")
        if data:
            self.got.append(data)

    def handle_close(self) -> None:
        self.close()


class Dialer(asyncore.dispatcher):
    """Connects, then wants nothing: one connect (on a write event)."""

    connected_at = 0

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return not self.connected

    def handle_connect(self) -> None:
        self.connected_at += 1


class Refused(asyncore.dispatcher):
    """Connects to a port nobody listens on: the connect fails in its first event."""

    def writable(self) -> bool:
        return not self.connected


class Writer(asyncore.dispatcher):
    """Sends each queued message on its own write event."""

    def __init__(self, sock: socket.socket, messages: list[bytes]) -> None:
        super().__init__(sock)
        self.queue = list(messages)

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return bool(self.queue)

    def handle_write(self) -> None:
        self.send(self.queue.pop(0))


def name(cls: type) -> str:
    return f"{MODULE}.{cls.__qualname__}"


def by_class(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["class"]: entry for entry in data["classes"]}


def scenario(use_poll: bool) -> None:
    lst = Listener()
    address = lst.socket.getsockname()
    dialer = Dialer()
    dialer.create_socket()
    dialer.connect(address)
    pump(lambda: dialer.connected_at == 1 and len(lst.readers) == 1, use_poll)
    refused = Refused()
    refused.create_socket()
    refused.connect(refused_address())
    pump(lambda: refused._fileno is None, use_poll)  # handle_error() closed it
    client1 = socket.create_connection(address, timeout=5)
    client2 = socket.create_connection(address, timeout=5)
    pump(lambda: len(lst.readers) == 3, use_poll)
    first = next(r for r in lst.readers if r.addr == client1.getsockname())
    second = next(r for r in lst.readers if r.addr == client2.getsockname())
    client1.sendall(b"hello")
    pump(lambda: first.got == [b"hello"], use_poll)
    client1.sendall(b"slow")
    pump(lambda: first.got == [b"hello", b"slow"], use_poll)
    client2.sendall(b"boom")
    pump(lambda: second._fileno is None, use_poll)  # handle_error closed it
    client1.close()
    pump(lambda: first._fileno is None, use_poll)
    mine, theirs = socketpair()
    writer = Writer(mine, [b"one", b"two"])
    received = bytearray()

    def got_both() -> bool:
        try:
            received.extend(theirs.recv(100))
        except BlockingIOError:
            pass
        return bytes(received) == b"onetwo"

    pump(got_both, use_poll)
    # Nothing more to do; the forced scans' shares are sampled, on a budget: long
    # enough for the sampling to see the Writer.
    for _ in range(60):
        asyncore.loop(timeout=0.001, count=1, use_poll=use_poll)
    writer.close()
    theirs.close()
    client2.close()
    asyncore.close_all()


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_report_counts_the_scenario(
    collector: _report.Collector, use_poll: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncore_on_asyncio")
    scenario(use_poll)
    data = collector.data()
    check_shape(data)
    classes = by_class(data)
    assert set(classes) == {name(Listener), name(Reader), name(Dialer), name(Writer), name(Refused)}
    events = {key: entry["events"] for key, entry in classes.items()}
    zero = dict.fromkeys(_report.KINDS, 0)
    assert events[name(Listener)] == {**zero, "accept": 3}
    # hello, slow, boom, and the end of stream; boom's and the EOF's handlers closed theirs
    assert events[name(Reader)] == {**zero, "read": 4, "close": 2, "error": 1}
    assert events[name(Dialer)] == {**zero, "write": 1, "connect": 1}
    assert events[name(Writer)] == {**zero, "write": 2}
    # The refused connect: an error and a close in its one event, a read with select()
    # (hang-up and error are readable, and reads go first); poll() reports it in one call.
    refused = events[name(Refused)]
    assert {k: refused[k] for k in ("connect", "error", "close", "accept", "expt")} == {
        "connect": 1, "error": 1, "close": 1, "accept": 0, "expt": 0,
    }  # fmt: skip
    if not use_poll:
        assert (refused["read"], refused["write"]) == (1, 0)
    assert classes[name(Refused)]["errors"] == {"ConnectionRefusedError": 1}
    assert classes[name(Refused)]["handler_s"]["calls"] == 1
    reader = classes[name(Reader)]
    assert (reader["instances"], reader["peak"]) == (3, 3)
    assert reader["errors"] == {"ValueError": 1}
    assert reader["slow"] == 1
    assert reader["cycles"] == 4  # one per read event: they came one at a time
    assert reader["handler_s"]["calls"] == 4
    assert reader["handler_s"]["max"] >= THRESHOLD * 1.5
    assert reader["handler_s"]["p50"] < THRESHOLD <= reader["handler_s"]["p99"] <= reader["handler_s"]["max"]
    assert reader["handler_s"]["total"] >= reader["handler_s"]["max"]
    assert classes[name(Listener)]["cycles"] == classes[name(Listener)]["handler_s"]["calls"]
    for key in (name(Listener), name(Dialer), name(Writer), name(Refused)):
        assert (classes[key]["instances"], classes[key]["peak"]) == (1, 1)
        assert classes[key]["slow"] == 0
    assert classes[name(Listener)]["predicates"] == {"readable": "stock", "writable": "stock"}
    assert classes[name(Reader)]["predicates"] == {"readable": "stock", "writable": "own"}
    assert classes[name(Dialer)]["predicates"] == {"readable": "own", "writable": "own"}
    assert classes[name(Listener)]["forced_scans"] == 0
    assert classes[name(Listener)]["forced_scan_s"] == 0.0
    for key in (name(Reader), name(Dialer), name(Writer)):
        assert classes[key]["forced_scans"] > 0 and classes[key]["forced_scan_s"] > 0, key
    # Reader is the one to migrate first: it blocked the loop.
    assert data["classes"][0]["class"] == name(Reader)
    assert data["migrate_first"]["class"] == name(Reader)
    assert "blocked the loop" in data["migrate_first"]["reason"]
    assert data["cycles"] >= max(entry["cycles"] for entry in data["classes"])
    warnings = [r for r in caplog.records if r.name == "asyncore_on_asyncio"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert f"{name(Reader)}.handle_read_event took" in message
    assert " ms;" in message and "waited" in message


def test_text_report(collector: _report.Collector) -> None:
    scenario(False)
    text = _report.render_text(collector.data())
    lines = text.splitlines()
    assert lines[0].startswith("asyncore_on_asyncio report: 5 dispatcher class(es)")
    assert lines[1].startswith(f"migrate first: {name(Reader)}: 1 of its handler calls blocked")
    header = lines[3].split()
    assert header[:4] == ["class", "inst", "peak", "cycles"]
    rows = [line.split() for line in lines[4:9]]
    assert rows[0][0] == name(Reader)
    assert dict(zip(header, rows[0]))["error"] == "1"
    assert dict(zip(header, rows[0]))["predicates"] == "own"  # "own writable": two words
    # Aligned: every number column ends at the same place on every row.
    ends = {line.index("  cycles") + len("  cycles") for line in lines[3:4]}
    assert all(len(line) >= min(ends) for line in lines[3:9])
    assert f"handle_error in {name(Reader)}: ValueError x1" in lines


def test_predicates_replaced_on_objects_are_reported(collector: _report.Collector) -> None:
    """A stock class whose objects replace writable() on themselves forces full scans as a
    class of its own would: the report says "instance" and gives it the scans' time."""
    a, b = socketpair()
    m: dict[int, Any] = {}
    plain = asyncore.dispatcher(a, map=m)
    plain.writable = lambda: False  # type: ignore[method-assign]
    other = asyncore.dispatcher(b, map=m)
    try:
        asyncore.loop(timeout=0, map=m, count=3)
    finally:
        plain.close()
        other.close()
    stock = f"{asyncore.dispatcher.__module__}.dispatcher"
    entry = by_class(collector.data())[stock]
    assert entry["predicates"] == {"readable": "stock", "writable": "instance"}
    assert entry["forced_scans"] == 3 and entry["forced_scan_s"] > 0
    rows = [line for line in _report.render_text(collector.data()).splitlines() if line.startswith(stock + " ")]
    assert len(rows) == 1 and "  instance writable  " in rows[0]


def test_a_class_that_arrives_later_gets_its_share_of_the_scans(
    collector: _report.Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the time budget out of reach, only a class's first object entering a map makes
    the scans sample their shares again: a class that arrives later is not missed."""
    monkeypatch.setattr(_report, "_SAMPLING_BUDGET", 1e12)
    monkeypatch.setattr(_report, "_RESIZED_BUDGET", 1e12)

    class Early(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

    class Late(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

    m: dict[int, Any] = {}
    a, b = socketpair()
    early = Early(a, map=m)
    try:
        asyncore.loop(timeout=0, map=m, count=2)
        late = Late(b, map=m)
        asyncore.loop(timeout=0, map=m, count=3)
        late.close()
    finally:
        early.close()
    classes = by_class(collector.data())
    assert classes[name(Early)]["forced_scans"] == 5
    assert classes[name(Late)]["forced_scans"] == 3 and classes[name(Late)]["forced_scan_s"] > 0


def test_slow_warnings_are_rate_limited(
    collector: _report.Collector, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncore_on_asyncio")
    mine, theirs = socketpair()
    reader = Reader(mine)
    for round in range(3):
        theirs.send(b"slow")
        pump(lambda n=round: len(reader.got) == n + 1, False)
    assert [r.getMessage().count("took") for r in caplog.records] == [1]
    monkeypatch.setattr(_report, "WARNING_INTERVAL", 0.0)
    theirs.send(b"slow")
    pump(lambda: len(reader.got) == 4, False)
    assert len(caplog.records) == 2
    assert "(2 more since the last warning)" in caplog.records[1].getMessage()
    assert by_class(collector.data())[name(Reader)]["slow"] == 4
    reader.close()
    theirs.close()


def test_no_warning_without_threshold(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    asyncore_on_asyncio.enable_report(tmp_path / "r.txt", slow_handler=None)
    try:
        mine, theirs = socketpair()
        reader = Reader(mine)
        theirs.send(b"slow")
        pump(lambda: reader.got == [b"slow"], False)
        reader.close()
        theirs.close()
        assert not caplog.records
        found = _report.collector()
        assert found is not None and by_class(found.data())[name(Reader)]["slow"] == 0
    finally:
        _report.disable()


def test_off_by_default_and_off_again() -> None:
    from asyncore_on_asyncio import _driver, _engine, _handlers

    assert _report.collector() is None
    assert (_driver.instruments, _engine.channel_hook, _handlers.error_hook) == (None, None, None)
    asyncore_on_asyncio.enable_report(os.devnull)
    assert _driver.instruments is _report.collector()
    _report.disable()
    assert (_driver.instruments, _engine.channel_hook, _handlers.error_hook) == (None, None, None)


def test_bad_threshold() -> None:
    with pytest.raises(ValueError, match="slow_handler"):
        asyncore_on_asyncio.enable_report(slow_handler=-1)
    assert _report.collector() is None


def test_histogram_is_bounded_and_close() -> None:
    hist = _report.Histogram()
    for i in range(1, 10001):
        hist.add(i * 1e-5)  # 10 µs .. 100 ms, uniform
    assert len(hist.counts) == _report.Histogram.BUCKETS
    assert hist.quantile(0.5) == pytest.approx(0.05, rel=0.06)
    assert hist.quantile(0.99) == pytest.approx(0.099, rel=0.06)
    assert hist.max == pytest.approx(0.1)
    hist.add(1e9)  # beyond the last bucket: counted there
    assert len(hist.counts) == _report.Histogram.BUCKETS and hist.max == 1e9


def test_report_of_nothing() -> None:
    data = _report.Collector(0.1).data()
    check_shape(data)
    assert data["migrate_first"] is None
    assert "no dispatcher was created or dispatched" in _report.render_text(data)


# --------------------------------------------------------------------------- the JSON shape

EVENTS = set(_report.KINDS)


def check_shape(data: dict[str, Any]) -> None:
    """The shape documented in ``_report``'s docstring, exactly."""
    assert set(data) == {
        "version",
        "elapsed_s",
        "cycles",
        "slow_handler_s",
        "forced_scans_unattributed_s",
        "migrate_first",
        "classes",
    }
    assert data["version"] == 1
    assert isinstance(data["elapsed_s"], float) and isinstance(data["cycles"], int)
    assert data["slow_handler_s"] is None or isinstance(data["slow_handler_s"], float)
    assert isinstance(data["forced_scans_unattributed_s"], float)
    first = data["migrate_first"]
    assert first is None or (set(first) == {"class", "reason"} and all(isinstance(v, str) for v in first.values()))
    assert isinstance(data["classes"], list)
    for entry in data["classes"]:
        assert set(entry) == {
            "class", "instances", "peak", "cycles", "events", "errors", "predicates",
            "forced_scans", "forced_scan_s", "handler_s", "slow", "cost_s",
        }  # fmt: skip
        assert isinstance(entry["class"], str)
        for key in ("instances", "peak", "cycles", "forced_scans", "slow"):
            assert isinstance(entry[key], int) and entry[key] >= 0, key
        assert set(entry["events"]) == EVENTS and all(isinstance(v, int) for v in entry["events"].values())
        assert all(isinstance(k, str) and isinstance(v, int) for k, v in entry["errors"].items())
        assert sum(entry["errors"].values()) == entry["events"]["error"]
        assert set(entry["predicates"]) == {"readable", "writable"}
        assert set(entry["predicates"].values()) <= {"stock", "own", "instance"}
        assert set(entry["handler_s"]) == {"calls", "total", "p50", "p99", "max"}
        hist = entry["handler_s"]
        assert isinstance(hist["calls"], int)
        assert all(isinstance(hist[k], float) for k in ("total", "p50", "p99", "max"))
        assert hist["p50"] <= hist["p99"] <= hist["max"] <= hist["total"] + 1e-12
        assert entry["cost_s"] == pytest.approx(hist["total"] + entry["forced_scan_s"])
    if first is not None:
        assert first["class"] == data["classes"][0]["class"]


# --------------------------------------------------------------------------- exits

PROGRAM = textwrap.dedent(
    """
    import os, signal, socket, sys
    import asyncore

    how = sys.argv[1]

    class Echo(asyncore.dispatcher):
        def handle_read(self):
            data = self.recv(100)
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            if how == "interrupt":
                raise KeyboardInterrupt
            if how == "exit":
                sys.exit(3)
            if how == "crash":
                raise asyncore.ExitNow("crashed here")
            self.close()

    if how != "nothing":
        mine, theirs = socket.socketpair()
        echo = Echo(mine)
        theirs.send(b"x")
        asyncore.loop(timeout=0.1, count=20)
        theirs.close()
        asyncore.close_all()
    print("ended", how)
    """
)

EXITS = {
    # how: (exit status, program output)
    "end": (0, "ended end\n"),
    "nothing": (0, "ended nothing\n"),
    "exit": (3, ""),
    "interrupt": (-signal.SIGINT, ""),
    "crash": (1, ""),
    "sigterm": (-signal.SIGTERM, ""),
}


def run_program(
    tmp_path: Path, how: str, runner_args: list[str], env: dict[str, str] | None = None, install: bool = False
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "legacy.py"
    code = PROGRAM
    if install:
        code = "import asyncore_on_asyncio; asyncore_on_asyncio.install()\n" + code
    script.write_text(code)
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith("ASYNCORE_ON_ASYNCIO_") or k.endswith("READINESS")
    }
    full_env.update(env or {})
    command = [str(script), how] if install else ["-m", "asyncore_on_asyncio", *runner_args, str(script), how]
    return subprocess.run(
        [sys.executable, "-W", "error", *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=full_env,
    )


@pytest.mark.parametrize("how", list(EXITS))
def test_report_written_on_every_exit(tmp_path: Path, loop_kind: str, how: str) -> None:
    result = run_program(tmp_path, how, ["--loop", loop_kind, "--report"])
    status, output = EXITS[how]
    assert result.returncode == status, result.stderr
    assert result.stdout == output
    assert result.stderr.count("asyncore_on_asyncio report:") == 1, result.stderr
    if how == "nothing":
        assert "no dispatcher was created or dispatched" in result.stderr
    else:
        assert "\n__main__.Echo " in result.stderr
    if how == "crash":  # the program's own traceback is still there, before the report
        assert result.stderr.index("ExitNow: crashed here") < result.stderr.index("asyncore_on_asyncio report:")
    if how == "interrupt":
        assert "KeyboardInterrupt" in result.stderr


def test_program_that_handles_sigterm_keeps_its_handler(tmp_path: Path, loop_kind: str) -> None:
    prelude = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
    script = tmp_path / "legacy.py"
    script.write_text(prelude + PROGRAM)
    result = subprocess.run(
        [sys.executable, "-m", "asyncore_on_asyncio", "--loop", loop_kind, "--report", str(script), "sigterm"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 7, result.stderr
    assert result.stderr.count("asyncore_on_asyncio report:") == 1


@pytest.mark.parametrize("target", ["report.json", "report.txt"])
def test_runner_report_file(tmp_path: Path, loop_kind: str, target: str) -> None:
    result = run_program(tmp_path, "end", ["--loop", loop_kind, f"--report={target}", "--slow-handler", "0"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "ended end\n", "")
    text = (tmp_path / target).read_text()
    if target.endswith(".json"):
        data = json.loads(text)
        check_shape(data)
        assert data["slow_handler_s"] is None
        assert [entry["class"] for entry in data["classes"]] == ["__main__.Echo"]
        assert data["classes"][0]["events"]["read"] == 1
        assert data["classes"][0]["events"]["close"] == 1
    else:
        assert text.startswith("asyncore_on_asyncio report: 1 dispatcher class(es)")
        assert "slow-handler threshold off" in text.splitlines()[0]


def test_environment_turns_it_on_through_install(tmp_path: Path, loop_kind: str) -> None:
    env = {
        "ASYNCORE_ON_ASYNCIO_REPORT": str(tmp_path / "env.json"),
        "ASYNCORE_ON_ASYNCIO_SLOW_HANDLER": "0.25",
        "ASYNCORE_ON_ASYNCIO_LOOP": loop_kind,
    }
    result = run_program(tmp_path, "end", [], env=env, install=True)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    data = json.loads((tmp_path / "env.json").read_text())
    check_shape(data)
    assert data["slow_handler_s"] == 0.25
    assert data["classes"][0]["class"] == "__main__.Echo"


def test_runner_options_are_not_the_programs(tmp_path: Path) -> None:
    """``--report`` never takes the script for its file; after the script it is the program's."""
    script = tmp_path / "show.py"
    script.write_text("import sys; print(sys.argv[1:])\n")
    result = subprocess.run(
        [sys.executable, "-m", "asyncore_on_asyncio", "--report", str(script), "--report", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['--report', 'x']\n"
    assert "no dispatcher was created or dispatched" in result.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "asyncore_on_asyncio", "--report", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ASYNCORE_ON_ASYNCIO_SLOW_HANDLER": "fast"},
    )
    assert bad.returncode == 2 and "ASYNCORE_ON_ASYNCIO_SLOW_HANDLER='fast'" in bad.stderr


@pytest.mark.loop_free
def test_differential_tests_pass_with_the_report_on() -> None:
    """3.11's order and error contract, through the timed dispatch: the differential tests
    (ordered callback traces compared with the frozen stdlib copy) run with it on, on both
    loops (the inner session parametrises them)."""
    root = Path(__file__).resolve().parent.parent
    files = [f"tests/differential/{name}.py" for name in ("test_loop", "test_sockets", "test_files", "test_asynchat")]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "tests.report_plugin", "-p", "no:cacheprovider", *files],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert result.returncode == 0, result.stdout[-3000:]


SERVER = textwrap.dedent(
    """
    import asyncore

    class Idle(asyncore.dispatcher):
        pass

    server = Idle()
    server.create_socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    print("ready", flush=True)
    asyncore.loop(timeout=30)
    """
)


def test_sigterm_while_waiting(tmp_path: Path, loop_kind: str) -> None:
    """A server killed while its loop waits: the report, then death by SIGTERM."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    with subprocess.Popen(
        [sys.executable, "-m", "asyncore_on_asyncio", "--loop", loop_kind, "--report", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        helpers.wait_until_asleep(proc.pid)  # in the loop's wait
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, err
    assert err.count("asyncore_on_asyncio report:") == 1
    assert "\n__main__.Idle " in err


class MapReader(asyncore.dispatcher):
    def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
        super().__init__(sock, map)
        self.reads = 0

    def handle_read(self) -> None:
        if self.recv(100):
            self.reads += 1


def test_threads_count_into_one_report(collector: _report.Collector) -> None:
    """Loops on several threads at once: every event is counted once."""
    import threading

    rounds, threads = 200, 3
    failures: list[BaseException] = []

    def serve_one() -> None:
        map: dict[int, Any] = {}
        mine, theirs = socketpair()
        reader = MapReader(mine, map)
        try:
            for n in range(rounds):
                theirs.send(b"x")
                deadline = time.monotonic() + 5
                while reader.reads <= n:
                    assert time.monotonic() < deadline
                    asyncore.loop(timeout=0.05, count=1, map=map)
        except BaseException as exc:
            failures.append(exc)
        finally:
            reader.close()
            theirs.close()
            asyncore_on_asyncio.close_event_loop()

    workers = [threading.Thread(target=serve_one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not failures
    entry = by_class(collector.data())[name(MapReader)]
    assert entry["events"]["read"] == rounds * threads
    # Its stock writable() is true: every cycle also had a write event (select(): its own call).
    assert entry["handler_s"]["calls"] == rounds * threads + entry["events"]["write"]
    assert (entry["instances"], entry["cycles"]) == (threads, rounds * threads)


class Nester(asyncore.dispatcher):
    """Runs a nested ``loop()`` over ``inner`` from its handler, then closes itself."""

    def __init__(self, sock: socket.socket, inner: dict[int, Any]) -> None:
        super().__init__(sock)
        self.inner = inner

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        self.recv(100)
        asyncore.loop(timeout=1, count=1, map=self.inner)
        time.sleep(THRESHOLD * 1.5)  # its warning names the outer cycle's waiters
        self.close()  # after the nested cycle: still its own event, a close


def test_nested_loop(collector: _report.Collector, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asyncore_on_asyncio")
    inner: dict[int, Any] = {}
    mine, theirs = socketpair()
    inner_mine, inner_theirs = socketpair()
    peer_mine, peer_theirs = socketpair()
    nester = Nester(mine, inner)
    peer = Reader(peer_mine)  # ready in the same outer cycle
    reader = MapReader(inner_mine, inner)
    for sock in (inner_theirs, peer_theirs, theirs):
        sock.send(b"x")
    try:
        pump(lambda: nester._fileno is None, False)
    finally:
        reader.close()
        peer.close()
        for sock in (theirs, inner_theirs, peer_theirs):
            sock.close()
    [warning] = caplog.records
    assert f"{name(Nester)}.handle_read_event took" in warning.getMessage()
    assert "1 other ready dispatcher(s) waited (1 other(s) in its map)" in warning.getMessage()
    classes = by_class(collector.data())
    assert classes[name(Nester)]["events"] == {**dict.fromkeys(_report.KINDS, 0), "read": 1, "close": 1}
    assert classes[name(MapReader)]["events"]["read"] == 1
    assert classes[name(Nester)]["cycles"] == 1
    assert classes[name(MapReader)]["cycles"] == 1
    assert classes[name(Nester)]["handler_s"]["total"] >= classes[name(MapReader)]["handler_s"]["max"]


class NestingMapReader(MapReader):
    """A MapReader (stock writable(): true) whose first read runs a nested ``loop()``."""

    inner: dict[int, Any] | None = None

    def handle_read(self) -> None:
        super().handle_read()
        inner, self.inner = self.inner, None
        if inner is not None:
            asyncore.loop(timeout=1, count=1, map=inner)


def test_a_nested_cycle_between_two_handlers_of_one_cycle_counts_once_each() -> None:
    """One outer cycle reads two objects of a class (a handler is recorded when it
    returns); the second one's read runs a nested loop whose cycle dispatches a third
    object of that class, recorded between the two: two cycles for the class, not three
    (counting by comparing cycle ids counted the outer one again after the nested one)."""
    collector = _report.Collector(slow_handler=None)
    inner: dict[int, Any] = {}
    outer: dict[int, Any] = {}
    pairs = [socketpair() for _ in range(3)]
    first = NestingMapReader(pairs[0][0], outer)
    nester = NestingMapReader(pairs[1][0], outer)
    nester.inner = inner
    nested = NestingMapReader(pairs[2][0], inner)
    for _, theirs in pairs:
        theirs.send(b"x")
    previous = _driver.instruments
    _driver.instruments = collector
    try:
        asyncore.loop(timeout=1, count=1, map=outer)
    finally:
        _driver.instruments = previous
        for obj in (first, nester, nested):
            obj.close()
        for _, theirs in pairs:
            theirs.close()
    entry = by_class(collector.data())[name(NestingMapReader)]
    assert entry["events"]["read"] == 3
    assert entry["cycles"] == 2, entry


def test_host_loop_stepping_keeps_the_twins(
    collector: _report.Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``loop(timeout=0, count=1)`` again and again: the timed scan is made once per map,
    so its sampling budget holds (a new one per call would walk the map at every call)."""
    samplings: list[int] = []
    forcing = _report.Collector._forcing

    def counting(self: _report.Collector, map: dict[Any, Any]) -> Any:
        samplings.append(len(map))
        return forcing(self, map)

    monkeypatch.setattr(_report.Collector, "_forcing", counting)
    made: list[object] = []
    scan_of = _report.Collector.scan_of

    def recording(self: _report.Collector, scanner: Any) -> Any:
        made.append(scanner)
        return scan_of(self, scanner)

    monkeypatch.setattr(_report.Collector, "scan_of", recording)
    mine, theirs = socketpair()
    reader = Reader(mine)  # its own writable(): every scan is a forced one
    try:
        for _ in range(500):
            asyncore.loop(timeout=0, count=1)
    finally:
        reader.close()
        theirs.close()
    assert len(made) == 1
    assert 1 <= len(samplings) < 100
    assert by_class(collector.data())[name(Reader)]["forced_scans"] >= 500
