"""Find the submissions in a folder: nbgrader's layout, one folder per student, or an LMS's flat download."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from labkit.course.restore import normalise_source
from labkit.course.sources import ALLOWED_BESIDE_SOURCE
from labkit.errors import LabkitError


@dataclass
class Submission:
    student: str
    lab: str
    path: Path


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@.-]+", "-", text).strip("-.") or "unknown"


def _lab_from_name(name: str, labs: Sequence[str]) -> str | None:
    low = name.lower()
    for lab in sorted(labs, key=len, reverse=True):
        if lab.lower() in low:
            return lab
    for lab in labs:
        prefix = lab.split("_")[0].lower()  # "lab01"
        if re.search(rf"(^|[^a-z0-9]){re.escape(prefix)}([^0-9]|$)", low):
            return lab
    return None


def _lab_from_content(path: Path, releases: dict) -> str | None:
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except Exception:
        return None
    ids = {((c.get("metadata") or {}).get("nbgrader") or {}).get("grade_id") for c in cells}
    texts = {normalise_source("".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source", "")) for c in cells}
    best, best_score = None, 0
    for lab, rel in releases.items():
        score = sum(1 for c in rel.cells if c.metadata.get("nbgrader", {}).get("grade_id") in ids)
        score += sum(1 for c in rel.cells if c.metadata.get("nbgrader", {}).get("locked") and normalise_source(c.source) in texts)
        if score > best_score:
            best, best_score = lab, score
    return best


def find_submissions(submissions_dir: str | os.PathLike, labs: Sequence[str], releases: dict | None = None):
    """Find ``(submissions, problems)`` in either layout:

    * ``<student>/<lab>.ipynb`` or ``<student>/<lab>/<lab>.ipynb`` (nbgrader's submitted layout);
    * flat, as an LMS download: ``<student>_<anything>.ipynb``, the student id being everything before the
      first underscore, the lab found in the rest of the name (``lab01_forward`` or ``lab01``) or, failing
      that, from the notebook's content.

    When a student has several files for one lab the newest (by modification time) is graded.
    """
    root = Path(submissions_dir)
    if not root.is_dir():
        raise LabkitError(f"submissions folder {root} does not exist")
    found: dict[tuple[str, str], list[Path]] = {}
    problems: list[str] = []

    def add(student: str, path: Path, hint: str) -> None:
        lab = _lab_from_name(hint, labs) or (_lab_from_content(path, releases) if releases else None)
        if lab is None:
            problems.append(f"{path.relative_to(root)}: cannot tell which lab this is (name it <student>_<lab>.ipynb)")
            return
        found.setdefault((student, lab), []).append(path)

    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in ALLOWED_BESIDE_SOURCE:
            continue
        if entry.is_dir():
            student = _safe_id(entry.name)
            notebooks = [p for p in sorted(entry.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
            if not notebooks:
                problems.append(f"{entry.name}/: {_empty_folder_note(entry)}")
            for nbpath in notebooks:
                add(student, nbpath, str(nbpath.relative_to(entry)))
        elif entry.suffix == ".ipynb":
            student, _, rest = entry.stem.partition("_")
            add(_safe_id(student), entry, rest or entry.stem)
    subs = []
    for (student, lab), paths in sorted(found.items()):
        paths = sorted(paths, key=lambda p: p.stat().st_mtime)
        if len(paths) > 1:
            problems.append(f"{student}/{lab}: {len(paths)} files, grading the newest ({paths[-1].name})")
        subs.append(Submission(student, lab, paths[-1]))
    return subs, problems


def _empty_folder_note(folder: Path) -> str:
    others = sorted(p.name for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    if not others:
        return "empty folder, no notebook submitted"
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    return f"no notebook (.ipynb) in the folder, only {shown}"


def empty_students(submissions_dir: Path, subs: Sequence[Submission]) -> list[tuple[str, str]]:
    """``(student, note)`` for each student folder in which no notebook was found."""
    graded = {s.student for s in subs}
    out = []
    for entry in sorted(Path(submissions_dir).iterdir()):
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in ALLOWED_BESIDE_SOURCE:
            if _safe_id(entry.name) not in graded and not any(
                    ".ipynb_checkpoints" not in p.parts for p in entry.rglob("*.ipynb")):
                out.append((_safe_id(entry.name), _empty_folder_note(entry)))
    return out
