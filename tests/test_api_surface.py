"""The public surface of Python 3.11's asyncore and asynchat, name by name.

The tables below were produced by introspecting CPython 3.11.7's ``asyncore`` and
``asynchat`` (``inspect.signature`` of every function and method, class attributes and
their defaults, bases, and every other module-level name). Signatures are compared
without annotations; enum defaults are written as ``module.NAME``.

Module-level names that only got there by import (``asyncore.socket``, ``asyncore.EAGAIN``,
``asynchat.deque``...) are listed too: 3.11's modules have no ``__all__``, so
``from asyncore import *`` hands them to legacy programs, and some rely on that.
"""

from __future__ import annotations

import builtins
import collections
import enum
import errno
import importlib
import importlib.metadata
import inspect
import os
import pkgutil
import select
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio import asynchat, asyncore

# Introspection only (the subprocess makes no event loop either).
pytestmark = pytest.mark.loop_free


@dataclass(frozen=True)
class ClassSpec:
    bases: tuple[str, ...]  # "module.name"; "asyncore.X" means our asyncore's X
    methods: Mapping[str, str]
    attributes: Mapping[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------------- asyncore

ASYNCORE_FUNCTIONS = {
    "_exception": "(obj)",
    "_strerror": "(err)",
    "close_all": "(map=None, ignore_all=False)",
    "compact_traceback": "()",
    "loop": "(timeout=30.0, use_poll=False, map=None, count=None)",
    "poll": "(timeout=0.0, map=None)",
    "poll2": "(timeout=0.0, map=None)",
    "poll3": "(timeout=0.0, map=None)",
    "read": "(obj)",
    "readwrite": "(obj, flags)",
    "write": "(obj)",
}

ASYNCORE_CLASSES = {
    "ExitNow": ClassSpec(bases=("builtins.Exception",), methods={}),
    "dispatcher": ClassSpec(
        bases=("builtins.object",),
        attributes={
            "debug": False,
            "connected": False,
            "accepting": False,
            "connecting": False,
            "closing": False,
            "addr": None,
            "ignore_log_types": frozenset({"warning"}),
        },
        methods={
            "__init__": "(self, sock=None, map=None)",
            "__repr__": "(self)",
            "add_channel": "(self, map=None)",
            "del_channel": "(self, map=None)",
            "create_socket": "(self, family=socket.AF_INET, type=socket.SOCK_STREAM)",
            "set_socket": "(self, sock, map=None)",
            "set_reuse_addr": "(self)",
            "readable": "(self)",
            "writable": "(self)",
            "listen": "(self, num)",
            "bind": "(self, addr)",
            "connect": "(self, address)",
            "accept": "(self)",
            "send": "(self, data)",
            "recv": "(self, buffer_size)",
            "close": "(self)",
            "log": "(self, message)",
            "log_info": "(self, message, type='info')",
            "handle_read_event": "(self)",
            "handle_connect_event": "(self)",
            "handle_write_event": "(self)",
            "handle_expt_event": "(self)",
            "handle_error": "(self)",
            "handle_expt": "(self)",
            "handle_read": "(self)",
            "handle_write": "(self)",
            "handle_connect": "(self)",
            "handle_accept": "(self)",
            "handle_accepted": "(self, sock, addr)",
            "handle_close": "(self)",
        },
    ),
    "dispatcher_with_send": ClassSpec(
        bases=("asyncore.dispatcher",),
        methods={
            "__init__": "(self, sock=None, map=None)",
            "initiate_send": "(self)",
            "handle_write": "(self)",
            "writable": "(self)",
            "send": "(self, data)",
        },
    ),
    "file_dispatcher": ClassSpec(
        bases=("asyncore.dispatcher",),
        methods={
            "__init__": "(self, fd, map=None)",
            "set_file": "(self, fd)",
        },
    ),
    "file_wrapper": ClassSpec(
        bases=("builtins.object",),
        methods={
            "__init__": "(self, fd)",
            "__del__": "(self)",
            "recv": "(self, *args)",
            "send": "(self, *args)",
            "getsockopt": "(self, level, optname, buflen=None)",
            "read": "(self, *args)",
            "write": "(self, *args)",
            "close": "(self)",
            "fileno": "(self)",
        },
    ),
}

_ERRNO_NAMES = (
    "EAGAIN EALREADY EBADF ECONNABORTED ECONNRESET EINPROGRESS EINVAL EISCONN ENOTCONN "
    "EPIPE ESHUTDOWN EWOULDBLOCK"
).split()

ASYNCORE_VALUES: dict[str, Callable[[ModuleType], object]] = {
    **{name: (lambda m, name=name: getattr(errno, name)) for name in _ERRNO_NAMES},
    "errorcode": lambda m: errno.errorcode,
    "_DISCONNECTED": lambda m: frozenset(
        {
            errno.ECONNRESET,
            errno.ENOTCONN,
            errno.ESHUTDOWN,
            errno.ECONNABORTED,
            errno.EPIPE,
            errno.EBADF,
        }
    ),
    "_reraised_exceptions": lambda m: (m.ExitNow, KeyboardInterrupt, SystemExit),
}

ASYNCORE_MODULES = {
    "os": os,
    "select": select,
    "socket": socket,
    "sys": sys,
    "time": time,
    "warnings": warnings,
}

# --------------------------------------------------------------------------- asynchat

ASYNCHAT_FUNCTIONS = {
    "find_prefix_at_end": "(haystack, needle)",
}

ASYNCHAT_CLASSES = {
    "async_chat": ClassSpec(
        bases=("asyncore.dispatcher",),
        attributes={
            "ac_in_buffer_size": 65536,
            "ac_out_buffer_size": 65536,
            "use_encoding": 0,
            "encoding": "latin-1",
        },
        methods={
            "__init__": "(self, sock=None, map=None)",
            "collect_incoming_data": "(self, data)",
            "_collect_incoming_data": "(self, data)",
            "_get_data": "(self)",
            "found_terminator": "(self)",
            "set_terminator": "(self, term)",
            "get_terminator": "(self)",
            "handle_read": "(self)",
            "handle_write": "(self)",
            "handle_close": "(self)",
            "push": "(self, data)",
            "push_with_producer": "(self, producer)",
            "readable": "(self)",
            "writable": "(self)",
            "close_when_done": "(self)",
            "initiate_send": "(self)",
            "discard_buffers": "(self)",
        },
    ),
    "simple_producer": ClassSpec(
        bases=("builtins.object",),
        methods={
            "__init__": "(self, data, buffer_size=512)",
            "more": "(self)",
        },
    ),
}

ASYNCHAT_MODULES: dict[str, object] = {
    "asyncore": asyncore,  # ours, not the stdlib's
    "deque": collections.deque,
}

# --------------------------------------------------------------------------- both

# What ``from asyncore import *`` / ``from asynchat import *`` bound on 3.11.
STAR_NAMES = {
    "asyncore": (
        "EAGAIN EALREADY EBADF ECONNABORTED ECONNRESET EINPROGRESS EINVAL EISCONN ENOTCONN "
        "EPIPE ESHUTDOWN EWOULDBLOCK ExitNow close_all compact_traceback dispatcher "
        "dispatcher_with_send errorcode file_dispatcher file_wrapper loop os poll poll2 poll3 "
        "read readwrite select socket socket_map sys time warnings write"
    ).split(),
    "asynchat": "async_chat asyncore deque find_prefix_at_end simple_producer".split(),
}


@dataclass(frozen=True)
class Surface:
    module: ModuleType
    functions: Mapping[str, str]
    classes: Mapping[str, ClassSpec]
    values: Mapping[str, Callable[[ModuleType], object]]
    imports: Mapping[str, object]


SURFACES = {
    "asyncore": Surface(
        asyncore, ASYNCORE_FUNCTIONS, ASYNCORE_CLASSES, ASYNCORE_VALUES, ASYNCORE_MODULES
    ),
    "asynchat": Surface(asynchat, ASYNCHAT_FUNCTIONS, ASYNCHAT_CLASSES, {}, ASYNCHAT_MODULES),
}


# --------------------------------------------------------------------------- helpers


class _Shown:
    """A default value that reprs as given text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def shape(func: Callable[..., Any]) -> str:
    """``str(inspect.signature(func))`` without annotations, enums as ``module.NAME``."""
    sig = inspect.signature(func)
    params = []
    for p in sig.parameters.values():
        default = p.default
        if isinstance(default, enum.Enum):
            default = _Shown(f"{type(default).__module__}.{default.name}")
        params.append(p.replace(annotation=p.empty, default=default))
    return str(sig.replace(parameters=params, return_annotation=sig.empty))


def resolve(qualified: str) -> type:
    module_name, name = qualified.rsplit(".", 1)
    module = {"asyncore": asyncore, "asynchat": asynchat, "builtins": builtins}[module_name]
    obj = getattr(module, name)
    assert isinstance(obj, type)
    return obj


def _cases(table: str) -> list[Any]:
    return [
        pytest.param(module_name, name, id=f"{module_name}.{name}")
        for module_name, surface in SURFACES.items()
        for name in getattr(surface, table)
    ]


# --------------------------------------------------------------------------- tests


def test_signature_rendering() -> None:
    def f(a: int, family: socket.AddressFamily = socket.AF_INET, *args: Any) -> None: ...

    assert shape(f) == "(a, family=socket.AF_INET, *args)"


@pytest.mark.parametrize(("module_name", "name"), _cases("functions"))
def test_function(module_name: str, name: str) -> None:
    surface = SURFACES[module_name]
    func = getattr(surface.module, name, None)
    assert func is not None, f"{module_name}.{name} is missing"
    assert callable(func)
    assert shape(func) == surface.functions[name]


@pytest.mark.parametrize(("module_name", "name"), _cases("classes"))
def test_class(module_name: str, name: str) -> None:
    surface = SURFACES[module_name]
    spec = surface.classes[name]
    cls = getattr(surface.module, name, None)
    assert isinstance(cls, type), f"{module_name}.{name} is missing or not a class"
    assert cls.__module__ == module_name
    assert cls.__qualname__ == name
    for base in spec.bases:
        assert issubclass(cls, resolve(base)), f"{name} is not a subclass of {base}"
    wrong = {}
    for method, expected in spec.methods.items():
        attr = getattr(cls, method, None)
        actual = "<missing>" if attr is None else shape(attr)
        if actual != expected:
            wrong[method] = (actual, expected)
    assert not wrong, f"methods of {module_name}.{name} (actual, 3.11): {wrong}"
    for attribute, value in spec.attributes.items():
        assert attribute in dir(cls), f"{name}.{attribute} is missing"
        actual_value = getattr(cls, attribute)
        assert type(actual_value) is type(value) and actual_value == value, (
            f"{name}.{attribute} = {actual_value!r}, 3.11 has {value!r}"
        )


@pytest.mark.parametrize(("module_name", "name"), _cases("values"))
def test_value(module_name: str, name: str) -> None:
    surface = SURFACES[module_name]
    assert hasattr(surface.module, name), f"{module_name}.{name} is missing"
    assert getattr(surface.module, name) == surface.values[name](surface.module)


@pytest.mark.parametrize(("module_name", "name"), _cases("imports"))
def test_module_level_import(module_name: str, name: str) -> None:
    surface = SURFACES[module_name]
    assert getattr(surface.module, name, None) is surface.imports[name]


def test_socket_map() -> None:
    assert type(asyncore.socket_map) is dict


def test_tables_cover_star_names() -> None:
    for module_name, surface in SURFACES.items():
        tabled = {
            *surface.functions,
            *surface.classes,
            *surface.values,
            *surface.imports,
            "socket_map",
        }
        assert set(STAR_NAMES[module_name]) <= tabled


@pytest.mark.parametrize("module_name", STAR_NAMES)
def test_star_import(module_name: str) -> None:
    """``from asyncore import *`` gives legacy code at least what 3.11 gave it."""
    module = SURFACES[module_name].module
    namespace: dict[str, Any] = {}
    exec(f"from {module.__name__} import *", namespace)
    missing = [n for n in STAR_NAMES[module_name] if n not in namespace]
    assert not missing, f"'from {module_name} import *' lacks {missing}"
    assert all(namespace[n] is getattr(module, n) for n in STAR_NAMES[module_name])


def test_package_contract() -> None:
    for name in ("install", "set_loop_factory", "get_event_loop", "close_event_loop"):
        assert callable(getattr(asyncore_on_asyncio, name, None)), name
        assert name in asyncore_on_asyncio.__all__, name


def test_version_matches_metadata() -> None:
    """The suite runs against the installed package (``pip install -e '.[test]'``)."""
    assert asyncore_on_asyncio.__version__ == importlib.metadata.version("asyncore-on-asyncio")


def _public_modules() -> list[str]:
    names = [asyncore_on_asyncio.__name__]
    for info in pkgutil.iter_modules(asyncore_on_asyncio.__path__):
        if not info.name.startswith("_"):  # also skips __main__, which would run
            names.append(f"{asyncore_on_asyncio.__name__}.{info.name}")
    return names


def test_public_modules_found() -> None:
    assert {"asyncore_on_asyncio.asyncore", "asyncore_on_asyncio.asynchat"} <= set(
        _public_modules()
    )


@pytest.mark.parametrize("module_name", _public_modules())
def test_exported_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    if module_name == asyncore_on_asyncio.__name__:
        assert exported is not None, "the package must define __all__"
    if exported is None:
        return
    assert all(isinstance(n, str) for n in exported)
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{module_name}.__all__ names missing attributes: {missing}"


def test_import_has_no_side_effects() -> None:
    """Importing the package must not replace the asyncore/asynchat modules: only
    install() does that."""
    code = (
        "import sys, asyncore_on_asyncio;"
        "assert 'asyncore' not in sys.modules, sys.modules['asyncore'];"
        "assert 'asynchat' not in sys.modules, sys.modules['asynchat']"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=30)
