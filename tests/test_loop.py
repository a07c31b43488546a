"""The ``loop(timeout, use_poll, map, count)`` contract and the persistence between calls."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from typing import Any

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio import _engine, asyncore
from tests import helpers
from tests.helpers import listener, run_until, socketpair


class Counting(asyncore.dispatcher):
    """Wants to read, never gets data: every cycle asks readable() once."""

    def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
        super().__init__(sock, map=map)
        self.asked = 0

    def readable(self) -> bool:
        self.asked += 1
        return True

    def writable(self) -> bool:
        return False


@pytest.fixture
def idle_pair() -> Any:
    a, b = socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("use_poll", [False, True])
def test_count_counts_cycles(idle_pair: Any, use_poll: bool) -> None:
    m: dict[int, Any] = {}
    d = Counting(idle_pair[0], m)
    asyncore.loop(timeout=0.01, use_poll=use_poll, map=m, count=5)
    assert d.asked == 5
    asyncore.loop(timeout=0.0, use_poll=use_poll, map=m, count=3)
    assert d.asked == 8
    d.close()


def test_idle_cycle_waits_the_full_timeout(idle_pair: Any) -> None:
    m: dict[int, Any] = {}
    d = Counting(idle_pair[0], m)
    start = time.monotonic()
    asyncore.loop(timeout=0.2, map=m, count=2)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.39, elapsed
    assert d.asked == 2
    d.close()


def test_nothing_wanted_still_waits_timeout(idle_pair: Any) -> None:
    class Silent(Counting):
        def readable(self) -> bool:
            self.asked += 1
            return False

    m: dict[int, Any] = {}
    d = Silent(idle_pair[0], m)
    start = time.monotonic()
    asyncore.loop(timeout=0.1, map=m, count=2)
    assert time.monotonic() - start >= 0.19
    assert d.asked == 2
    d.close()


@pytest.mark.loop_free
def test_returns_at_once_on_empty_map() -> None:
    start = time.monotonic()
    asyncore.loop(timeout=5, map={})
    asyncore.poll(timeout=5, map={})
    if hasattr(select, "poll"):
        asyncore.poll2(timeout=5, map={})
    else:  # Windows: 3.11's poll2() failed on select.poll, map or no map
        with pytest.raises(AttributeError):
            asyncore.poll2(timeout=5, map={})
    assert time.monotonic() - start < 1


def test_returns_when_map_empties(idle_pair: Any) -> None:
    m: dict[int, Any] = {}
    a, b = idle_pair

    class CloseOnData(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            self.recv(10)
            self.close()

    CloseOnData(a, map=m)
    b.send(b"x")
    start = time.monotonic()
    asyncore.loop(timeout=10, map=m)
    assert not m
    assert time.monotonic() - start < 5


@pytest.mark.loop_free
def test_poll_aliases() -> None:
    assert asyncore.poll3 is asyncore.poll2


def test_default_map_is_read_at_each_call(idle_pair: Any) -> None:
    original = asyncore.socket_map
    replacement: dict[int, Any] = {}
    asyncore.socket_map = replacement
    try:
        d = Counting(idle_pair[0], replacement)
        asyncore.loop(timeout=0, count=2)
        assert d.asked == 2
        d.close()
        d2 = Counting(socket.socket(), None)  # map=None -> the rebound default
        assert replacement == {d2._fileno: d2}
        d2.close()
    finally:
        asyncore.socket_map = original
    assert not asyncore.socket_map


def test_repeated_count_1_calls_keep_registrations(idle_pair: Any) -> None:
    """The GUI pattern: loop(timeout, count=1) again and again registers once, opens nothing."""
    m: dict[int, Any] = {}
    d = Counting(idle_pair[0], m)
    asyncore.loop(timeout=0, map=m, count=1)
    loop = asyncore_on_asyncio.get_event_loop()
    before = asyncore_on_asyncio.statistics()
    fds = set(os.listdir("/proc/self/fd"))
    for _ in range(200):
        asyncore.loop(timeout=0, map=m, count=1)
    after = asyncore_on_asyncio.statistics()
    assert helpers.registration_calls(before, after) == (0, 0, 0)
    assert after.polls - before.polls == 200  # one poll per call: each ran its cycle
    assert set(os.listdir("/proc/self/fd")) == fds
    assert asyncore_on_asyncio.get_event_loop() is loop
    assert d.asked == 201
    d.close()


def test_interest_change_is_diffed(idle_pair: Any) -> None:
    """Writers come and go with writable(); readers stay registered throughout."""
    m: dict[int, Any] = {}
    a, _b = idle_pair

    class Toggle(asyncore.dispatcher):
        want_write = False
        writes = 0

        def writable(self) -> bool:
            return self.want_write

        def handle_write(self) -> None:
            self.writes += 1
            self.want_write = False

    d = Toggle(a, map=m)
    asyncore.loop(timeout=0, map=m, count=1)
    assert helpers.watched(a.fileno()) == (d, {"read"})
    d.want_write = True
    asyncore.loop(timeout=1, map=m, count=1)
    assert d.writes == 1
    asyncore.loop(timeout=0, map=m, count=1)
    assert helpers.watched(a.fileno()) == (d, {"read"})
    d.close()
    assert helpers.watched(a.fileno()) is None
    assert helpers.registrations() == 0


def test_loop_inside_running_asyncio_loop_names_serve() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"asyncore_on_asyncio\.serve"):
            asyncore.loop(timeout=0, map={1: object()}, count=1)

    asyncio.run(main())


def test_map_key_may_be_an_object_with_fileno(idle_pair: Any) -> None:
    a, b = idle_pair
    got: list[bytes] = []

    class Keyed(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            got.append(self.recv(10))

    m: dict[Any, Any] = {}
    d = Keyed(map=m)
    d.socket = a
    m[a] = d  # keyed by the socket object itself
    b.send(b"hi")
    run_until(lambda: got, map=m)
    assert got == [b"hi"]
    m.clear()
    asyncore.loop(timeout=0, map=m, count=1)


def test_key_whose_fileno_is_not_an_int_yet(idle_pair: Any) -> None:
    """Skipped until fileno() gives an int, then served; nothing crashes meanwhile."""
    a, b = idle_pair

    class Late:
        ready = False

        def fileno(self) -> Any:
            return a.fileno() if self.ready else None

    got: list[bytes] = []

    class Reader(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            got.append(self.recv(10))

    m: dict[Any, Any] = {}
    key = Late()
    d = Reader(map=m)
    d.socket = a
    m[key] = d
    b.send(b"x")
    asyncore.loop(timeout=0.01, map=m, count=3)
    assert got == []
    key.ready = True
    run_until(lambda: got, map=m)
    assert got == [b"x"]
    m.clear()


def test_accepting_dispatcher_is_never_writable() -> None:
    m: dict[int, Any] = {}
    writes: list[int] = []

    class Server(asyncore.dispatcher):
        def handle_write(self) -> None:
            writes.append(1)

    s = Server(map=m)
    s.set_socket(listener())
    s.accepting = True
    asyncore.loop(timeout=0.01, map=m, count=3)
    asyncore.loop(timeout=0.01, use_poll=True, map=m, count=3)
    assert writes == []
    s.close()


def test_select_mode_order_reads_then_writes(idle_pair: Any) -> None:
    """select(): every read event of the cycle, then every write event, in map order."""
    a, b = idle_pair
    c, d = socketpair()
    trace: list[str] = []

    class Both(asyncore.dispatcher):
        def handle_read(self) -> None:
            trace.append(f"{self.name} read")
            self.recv(100)

        def handle_write(self) -> None:
            trace.append(f"{self.name} write")

    m: dict[int, Any] = {}
    x = Both(a, map=m)
    x.name = "x"
    y = Both(c, map=m)
    y.name = "y"
    b.send(b"1")
    d.send(b"2")
    run_until(lambda: _readable(a) and _readable(c), map={})
    asyncore.loop(timeout=1, map=m, count=1)
    assert trace == ["x read", "y read", "x write", "y write"]
    trace.clear()
    b.send(b"1")
    d.send(b"2")
    run_until(lambda: _readable(a) and _readable(c), map={})
    asyncore.loop(timeout=1, use_poll=True, map=m, count=1)
    if hasattr(select, "poll"):
        assert trace == ["x read", "x write", "y read", "y write"]
    else:  # Windows: use_poll=True falls back to select(), as in 3.11
        assert trace == ["x read", "y read", "x write", "y write"]
    x.close()
    y.close()
    for s in (b, c, d):
        s.close()


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


@pytest.mark.loop_free
def test_closing_loop_factory_validation() -> None:
    with pytest.raises(TypeError):
        asyncore_on_asyncio.set_loop_factory(42)  # type: ignore[arg-type]


def test_close_event_loop_makes_a_new_one() -> None:
    first = asyncore_on_asyncio.get_event_loop()
    asyncore_on_asyncio.close_event_loop()
    assert first.is_closed()
    second = asyncore_on_asyncio.get_event_loop()
    assert second is not first and not second.is_closed()


def test_a_loop_closed_by_the_program_is_replaced_at_the_next_call(idle_pair: Any) -> None:
    """Closed directly (not through close_event_loop()), between two loop() calls: the
    next call serves the map on a new loop, which its handlers see as the running one."""
    m: dict[int, Any] = {}
    seen: list[asyncio.AbstractEventLoop] = []

    class Reader(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            seen.append(asyncio.get_running_loop())
            self.recv(100)

    reader = Reader(idle_pair[0], map=m)
    idle_pair[1].send(b"x")
    asyncore.loop(timeout=5, map=m, count=1)
    first = asyncore_on_asyncio.get_event_loop()
    assert seen == [first]
    first.close()
    idle_pair[1].send(b"y")
    asyncore.loop(timeout=5, map=m, count=1)
    assert len(seen) == 2
    assert seen[1] is not first and not seen[1].is_closed()
    assert asyncore_on_asyncio.get_event_loop() is seen[1]
    reader.close()


def test_is_closed_is_asked_of_a_loop_that_overrides_it(loop_kind: str, idle_pair: Any) -> None:
    """The engine reads asyncio's own ``is_closed()`` as its flag; one a loop class
    overrides is called."""
    base: Any = asyncio.SelectorEventLoop
    if loop_kind == "uvloop":
        import uvloop

        base = uvloop.Loop

    class Retiring(base):  # type: ignore[misc, valid-type]
        retired = False

        def is_closed(self) -> bool:
            return self.retired or bool(super().is_closed())

    class Asking(Counting):
        def readable(self) -> bool:
            seen.append(asyncio.get_running_loop())
            return super().readable()

    asyncore_on_asyncio.set_loop_factory(Retiring)
    m: dict[int, Any] = {}
    seen: list[asyncio.AbstractEventLoop] = []
    reader = Asking(idle_pair[0], m)
    asyncore.loop(timeout=0, map=m, count=1)
    first = seen[0]
    assert isinstance(first, Retiring)
    first.retired = True
    asyncore.loop(timeout=0, map=m, count=1)
    assert len(seen) == 2
    assert isinstance(seen[1], Retiring) and seen[1] is not first
    assert asyncore_on_asyncio.get_event_loop() is seen[1]
    first.retired = False
    first.close()  # left open by the engine, which saw it as closed
    reader.close()


def test_env_var_chooses_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop", reason="no uvloop here (Windows)")

    asyncore_on_asyncio.set_loop_factory(None)
    monkeypatch.setenv(_engine.LOOP_ENV_VAR, "uvloop")
    assert isinstance(asyncore_on_asyncio.get_event_loop(), uvloop.Loop)
    asyncore_on_asyncio.close_event_loop()
    monkeypatch.setenv(_engine.LOOP_ENV_VAR, "asyncio")
    assert not isinstance(asyncore_on_asyncio.get_event_loop(), uvloop.Loop)
    asyncore_on_asyncio.close_event_loop()
    monkeypatch.setenv(_engine.LOOP_ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="expected 'asyncio' or 'uvloop'"):
        asyncore_on_asyncio.get_event_loop()


@pytest.mark.loop_free
def test_missing_uvloop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    asyncore_on_asyncio.set_loop_factory(None)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes "import uvloop" fail
    monkeypatch.setenv(_engine.LOOP_ENV_VAR, "uvloop")
    with pytest.raises(RuntimeError, match=r"install it with: pip install uvloop "):
        asyncore_on_asyncio.get_event_loop()


@pytest.mark.parametrize("use_poll", [False, True])
def test_nested_loop_from_a_handler(use_poll: bool) -> None:
    """3.11 allowed loop()/poll() inside a handler; it runs on a private poll() here."""
    a, b = socketpair()
    c, d = socketpair()
    trace: list[str] = []

    class Inner(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            trace.append("inner read " + self.recv(10).decode())

    class Outer(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            trace.append("outer read " + self.recv(10).decode())
            d.send(b"2")
            _wait_readable(c)
            asyncore.loop(timeout=1, use_poll=use_poll, map=inner_map, count=1)
            trace.append("outer done")

    inner_map: dict[int, Any] = {}
    outer_map: dict[int, Any] = {}
    Inner(c, map=inner_map)
    outer = Outer(a, map=outer_map)
    b.send(b"1")
    run_until(lambda: "outer done" in trace, map=outer_map)
    assert trace == ["outer read 1", "inner read 2", "outer done"]
    outer.close()
    asyncore.close_all(inner_map)
    b.close()
    d.close()


def _wait_readable(sock: socket.socket) -> None:
    import select

    select.select([sock], [], [], 5)


@pytest.mark.parametrize("name", ["readable", "writable"])
@pytest.mark.parametrize("replacement", ["function", "method of another object", "method bound to it"])
def test_predicate_replaced_on_the_instance_is_asked_every_cycle(idle_pair: Any, name: str, replacement: str) -> None:
    """Dispatchers with the stock predicates are scanned incrementally, unless an instance
    carries its own readable()/writable(): then, as in 3.11, it is asked every cycle,
    also while another dispatcher keeps every cycle busy.  The replacement may be a plain
    function, a bound method of another object, or another function bound to the object;
    the other predicate stays the stock one."""
    import types

    m: dict[int, Any] = {}
    busy_a, busy_b = socketpair()

    class Busy(asyncore.dispatcher):  # stock predicates: always writable, so never idle
        def handle_read(self) -> None:
            self.recv(100)

        def handle_write(self) -> None:
            pass

    Busy(busy_a, map=m)
    quiet = asyncore.dispatcher(idle_pair[0], map=m)
    calls: list[int] = []
    answer = name == "readable"  # an idle writer would not be idle

    def predicate_of(obj: Any) -> bool:
        calls.append(1)
        return answer

    class Other:
        def predicate(self) -> bool:
            return predicate_of(None)

    if replacement == "function":
        setattr(quiet, name, lambda: predicate_of(quiet))
    elif replacement == "method of another object":
        setattr(quiet, name, Other().predicate)
    else:
        setattr(quiet, name, types.MethodType(predicate_of, quiet))
    for _ in range(5):
        busy_b.send(b"x")
        _wait_readable(busy_a)
        asyncore.loop(timeout=5, map=m, count=1)
    assert len(calls) == 5
    asyncore.close_all(m)
    busy_b.close()


def test_classes_made_at_run_time_are_not_kept_alive(idle_pair: Any) -> None:
    """The per-class facts the engine caches (stock predicates? urgent data observed?)
    do not keep a class alive: a program that makes handler classes on the fly does not
    accumulate them, and a new class never inherits a dead one's answers."""
    import gc
    import weakref

    refs = []
    for index in range(3):
        writes = index == 1  # a class with its own writable() in the middle
        namespace: dict[str, Any] = {"handle_read": lambda self: self.recv(100)}
        if writes:
            namespace["writable"] = lambda self: False
        cls = type(f"Made{index}", (asyncore.dispatcher,), namespace)
        m: dict[int, Any] = {}
        d = cls(idle_pair[0], map=m)
        asyncore.loop(timeout=0.01, map=m, count=1)
        assert helpers.watched(idle_pair[0].fileno()) == (d, {"read"})
        d.del_channel()
        refs.append(weakref.ref(cls))
        del cls, d, namespace
        gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


