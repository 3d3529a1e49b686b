"""Every lab through the real nbgrader pipeline, in-process (labkit.course.grade_submissions):

* each solution notebook scores full marks and runs top to bottom without a single error;
* each untouched student notebook scores zero, and fails only in its graded test cells: nothing before or
  after them crashes even though no exercise is implemented;
* damaged submissions (LMS download without metadata, copied and deleted cells, custom kernel, broken
  file) are still graded;
* the feedback shows no hidden test.

nbgrader executes each notebook with nbclient (labkit's finite per-cell timeout, python3 kernel) and
LABKIT_FAST=1, so this is also the "runs top to bottom in fast mode" test.
"""

import copy
import html as htmllib
import re
from pathlib import Path

import nbformat
import pytest

from conftest import copy_solution_and_release, grade_folder
from labkit import course

pytestmark = [pytest.mark.nbgrader, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# The labs this file grades end to end (about 15-20 s of autograde per notebook on 2 busy cores).
# Labs 04-08 are graded the same way by their own test module (see docs/instructors.md).
LABS = [lab for lab in course.discover_labs(REPO)
        if lab in ("lab00_setup", "lab01_forward", "lab02_unet", "lab03_embeddings")]
DAMAGED_LAB = "lab00_setup"
REPORT_LAB = "lab01_forward"


def _solution_cells(nb):
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def _make_submissions(folder: Path) -> None:
    copy_solution_and_release(folder, LABS)

    release = nbformat.read(str(REPO / "notebooks" / f"{DAMAGED_LAB}.ipynb"), as_version=4)
    answers = _solution_cells(nbformat.read(str(REPO / "solutions" / DAMAGED_LAB / f"{DAMAGED_LAB}.ipynb"), as_version=4))

    # Colab / LMS: every cell lost its nbgrader metadata, the file was renamed by the LMS.
    lost = copy.deepcopy(release)
    for cell in lost.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell.source = answers.get(gid, cell.source)
        cell.metadata = {"id": "colab-id"}
    nbformat.write(lost, str(folder / f"lost_98765_{DAMAGED_LAB}.ipynb"))

    # Copy-pasted answer cell, deleted test cell, custom kernel name.
    messy = copy.deepcopy(release)
    for cell in messy.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell.source = answers.get(gid, cell.source)
    k = next(i for i, c in enumerate(messy.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    messy.cells.insert(k + 1, copy.deepcopy(messy.cells[k]))
    messy.cells = [c for c in messy.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    messy.metadata["kernelspec"] = {"name": "conda-env-course-py", "display_name": "course", "language": "python"}
    nbformat.write(messy, str(folder / f"messy_{DAMAGED_LAB}.ipynb"))

    (folder / f"broken_{DAMAGED_LAB}.ipynb").write_text('{"cells": [')  # truncated upload

    # Two students with a known mistake in lab 01 (a cumulative sum for alpha_bar), for the class report.
    solution = nbformat.read(str(REPO / "solutions" / REPORT_LAB / f"{REPORT_LAB}.ipynb"), as_version=4)
    for student, extra in (("mistaken_a", ""), ("mistaken_b", "  # the same mistake, written by another student")):
        nb = copy.deepcopy(solution)
        for cell in nb.cells:
            if "return torch.cumprod(1 - betas, dim=0)" in cell.source:
                cell.source = cell.source.replace("return torch.cumprod(1 - betas, dim=0)",
                                                  "return torch.cumsum(1 - betas, dim=0)" + extra)
        (folder / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(folder / student / f"{REPORT_LAB}.ipynb"))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grading")
    _make_submissions(tmp / "submissions")
    results = grade_folder(tmp / "submissions", tmp / "out", LABS, timeout=300, jobs=2)
    return {(r.student, r.lab): r for r in results}, tmp / "out"


def _autograded(out: Path, student: str, lab: str):
    return nbformat.read(str(out / "nbgrader" / lab / "autograded" / student / lab / f"{lab}.ipynb"), as_version=4)


def _errors(cell):
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.parametrize("lab", LABS)
def test_solution_scores_full_marks_and_runs_clean(graded, lab):
    results, out = graded
    r = results[("solution", lab)]
    assert r.status == "graded", r.notes
    assert r.max_score > 0 and r.score == r.max_score
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'nbgrader' / lab / 'gradebook.db'}") as gb:
        sub = gb.find_submission(lab, "solution")
        # autograded points apart: the solution's model answers are written answers, pending manual grading
        assert sub.code_score == sub.max_code_score == r.max_score
        grades = [g for nb in sub.notebooks for g in nb.grades]
        assert not any(g.needs_manual_grade for g in grades if g.cell.cell_type == "code")
        assert all(g.needs_manual_grade for g in grades if g.cell.cell_type == "markdown")
        assert sub.max_written_score == r.manual_max and (r.manual_max > 0) == (lab != "lab00_setup")
    nb = _autograded(out, "solution", lab)
    failing = [(i, e["ename"], e["evalue"][:200]) for i, c in enumerate(nb.cells) for e in _errors(c)]
    assert failing == [], failing
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), "every cell ran"


@pytest.mark.parametrize("lab", LABS)
def test_untouched_release_scores_zero_and_only_tests_fail(graded, lab):
    results, out = graded
    r = results[("blank", lab)]
    assert r.status == "graded" and r.score == 0 and r.max_score > 0
    nb = _autograded(out, "blank", lab)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        is_test = cell.metadata.get("nbgrader", {}).get("grade", False)
        if is_test:
            assert _errors(cell), f"test cell {i} passed on an unanswered notebook"
            assert "not implemented yet" in _errors(cell)[0]["evalue"]
        else:
            assert not _errors(cell), f"cell {i} crashed in the untouched notebook: {_errors(cell)[0]['evalue'][:200]}"


@pytest.mark.parametrize("lab", LABS)
def test_no_stray_reprs_in_outputs(graded, lab):
    """No cell prints ``<torch._C.Generator at 0x...>`` and the like (fast mode, solution and untouched)."""
    from test_notebook_hygiene import stray_reprs

    _, out = graded
    assert stray_reprs(_autograded(out, "solution", lab)) == []
    assert stray_reprs(_autograded(out, "blank", lab), skip_test_cells=True) == []


def test_damaged_submissions_are_still_graded(graded):
    results, _ = graded
    full = results[("solution", DAMAGED_LAB)].max_score
    lost = results[("lost", DAMAGED_LAB)]
    assert (lost.status, lost.score) == ("graded", full), lost.notes
    assert any("restored nbgrader metadata" in n for n in lost.notes)
    messy = results[("messy", DAMAGED_LAB)]
    assert (messy.status, messy.score) == ("graded", full), messy.notes
    assert any("put back" in n for n in messy.notes) and any("duplicate" in n for n in messy.notes)
    broken = results[("broken", DAMAGED_LAB)]
    assert broken.status == "failed" and "unreadable" in broken.notes[0]


def test_scores_csv_lists_every_submission(graded):
    results, out = graded
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0] == "student,lab,score,max_score,manual_score,manual_max,status,notes"
    assert len(lines) == 1 + len(results)


def test_feedback_hides_hidden_tests(graded):
    _, out = graded
    for lab in LABS:
        py = (REPO / "solutions" / lab / f"{lab}.py").read_text()
        hidden = [ln.strip() for block in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", py, re.S)
                  for ln in block.splitlines() if ln.strip()]
        solution_lines = [ln.strip() for b in course.SOLUTION_RE.findall(py) for ln in b.splitlines() if len(ln.strip()) > 3]
        for student in ("solution", "blank"):
            raw = (out / "feedback" / student / f"{lab}.html").read_text()
            html = htmllib.unescape(re.sub(r"<[^>]+>", "", raw))  # the text a student reads
            assert "HIDDEN TESTS" not in html
            for line in hidden:
                assert line not in html, f"{lab}: {line!r} in feedback"
            if student == "blank":
                assert "Tests in this cell failed" in html
                for line in solution_lines:
                    assert line not in html


def test_the_class_report_counts_each_named_mistake(graded):
    """report_<lab>.csv / .html beside scores.csv: the two students who summed instead of multiplying are
    counted under that mistake, with the message they saw; the untouched release is "not implemented"; the
    HTML escapes everything."""
    import csv

    results, out = graded
    rows = list(csv.DictReader(open(out / f"report_{REPORT_LAB}.csv", encoding="utf-8")))
    mistakes = [r for r in rows if r["kind"] == "mistake"]
    assert [(r["exercise"], r["students"]) for r in mistakes] == [("test_alpha_bars_from_betas", "2")], mistakes
    assert "cumulative sum" in mistakes[0]["what"]
    outcomes = {(r["exercise"], r["what"]): int(r["students"]) for r in rows if r["kind"] == "outcome"}
    students = sum(1 for (s, lab) in results if lab == REPORT_LAB)
    assert outcomes[("test_alpha_bars_from_betas", "passed")] == 1  # the solution
    assert outcomes[("test_alpha_bars_from_betas", "failed")] == 2
    assert outcomes[("test_alpha_bars_from_betas", "not implemented")] == 1  # the untouched release
    assert sum(v for (gid, _), v in outcomes.items() if gid == "test_alpha_bars_from_betas") == students == 4
    page = (out / f"report_{REPORT_LAB}.html").read_text(encoding="utf-8")
    assert "cumulative sum" in page and "2 (50%)" in page
    assert "data:image/png;base64," in page  # the score histogram


def test_feedback_says_which_points_are_not_graded_yet(graded):
    """Before manual grading, a written answer reads "not graded yet / 1.0", never "Score: 0.0 / 1.0", and the
    page's total says how many of its points are still to be graded; autograded cells keep their scores."""
    _, out = graded
    raw = (out / "feedback" / "solution" / f"{REPORT_LAB}.html").read_text()
    text = htmllib.unescape(re.sub(r"<[^>]+>", "", raw))
    written = re.findall(r"Written response \(Score: ([^)]*)\)", text)
    assert written and all(w.startswith("not graded yet / ") for w in written), written
    assert "of these points are not graded yet" in text
    tests = re.findall(r"Test cell \(Score: ([^)]*)\)", text)
    assert tests and all(re.fullmatch(r"[\d.]+ / [\d.]+", t) and t.split(" / ")[0] == t.split(" / ")[1]
                         for t in tests), tests


def test_lab03_demo_runs_the_students_network_only_where_its_check_passes(graded):
    """Lab 03's last cells run the student's conditioned UNet when check_unet passes, else labkit's, and say which."""
    _, out = graded
    lab = "lab03_embeddings"
    said = {who: "".join(o.get("text", "") for c in _autograded(out, who, lab).cells for o in c.get("outputs", [])
                         if o.get("output_type") == "stream") for who in ("solution", "blank")}
    assert "Using your UNet" in said["solution"] and "Using labkit's UNet" not in said["solution"]
    assert "Using labkit's UNet: yours does not pass its check yet" in said["blank"]
