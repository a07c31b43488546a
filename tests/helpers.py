"""Small, deterministic building blocks for the tests.

Sockets are real TCP on 127.0.0.1 (not AF_UNIX): the point is to exercise what the kernel
does with TCP (partial sends, RST on close, refused connects), on both event loops.

Waiting is done by pumping ``asyncore.loop(count=1)`` until a predicate holds, with a
deadline (``run_until``), never by sleeping for a guessed time.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import pathlib
import select
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncore_on_asyncio import EngineStatistics

LOOPBACK = "127.0.0.1"

__all__ = [
    "LOOPBACK",
    "drain",
    "fill",
    "listener",
    "load_frozen",
    "refused_address",
    "run_until",
    "socketpair",
    "wait_readable",
]


# --------------------------------------------------------------------------- sockets


def listener(backlog: int = 16) -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a free port and listening. It is blocking;
    ``dispatcher.set_socket`` makes it non-blocking when a dispatcher adopts it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def socketpair() -> tuple[socket.socket, socket.socket]:
    """Two connected, non-blocking TCP sockets over loopback: (client side, server side)."""
    with listener(1) as lsock:
        client = socket.create_connection(lsock.getsockname(), timeout=5.0)
        try:
            lsock.settimeout(5.0)
            server, _ = lsock.accept()
        except BaseException:
            client.close()
            raise
    for sock in (client, server):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


def refused_address() -> tuple[str, int]:
    """A 127.0.0.1 address with nothing listening: connecting to it is refused.

    The port comes from binding a socket and closing it again; the kernel does not hand
    out that port to another bind(0) right away, so the window for a race is tiny."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return (LOOPBACK, port)


def fill(sock: socket.socket) -> int:
    """Write into a non-blocking socket until the kernel refuses even one more byte
    (EAGAIN), so that it is no longer writable. Returns the number of bytes written.

    The peer must not be reading meanwhile (nothing else runs here, so it is not)."""
    if sock.getblocking():
        raise ValueError("fill() needs a non-blocking socket")
    total = 0
    chunk = 1 << 16
    while chunk:
        try:
            total += sock.send(b"x" * chunk)
        except BlockingIOError:
            # A big write no longer fits; smaller ones may, until not even a byte does.
            chunk //= 2
    return total


def drain(
    sock: socket.socket,
    n: int,
    timeout: float = 5.0,
    map: dict[int, Any] | None = None,
    module: ModuleType | None = None,
) -> bytes:
    """Read exactly ``n`` bytes from non-blocking ``sock``, pumping the asyncore loop
    meanwhile (the sender may be a dispatcher that only sends while the loop runs).

    Raises AssertionError at the deadline, or if the peer closes first."""
    if sock.getblocking():
        raise ValueError("drain() needs a non-blocking socket")
    received = bytearray()
    eof = False

    def have_all() -> bool:
        nonlocal eof
        while len(received) < n and not eof:
            try:
                data = sock.recv(n - len(received))
            except BlockingIOError:
                break
            if not data:
                eof = True
            received.extend(data)
        return eof or len(received) >= n

    run_until(have_all, timeout=timeout, map=map, module=module)
    if len(received) < n:
        raise AssertionError(f"peer closed after {len(received)} of {n} bytes")
    return bytes(received)


# --------------------------------------------------------------------------- waiting


def run_until(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    map: dict[int, Any] | None = None,
    step: float = 0.05,
    module: ModuleType | None = None,
    use_poll: bool = False,
) -> None:
    """Call ``asyncore.loop(timeout=step, use_poll=use_poll, count=1, map=map)`` until
    ``predicate()`` is true. Raises AssertionError if it is still false after ``timeout`` seconds.

    ``module`` is the asyncore module to drive (default: ours; pass the frozen stdlib
    copy from ``load_frozen()`` for differential tests)."""
    if module is None:
        from asyncore_on_asyncio import asyncore as module
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not reached within {timeout} s: {predicate!r}")
        active_map = module.socket_map if map is None else map
        if active_map:
            module.loop(timeout=step, use_poll=use_poll, count=1, map=map)
        else:
            # loop() returns at once on an empty map; don't spin.
            time.sleep(step)


def wait_readable(sock: socket.socket, timeout: float = 5.0) -> None:
    """Block (outside any event loop) until ``sock`` is readable, or fail."""
    readable, _, _ = select.select([sock], [], [], timeout)
    if not readable:
        raise AssertionError(f"socket not readable within {timeout} s")


# --------------------------------------------------------------------------- frozen stdlib


_FROZEN_NAMES = {"asyncore": "_frozen_asyncore", "asynchat": "_frozen_asynchat"}


def wait_until_asleep(pid: int, timeout: float = 10.0) -> None:
    """Until process ``pid`` sleeps in the kernel (state S in ``/proc``: its loop waits);
    AssertionError after ``timeout`` seconds."""
    stat = pathlib.Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The state follows the command name, which is in parentheses and may hold spaces.
        if stat.read_text().rpartition(")")[2].split()[0] == "S":
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not go to sleep within {timeout} s")