@pytest.mark.parametrize("use_poll", [False, True])
def test_changing_answers_of_user_predicates_are_applied_every_cycle(use_poll: bool) -> None:
    """With user-defined predicates every object is asked every cycle; when the map holds
    the same objects as before, only the answers that changed touch a registration.
    Whatever the mix of changes, each cycle must leave exactly what the answers say:
    a reader for every readable() object, events only for what was asked, none lost."""
    import random

    rng = random.Random(7)
    m: dict[int, Any] = {}
    pairs = [socketpair() for _ in range(40)]
    calls: dict[int, list[str]] = {}

    class Switching(asyncore.dispatcher):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock, map=m)
            self.wants_read = False
            self.wants_write = False

        def readable(self) -> bool:
            return self.wants_read

        def writable(self) -> bool:
            return self.wants_write

        def handle_read(self) -> None:
            calls.setdefault(self._fileno or -1, []).append("read")
            self.recv(100)

        def handle_write(self) -> None:
            calls.setdefault(self._fileno or -1, []).append("write")

    dispatchers = [Switching(server) for _, server in pairs]
    for client, _ in pairs:
        client.send(b"x")  # every socket is readable and writable from now on
    for _, server in pairs:
        _wait_readable(server)
    try:
        for _ in range(60):
            for d in rng.sample(dispatchers, 6):
                d.wants_read = rng.random() < 0.5
                d.wants_write = rng.random() < 0.5
            calls.clear()
            asyncore.loop(timeout=0.5, use_poll=use_poll, map=m, count=1)
            for d in dispatchers:
                fd = d._fileno
                assert fd is not None
                held = helpers.watched(fd)
                if d.wants_read or d.wants_write:
                    assert held is not None and held[0] is d
                    assert ("read" in held[1]) is d.wants_read
                else:
                    assert held is None or held[0] is not d
                got = calls.get(fd, [])
                # Readable and writable at once: asked for it, it is dispatched.
                assert ("write" in got) is d.wants_write
                assert ("read" in got) is d.wants_read
                if d.wants_read:
                    pairs[dispatchers.index(d)][0].send(b"x")  # readable again next time
                    _wait_readable(d.socket)
    finally:
        asyncore.close_all(m)
        for client, _ in pairs:
            client.close()


