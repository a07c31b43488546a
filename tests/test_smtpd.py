"""smtpd, the commonest asyncore program, on our modules.

On 3.12+ ``smtpd`` comes from PyPI's ``standard-smtpd``, whose dependencies
(``standard-asyncore``/``standard-asynchat``) install the frozen copies as top-level
``asyncore``/``asynchat``; on 3.11 it is the standard library's.  Either way, after
``install()`` its ``import asyncore`` gives ours.  An ``SMTPServer`` test double serves
``smtplib`` clients (in threads) while this thread runs ``asyncore.loop()``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio import asynchat, asyncore

from .helpers import LOOPBACK, run_until

# The warning smtpd gives on import: 3.11's stdlib, or standard-smtpd's.
SMTPD_IMPORT_WARNING = r"(The smtpd module is deprecated|smtpd was removed in Python 3\.12)"


@pytest.fixture
def smtpd() -> Iterator[ModuleType]:
    """A fresh ``import smtpd`` after ``install()``; the import state is restored after."""
    names = ("asyncore", "asynchat", "smtpd")
    saved = {name: sys.modules.pop(name, None) for name in names}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # install() must not warn: nothing held another copy
            asyncore_on_asyncio.install()
            warnings.filterwarnings("ignore", SMTPD_IMPORT_WARNING, DeprecationWarning)
            import smtpd as module
        yield module
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def make_server(smtpd: ModuleType, map: dict[int, Any]) -> Any:
    class Recorder(smtpd.SMTPServer):  # type: ignore[misc, name-defined]
        """Collects (mailfrom, rcpttos, data) instead of delivering."""

        def __init__(self) -> None:
            super().__init__((LOOPBACK, 0), None, map=map, decode_data=False)
            self.port: int = self.socket.getsockname()[1]
            self.messages: list[tuple[str, list[str], bytes]] = []

        def process_message(self, peer: Any, mailfrom: str, rcpttos: list[str], data: bytes, **kwargs: Any) -> None:
            self.messages.append((mailfrom, rcpttos, data))

    return Recorder()


@contextlib.contextmanager
def serving(smtpd: ModuleType) -> Iterator[tuple[Any, dict[int, Any]]]:
    map: dict[int, Any] = {}
    server = make_server(smtpd, map)
    try:
        yield server, map
    finally:
        asyncore.close_all(map)


def in_threads(count: int, client: Callable[[int], None]) -> tuple[list[threading.Thread], list[BaseException]]:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            client(index)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, errors


def send(port: int, messages: list[tuple[str, list[str], bytes]]) -> None:
    with smtplib.SMTP(LOOPBACK, port, timeout=30) as client:
        for mailfrom, rcpttos, body in messages:
            assert client.sendmail(mailfrom, rcpttos, body) == {}


def serve_clients(map: dict[int, Any], count: int, client: Callable[[int], None]) -> None:
    threads, errors = in_threads(count, client)
    run_until(lambda: not any(t.is_alive() for t in threads), timeout=30.0, map=map)
    assert errors == []
    # The channels see each QUIT's close only on a later cycle.
    run_until(lambda: len(map) == 1, timeout=5.0, map=map)


def message(index: int, size: int = 0) -> bytes:
    body = b"".join(b"line %d of message %d\r\n" % (n, index) for n in range(max(1, size // 24)))
    return b"Subject: number %d\r\n\r\n" % index + body


def received(sent: bytes) -> bytes:
    """What process_message() gets for ``sent``: lines joined by LF, no final line end."""
    return sent.removesuffix(b"\r\n").replace(b"\r\n", b"\n")


@pytest.mark.loop_free
def test_smtpd_uses_our_modules(smtpd: ModuleType) -> None:
    assert smtpd.asyncore is asyncore and smtpd.asynchat is asynchat
    assert issubclass(smtpd.SMTPServer, asyncore.dispatcher)
    assert issubclass(smtpd.SMTPChannel, asynchat.async_chat)


def test_several_messages_on_one_connection(smtpd: ModuleType) -> None:
    with serving(smtpd) as (server, map):
        sent = [(f"from{i}@example.com", [f"to{i}@example.com", "cc@example.com"], message(i)) for i in range(5)]
        serve_clients(map, 1, lambda _: send(server.port, sent))
        assert server.messages == [(f, t, received(body)) for f, t, body in sent]


def test_concurrent_clients(smtpd: ModuleType) -> None:
    with serving(smtpd) as (server, map):

        def client(index: int) -> None:
            send(server.port, [(f"c{index}@example.com", ["to@example.com"], message(index * 10 + n)) for n in range(3)])

        serve_clients(map, 6, client)
        got = sorted((mailfrom, data) for mailfrom, _, data in server.messages)
        expected = sorted(
            (f"c{i}@example.com", received(message(i * 10 + n))) for i in range(6) for n in range(3)
        )
        assert got == expected


def test_large_message(smtpd: ModuleType) -> None:
    body = message(1, size=1 << 20)
    assert len(body) >= 1 << 20
    with serving(smtpd) as (server, map):
        serve_clients(map, 1, lambda _: send(server.port, [("big@example.com", ["to@example.com"], body)]))
        assert server.messages == [("big@example.com", ["to@example.com"], received(body))]


@pytest.mark.loop_free
def test_install_after_smtpd_warns_naming_it(tmp_path: Path) -> None:
    """smtpd imported first holds the other copy; install() says so (and nothing else breaks)."""
    code = textwrap.dedent(
        """
        import sys, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        import smtpd
        import asyncore_on_asyncio
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncore_on_asyncio.install()
        print(len(caught), caught[0].category.__name__, caught[0].filename == __file__)
        print(caught[0].message)
        import asyncore
        print(asyncore is asyncore_on_asyncio.asyncore, smtpd.asyncore is asyncore)
        """
    )
    script = tmp_path / "late_install.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    count, text, identities = result.stdout.splitlines()
    assert count == "1 RuntimeWarning True"
    assert text.startswith("install() came after smtpd imported another asyncore (")
    assert "call install() before importing them" in text
    assert identities == "True False"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def connect_when_listening(port: int, proc: subprocess.Popen[str], timeout: float = 30.0) -> smtplib.SMTP:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return smtplib.SMTP(LOOPBACK, port, timeout=10)
        except ConnectionRefusedError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.timeout(90)
def test_runner_serves_smtpd_debugging_server(loop_kind: str) -> None:
    """``python -m asyncore_on_asyncio -m smtpd -n -c DebuggingServer HOST:PORT`` prints a
    message it received, and a SIGINT ends it with status 0 (smtpd catches KeyboardInterrupt)."""
    port = free_port()
    env = {**os.environ, "ASYNCORE_ON_ASYNCIO_LOOP": loop_kind}
    command = [sys.executable, "-m", "asyncore_on_asyncio", "-m", "smtpd", "-n", "-c", "DebuggingServer", f"{LOOPBACK}:{port}"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            with connect_when_listening(port, proc) as client:
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\r\n\r\nhello smtpd\r\n")
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stderr
    assert "---------- MESSAGE FOLLOWS ----------" in stdout
    assert "hello smtpd" in stdout
    assert "Traceback" not in stderr
