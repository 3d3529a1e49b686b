"""Graded written answers (issue 13): nbgrader manually graded markdown cells in labs 01-08.

* every lab ends with 2-4 questions, each a locked question cell followed by an answer cell with points;
  the model answer and its rubric are in the instructor notebook only;
* ``labkit build`` rejects answer cells without points, markers or rubric;
* the metadata repair keeps a student's written answers (Colab drops nbgrader's metadata);
* end to end (slow): ``labkit grade`` reports the autograded points apart from the written ones, then the
  real nbgrader formgrader (its REST API, in a jupyter_server started by the test) takes manual scores and
  comments, and the totals and the feedback come out right.
"""

from __future__ import annotations

import copy
import html as htmllib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from labkit import course
from labkit.errors import LabkitError

REPO = Path(__file__).resolve().parents[1]
WRITTEN_LABS = [lab for lab in course.discover_labs(REPO) if "lab01" <= lab[:5] <= "lab08"]
LAB = "lab01_forward"
STUB = "YOUR ANSWER HERE"


def _md(cell) -> dict:
    return cell.metadata.get("nbgrader") or {}


def _answers(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "markdown" and _md(c).get("solution")]


@pytest.mark.parametrize("lab", WRITTEN_LABS)
def test_each_lab_has_graded_written_answers(lab):
    student = nbformat.read(str(REPO / "notebooks" / f"{lab}.ipynb"), as_version=4)
    solution = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    answers = _answers(student)
    assert 2 <= len(answers) <= 4
    assert 2 <= sum(_md(c)["points"] for c in answers) <= 4
    for cell in answers:
        md = _md(cell)
        assert md["grade"] and not md["locked"] and md["points"] > 0 and cell.source.strip() == STUB
        before = student.cells[student.cells.index(cell) - 1]  # its question: locked, so the repair finds it
        assert before.cell_type == "markdown" and _md(before).get("locked") and "Question" in before.source
    model = {c.id: c.source for c in _answers(solution)}
    assert set(model) == {c.id for c in answers}
    for source in model.values():
        assert "**Model answer.**" in source and "**Rubric" in source and "### END SOLUTION" in source
    # the intro says so, with the right number of points
    points = sum(_md(c)["points"] for c in answers)
    assert f"graded by hand ({points:g} points)" in student.cells[0].source


BAD_SOURCES = {
    "no markers": "**Model answer.** x\n\n**Rubric.** y",
    "no rubric": "### BEGIN SOLUTION\n**Model answer.** x\n### END SOLUTION",
    "rubric only": "### BEGIN SOLUTION\nRubric\n### END SOLUTION",
}


@pytest.mark.parametrize("problem", [*BAD_SOURCES, "no points", "locked"])
def test_build_rejects_bad_written_answer_cells(problem):
    from labkit.course.build import check_written_answers

    md = {"grade": True, "grade_id": "answer_1", "locked": False, "points": 1, "schema_version": 3, "solution": True}
    good = "### BEGIN SOLUTION\n**Model answer.** x\n\n**Rubric (1 point).** y\n### END SOLUTION"
    source = BAD_SOURCES.get(problem, good)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(good, metadata={"nbgrader": dict(md)})])
    check_written_answers(nb, "ok.py")  # the good cell passes
    if problem == "no points":
        md.update(grade=False, points=0)
    if problem == "locked":
        md["locked"] = True
    nb.cells[0] = nbformat.v4.new_markdown_cell(source, metadata={"nbgrader": md})
    with pytest.raises(LabkitError, match="answer_1"):
        check_written_answers(nb, "bad.py")


def _written_submission(lab: str = LAB, *, code_answers: bool = True):
    """The release with every exercise solved and every question answered in the student's words."""
    release = nbformat.read(str(REPO / "notebooks" / f"{lab}.ipynb"), as_version=4)
    solution = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    code = {c.id: c.source for c in solution.cells if c.cell_type == "code" and _md(c).get("solution")}
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        gid = _md(cell).get("grade_id")
        if code_answers and gid in code:
            cell.source = code[gid]
        if cell.cell_type == "markdown" and _md(cell).get("solution"):
            cell.source = f"My answer to {gid}: the digit fades into noise around t = 400 (student text)."
    return release, nb


