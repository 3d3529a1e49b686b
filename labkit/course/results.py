"""What grading reports: one ``GradeResult`` per student and lab, and the scores CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterable


class Status(str, Enum):
    """A submission's status: a ``str`` (``Status.GRADED == "graded"``), written as its value in the CSV."""

    GRADED = "graded"
    NEEDS_REVIEW = "needs review"  # autograded, but a REVIEW note: an answer that calls labkit, tampering
    NEEDS_MANUAL_GRADING = "needs manual grading"  # a test cell nbgrader could not score
    KERNEL_DIED = "kernel died"  # scored from the cells that could run
    OUT_OF_MEMORY = "out of memory"  # a cell hit the memory cap
    FAILED = "failed"  # no score (None: empty in scores.csv, "not graded" in the reports): unreadable upload,
    # nbgrader failed, the grading process or task was lost
    NO_SUBMISSION = "no submission"  # an empty student folder
    PENDING = "pending"  # not graded yet

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


def decide_status(
    *, scored: bool, execution: str | None = None, needs_manual_test: bool = False, review: bool = False
) -> Status:
    """The one place a graded submission's status is decided, from what grading found:

    scored             nbgrader autograded the notebook and the gradebook holds its points
    execution          what went wrong while it ran (``forensics.execution_report``): "kernel died",
                       "out of memory" or None
    needs_manual_test  a test cell nbgrader could not score
    review             the notes hold a REVIEW line (an answer that uses labkit, dynamic code, tampering)

    The first that applies wins: failed, kernel died / out of memory, needs manual grading, needs review,
    graded. (A submission that was never graded is ``FAILED`` or ``NO_SUBMISSION`` where that is known.)"""
    if not scored:
        return Status.FAILED
    if execution:
        return Status(execution)
    if needs_manual_test:
        return Status.NEEDS_MANUAL_GRADING
    return Status.NEEDS_REVIEW if review else Status.GRADED


@dataclass
class GradeResult:
    """One student's result for one lab.

    ``score`` / ``max_score``: the autograded points (test cells). ``manual_max``: points of the written
    answers, graded by a person in nbgrader's formgrader; ``manual_score``: what has been given so far
    (None while any is pending). Status: ``graded``, ``needs review`` (autograded, but the notes hold a
    REVIEW line: an answer that calls the library, tampering), ``needs manual grading`` (a test cell nbgrader
    could not score), ``kernel died``, ``out of memory``, ``failed`` or ``no submission``.

    A failed result has no score: ``score`` is None whenever ``status`` is ``failed`` (enforced here, the one
    place that decides it: whatever points nbgrader recorded before failing are not a grade)."""

    student: str
    lab: str
    score: float | None = None
    max_score: float | None = None
    status: Status = Status.PENDING
    notes: list[str] = field(default_factory=list)
    manual_score: float | None = None
    manual_max: float = 0.0

    def __setattr__(self, name, value):
        if name == "status":  # always a Status (a manifest line or a caller may give the plain string)
            value = Status(value)
            if value is Status.FAILED:
                super().__setattr__("score", None)
        elif name == "score" and getattr(self, "status", None) is Status.FAILED:
            value = None  # a failed result has no score
        super().__setattr__(name, value)

    def fail(self, note: str) -> None:
        """Mark this result failed (no score), saying why."""
        self.status = Status.FAILED
        self.notes.append(note)

    @property
    def manual_pending(self) -> float:
        return self.manual_max if self.manual_score is None else 0.0

    def line(self) -> str:
        score = (
            "-"
            if self.score is None
            else f"{self.score:g}/" + ("?" if self.max_score is None else f"{self.max_score:g}")
        )
        if self.manual_max:
            score += (
                f" +{self.manual_max:g} manual"
                if self.manual_score is None
                else f" +{self.manual_score:g}/{self.manual_max:g}"
            )
        notes = "; ".join(self.notes)
        return f"{self.student:<20} {self.lab:<20} {score:>9}  {self.status}" + (f"  ({notes})" if notes else "")


def write_scores_csv(results: Iterable[GradeResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "lab", "score", "max_score", "manual_score", "manual_max", "status", "notes"])
        for r in results:
            w.writerow(
                [
                    r.student,
                    r.lab,
                    "" if r.score is None else f"{r.score:g}",
                    "" if r.max_score is None else f"{r.max_score:g}",
                    "" if r.manual_score is None else f"{r.manual_score:g}",
                    f"{r.manual_max:g}",
                    r.status,
                    "; ".join(r.notes),
                ]
            )
