"""Facts about a class, computed once: is this method still the one we ship?

The engine takes shortcuts for dispatchers whose behaviour it knows (stock
predicates, silent urgent-data handling, 3.11's ``send()``); whether a class
qualifies is computed once per class and cached without keeping the class alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

__all__ = ["PerClass"]


class PerClass:
    """A flag computed once per class by ``compute(cls)``; the classes are not kept alive."""

    def __init__(self, compute: Callable[[type], bool]) -> None:
        self._compute = compute
        self._flags: dict[int, tuple[weakref.ref[type], bool]] = {}

    def __call__(self, cls: type) -> bool:
        entry = self._flags.get(id(cls))
        if entry is not None and entry[0]() is cls:
            return entry[1]
        flag = self._compute(cls)
        key = id(cls)
        flags = self._flags

        def forget(ref: weakref.ref[type]) -> None:
            if flags.get(key, (None,))[0] is ref:
                del flags[key]

        flags[key] = (weakref.ref(cls, forget), flag)
        return flag
