"""A pytest plugin that turns the report on for a whole run (``-p tests.report_plugin``):
``test_report`` runs the differential tests with it, to show that the timed dispatch
calls the same handlers in the same order with the same error semantics as 3.11."""

from __future__ import annotations

import os

import pytest

import asyncore_on_asyncio


def pytest_configure(config: pytest.Config) -> None:
    asyncore_on_asyncio.enable_report(os.devnull, slow_handler=None)
