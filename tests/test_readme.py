"""README.md's example of a dispatcher and a coroutine on one loop runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTION = "## A dispatcher and a coroutine on one loop"


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python block under {SECTION!r}"
    return match.group(1)


def test_readme_example_runs(tmp_path: Path, loop_kind: str) -> None:
    code = readme_example()
    assert code.rstrip().endswith("asyncio.run(main())")
    if loop_kind == "uvloop":  # the same program on uvloop: only the runner differs
        code = code.replace(
            "asyncio.run(main())",
            "import uvloop\nwith asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:\n"
            "    runner.run(main())",
        )
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "b'hello\\n'\n", "")
