"""What each dispatcher wants, asked as 3.11 asked before each ``select()``: ``readable()``
first, then ``writable()``; a listening socket is never writable.

Never compiled, on purpose: on CPython 3.12+ a Python method called from Python code
costs less than one called from C (the interpreter runs the callee in the same C frame,
with its inline caches), and these are the engine's most frequent calls into user code:
every object of a map with predicates of its own, every cycle.  The compiled scan calls
:func:`wanted_by_all` once per full scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ._readiness import PRIORITY, READ

__all__ = ["READ_ONLY", "wanted", "wanted_by_all"]

READ_ONLY: Final = READ | PRIORITY


def wanted(obj: Any, write_bits: int) -> int:
    """READ|WRITE|PRIORITY bits for ``obj``; ``write_bits`` is what a true ``writable()`` asks for."""
    return (READ_ONLY if obj.readable() else 0) | (write_bits if obj.writable() and not obj.accepting else 0)


def wanted_by_all(objs: Iterable[Any], write_bits: int) -> list[int]:
    """:func:`wanted` of each of ``objs``, in order (inline: one call per scan)."""
    return [
        (READ_ONLY if obj.readable() else 0) | (write_bits if obj.writable() and not obj.accepting else 0)
        for obj in objs
    ]
