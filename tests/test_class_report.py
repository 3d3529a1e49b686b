"""The class report's pieces without a grading run (the end-to-end count is in test_notebooks.py): outcomes
read only from test cells, a student counted once per mistake, everything escaped in the HTML."""

from pathlib import Path

import nbformat

from labkit.course import report
from labkit.course.results import GradeResult


def _autograded(out: Path, lab: str, student: str, outcomes: list[dict], forged: dict | None = None):
    cells = []
    for k, outcome in enumerate(outcomes):
        cell = nbformat.v4.new_code_cell("checks.check_x(x)")
        cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": f"test_{k}", "points": 2}
        cell.metadata["labkit"] = {"outcome": outcome}
        cells.append(cell)
    answer = nbformat.v4.new_code_cell("def x(): pass")  # a student's cell claiming an outcome: never read
    answer.metadata["nbgrader"] = {"grade": False, "solution": True, "grade_id": "x"}
    answer.metadata["labkit"] = {"outcome": forged or {}}
    cells.append(answer)
    path = report.autograded_path(out, lab, student)
    path.parent.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))


def test_counts_outcomes_and_mistakes_and_escapes_everything(tmp_path):
    hostile = "<img src=x onerror=alert(1)>"
    wrong = {"status": "failed", "check": "check_x", "mistake": f"a sum {hostile}", "message": f"seen {hostile}"}
    _autograded(tmp_path, "lab", "ann", [{"status": "passed"}, wrong])
    _autograded(tmp_path, "lab", "bob", [wrong, wrong],  # one student, one count per test
                forged={"status": "failed", "mistake": "forged by the student"})
    _autograded(tmp_path, "lab", "cat", [{"status": "not implemented"}, {"status": "timed out"}])
    results = [GradeResult("ann", "lab", 2, 4, "graded", manual_max=1.0),
               GradeResult("bob", "lab", 0, 4, "needs review", notes=[f"REVIEW cell 3: uses {hostile}"]),
               GradeResult("cat", "lab", 0, 4, "graded", manual_score=1.0, manual_max=1.0)]
    paths = report.write_class_reports(tmp_path, results)
    rep = report.collect(tmp_path, "lab", results)
    assert rep.students == 3 and rep.pending_manual == 1 and len(rep.flagged) == 1
    assert rep.exercises["test_0"] == {"passed": 1, "failed": 1, "not implemented": 1}
    assert rep.exercises["test_1"] == {"failed": 2, "timed out": 1}
    assert rep.mistakes == {("test_1", f"a sum {hostile}"): 2, ("test_0", f"a sum {hostile}"): 1}
    assert all("forged" not in m for _, m in rep.mistakes)
    page = paths[0].read_text()
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert (tmp_path / "report_lab.csv").read_text().count("mistake") == 2


def test_a_linked_or_huge_notebook_is_not_read(tmp_path, monkeypatch):
    _autograded(tmp_path, "lab", "ann", [{"status": "passed"}])
    target = report.autograded_path(tmp_path, "lab", "ann")
    link = report.autograded_path(tmp_path, "lab", "eve")
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    results = [GradeResult("ann", "lab", 2, 2, "graded"), GradeResult("eve", "lab", 2, 2, "graded")]
    rep = report.collect(tmp_path, "lab", results)
    assert rep.exercises["test_0"] == {"passed": 1}  # eve's link was not followed
    monkeypatch.setattr(report, "MAX_NOTEBOOK_BYTES", 10)
    assert report.collect(tmp_path, "lab", results).exercises == {}


def test_a_submission_cannot_bring_its_own_outcomes():
    """Outcomes planted in a submitted notebook (a test cell that claims "passed", forged library findings) are
    removed when the submission is restored, before grading: only the grader writes them."""
    import copy

    from labkit.course.restore import restore_submission

    release = nbformat.read(str(Path(__file__).resolve().parents[1] / "notebooks" / "lab01_forward.ipynb"), as_version=4)
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        cell.metadata["labkit"] = {"outcome": {"status": "passed"}, "library": []}
    notes = restore_submission(nb, release)
    assert all("labkit" not in c.metadata for c in nb.cells)
    assert any("only the grader writes" in n for n in notes)
    untouched = copy.deepcopy(release)
    assert not any("only the grader writes" in n for n in restore_submission(untouched, release))
