"""What every dispatcher of a map wants before a wait, as 3.11 asked before each ``select()``.

A *full* scan asks every object of the map ``readable()`` then ``writable()``, in
map order, and hands the answers to the readiness source (which touches the kernel
only for what changed).  When every object's predicates are stock ones (declared
by the public modules with :func:`declare_stock`, not overridden on the class or
the instance), their answers can only change through our API or inside their own
handlers, so later scans are *incremental*: they ask only the objects that changed
(:meth:`Scanner.mark`) or were dispatched, and a cycle's cost no longer grows with
idle connections.  A full scan still runs after a cycle that waited in vain, at least once a
second, and when the map's size shows a change made behind our back.

A full scan over the same objects under the same fds as the previous one applies
only the answers that changed.  Between *verifying* scans (at least once a second)
a record made for the same object is trusted to still hold its socket, so a socket
closed behind a dispatcher's back is noticed within a second.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import Any, Final

try:
    import cython
except ImportError:  # the pure engine, where Cython is not installed
    from . import _cython_fallback as cython

from ._classflags import PerClass, replaced_on_instance
from ._predicates import READ_ONLY, wanted_by_all
from ._readiness import INVALID, PRIORITY, WATCHED, WRITE, Owner, Record, SourceBase

if cython.compiled:
    from cython.cimports.cpython.dict import (
        PyDict_GetItemWithError,
        PyDict_Keys,
        PyDict_Next,
        PyDict_Values,
    )
    from cython.cimports.cpython.list import PyList_GET_ITEM

__all__ = ["Batch", "BatchEntry", "Scanner", "declare_stock", "fd_of_key", "is_closed"]

BatchEntry = tuple[Any, int, Any, int]
"""(map key, fd, object, wanted events) of a ready entry."""
Batch = list[BatchEntry]
"""The ready entries, in map order."""

_FULL_SCAN_INTERVAL = 1.0
"""Seconds between verifying scans: they check every dispatcher's socket (closed
behind its back? swapped without del_channel()?) and, in incremental mode, every
entry of the map (changes made behind our back that kept the map's size)."""

_stock_readable: set[Callable[..., Any]] = set()
_stock_writable: dict[Callable[..., Any], str | None] = {}
"""Stock ``writable()`` -> the queue attribute it answers with (``None``: it is called)."""
_quiet_urgent: dict[str, Callable[..., Any]] = {}


def declare_stock(
    readable: Callable[..., Any] | None = None,
    writable: Callable[..., Any] | None = None,
    quiet_urgent: dict[str, Callable[..., Any]] | None = None,
    writable_unless_empty: str | None = None,
) -> None:
    """The public modules name their predicates whose answers change only through our API,
    and the handlers (``handle_expt_event``, ``handle_expt``, ``log_info``) that make urgent
    data unobservable while ``"warning"`` is ignored.

    Incremental scans evaluate what a stock predicate is defined to answer instead of
    calling it: a stock ``readable()`` is always true, and a ``writable()`` declared with
    ``writable_unless_empty=name`` is true while ``obj.<name>`` is, else ``not
    obj.connected`` (async_chat's, with its ``producer_fifo``).  Full scans call them.
    """
    if readable is not None:
        _stock_readable.add(readable)
    if writable is not None:
        _stock_writable[writable] = writable_unless_empty
    if quiet_urgent:
        _quiet_urgent.update(quiet_urgent)


def _queue_of(obj: Any) -> str | None:
    """The queue attribute ``obj``'s stock ``writable()`` answers with (``None``: call it)."""
    return _stock_writable.get(type(obj).writable)


def _wanted_by_stock(obj: Any, queue: str | None, write_bits: int) -> int:
    """:func:`._predicates.wanted` of an object with stock predicates (:func:`_known`), given
    its :func:`_queue_of`: ``readable()`` is true, ``writable()`` is called unless a queue
    defines it."""
    writes = obj.writable() if queue is None else getattr(obj, queue) or not obj.connected
    return READ_ONLY | (write_bits if writes and not obj.accepting else 0)


def fd_of_key(key: Any) -> int | None:
    """The fd of a map key that is not an int; TypeError (select()'s and poll()'s error in
    3.11) for a key with no ``fileno()``, such as the ``None`` that del_channel() followed
    by add_channel() files a dispatcher under."""
    try:
        fileno = key.fileno
    except AttributeError:
        raise TypeError(f"socket map key {key!r} is neither an int nor has a fileno() method") from None
    fd = fileno()
    # Not (yet) a usable fd: skipped, asked again next cycle.
    return fd if type(fd) is int and fd >= 0 else None


def is_closed(sock: Any) -> bool:
    fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return False
    try:
        fd = fileno()
    except (OSError, ValueError):
        return True
    return type(fd) is int and fd < 0


_has_stock_predicates = PerClass(
    lambda cls: getattr(cls, "readable", None) in _stock_readable
    and getattr(cls, "writable", None) in _stock_writable
)


def _known(obj: Any) -> bool:
    """Are ``obj``'s predicates stock ones, on its class and not replaced on the instance?"""
    if not _has_stock_predicates.of(type(obj)):
        return False
    return not (replaced_on_instance(obj, "readable") or replaced_on_instance(obj, "writable"))


_class_observes_urgent = PerClass(
    lambda cls: any(getattr(cls, name, None) is not stock for name, stock in _quiet_urgent.items())
)


def _observes_urgent(obj: Any) -> bool:
    """Would urgent data make ``obj`` do anything observable?

    3.11's stock ``handle_expt_event()`` calls ``handle_expt()``, whose warning
    ``log_info()`` drops (``"warning"`` is in ``ignore_log_types``).  For such an
    object, waking up for urgent data alone changes nothing but the CPU spent, so
    its fd is not watched for it (urgent data that arrives with other events is
    still dispatched).  Decided when the record is made.
    """
    if _class_observes_urgent.of(type(obj)):
        return True
    for name in _quiet_urgent:
        if replaced_on_instance(obj, name):
            return True
    try:
        return "warning" not in getattr(obj, "ignore_log_types", ())
    except TypeError:
        return True


class Scanner:
    """The scans of one map for one owner, applied to a readiness source."""

    def __init__(self, owner: Owner, source: SourceBase, map: dict[Any, Any]) -> None:
        self.owner = owner
        self.records = owner.records
        """The owner's records by fd (the same dict)."""
        self.source = source
        self.map = map
        self.write_bits = WRITE | PRIORITY
        """What a true ``writable()`` asks for: with select(), the exceptional set too."""
        self._stamp = 0
        self._full_scan_needed = True
        self._next_full_scan = 0.0
        self._dirty: set[Any] = set()
        """Keys changed through the API (or parked): asked again at the next scan."""
        self._dispatched: list[Any] = []
        """The keys of the latest incremental batch: asked again at the next scan too."""
        # Incremental scans (every object's predicates are stock): key -> entry, map order.
        self._incremental = False
        self._entries: dict[Any, tuple[Any, int, Any, int]] = {}
        self._queues: dict[Any, str] = {}
        """Key -> the queue attribute its stock ``writable()`` answers with (_queue_of())."""
        self._position: dict[Any, int] = {}
        self._by_fd: dict[int, Any] = {}
        self._next_position = 0
        # The previous full scan, for the next one to see whether anything changed.
        self._steady = False
        self._keys: list[Any] = []
        self._objs: list[Any] = []
        self._wanted: list[int] = []

    def mark(self, key: Any = None) -> None:
        """Entry ``key`` (``None``: any) may have changed: the next scan asks it again."""
        if key is None:
            self._full_scan_needed = True
        else:
            self._dirty.add(key)

    def parked(self, fd: int) -> None:
        """The source undid ``fd``'s registration outside a scan: the next scan redoes it."""
        key = self._by_fd.get(fd)
        if key is not None:
            self._dirty.add(key)
        elif self._incremental:
            self._full_scan_needed = True
        else:
            self._dirty.add(fd)  # also keeps the next full scan off its steady path

    def idle(self) -> None:
        """A cycle waited and found nothing: a good time to check everything at the next scan.

        (A ``timeout=0`` cycle does not count: a host loop stepping ``loop()`` makes one
        at every call, and the verifying scans once a second are enough there.)"""
        self._full_scan_needed = True

    def scan(self, now: float) -> None:
        """Ask the objects of the map what they want, and apply the answers to the source.

        Incremental scans ask only the objects marked since the previous scan; full
        scans (user predicates: every cycle) ask every object in map order.
        """
        if self._incremental and not (self._full_scan_needed or now >= self._next_full_scan):
            if not self._dirty and not self._dispatched and len(self._position) == len(self.map):
                return  # nothing changed: the common case of a host loop stepping an idle map
            if self._scan_changed():
                return
        # A full scan, the hot path of maps with user-defined predicates.
        write_bits = self.write_bits
        verify = self._full_scan_needed or now >= self._next_full_scan
        if not verify and not self._dirty and self._steady and self._holds_previous_entries():
            # The same objects under the same fds as at the previous scan: ask them in map
            # order (readable() then writable(), object by object, as 3.11 asked them) and
            # apply only the answers that changed.
            wanted = wanted_by_all(self._objs, write_bits)
            previous, self._wanted = self._wanted, wanted
            if len(wanted) <= _BLOCK:
                for index in range(len(wanted)):  # (compiled: C longs compared)
                    events = wanted[index]
                    before = previous[index]
                    if events != before:
                        self._apply_change(index, events)
            elif wanted != previous:
                for index in _differences(wanted, previous):
                    self._apply_change(index, wanted[index])
            return
        map = self.map
        if cython.compiled and type(map) is dict:
            keys, objs = PyDict_Keys(map), PyDict_Values(map)  # the same lists, without iterators
        else:
            keys, objs = list(map), list(map.values())
        wanted = wanted_by_all(objs, write_bits)
        self._apply_scan(keys, objs, wanted, verify)
        if verify:
            self._next_full_scan = now + _FULL_SCAN_INTERVAL

    def _holds_previous_entries(self) -> bool:
        """Does the map hold the keys and objects of the previous full scan, in the same order?

        Compiled, identity only: an entry replaced by an equal key or object (``map[fd] =
        obj`` behind our API) is a change.  The pure engine compares lists (identity first,
        then ``__eq__``): only an ``__eq__`` that calls two dispatchers equal could hide an
        object put into the map behind our API (``add_channel()`` marks its key), and then
        only until the next verifying scan.
        """
        map, keys, objs = self.map, self._keys, self._objs
        if len(map) != len(keys):
            return False
        if cython.compiled and type(map) is dict:
            # The dict's own entries against the previous lists, pointer by pointer: no list
            # made, no comparison called.
            position = index = 0
            key = obj = cython.NULL
            while PyDict_Next(map, cython.address(position), cython.address(key), cython.address(obj)):
                if key is not PyList_GET_ITEM(keys, index) or obj is not PyList_GET_ITEM(objs, index):
                    return False
                index += 1
            return True
        return list(map) == keys and list(map.values()) == objs

    def _apply_change(self, index: int, events: int) -> None:
        """The answer at ``index`` of a steady scan changed to ``events``: update, remove or
        make the record of its fd."""
        key, obj = self._keys[index], self._objs[index]
        rec = self.records.get(key)
        if rec is not None and rec.obj is obj:
            if events:
                self.source.update(rec, events)  # the hot case: a wish to write turned on or off
            else:
                self.source.remove(rec)
        elif events:
            rec = self._sync(key, obj, rec, events)
            rec.seen = self._stamp
            rec.key = key
            rec.index = index

    def _sync(self, fd: int, obj: Any, rec: Record | None, events: int) -> Record:
        """Check ``obj``'s socket, then make a record for it or update ``rec``.

        A socket closed behind the dispatcher's back makes the events INVALID; a
        record made for another object or socket is replaced.
        """
        sock = getattr(obj, "socket", None)
        if sock is not None and is_closed(sock):
            events = INVALID
        if rec is None or rec.obj is not obj or rec.sock is not sock:
            return self.source.register(self.owner, fd, obj, sock, events, _observes_urgent(obj))
        self.source.update(rec, events)
        return rec

    def _apply_scan(self, keys: list[Any], objs: list[Any], wanted: list[int], verify: bool) -> None:
        records = self.records
        source = self.source
        stamp = self._stamp = self._stamp + 1
        dirty = self._dirty
        # No tuple per object here: allocating one per object per cycle doubled the cost
        # of this loop (the garbage collector runs every few hundred allocations).  What
        # dispatch needs is kept on the record instead (key, events, index).
        index = -1
        count = 0
        all_known = True
        int_keys = True
        for key, obj, events in zip(keys, objs, wanted):
            index += 1
            if type(key) is int:
                fd = key
            else:
                # Resolved only when wanted: 3.11 handed select()/poll() only those keys.
                int_keys = False
                key_fd = fd_of_key(key) if events else None
                if key_fd is None:
                    all_known = False
                    continue
                fd = key_fd
            if all_known and not _known(obj):
                all_known = False
            if not events:
                continue
            rec = records.get(fd)
            if rec is None or rec.obj is not obj or verify or key in dirty:
                rec = self._sync(fd, obj, rec, events)
            else:
                source.update(rec, events)
            rec.seen = stamp
            rec.key = key
            rec.index = index
            count += 1
        if len(records) != count:
            for rec in [rec for rec in records.values() if rec.seen != stamp]:
                self.source.remove(rec)
        self._full_scan_needed = False
        dirty.clear()
        self._dispatched = []
        self._incremental = all_known
        self._steady = int_keys
        self._keys, self._objs, self._wanted = keys, objs, wanted
        if all_known:
            entries = [(rec.key, rec.fd, rec.obj, rec.events) for rec in records.values()]
            self._entries = {entry[0]: entry for entry in entries}
            self._queues = {entry[0]: queue for entry in entries if (queue := _queue_of(entry[2])) is not None}
            self._by_fd = {entry[1]: entry[0] for entry in entries}
            self._position = {key: index for index, key in enumerate(self.map)}
            self._next_position = len(self._position)

    # -- incremental scans ----------------------------------------------------------------

    def _scan_changed(self) -> bool:
        """Scan only the changed entries; ``False`` if a full scan is needed instead."""
        records = self.records
        source = self.source
        entries = self._entries
        map = self.map
        write_bits = self.write_bits
        queues = self._queues
        keys, self._dispatched = self._dispatched, []
        if self._dirty:
            # Once each: a dispatched key is often changed too (closed by its handler, say).
            dirty, self._dirty = self._dirty, set()
            dirty.update(keys)
            keys = list(dirty)
        for key in keys:
            obj = _get(map, key)
            old = entries.get(key)
            if old is not None and obj is old[2]:
                # The common case: a dispatcher that just ran, or was pushed to, asks again
                # and most often wants what it wanted.
                events = _wanted_by_stock(obj, queues.get(key), write_bits)
                fd = old[1]
                rec = records.get(fd)
                if rec is not None and rec.obj is obj:
                    if events != old[3]:
                        entries[key] = (key, fd, obj, events)
                    if events != rec.events or rec.kind != WATCHED:
                        source.update(rec, events)
                    continue
            if not self._rescan_entry(key, obj):
                return False
        # Every key of the map is known iff nothing was added or removed behind our back.
        return len(self._position) == len(map)

    def _rescan_entry(self, key: Any, obj: Any) -> bool:
        """An entry that is new, gone, or now wants nothing; ``False``: needs a full scan."""
        records = self.records
        old = self._entries.pop(key, None)
        self._queues.pop(key, None)
        if old is not None and self._by_fd.get(old[1]) is key:
            del self._by_fd[old[1]]
        if old is not None:
            rec = records.get(old[1])
            if rec is not None and rec.obj is old[2] and (obj is None or old[1] != _fd_of(key)):
                self.source.remove(rec)
        if obj is None:
            self._position.pop(key, None)
            return True
        fd = key if type(key) is int else None  # other keys: the full scan resolves them
        if fd is None or not _known(obj):
            return False
        if key not in self._position:
            self._position[key] = self._next_position
            self._next_position += 1
        queue = _queue_of(obj)
        events = _wanted_by_stock(obj, queue, self.write_bits)
        rec = records.get(fd)
        if not events:
            if rec is not None and rec.obj is obj:
                self.source.remove(rec)
            return True
        rec = self._sync(fd, obj, rec, events)
        self._entries[key] = (key, fd, obj, rec.events)
        self._by_fd[fd] = key
        if queue is not None:
            self._queues[key] = queue
        return True

    # -- what dispatch needs --------------------------------------------------------------

    def batch(self, ready: dict[int, int]) -> Batch:
        """What the latest scan wanted of the ready fds, in map order.

        In incremental mode the dispatched entries are asked again at the next scan
        (their handlers may change what they want).
        """
        if self._incremental:
            by_fd = self._by_fd
            keys = [key for fd in ready if (key := by_fd.get(fd)) is not None]
            if len(keys) > 1:
                keys.sort(key=self._position.__getitem__)
            self._dispatched = keys  # (every batch follows a scan, which emptied it)
            entries = self._entries
            return [entries[key] for key in keys]
        records, stamp = self.records, self._stamp
        if len(ready) == 1:
            for fd in ready:
                rec = records.get(fd)
                if rec is None or rec.seen != stamp:
                    return []
                return [(rec.key, fd, rec.obj, rec.events)]
        regs = [rec for fd in ready if (rec := records.get(fd)) is not None and rec.seen == stamp]
        regs.sort(key=_scan_index)
        return [(rec.key, rec.fd, rec.obj, rec.events) for rec in regs]


def _get(map: Any, key: Any) -> Any:
    """``map.get(key)`` (compiled, a dict is asked in C)."""
    if cython.compiled and type(map) is dict:
        found = PyDict_GetItemWithError(map, key)
        return None if found is cython.NULL else cython.cast(object, found)
    return map.get(key)


def _fd_of(key: Any) -> int | None:
    return key if type(key) is int else fd_of_key(key)


_scan_index = operator.attrgetter("index")


_BLOCK: Final = 64


def _differences(new: list[int], old: list[int]) -> Iterator[int]:
    """The indices where two long lists of the same length differ, few of them expected.

    Blocks are compared at C speed; only a block that differs is looked into.
    """
    for start in range(0, len(new), _BLOCK):
        end = start + _BLOCK
        if new[start:end] != old[start:end]:
            for index in range(start, min(end, len(new))):
                if new[index] != old[index]:
                    yield index
