"""PyMOTW's asyncore ``file_dispatcher`` example, ported to Python 3 and run on asyncio.

Legacy-style script: it imports plain ``asyncore``. Run it unchanged on an asyncio event
loop with::

    python -m asyncore_on_asyncio examples/pymotw/asyncore_file_dispatcher.py
    python -m asyncore_on_asyncio --loop uvloop examples/pymotw/asyncore_file_dispatcher.py

A ``file_dispatcher`` reads ``lorem.txt`` (next to this file) in 256-byte chunks, printing
the size and start of each chunk; at end of file ``recv()`` returns ``b""`` after calling
``handle_close()``. The script then checks that the chunks add up to the file.

A regular file is interesting on asyncio: epoll and libuv refuse to watch one
(``add_reader`` fails with EPERM), while select() and poll() report it always ready. The
shim does what select() does, so this runs the same as on Python 3.11.

Since Python 2.6 ``file_dispatcher`` accepts any object with ``fileno()`` (it duplicates
the descriptor), so the original's ``os.open()`` is no longer needed.
"""

from __future__ import annotations

import asyncore
import sys
from pathlib import Path
from typing import IO

LOREM = Path(__file__).with_name("lorem.txt")


class FileReader(asyncore.file_dispatcher):
    def __init__(self, fd: int | IO[bytes]) -> None:
        asyncore.file_dispatcher.__init__(self, fd)
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        data = self.recv(256)
        print(f"READ: ({len(data)}) {data[:24]!r}")
        self.chunks.append(data)

    def handle_expt(self) -> None:
        # Ignore events that look like out of band data
        pass

    def handle_close(self) -> None:
        self.close()


def main() -> int:
    with LOREM.open("rb") as lorem_file:
        reader = FileReader(lorem_file)
        asyncore.loop()
    data = b"".join(reader.chunks)
    expected = LOREM.read_bytes()
    print(f"read {len(data)} bytes in {len(reader.chunks)} reads; file has {len(expected)} bytes")
    if data != expected:
        print("MISMATCH")
        return 1
    print("contents match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
