"""Fixtures for the differential tests: every scenario runs with select() and with poll()."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[False, True], ids=["select", "poll"])
def use_poll(request: pytest.FixtureRequest) -> bool:
    """``loop(use_poll=...)``: 3.11 dispatches select() and poll() results differently."""
    return bool(request.param)
