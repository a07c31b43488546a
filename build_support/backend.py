"""PEP 517 backend: setuptools', asking for Cython only when the core will be compiled.

A pure build (``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS=1``, another interpreter or platform)
needs nothing but setuptools, as yarl's and propcache's in-tree backends do.
"""

from __future__ import annotations

from typing import Any

from core_build import CYTHON_REQUIREMENT, why_not_compiled
from setuptools import build_meta
from setuptools.build_meta import (  # noqa: F401  (the rest of the backend, unchanged)
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)


def _with_cython(requires: list[str]) -> list[str]:
    return requires if why_not_compiled() is not None else [*requires, CYTHON_REQUIREMENT]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _with_cython(build_meta.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _with_cython(build_meta.get_requires_for_build_editable(config_settings))