def _load_from_dist(dist_name: str, top_level: str, as_name: str) -> ModuleType:
    """Execute ``top_level`` from the installed distribution ``dist_name`` as a new module
    named ``as_name``, whatever ``import top_level`` would find (stdlib on 3.11, or our
    shim after install())."""
    if as_name in sys.modules:
        return sys.modules[as_name]
    dist = importlib.metadata.distribution(dist_name)
    for relative in (f"{top_level}/__init__.py", f"{top_level}.py"):
        path = pathlib.Path(str(dist.locate_file(relative)))
        if path.is_file():
            break
    else:
        raise ImportError(f"{dist_name} is installed but has no {top_level} module")
    spec = importlib.util.spec_from_file_location(as_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[as_name] = module
    try:
        with warnings.catch_warnings():
            # The 3.11 stdlib copies warn on import, and so do standard-asyncore's and
            # standard-asynchat's (standard-smtpd's dependencies): they install the same
            # asyncore/asynchat files as pyasyncore/pyasynchat, with only that warning added.
            warnings.filterwarnings(
                "ignore",
                message=r"(The (asyncore|asynchat) module is deprecated"
                r"|\w*(asyncore|asynchat) was removed in Python 3\.12)",
                category=DeprecationWarning,
            )
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[as_name]
        raise
    return module


@contextlib.contextmanager
def _module_bound_as(name: str, module: ModuleType) -> Iterator[None]:
    """Make ``import name`` return ``module`` for the duration, then restore."""
    missing = object()
    previous = sys.modules.get(name, missing)
    sys.modules[name] = module
    try:
        yield
    finally:
        if previous is missing:
            del sys.modules[name]
        else:
            sys.modules[name] = previous  # type: ignore[assignment]


def load_frozen() -> tuple[ModuleType, ModuleType]:
    """The frozen stdlib asyncore/asynchat from the ``pyasyncore``/``pyasynchat``
    distributions, as modules ``_frozen_asyncore`` and ``_frozen_asynchat``.

    The frozen asynchat's ``import asyncore`` is bound to the frozen asyncore. Loaded once
    per process; both keep module-level state (``socket_map``), which conftest checks."""
    frozen_asyncore = _load_from_dist("pyasyncore", "asyncore", _FROZEN_NAMES["asyncore"])
    if _FROZEN_NAMES["asynchat"] in sys.modules:
        frozen_asynchat = sys.modules[_FROZEN_NAMES["asynchat"]]
    else:
        with _module_bound_as("asyncore", frozen_asyncore):
            frozen_asynchat = _load_from_dist("pyasynchat", "asynchat", _FROZEN_NAMES["asynchat"])
    assert frozen_asynchat.asyncore is frozen_asyncore
    return frozen_asyncore, frozen_asynchat


# --------------------------------------------------------------------------- engine state


def _source() -> Any:
    from asyncore_on_asyncio import _engine

    engine = _engine.engine_of_running_loop() or _engine.thread_engine_or_none()
    return None if engine is None else engine._source


def registrations() -> int:
    """How many fds the engine of this thread (or of the running loop) holds records of."""
    source = _source()
    return 0 if source is None else len(source)


def watched(fd: int) -> tuple[object, frozenset[str]] | None:
    """``(object, what the kernel or loop watches for it)`` of fd's record, or ``None``.

    The watches are named alike for both readiness sources: ``read``, ``write``
    (a blocked writer: optimistic writers are not watched) and ``urgent``.
    """
    from asyncore_on_asyncio._readiness import epoll, loop_fds

    source = _source()
    rec = None if source is None else source.record(fd)
    if rec is None:
        return None
    if isinstance(source, epoll.EpollSource):
        bits = {"read": select.EPOLLIN, "write": select.EPOLLOUT, "urgent": select.EPOLLPRI}
    else:
        assert isinstance(source, loop_fds.LoopFdSource)
        bits = {"read": loop_fds._READING, "write": loop_fds._WRITING, "urgent": loop_fds._URGENT}
    return rec.obj, frozenset(name for name, bit in bits.items() if rec.mask & bit)


def epoll_entry(fd: int) -> int | None:
    """The event mask the kernel holds for ``fd`` in the epoll source's own epoll (from
    ``/proc/self/fdinfo``), or ``None`` when it holds no entry for that number."""
    source = _source()
    assert source is not None
    with open(f"/proc/self/fdinfo/{source._epoll.fileno()}") as info:
        for line in info:
            fields = line.split()
            if fields[:1] == ["tfd:"] and int(fields[1]) == fd:
                return int(fields[3], 16)
    return None


def registration_calls(before: EngineStatistics, after: EngineStatistics) -> tuple[int, int, int]:
    """``(registers, modifies, unregisters)`` the readiness source made between two
    :func:`asyncore_on_asyncio.statistics` snapshots of one loop: ``epoll_ctl`` calls for
    the epoll source, ``add_/remove_reader/writer`` calls for the fallback."""
    assert before.source is not None and after.source == before.source
    return (
        after.registers - before.registers,
        after.modifies - before.modifies,
        after.unregisters - before.unregisters,
    )


def fallback_source_forced() -> bool:
    """Does this run use the per-fd fallback source (``ASYNCORE_ON_ASYNCIO_READINESS``)?"""
    import os

    from asyncore_on_asyncio._readiness import READINESS_ENV_VAR

    return os.environ.get(READINESS_ENV_VAR, "").strip().lower() == "loop-fds" or not hasattr(select, "epoll")
