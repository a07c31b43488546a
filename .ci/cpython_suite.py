"""Run CPython 3.11's own test_asyncore and test_asynchat, unmodified, against this package.

Usage: python .ci/cpython_suite.py TEST_DIR [asyncio|uvloop]

TEST_DIR is the ``test`` directory of a Python 3.11 installation (the modules are
imported from there, not copied).  ``install()`` makes their ``import asyncore`` /
``import asynchat`` give our modules; ``test.support`` comes from the running
interpreter.  Exits non-zero if any test fails.
"""

from __future__ import annotations

import sys
import unittest
import warnings


def main() -> int:
    test_dir, loop = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "asyncio")
    import asyncore_on_asyncio

    asyncore_on_asyncio.install()
    if loop == "uvloop":
        import uvloop

        asyncore_on_asyncio.set_loop_factory(uvloop.new_event_loop)
    sys.path.insert(0, test_dir)
    with warnings.catch_warnings():
        # Only import-time noise of the 3.11 test modules themselves is silenced here.
        warnings.simplefilter("ignore", DeprecationWarning)
        import test_asynchat
        import test_asyncore
    suite = unittest.TestSuite()
    for module in (test_asyncore, test_asynchat):
        suite.addTests(unittest.defaultTestLoader.loadTestsFromModule(module))
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    print(f"CPython 3.11 test_asyncore + test_asynchat on {loop}: {result.testsRun} run, "
          f"{len(result.failures) + len(result.errors)} failed, {len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
