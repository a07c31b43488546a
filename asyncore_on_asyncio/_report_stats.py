"""The handler report's statistics of one dispatcher class (:mod:`._report` collects them).

:class:`Histogram` keeps durations in log-scale buckets, so that a server running for
days stays flat in memory; :class:`ClassStats` holds one class's counts and renders them
as the report's JSON entry (the shape is documented in :mod:`._report`).
"""

from __future__ import annotations

import math
from typing import Any

from ._report_text import KINDS
from ._scan import _stock_readable, _stock_writable

__all__ = ["ClassStats", "Histogram"]


class Histogram:
    """Durations in buckets from 1 µs, 8 an octave (within 6 %): memory stays flat."""

    FLOOR = 1e-6
    SCALE = 1e6  # 1 / FLOOR
    PER_OCTAVE = 8
    BUCKETS = PER_OCTAVE * 32  # up to 2**31 µs, about 36 minutes

    __slots__ = ("count", "counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * self.BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        # frexp: seconds / FLOOR = m * 2**e, 0.5 <= m < 1; the octave is e, m picks one
        # of PER_OCTAVE equal slices of it (log-spaced within 6 %, without a log()).
        m, e = math.frexp(seconds * self.SCALE)
        index = e * self.PER_OCTAVE + int((m - 0.5) * (2 * self.PER_OCTAVE)) if e > 0 else 0
        if index >= self.BUCKETS:
            index = self.BUCKETS - 1
        self.counts[index] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def quantile(self, q: float) -> float:
        """The duration ``q`` of the calls took at most (a bucket's middle, at most the max)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(self._middle(index), self.max)
        return self.max

    def _middle(self, index: int) -> float:
        if index < self.PER_OCTAVE:
            return self.FLOOR
        octave, part = divmod(index, self.PER_OCTAVE)
        # bucket [2**(e-1) * (1 + part/P), 2**(e-1) * (1 + (part+1)/P)) in FLOOR units
        return self.FLOOR * 2.0 ** (octave - 1) * (1 + (part + 0.5) / self.PER_OCTAVE)


class ClassStats:
    """What the report knows of one dispatcher class."""

    def __init__(self, cls: type) -> None:
        self.name = f"{cls.__module__}.{cls.__qualname__}"
        self.own_readable = getattr(cls, "readable", None) not in _stock_readable
        self.own_writable = getattr(cls, "writable", None) not in _stock_writable
        self.instance_predicates: set[str] = set()
        """Predicates that objects of a stock class replaced on themselves (seen when sampled)."""
        self.instances = 0
        self.live: set[int] = set()
        self.peak = 0
        self.cycles = 0
        self.events = dict.fromkeys(KINDS, 0)
        self.errors: dict[str, int] = {}
        self.forced_scans = 0
        self.forced_scan_s = 0.0
        self.handler = Histogram()
        self.slow = 0
        self.slowest = ""

    def _predicate(self, name: str, own: bool) -> str:
        if own:
            return "own"
        return "instance" if name in self.instance_predicates else "stock"

    @property
    def cost(self) -> float:
        return self.handler.total + self.forced_scan_s

    def data(self) -> dict[str, Any]:
        hist = self.handler
        return {
            "class": self.name,
            "instances": self.instances,
            "peak": self.peak,
            "cycles": self.cycles,
            "events": dict(self.events),
            "errors": dict(sorted(self.errors.items())),
            "predicates": {
                "readable": self._predicate("readable", self.own_readable),
                "writable": self._predicate("writable", self.own_writable),
            },
            "forced_scans": self.forced_scans,
            "forced_scan_s": self.forced_scan_s,
            "handler_s": {
                "calls": hist.count,
                "total": hist.total,
                "p50": hist.quantile(0.5),
                "p99": hist.quantile(0.99),
                "max": hist.max,
            },
            "slow": self.slow,
            "cost_s": self.cost,
        }
