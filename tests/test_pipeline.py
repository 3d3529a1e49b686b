"""One grading pipeline (issue 27, item 1): the local path is prepare -> grade task -> merge by the client, the
same steps as on Dask, so the manifest makes a local re-run grade only what is new or changed.

A class of three lab00_setup submissions (honest, blank, an upload cut short) graded three times in two worker
processes: all of it; again (nothing graded); with one notebook changed (only it graded). About a minute.
"""

from __future__ import annotations

import copy
import csv
import sqlite3
from pathlib import Path

import nbformat
import pytest

from labkit import course
from labkit.course.manifest import MANIFEST_NAME, Manifest

pytestmark = [pytest.mark.nbgrader, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
LAB = "lab00_setup"


def _release():
    return nbformat.read(str(REPO / "notebooks" / f"{LAB}.ipynb"), as_version=4)


def _solved():
    nb = copy.deepcopy(_release())
    src = nbformat.read(str(REPO / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in src.cells
               if (c.metadata.get("nbgrader") or {}).get("solution")}
    for cell in nb.cells:
        gid = (cell.metadata.get("nbgrader") or {}).get("grade_id")
        if gid in answers:
            cell.source = "\n".join(ln for ln in answers[gid].splitlines() if "### " not in ln)
    return nb


def _grade(subs: Path, out: Path):
    stats: dict = {}
    results = course.grade_submissions(subs, out, [LAB], repo_root=REPO, jobs=2, timeout=60, verbose=False,
                                       stats=stats)
    return {r.student: r for r in results}, stats


def _gradebook(out: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(str(out / "nbgrader" / LAB / "gradebook.db")) as con:
        return sorted(con.execute("SELECT student_id, COUNT(*) FROM submitted_assignment GROUP BY student_id"))


def test_a_local_rerun_grades_only_what_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob", "cy"):
        (subs / student).mkdir(parents=True)
    nbformat.write(_solved(), str(subs / "ann" / f"{LAB}.ipynb"))
    nbformat.write(_release(), str(subs / "bob" / f"{LAB}.ipynb"))
    (subs / "cy" / f"{LAB}.ipynb").write_text(nbformat.writes(_solved())[:3000])  # cut short: not JSON

    first, stats = _grade(subs, out)
    assert (stats["submitted"], stats["merged"], stats["skipped"], stats["failed_tasks"]) == (3, 3, 0, 0), stats
    assert (first["ann"].score, first["ann"].max_score, first["ann"].status) == (1.0, 1.0, "graded")
    assert (first["bob"].score, first["bob"].status) == (0.0, "graded")
    assert (first["cy"].score, first["cy"].status) == (None, "failed"), first["cy"].notes  # no score
    with open(out / "scores.csv") as f:
        assert {row["student"]: row["score"] for row in csv.DictReader(f)} == {"ann": "1", "bob": "0", "cy": ""}
    assert (out / "feedback" / "ann" / f"{LAB}.html").exists()
    assert not (out / "nbgrader" / LAB / ".labkit-grading.lock").exists()  # no lock: one writer, the client
    assert _gradebook(out) == [("ann", 1), ("bob", 1)]
    workers = {rec["worker"] for rec in Manifest(out / MANIFEST_NAME).records.values()}
    assert all(w.startswith("process ") for w in workers), workers  # graded in the executor's processes

    again, stats = _grade(subs, out)
    assert (stats["submitted"], stats["skipped"]) == (0, 3), stats  # nothing re-graded
    assert {s: (r.score, r.status) for s, r in again.items()} == {s: (r.score, r.status) for s, r in first.items()}

    nbformat.write(_solved(), str(subs / "bob" / f"{LAB}.ipynb"))  # bob finished his notebook
    third, stats = _grade(subs, out)
    assert (stats["submitted"], stats["merged"], stats["skipped"]) == (1, 1, 2), stats  # only bob
    assert (third["bob"].score, third["bob"].status) == (1.0, "graded")
    assert _gradebook(out) == [("ann", 1), ("bob", 1)]  # one submission each, bob's replaced
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 4  # three merges, then bob's
