"""The class report: what a grading run says about the class, per lab, beside scores.csv.

Every test cell the grader runs records its outcome as data (``trusted``: ``cell.metadata["labkit"]["outcome"]``,
with the check and, when the check recognised one, the named mistake). This module reads those records from
the autograded notebooks (written by the grader, never by a student: only test cells are read, and their
metadata is the grader's own) and writes, per lab,

    out_dir/report_<lab>.csv    one row per exercise and outcome, and per named mistake, with counts
    out_dir/report_<lab>.html   the score histogram, per exercise the share that passed, each named mistake with
                                how many students made it and the message they saw, written answers still to
                                grade, review flags

Every piece of text in the HTML is escaped (a message may quote what a student's code raised).
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

MAX_NOTEBOOK_BYTES = 50 * 2**20  # an autograded notebook larger than this is skipped, not parsed


@dataclass
class LabReport:
    lab: str
    students: int = 0
    scores: list[float] = field(default_factory=list)  # fraction of the autograded points, per student
    exercises: dict = field(default_factory=dict)  # grade id -> Counter of outcome statuses
    points: dict = field(default_factory=dict)  # grade id -> points
    mistakes: Counter = field(default_factory=Counter)  # (grade id, mistake) -> students
    examples: dict = field(default_factory=dict)  # (grade id, mistake) -> one message as a student saw it
    pending_manual: int = 0  # submissions whose written answers are not graded yet
    not_graded: list = field(default_factory=list)  # students whose submission failed (no score)
    flagged: list = field(default_factory=list)  # (student, first REVIEW note)


def _test_cells(nb) -> Iterable[tuple[str, float, dict]]:
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader") or {}
        if cell.cell_type == "code" and md.get("grade") and not md.get("solution"):
            labkit = cell.metadata.get("labkit") if isinstance(cell.metadata.get("labkit"), dict) else {}
            outcome = labkit.get("outcome") if isinstance(labkit.get("outcome"), dict) else {}
            yield str(md.get("grade_id")), float(md.get("points") or 0), outcome


def autograded_path(out_dir: Path, lab: str, student: str) -> Path:
    return out_dir / "nbgrader" / lab / "autograded" / student / lab / f"{lab}.ipynb"


def collect(out_dir: Path, lab: str, results: Iterable) -> LabReport:
    """Read one lab's outcomes from the autograded notebooks of ``results`` (GradeResult for that lab)."""
    import nbformat

    rep = LabReport(lab)
    for r in results:
        if r.lab != lab:
            continue
        if r.status == "failed":  # no score (results.GradeResult): listed as not graded, never counted as 0
            rep.not_graded.append(r.student)
            continue
        if r.score is None:
            continue
        rep.students += 1
        if r.max_score:
            rep.scores.append(r.score / r.max_score)
        if r.manual_max and r.manual_score is None:
            rep.pending_manual += 1
        review = [n for n in r.notes if n.startswith("REVIEW")]
        if review or r.status == "needs review":
            rep.flagged.append((r.student, (review or [r.status])[0]))
        path = autograded_path(out_dir, lab, r.student)
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_NOTEBOOK_BYTES:
                continue
            nb = nbformat.read(str(path), as_version=4)
        except Exception:  # an unreadable notebook: its student still counts in the scores
            continue
        seen = set()
        for gid, points, outcome in _test_cells(nb):
            status = str(outcome.get("status") or "not recorded")[:40]
            rep.exercises.setdefault(gid, Counter())[status] += 1
            rep.points[gid] = points
            mistake = outcome.get("mistake")
            if status == "failed" and isinstance(mistake, str) and (gid, mistake) not in seen:
                seen.add((gid, mistake))  # a student counts once per mistake and exercise
                rep.mistakes[(gid, mistake[:300])] += 1
                rep.examples.setdefault((gid, mistake[:300]), str(outcome.get("message") or "")[:500])
    return rep


