"""Developer convenience: ``nox`` runs the same checks as ``.ci/run``, one session per
interpreter (``nox -s tests-3.12``, ``nox -s lint``). CI itself runs ``.ci/run``, which
does not need nox."""

from __future__ import annotations

import nox

PYTHONS = ["3.11", "3.12", "3.13"]

nox.options.sessions = ["lint", "tests"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(python=PYTHONS[-1])
def lint(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("ruff", "check", ".")
    session.run("mypy", "--strict", "asyncore_on_asyncio")
