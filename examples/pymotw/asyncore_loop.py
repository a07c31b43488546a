"""PyMOTW's "working with other event loops": step asyncore from a host loop.

Legacy-style script: it imports plain ``asyncore``. Run it unchanged on an asyncio event
loop with::

    python -m asyncore_on_asyncio examples/pymotw/asyncore_loop.py
    python -m asyncore_on_asyncio --loop uvloop examples/pymotw/asyncore_loop.py

A GUI toolkit's idle handler (here: a plain ``while`` loop with a counter) calls
``asyncore.loop(timeout=1, count=1)`` -- one pass over the socket map, waiting at most one
second -- until the two ``HttpClient`` downloads from ``asyncore_http_client.py`` (a
sibling module, imported from this script's directory) are done. Debug logging goes to
stderr; the number of passes and the download results go to stdout.
"""

from __future__ import annotations

import asyncore
import logging
import sys

from asyncore_http_client import PAGES, HttpClient, local_web_server, report


def main() -> int:
    logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    with local_web_server(PAGES) as base_url:
        clients = [HttpClient(base_url + name) for name in PAGES]
        loop_counter = 0
        while asyncore.socket_map:
            loop_counter += 1
            logging.debug("loop_counter=%s", loop_counter)
            asyncore.loop(timeout=1, count=1)
    print(f"the host loop called asyncore.loop(timeout=1, count=1) {loop_counter} times")
    return report(clients)


if __name__ == "__main__":
    sys.exit(main())
