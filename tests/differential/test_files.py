"""Differential tests of file_dispatcher: a pipe written by the test, and a regular file.

3.11 polls a regular file like anything else, and select()/poll() say it is always
ready; the pipe's end of input shows as readable (select) or as POLLHUP (poll).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .harness import Run, assert_same_behaviour, tracing


def _reader_class(ac: Any, run: Run, role: str, size: int) -> Any:
    class Reader(tracing(ac.file_dispatcher, run)):  # type: ignore[misc]
        got = b""

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            data = self.recv(size)
            run.record(self.role, "read", len(data))
            self.got += data

    Reader.role = role
    return Reader


def scenario_pipe(ac: Any, ach: Any, run: Run) -> Any:
    """Read a pipe in 1024-byte reads; then its writer closes, with and without data left."""
    Reader = _reader_class(ac, run, "pipe", 1024)

    r, w = os.pipe()
    run.keep_fd(r)
    run.keep_fd(w)
    reader = Reader(r, run.map)  # file_dispatcher dup()s the fd
    run.close_fd(r)
    os.write(w, b"abc")
    run.wait_pending(reader.socket, 3)
    run.step()
    os.write(w, b"d" * 2000)
    run.wait_pending(reader.socket, 2000)
    run.step()
    run.step()
    run.close_fd(w)  # nothing left to read: EOF only
    run.wait_ready(reader.socket, readable=True)
    run.run_until(lambda: not run.map, "first reader closed")
    first = reader.got

    r, w = os.pipe()
    run.keep_fd(r)
    run.keep_fd(w)
    reader = _reader_class(ac, run, "pipe2", 1024)(r, run.map)
    run.close_fd(r)
    os.write(w, b"tail")
    run.close_fd(w)  # data and EOF arrive together
    run.wait_pending(reader.socket, 4)
    run.run_until(lambda: not run.map, "second reader closed")
    return first, reader.got


def test_pipe(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_pipe, use_poll)
    assert outcome.result == (b"abc" + b"d" * 2000, b"tail")


def scenario_regular_file(ac: Any, ach: Any, run: Run) -> Any:
    """Write a regular file through a file_dispatcher, then read it back to EOF through
    another; select()/poll() report a regular file always ready."""

    class Writer(tracing(ac.file_dispatcher, run)):  # type: ignore[misc]
        role = "writer"
        out = bytes(range(256)) * 2

        def readable(self) -> bool:
            return False

        def writable(self) -> bool:
            return bool(self.out)

        def handle_write(self) -> None:
            sent = self.send(self.out[:200])
            run.record(self.role, "write", sent)
            self.out = self.out[sent:]
            if not self.out:
                self.close()

    Reader = _reader_class(ac, run, "file", 200)

    with tempfile.TemporaryFile() as f:
        writer = Writer(f, run.map)  # a file object: file_dispatcher takes its fileno()
        run.run_until(lambda: not run.map, "writer done")
        f.seek(0)  # the dup()ed fd shares this offset
        reader = Reader(f.fileno(), run.map)
        run.run_until(lambda: not run.map, "reader at EOF")
        return reader.got == Writer.out, writer.out


def test_regular_file(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_regular_file, use_poll)
    assert outcome.result == (True, b"")
    assert [e for e in outcome.trace if e[0] == "file"] == [
        ("file", "read", 200),
        ("file", "read", 200),
        ("file", "read", 112),
        ("file", "handle_close"),
        ("file", "read", 0),
    ]
