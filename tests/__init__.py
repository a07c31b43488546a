"""The test suite (see conftest.py).  Importing it first applies ``ASYNCORE_TEST_HIDE``
(tests/hide/sitecustomize.py), before anything here imports the package under test."""

from tests.hide.sitecustomize import hide_for_this_run

HIDDEN_NAMES = hide_for_this_run()
"""What this run hides of ``select`` (``()``: nothing; ``("epoll",)``; ``("epoll", "poll")``)."""
