"""Facts about a class, computed once: is this method still the one we ship?

The engine takes shortcuts for dispatchers whose behaviour it knows (stock
predicates, silent urgent-data handling, 3.11's ``send()``); whether a class
qualifies is computed once per class and cached without keeping the class alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

try:
    import cython
except ImportError:  # the pure engine, where Cython is not installed
    from . import _cython_fallback as cython

if cython.compiled:
    from cython.cimports.cpython.method import (
        PyMethod_Check,
        PyMethod_GET_FUNCTION,
        PyMethod_GET_SELF,
    )
    from cython.cimports.cpython.object import PyObject

__all__ = ["PerClass", "replaced_on_instance"]


class PerClass:
    """A flag computed once per class by ``compute(cls)``; the classes are not kept alive."""

    def __init__(self, compute: Callable[[type], bool]) -> None:
        self._compute = compute
        self._flags: dict[int, tuple[weakref.ref[type], bool]] = {}

    def __call__(self, cls: type) -> bool:
        return self.of(cls)

    def of(self, cls: type) -> bool:
        """The flag of ``cls`` (computed at the first question)."""
        entry = self._flags.get(id(cls))
        if entry is not None and entry[0]() is cls:
            return entry[1]
        return self._learn(cls)

    def _learn(self, cls: type) -> bool:
        flag = self._compute(cls)
        key = id(cls)
        flags = self._flags

        def forget(ref: weakref.ref[type]) -> None:
            if flags.get(key, (None,))[0] is ref:
                del flags[key]

        flags[key] = (weakref.ref(cls, forget), flag)
        return flag


def replaced_on_instance(obj: object, name: str) -> bool:
    """Has ``obj`` its own ``name``, set on the instance over its class's method?

    Found by attribute lookup, never through ``obj.__dict__``: on CPython 3.12 reading an
    object's ``__dict__`` turns its inline attribute values into a dict for good, and
    every later attribute access on it, in the user's handlers too, costs about twice
    as much (3.13 no longer does).
    """
    try:
        value = getattr(obj, name)
    except AttributeError:
        return False
    if cython.compiled and PyMethod_Check(value):  # the bound method's fields, read in C
        if PyMethod_GET_SELF(value) is not cython.cast(cython.pointer(PyObject), obj):
            return True
        on_class = getattr(type(obj), name, None)
        return PyMethod_GET_FUNCTION(value) is not cython.cast(cython.pointer(PyObject), on_class)
    return getattr(value, "__self__", None) is not obj or getattr(value, "__func__", None) is not getattr(
        type(obj), name, None
    )