@pytest.mark.parametrize("use_poll", [False, True])
def test_the_engine_never_reads_a_dispatchers_dict(use_poll: bool) -> None:
    """On CPython 3.12 reading ``obj.__dict__`` makes every later attribute access on the
    object about twice as slow, the handlers' own included; the engine asks whether a
    method was replaced on an instance by attribute lookup instead."""
    from asyncore_on_asyncio import asynchat

    reads: list[str] = []

    class Tells:
        @property  # type: ignore[misc]
        def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
            reads.append(type(self).__name__)
            real: Any = vars(asyncore.dispatcher)["__dict__"]  # the instance dict's own descriptor
            return real.__get__(self)  # type: ignore[no-any-return]

    class Chat(Tells, asynchat.async_chat):
        coalesce_pushes = True  # asks whether send()/initiate_send() were replaced

        def collect_incoming_data(self, data: bytes) -> None:
            self.got = data

        def found_terminator(self) -> None:
            self.push(b"ok\n")

    class Own(Tells, asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            self.recv(100)

    m: dict[int, Any] = {}
    a, peer = socketpair()
    b, other = socketpair()
    chat = Chat(a, m)
    chat.set_terminator(b"\n")
    Own(b, m)
    peer.sendall(b"hi\n")
    other.sendall(b"x")
    run_until(lambda: getattr(chat, "got", None) == b"hi", map=m, use_poll=use_poll)
    asyncore.loop(timeout=0.05, use_poll=use_poll, map=m, count=3)
    asyncore.close_all(m)
    peer.close()
    other.close()
    assert reads == []