def write_csv(rep: LabReport, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["lab", "exercise", "kind", "what", "students", "share"])
        for gid, counts in rep.exercises.items():
            total = sum(counts.values())
            for status, n in sorted(counts.items()):
                w.writerow([rep.lab, gid, "outcome", status, n, f"{n / total:.3f}" if total else ""])
        for (gid, mistake), n in rep.mistakes.most_common():
            w.writerow([rep.lab, gid, "mistake", mistake, n, f"{n / max(rep.students, 1):.3f}"])
        w.writerow([rep.lab, "", "written answers", "pending", rep.pending_manual, ""])
        w.writerow([rep.lab, "", "review", "flagged", len(rep.flagged), ""])
        w.writerow([rep.lab, "", "submissions", "not graded", len(rep.not_graded), ""])


def _histogram_png(scores: list[float]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.hist(
        [100 * s for s in scores],
        bins=[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100.001],
        color="#4c72b0",
        edgecolor="white",
    )
    ax.set(xlabel="autograded score (% of the points)", ylabel="students", xlim=(0, 100))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_html(rep: LabReport, path: Path) -> None:
    e = html.escape
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{e(rep.lab)}: class report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:2px 8px;"
        "text-align:left}th{border-bottom:1px solid #999}.bar{background:#4c72b0;height:0.8em}</style>",
        f"<h1>{e(rep.lab)}: class report</h1>",
        f"<p>{rep.students} graded submissions. Written answers still to grade: {rep.pending_manual}. "
        f"Flagged for review: {len(rep.flagged)}. Not graded (failed, no score): {len(rep.not_graded)}.</p>",
    ]
    if rep.scores:
        parts.append(f"<img alt='score histogram' src='data:image/png;base64,{_histogram_png(rep.scores)}'>")
    parts.append(
        "<h2>Exercises</h2><table><tr><th>test</th><th>points</th><th>passed</th><th></th><th>other outcomes</th></tr>"
    )
    for gid, counts in rep.exercises.items():
        total = sum(counts.values())
        share = counts.get("passed", 0) / total if total else 0.0
        other = ", ".join(f"{e(k)} {v}" for k, v in sorted(counts.items()) if k != "passed")
        parts.append(
            f"<tr><td>{e(gid)}</td><td>{rep.points.get(gid, 0):g}</td><td>{share:.0%}</td>"
            f"<td><div class='bar' style='width:{int(100 * share)}px'></div></td><td>{other}</td></tr>"
        )
    parts.append("</table><h2>Named mistakes</h2>")
    if rep.mistakes:
        parts.append("<table><tr><th>test</th><th>students</th><th>mistake</th><th>message they saw</th></tr>")
        for (gid, mistake), n in rep.mistakes.most_common():
            parts.append(
                f"<tr><td>{e(gid)}</td><td>{n} ({n / max(rep.students, 1):.0%})</td><td>{e(mistake)}</td>"
                f"<td><small>{e(rep.examples.get((gid, mistake), ''))}</small></td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>No check named a mistake in this run.</p>")
    if rep.not_graded:
        parts.append("<h2>Not graded</h2><p>No score (see the notes in scores.csv): ")
        parts.append(", ".join(e(s) for s in rep.not_graded) + "</p>")
    if rep.flagged:
        parts.append("<h2>Flagged for review</h2><ul>")
        parts += [f"<li>{e(s)}: {e(note[:300])}</li>" for s, note in rep.flagged]
        parts.append("</ul>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_class_reports(out_dir: Path, results: list) -> list[Path]:
    """``report_<lab>.html`` and ``report_<lab>.csv`` for every lab in ``results``; returns the HTML paths."""
    written = []
    by_lab = defaultdict(list)
    for r in results:
        by_lab[r.lab].append(r)
    for lab, rs in sorted(by_lab.items()):
        rep = collect(out_dir, lab, rs)
        if not rep.students and not rep.not_graded:
            continue
        write_csv(rep, out_dir / f"report_{lab}.csv")
        write_html(rep, out_dir / f"report_{lab}.html")
        written.append(out_dir / f"report_{lab}.html")
    return written
