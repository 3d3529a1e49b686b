"""What grading reports: one ``GradeResult`` per student and lab, and the scores CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable


@dataclass
class GradeResult:
    """One student's result for one lab.

    ``score`` / ``max_score``: the autograded points (test cells). ``manual_max``: points of the written
    answers, graded by a person in nbgrader's formgrader; ``manual_score``: what has been given so far
    (None while any is pending). Status: ``graded``, ``needs review`` (autograded, but the notes hold a
    REVIEW line: an answer that calls the library, tampering), ``needs manual grading`` (a test cell nbgrader
    could not score), ``kernel died``, ``out of memory``, ``failed`` or ``no submission``."""

    student: str
    lab: str
    score: float | None = None
    max_score: float | None = None
    status: str = "pending"
    notes: list[str] = field(default_factory=list)
    manual_score: float | None = None
    manual_max: float = 0.0

    @property
    def manual_pending(self) -> float:
        return self.manual_max if self.manual_score is None else 0.0

    def line(self) -> str:
        score = "-" if self.score is None else f"{self.score:g}/" + ("?" if self.max_score is None else f"{self.max_score:g}")
        if self.manual_max:
            score += (f" +{self.manual_max:g} manual" if self.manual_score is None
                      else f" +{self.manual_score:g}/{self.manual_max:g}")
        notes = "; ".join(self.notes)
        return f"{self.student:<20} {self.lab:<20} {score:>9}  {self.status}" + (f"  ({notes})" if notes else "")


def write_scores_csv(results: Iterable[GradeResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "lab", "score", "max_score", "manual_score", "manual_max", "status", "notes"])
        for r in results:
            w.writerow([r.student, r.lab, "" if r.score is None else f"{r.score:g}",
                        "" if r.max_score is None else f"{r.max_score:g}",
                        "" if r.manual_score is None else f"{r.manual_score:g}", f"{r.manual_max:g}",
                        r.status, "; ".join(r.notes)])