def _colab_copy(nb):
    """What Colab gives back: no nbgrader metadata; here also a second cell for answer 2 and answer 4
    left as it was."""
    lost = copy.deepcopy(nb)
    k2 = next(i for i, c in enumerate(lost.cells) if _md(c).get("grade_id") == "answer_2")
    k4 = next(i for i, c in enumerate(lost.cells) if _md(c).get("grade_id") == "answer_4")
    lost.cells[k4].source = STUB
    lost.cells.insert(k2 + 1, nbformat.v4.new_markdown_cell("(continued) and the cosine schedule keeps it longer."))
    lost.cells.insert(k2, nbformat.v4.new_markdown_cell(""))  # an empty cell the student added above it
    for cell in lost.cells:
        cell.metadata = {}
    return lost


def test_restore_keeps_written_answers_from_colab():
    release, nb = _written_submission()
    lost = _colab_copy(nb)
    notes = course.restore_submission(lost, release)
    got = {_md(c)["grade_id"]: c.source for c in lost.cells if _md(c).get("solution") and c.cell_type == "markdown"}
    assert set(got) == {"answer_1", "answer_2", "answer_3", "answer_4"}, notes
    for gid in ("answer_1", "answer_2", "answer_3"):
        assert got[gid].startswith(f"My answer to {gid}"), (gid, got[gid])
    assert got["answer_4"] == STUB  # unanswered: nbgrader scores it 0 by its checksum, nothing to grade
    assert any("answer_2" in n and "continues" in n for n in notes), notes
    # the restored metadata is the release's, so nbgrader's checksums apply
    rel = {_md(c)["grade_id"]: _md(c) for c in release.cells if _md(c)}
    assert all(_md(c) == rel[_md(c)["grade_id"]] for c in lost.cells if _md(c))


# --- end to end: labkit grade, then the real formgrader --------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Formgrader:
    """jupyter_server with nbgrader's formgrader extension, started in an nbgrader course folder."""

    def __init__(self, course_dir: Path, log: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={course_dir}",
               "--ServerApp.port_retries=0"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(log.parent / "jupyter-config"),
                   JUPYTER_RUNTIME_DIR=str(log.parent / "jupyter-runtime"))
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=course_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                if self.call("GET", "/formgrader/api/status", timeout=3).get("status"):
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the formgrader did not start:\n" + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)

    def call(self, method: str, path: str, body=None, timeout: float = 120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode() or "null")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def graded_written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("written")
    subs = tmp / "subs"
    release, nb = _written_submission()
    (subs / "writer").mkdir(parents=True)
    nbformat.write(nb, str(subs / "writer" / f"{LAB}.ipynb"))
    nbformat.write(_colab_copy(nb), str(subs / f"colab_{LAB}.ipynb"))
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_CACHE", str(tmp / "cache"))
    try:
        results = course.grade_submissions(subs, tmp / "out", [LAB], repo_root=REPO, timeout=300, jobs=2,
                                           verbose=False)
    finally:
        mp.undo()
    return {r.student: r for r in results}, tmp / "out" / "nbgrader" / LAB, tmp


