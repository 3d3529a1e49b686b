"""How much code the student writes: lines between ### BEGIN SOLUTION and ### END SOLUTION in the code cells of
solutions/lab*/lab*.py that are graded by a check (blank and comment-only lines not counted; written answers,
which live in markdown cells, not counted). Prints a table per lab.

    python scripts/student_lines.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def student_lines(source: str) -> int:
    """Non-blank, non-comment lines inside BEGIN/END SOLUTION blocks of code cells (a markdown cell's lines start
    with '#', so its blocks count 0)."""
    count, inside = 0, False
    for line in source.splitlines():
        text = line.strip()
        if text == "### BEGIN SOLUTION":
            inside = True
        elif text == "### END SOLUTION":
            inside = False
        elif inside and text and not text.startswith("#"):
            count += 1
    return count


def table() -> dict[str, int]:
    return {p.stem: student_lines(p.read_text()) for p in sorted(ROOT.glob("solutions/lab*/lab*.py"))}


if __name__ == "__main__":
    counts = table()
    print("| lab | " + " | ".join(re.sub(r"^lab(\d+)_.*", r"\1", k) for k in counts) + " | total |")
    print("|---" * (len(counts) + 2) + "|")
    print("| lines | " + " | ".join(str(v) for v in counts.values()) + f" | {sum(counts.values())} |")
