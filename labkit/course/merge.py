"""The merge: the client writes one task's result into the class's course (the only gradebook writer).

The submitted and autograded notebooks go into ``OUT/nbgrader/<lab>/``, the scores into its gradebook.db
with nbgrader's own ``SaveAutoGrades`` and ``AssignLatePenalties`` (what nbgrader's autograde does after
executing: the formgrader then sees an ordinary autograded submission), in one transaction with a record of
the merge (``labkit_merged``), before the manifest line (``manifest.Manifest``) is appended.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from labkit.course.autograde import quiet_warnings, read_scores
from labkit.course.results import GradeResult
from labkit.course.sources import import_nbformat


def _replace_dir(target: Path, files: dict[str, bytes]) -> None:
    """``target`` holds exactly ``files`` afterwards; written beside it first, then swapped in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    for rel, data in files.items():
        p = (new / rel).resolve()
        if not str(p).startswith(str(new.resolve()) + os.sep):
            continue  # never outside the folder
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    old = None
    if target.exists():
        old = target.parent / f".{target.name}-old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def merge_result(
    course: str | os.PathLike, lab: str, student: str, payload: dict, mark: dict | None = None
) -> GradeResult:
    """Write one worker result into the client's course ``course``: the submitted and autograded notebooks,
    then the scores in its gradebook, in one transaction: nbgrader's ``SaveAutoGrades`` and
    ``AssignLatePenalties`` on the autograded notebook (what autograde runs after executing; their per-cell
    commits become flushes, so a crash never leaves half a submission's grades). Idempotent: merging the same
    result again leaves the same files and one submission. The score reported is the gradebook's.

    ``mark`` (the manifest record's fields: sha256, grader, worker, ...): written with the result into the
    gradebook's ``labkit_merged`` table in the same transaction, so that a client killed after the commit and
    before its manifest line is written finds the merge there (``Manifest.recover`` of
    ``merged_in_gradebook``) and never grades that notebook again."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import AssignLatePenalties, SaveAutoGrades

    course = Path(course)
    res = GradeResult(**payload["result"])
    if payload.get("submitted") is not None:
        _replace_dir(course / "submitted" / student / lab, {f"{lab}.ipynb": payload["submitted"]})
    files = payload.get("autograded") or {}
    if f"{lab}.ipynb" not in files:  # nothing was autograded (e.g. an unreadable upload): no scores to write
        if mark is not None and (course / "gradebook.db").exists():
            import sqlite3

            with contextlib.closing(sqlite3.connect(str(course / "gradebook.db"))) as con, con:
                for sql, args in _mark_sql(lab, student, res, mark, autograded=False):
                    con.execute(sql, args)
        return res
    _replace_dir(course / "autograded" / student / lab, files)
    nb = import_nbformat().reads(files[f"{lab}.ipynb"].decode("utf-8"), as_version=4)
    db = f"sqlite:///{course / 'gradebook.db'}"
    resources = {"nbgrader": {"db_url": db, "assignment": lab, "notebook": lab, "student": student}}
    ctx = quiet_warnings()
    try:
        with Gradebook(db) as gb:
            with _one_transaction(gb.db):
                gb.update_or_create_student(student)
                gb.update_or_create_submission(lab, student)
                saver = SaveAutoGrades()
                saver.gradebook, saver.notebook_id, saver.assignment_id, saver.student_id, saver.db_url = (
                    gb,
                    lab,
                    lab,
                    student,
                    db,
                )
                for index, cell in enumerate(nb.cells):  # SaveAutoGrades.preprocess, on this gradebook
                    saver.preprocess_cell(cell, resources, index)
                late = AssignLatePenalties()
                late.init_plugin()
                late.gradebook, late.notebook_id, late.assignment_id, late.student_id = gb, lab, lab, student
                notebook = gb.find_submission_notebook(lab, lab, student)
                notebook.late_submission_penalty = None
                seconds_late = gb.find_submission(lab, student).total_seconds_late
                if seconds_late > 0:
                    penalty = late.plugin_inst.late_submission_penalty(student, notebook.score, seconds_late)
                    if penalty is not None:
                        notebook.late_submission_penalty = late._check_late_penalty(notebook, penalty)
                gb.db.flush()
                gb.db.expire_all()  # the scores below are read from the rows just written
                check = GradeResult(student, lab)
                read_scores(check, gb.find_submission(lab, student))
                _settle(res, check)
                if mark is not None:
                    from sqlalchemy import text

                    for sql, args in _mark_sql(lab, student, res, mark, autograded=True):
                        gb.db.execute(text(_named(sql)), {f"a{i}": v for i, v in enumerate(args)})
    finally:
        ctx.__exit__(None, None, None)
    return res


def _settle(res: GradeResult, check: GradeResult) -> None:
    """The gradebook's scores win over the worker's (said in the notes when they differ)."""
    if (check.score, check.max_score) != (res.score, res.max_score):
        res.notes.append(
            f"the worker scored {res.score}/{res.max_score}; the gradebook holds "
            f"{check.score}/{check.max_score} (reported)"
        )
    res.score, res.max_score, res.manual_score, res.manual_max = (
        check.score,
        check.max_score,
        check.manual_score,
        check.manual_max,
    )


MERGED_TABLE = "labkit_merged"  # in each lab's gradebook.db: what the client merged, committed with the scores


def _mark_sql(lab: str, student: str, res: GradeResult, mark: dict, autograded: bool) -> list[tuple[str, tuple]]:
    rec = {**mark, "lab": lab, "student": student, "result": asdict(res), "autograded": autograded}
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {MERGED_TABLE} (lab TEXT NOT NULL, student TEXT NOT NULL, "
            "record TEXT NOT NULL, PRIMARY KEY (lab, student))",
            (),
        ),
        (
            f"INSERT OR REPLACE INTO {MERGED_TABLE} (lab, student, record) VALUES (?, ?, ?)",
            (lab, student, json.dumps(rec, sort_keys=True)),
        ),
    ]


def _named(sql: str) -> str:
    """``?`` placeholders as SQLAlchemy's ``:a0, :a1, ...``."""
    parts = sql.split("?")
    return "".join(part + (f":a{i}" if i < len(parts) - 1 else "") for i, part in enumerate(parts))


def merged_in_gradebook(course: str | os.PathLike) -> list[dict]:
    """The records of ``labkit_merged`` in the course's gradebook (none when it has no such table)."""
    import sqlite3

    db = Path(course) / "gradebook.db"
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            rows = con.execute(f"SELECT record FROM {MERGED_TABLE}").fetchall()
        except sqlite3.OperationalError:  # no such table: nothing merged by this version yet
            return []
    out = []
    for (text,) in rows:
        with contextlib.suppress(ValueError):
            out.append(json.loads(text))
    return out


@contextlib.contextmanager
def _one_transaction(session):
    """nbgrader commits after every cell it scores: inside this block a commit only flushes, and the block
    commits once at the end (or rolls everything back on an error)."""
    commit = session.commit
    session.commit = session.flush
    try:
        yield
    except BaseException:
        del session.commit
        session.rollback()
        raise
    del session.commit
    commit()