@pytest.mark.slow
@pytest.mark.nbgrader
def test_grade_reports_autograded_and_written_points_apart(graded_written):
    results, course_dir, _ = graded_written
    from nbgrader.api import Gradebook

    for student in ("writer", "colab"):
        r = results[student]
        assert r.status == "graded" and r.score == r.max_score == 11, (student, r.status, r.notes)  # tests only
        assert r.manual_max == 4 and r.manual_score is None, student  # written answers: not graded yet
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        for student, pending in (("writer", {"answer_1", "answer_2", "answer_3", "answer_4"}),
                                 ("colab", {"answer_1", "answer_2", "answer_3"})):
            sub = gb.find_submission(LAB, student)
            assert (sub.code_score, sub.max_code_score, sub.max_written_score) == (11, 11, 4)
            grades = {g.name: g for g in sub.notebooks[0].grades}
            assert {n for n, g in grades.items() if g.needs_manual_grade} == pending, student
            if student == "colab":  # left as "YOUR ANSWER HERE": nbgrader scored it 0, nothing to grade
                assert grades["answer_4"].auto_score == 0 and not grades["answer_4"].needs_manual_grade
    for student in ("writer", "colab"):
        nb = nbformat.read(str(course_dir / "autograded" / student / LAB / f"{LAB}.ipynb"), as_version=4)
        got = {_md(c)["grade_id"]: c.source for c in _answers(nb)}
        assert got["answer_1"].startswith("My answer to answer_1"), (student, got)  # the answers survived
        assert all("Model answer" not in s and "Rubric" not in s for s in got.values())


@pytest.mark.slow
@pytest.mark.nbgrader
def test_manual_grading_in_the_formgrader_gives_right_totals_and_feedback(graded_written):
    results, course_dir, tmp = graded_written
    if not (course_dir / "nbgrader_config.py").exists():  # labkit grade writes it; older runs did not
        from labkit.course.nbgrader_setup import write_course_config

        write_course_config(course_dir)
    server = Formgrader(course_dir, tmp / "formgrader.log")
    try:
        subs = server.call("GET", f"/formgrader/api/submitted_notebooks/{LAB}/{LAB}")
        writer = next(s for s in subs if s["student"] == "writer")
        assert writer["needs_manual_grade"] and writer["score"] == 11
        grades = {g["name"]: g for g in server.call("GET", f"/formgrader/api/grades?submission_id={writer['id']}")}
        comments = {c["name"]: c for c in server.call("GET", f"/formgrader/api/comments?submission_id={writer['id']}")}
        given = {"answer_1": 1, "answer_2": 0.5, "answer_3": 0, "answer_4": 1}
        for name, score in given.items():
            out = server.call("PUT", f"/formgrader/api/grade/{grades[name]['id']}", {"manual_score": score})
            assert out["manual_score"] == score and not out["needs_manual_grade"]
            server.call("PUT", f"/formgrader/api/comment/{comments[name]['id']}",
                        {"manual_comment": f"Comment on {name}: see the SNR plot."})
        after = next(s for s in server.call("GET", f"/formgrader/api/submitted_notebooks/{LAB}/{LAB}")
                     if s["student"] == "writer")
        assert not after["needs_manual_grade"] and after["score"] == 11 + 2.5 and after["max_score"] == 15
        result = server.call("POST", f"/formgrader/api/assignment/{LAB}/writer/generate_feedback")
        assert result["success"], result.get("log", "")[-2000:]
    finally:
        server.close()

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        sub = gb.find_submission(LAB, "writer")
        assert (sub.score, sub.max_score, sub.code_score, sub.written_score) == (13.5, 15, 11, 2.5)
        assert not sub.needs_manual_grade
    from labkit.course.autograde import read_scores
    from labkit.course.results import GradeResult

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        res = GradeResult("writer", LAB)
        read_scores(res, gb.find_submission(LAB, "writer"))
    assert (res.score, res.max_score, res.manual_score, res.manual_max) == (11, 11, 2.5, 4)

    page = (course_dir / "feedback" / "writer" / LAB / f"{LAB}.html").read_text(encoding="utf-8")
    text = htmllib.unescape(re.sub(r"<[^>]+>", " ", page))
    text = re.sub(r"\s+", " ", text)
    assert "Comment on answer_2: see the SNR plot." in text
    assert "My answer to answer_3" in text  # the student's own words
    assert re.search(r"13\.5\s*/\s*15", text), "the total (autograded 11 + written 2.5 of 15)"
    assert "Model answer" not in text and "Rubric" not in text and "HIDDEN TESTS" not in text
    hidden = re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS",
                        (REPO / "solutions" / LAB / f"{LAB}.py").read_text(), re.S)
    for line in (ln.strip() for block in hidden for ln in block.splitlines() if ln.strip()):
        assert line not in text
