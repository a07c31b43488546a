"""The handler report as text: an aligned table, the class to migrate first on top.

It renders the JSON object of :meth:`._report.Collector.data` (its shape is documented in
:mod:`._report`), so a saved JSON report can be shown again the same way.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KINDS", "duration", "render_text"]

KINDS = ("read", "write", "connect", "accept", "close", "expt", "error")
"""The kinds of events the report counts, in its columns' order."""


def duration(seconds: float) -> str:
    """``seconds`` for a sentence: in ms below a second."""
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


_COLUMNS = (
    ("class", "<"),
    ("inst", ">"),
    ("peak", ">"),
    ("cycles", ">"),
    ("read", ">"),
    ("write", ">"),
    ("conn", ">"),
    ("accept", ">"),
    ("close", ">"),
    ("expt", ">"),
    ("error", ">"),
    ("predicates", "<"),
    ("scan_ms", ">"),
    ("handler_ms", ">"),
    ("p50_ms", ">"),
    ("p99_ms", ">"),
    ("max_ms", ">"),
    ("slow", ">"),
)


def render_text(data: dict[str, Any]) -> str:
    """The report as an aligned table, one line per class, the one to migrate first on top."""
    threshold = data["slow_handler_s"]
    head = (
        f"asyncore_on_asyncio report: {len(data['classes'])} dispatcher class(es), "
        f"{data['cycles']} cycles with events, {data['elapsed_s']:.1f} s, slow-handler threshold "
        + ("off" if threshold is None else f"{threshold * 1000:.0f} ms")
    )
    if not data["classes"]:
        return f"{head}\nno dispatcher was created or dispatched.\n"
    first = data["migrate_first"]
    rows = [[name for name, _ in _COLUMNS], *(_row(entry) for entry in data["classes"])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [head, f"migrate first: {first['class']}: {first['reason']}", ""]
    for row in rows:
        cells = [f"{cell:{align}{width}}" for cell, (_, align), width in zip(row, _COLUMNS, widths)]
        lines.append("  ".join(cells).rstrip())
    for entry in data["classes"]:
        if entry["errors"]:
            kinds = ", ".join(f"{name} x{n}" for name, n in entry["errors"].items())
            lines.append(f"handle_error in {entry['class']}: {kinds}")
    return "\n".join(lines) + "\n"


def _row(entry: dict[str, Any]) -> list[str]:
    events, hist, predicates = entry["events"], entry["handler_s"], entry["predicates"]
    return [
        entry["class"],
        *(str(entry[key]) for key in ("instances", "peak", "cycles")),
        *(str(events[kind]) for kind in KINDS),
        _predicates(predicates),
        f"{entry['forced_scan_s'] * 1000:.2f}",
        f"{hist['total'] * 1000:.2f}",
        *(f"{hist[key] * 1000:.2f}" for key in ("p50", "p99", "max")),
        str(entry["slow"]),
    ]


def _predicates(predicates: dict[str, str]) -> str:
    """``stock``, ``own readable+writable``, ``instance writable`` (replaced on objects), ..."""
    groups = [
        f"{kind} " + "+".join(name for name in ("readable", "writable") if predicates[name] == kind)
        for kind in ("own", "instance")
        if kind in predicates.values()
    ]
    return ", ".join(groups) or "stock"
