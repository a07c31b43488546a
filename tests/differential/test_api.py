"""Differential tests of the API surface, no event loop needed: names, signatures,
class attributes, predicate return values, error messages and small helpers.

Each check computes the same thing from 3.11's modules and from ours and compares.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import frozen_modules, normalise_output, our_modules

# No event loop runs: collected once, not per loop kind. The suite's autouse guards are
# function-scoped fixtures: they check the whole test, not each example.
pytestmark = pytest.mark.loop_free
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def pairs() -> list[tuple[ModuleType, ModuleType]]:
    """(3.11's module, ours) for asyncore, then asynchat."""
    return list(zip(frozen_modules(), our_modules()))


def _shape(func: Any) -> list[tuple[str, Any, Any]]:
    """A signature without annotations: our code is typed, 3.11's is not."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


def _public(module: ModuleType) -> dict[str, Any]:
    return {name: value for name, value in vars(module).items() if not name.startswith("__")}


@pytest.mark.parametrize("which", ["asyncore", "asynchat"])
def test_module_names_and_values(which: str) -> None:
    """Every module-level name of 3.11's module exists in ours; data (errno constants,
    ``_DISCONNECTED``, ``_reraised_exceptions``' names) has the same value, functions
    the same parameters.  Imported modules (``asyncore.socket``...) count too: old code
    reaches them through the module."""
    theirs, ours = dict(zip(["asyncore", "asynchat"], pairs()))[which]
    missing = []
    for name, value in _public(theirs).items():
        if name in ("_DEPRECATION_MSG",):
            continue
        if which == "asynchat" and name == "warnings":
            continue  # imported by standard-asynchat's copy for its import warning, not by 3.11's
        if not hasattr(ours, name):
            missing.append(name)
            continue
        mine = getattr(ours, name)
        if isinstance(value, ModuleType):
            if which == "asynchat" and name == "asyncore":
                assert mine is our_modules()[0]
            else:
                assert mine is value, name
        elif inspect.isfunction(value):
            assert _shape(mine) == _shape(value), name
        elif inspect.isclass(value):
            pass  # test_class_surface
        elif name == "_reraised_exceptions":
            assert [t.__name__ for t in mine] == [t.__name__ for t in value]
        elif name == "socket_map":
            assert mine == {} == value
        else:
            assert mine == value, name
    assert missing == []


def _classes() -> list[tuple[str, str]]:
    return [
        ("asyncore", name)
        for name in (
            "dispatcher",
            "dispatcher_with_send",
            "file_wrapper",
            "file_dispatcher",
            "ExitNow",
        )
    ] + [("asynchat", name) for name in ("async_chat", "simple_producer")]


@pytest.mark.parametrize(("which", "cls_name"), _classes())
def test_class_surface(which: str, cls_name: str) -> None:
    """Each method 3.11's class has (its own or inherited from another asyncore class)
    exists in ours with the same parameters; each plain class attribute has the same
    value; the base classes are the corresponding classes."""
    theirs, ours = dict(zip(["asyncore", "asynchat"], pairs()))[which]
    cls, mine = getattr(theirs, cls_name), getattr(ours, cls_name)
    assert [b.__name__ for b in mine.__mro__ if b is not object] == [
        b.__name__ for b in cls.__mro__ if b is not object
    ] or issubclass(mine, getattr(ours, cls.__bases__[0].__name__, Exception))
    names = {
        name for klass in cls.__mro__ if klass.__module__ != "builtins" for name in vars(klass)
    }
    for name in sorted(names):
        if name.startswith("__") and name not in ("__init__", "__repr__", "__del__"):
            continue
        value = inspect.getattr_static(cls, name)
        assert hasattr(mine, name), f"{cls_name}.{name}"
        if inspect.isfunction(value):
            assert _shape(getattr(mine, name)) == _shape(value), f"{cls_name}.{name}"
        elif not callable(value) and not isinstance(value, (property, staticmethod, classmethod)):
            assert getattr(mine, name) == value, f"{cls_name}.{name}"


# --------------------------------------------------------------------------- values


# Differences from 3.11 made on purpose and documented (MIGRATION.md, "asynchat: 3.11 bugs
# fixed, warts kept"): for these inputs the test asserts what 3.11 gives AND what we give
# instead, so a change on either side fails and the documentation gets updated.
SELF_CHECK = bool(os.environ.get("DIFFERENTIAL_SELF_CHECK"))  # 3.11 against itself

PREDICATE_DIFFERENCES = {
    # state: (3.11's repr() of (readable(), writable()), ours); the truth values agree.
    "async_chat unconnected": (("1", "True"), ("True", "True")),
    "async_chat connected, empty": (("1", "False"), ("True", "False")),
    "async_chat connected, queued": (("1", "deque([b'abc'])"), ("True", "True")),
}

PREDICATE_STATES = [
    "dispatcher",
    "dispatcher_with_send unconnected",
    "dispatcher_with_send connected, empty",
    "dispatcher_with_send connected, queued",
    *PREDICATE_DIFFERENCES,
]


def _predicates(asyncore_mod: Any, asynchat_mod: Any, state: str) -> tuple[str, str]:
    """repr() of (readable(), writable()): 3.11 returns 1, ints and deques, not just bools."""

    class Chat(asynchat_mod.async_chat):  # type: ignore[misc]
        pass

    kind, _, how = state.partition(" ")
    if kind == "dispatcher":
        obj = asyncore_mod.dispatcher(map={})
    elif kind == "dispatcher_with_send":
        obj = asyncore_mod.dispatcher_with_send(map={})
        if "queued" in how:
            obj.out_buffer = b"abc"
    else:
        obj = Chat(map={})
        if "queued" in how:
            obj.producer_fifo.append(b"abc")
    obj.connected = "unconnected" not in how
    return repr(obj.readable()), repr(obj.writable())


@pytest.mark.parametrize("state", PREDICATE_STATES)
def test_predicate_values(state: str) -> None:
    ours, frozen = _predicates(*our_modules(), state), _predicates(*frozen_modules(), state)
    if state in PREDICATE_DIFFERENCES and not SELF_CHECK:
        assert (frozen, ours) == PREDICATE_DIFFERENCES[state]
    else:
        assert ours == frozen


def _misuse(asyncore_mod: Any, asynchat_mod: Any, label: str) -> list[Any]:
    """The type and args of what a misuse raises (and what it collected meanwhile)."""
    out: list[Any] = []

    class Chat(asynchat_mod.async_chat):  # type: ignore[misc]
        use_encoding = 1

        def recv(self, buffer_size: int) -> Any:
            return "text"

        def collect_incoming_data(self, data: bytes) -> None:
            out.append(("collect", data))

    attempts: dict[str, Callable[[Any], object]] = {
        "push(str)": lambda c: c.push("text"),
        "push(int)": lambda c: c.push(3),
        "set_terminator(-1)": lambda c: c.set_terminator(-1),
        # use_encoding with a str from recv(): 3.11 calls bytes(str, encoding), a typo.
        "str data with use_encoding": lambda c: (c.set_terminator(b"\n"), c.handle_read()),
        "abstract found_terminator": lambda c: asynchat_mod.async_chat.found_terminator(c),
        "abstract collect_incoming_data": (
            lambda c: asynchat_mod.async_chat.collect_incoming_data(c, b"")
        ),
    }
    try:
        attempts[label](Chat(map={}))
    except Exception as exc:
        out.append((type(exc).__name__, exc.args))
    else:
        out.append("no exception")
    return out


MISUSE_DIFFERENCES: dict[str, tuple[list[Any], list[Any]]] = {
    # label: (what 3.11 gives, what we give instead)
    "push(str)": (
        [("TypeError", ("data argument must be byte-ish (%r)", str))],
        [("TypeError", ("data argument must be byte-ish (<class 'str'>)",))],
    ),
    "push(int)": (
        [("TypeError", ("data argument must be byte-ish (%r)", int))],
        [("TypeError", ("data argument must be byte-ish (<class 'int'>)",))],
    ),
    # 3.11 calls bytes(str, encoding) on the type str; we encode the data.
    "str data with use_encoding": (
        [("TypeError", ("encoding without a string argument",))],
        [("collect", b"text"), "no exception"],
    ),
}

MISUSES = [
    *MISUSE_DIFFERENCES,
    "set_terminator(-1)",
    "abstract found_terminator",
    "abstract collect_incoming_data",
]


@pytest.mark.parametrize("label", MISUSES)
def test_misuse(label: str) -> None:
    ours, frozen = _misuse(*our_modules(), label), _misuse(*frozen_modules(), label)
    if label in MISUSE_DIFFERENCES and not SELF_CHECK:
        assert (frozen, ours) == MISUSE_DIFFERENCES[label]
    else:
        assert ours == frozen


def _reprs(asyncore_mod: Any) -> list[str]:
    class Thing(asyncore_mod.dispatcher):  # type: ignore[misc]
        pass

    out = []
    d = Thing(map={})
    out.append(repr(d))
    d.addr = ("127.0.0.1", 8080)
    out.append(repr(d))
    d.accepting = True
    out.append(repr(d))
    d.accepting, d.connected = False, True
    out.append(repr(d))
    d.addr = "/tmp/some.sock"
    out.append(repr(d))
    d.addr = ("::1", 8080, 0, 0)
    out.append(repr(d))
    return [normalise_output(r) for r in out]


def test_dispatcher_repr() -> None:
    assert _reprs(our_modules()[0]) == _reprs(frozen_modules()[0])


def _compact_traceback(asyncore_mod: Any) -> Any:
    def inner() -> None:
        raise LookupError("deep")

    def outer() -> None:
        inner()

    try:
        outer()
    except LookupError:
        (file, function, line), t, v, info = asyncore_mod.compact_traceback()
    assert sys.exc_info() == (None, None, None)
    return file == __file__, function, line, t, str(v), info


def test_compact_traceback() -> None:
    assert _compact_traceback(our_modules()[0]) == _compact_traceback(frozen_modules()[0])


def test_compact_traceback_without_exception() -> None:
    """3.11 raises AssertionError("traceback does not exist")."""

    def attempt(module: ModuleType) -> Any:
        try:
            module.compact_traceback()
        except Exception as exc:
            return type(exc).__name__, exc.args
        return "no exception"

    assert attempt(our_modules()[0]) == attempt(frozen_modules()[0])


# --------------------------------------------------------------------------- helpers


text = st.lists(st.sampled_from("ab\r\n"), max_size=8).map("".join)


@relaxed
@given(haystack=text, needle=text.filter(bool), as_bytes=st.booleans())
def test_find_prefix_at_end(haystack: str, needle: str, as_bytes: bool) -> None:
    h: Any = haystack.encode() if as_bytes else haystack
    n: Any = needle.encode() if as_bytes else needle
    ours, theirs = our_modules()[1], frozen_modules()[1]
    assert ours.find_prefix_at_end(h, n) == theirs.find_prefix_at_end(h, n)


def _produce(asynchat_mod: Any, data: bytes, size: int | None) -> list[bytes]:
    p = (
        asynchat_mod.simple_producer(data)
        if size is None
        else asynchat_mod.simple_producer(data, size)
    )
    chunks = [p.more() for _ in range(len(data) + 2)]
    return [*chunks, p.data, p.buffer_size]


@relaxed
@given(data=st.binary(max_size=1200), size=st.one_of(st.none(), st.integers(1, 600)))
def test_simple_producer(data: bytes, size: int | None) -> None:
    ours, theirs = our_modules()[1], frozen_modules()[1]
    assert _produce(ours, data, size) == _produce(theirs, data, size)
