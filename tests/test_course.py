"""labkit.course without running notebooks: sources, built forms, leaks, restore, submission layouts."""

import copy
import csv
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from labkit import colab, course
from labkit.errors import LabkitError

REPO = Path(__file__).resolve().parents[1]
LABS = course.discover_labs(REPO)


def test_labs_are_discovered_by_folder():
    assert LABS[:4] == ["lab00_setup", "lab01_forward", "lab02_unet", "lab03_embeddings"]
    assert course.select_labs(["lab01"], LABS) == ["lab01_forward"]
    with pytest.raises(LabkitError, match="unknown lab"):
        course.select_labs(["lab99"], LABS)


@pytest.mark.parametrize("lab", LABS)
def test_solution_ipynb_in_sync_with_py_source(lab):
    """The .ipynb beside each source is exactly what the .py builds to (run `labkit build` if not)."""
    built = course.notebook_json(course.source_to_notebook(REPO / "solutions" / lab / f"{lab}.py"))
    assert (REPO / "solutions" / lab / f"{lab}.ipynb").read_text(encoding="utf-8") == built, "run `labkit build`"


@pytest.mark.parametrize("lab", LABS)
def test_source_metadata_and_kernel(lab):
    nb = course.source_to_notebook(REPO / "solutions" / lab / f"{lab}.py")
    assert nb.metadata.kernelspec.name == "python3"
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded and all(c.metadata.nbgrader["points"] > 0 for c in graded)
    tests = [c for c in graded if not c.metadata.nbgrader.get("solution")]  # not the written answers
    assert tests and all(course.BEGIN_HIDDEN in c.source for c in tests), "every test cell has hidden tests"
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "google.colab" in first_code.source and colab.pip_spec() in first_code.source
    assert colab.PLACEHOLDER not in first_code.source
    # one template for the ten labs (issue 24, item 6): the source holds the marker, the build the install cell
    source = (REPO / "solutions" / lab / f"{lab}.py").read_text(encoding="utf-8")
    assert source.count(colab.INSTALL_MARKER) == 1 and "subprocess.run" not in source
    assert first_code.source.count(colab.install_cell()) == 1 and colab.INSTALL_MARKER not in first_code.source
    assert "jupyterlab" not in first_code.source and "nbgrader" not in first_code.source.replace("NBGRADER_EXECUTION", "")
    for cell in nb.cells:
        assert not re.search(r"^\s*from\s+\S+\s+import\s+\*", cell.source, re.M)


@pytest.mark.parametrize("lab", LABS)
def test_student_notebook_leaks_nothing(lab):
    """No solution code, hidden test or grader-only file in notebooks/."""
    py = (REPO / "solutions" / lab / f"{lab}.py").read_text(encoding="utf-8")
    student_text = (REPO / "notebooks" / f"{lab}.ipynb").read_text(encoding="utf-8")
    student = nbformat.reads(student_text, as_version=4)
    sources = "\n".join(c.source for c in student.cells)
    solution_lines = [ln.strip() for block in course.SOLUTION_RE.findall(py) for ln in block.splitlines()]
    hidden = re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", py, re.S)
    hidden_lines = [ln.strip() for block in hidden for ln in block.splitlines()]
    assert solution_lines and hidden_lines
    for line in solution_lines + hidden_lines:
        if len(line) > 3:
            assert line not in sources, f"leaked into notebooks/{lab}.ipynb: {line!r}"
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
        assert marker not in student_text
    for cell in student.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    solution_cells = [c for c in student.cells if c.metadata.get("nbgrader", {}).get("solution")]
    code = [c for c in solution_cells if c.cell_type == "code"]
    assert code and all("raise NotImplementedError()" in c.source for c in code)
    written = [c for c in solution_cells if c.cell_type == "markdown"]  # model answers and rubrics stay behind
    assert all(c.source.strip() == "YOUR ANSWER HERE" for c in written)
    model = [ln[2:].strip() for block in re.findall(r"^# ### BEGIN SOLUTION\n(.*?)^# ### END SOLUTION", py, re.S | re.M)
             for ln in block.splitlines()]
    assert bool(model) == bool(written) and (lab == "lab00_setup" or written)
    for line in model:
        if len(line) > 12:
            assert line not in sources, f"model answer leaked into notebooks/{lab}.ipynb: {line!r}"


def test_notebooks_folder_holds_only_built_labs():
    files = sorted(p.name for p in (REPO / "notebooks").iterdir() if not p.name.startswith("."))
    assert files == [f"{lab}.ipynb" for lab in LABS]
    for lab in LABS:
        assert sorted(p.name for p in (REPO / "solutions" / lab).iterdir()
                      if p.name not in course.ALLOWED_BESIDE_SOURCE) == [f"{lab}.ipynb", f"{lab}.py"]


# --- validation of sources ---------------------------------------------------------------------

GOOD = '''# %% nbgrader={"grade": false, "grade_id": "f", "locked": false, "schema_version": 3, "solution": true}
def f(x):
    ### BEGIN SOLUTION
    return x
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "test_f", "locked": true, "points": 1, "schema_version": 3, "solution": false}
assert f(1) == 1
'''


def _write_lab(root: Path, text: str, name: str = "lab09_demo") -> Path:
    (root / "solutions" / name).mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("")
    path = root / "solutions" / name / f"{name}.py"
    path.write_text(text)
    return path


def test_source_to_notebook_is_deterministic(tmp_path):
    path = _write_lab(tmp_path, GOOD)
    a = course.notebook_json(course.source_to_notebook(path))
    b = course.notebook_json(course.source_to_notebook(path))
    assert a == b
    nb = json.loads(a)
    assert [c["id"] for c in nb["cells"]] == ["f", "test_f"]
    from labkit.course.sources import language_info

    assert nb["metadata"] == {"kernelspec": course.KERNELSPEC, "language_info": language_info()}


@pytest.mark.parametrize("bad, message", [
    (GOOD.replace('"test_f"', '"f"'), "(?i)duplicate"),
    (GOOD.replace("    ### BEGIN SOLUTION\n", "").replace("    ### END SOLUTION\n", ""), "BEGIN SOLUTION"),
    (GOOD + "\n# %%\nfrom torch import *\n", "import \\*"),
    (GOOD.replace('"locked": true, "points": 1', '"locked": false, "points": 1'), "locked"),
    (GOOD + "\n# %%\n### BEGIN HIDDEN TESTS\nx = 1\n### END HIDDEN TESTS\n", "hidden tests"),
    (GOOD.replace('"grade_id": "f"', '"grade_id": "f f"'), "grade_id"),
])
def test_invalid_sources_are_rejected(tmp_path, bad, message):
    with pytest.raises(LabkitError, match=message):
        course.source_to_notebook(_write_lab(tmp_path, bad))


def test_extra_file_beside_source_is_refused(tmp_path):
    path = _write_lab(tmp_path, GOOD)
    (path.parent / "answers.txt").write_text("secret")
    with pytest.raises(LabkitError, match="answers.txt"):
        course.build_notebooks(tmp_path, verbose=False)


def test_grading_config():
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader
    from nbgrader.preprocessors import ClearHiddenTests

    c = course.configure_nbgrader(Config(), timeout=77)
    assert c.Execute.timeout == 77 and c.Execute.kernel_name == "python3"
    assert c.OverwriteCells.add_missing_cells is True
    pre = list(c.GenerateFeedback.preprocessors)
    assert pre.index(course.RedactHiddenTestOutputs) < pre.index(ClearHiddenTests)
    assert "*.py" in c.CourseDirectory.ignore
    # The instructors' nbgrader_config.py applies the same settings.
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
    assert cfg.Execute.timeout > 0 and cfg.Execute.kernel_name == "python3"
    assert cfg.OverwriteCells.add_missing_cells is True
    assert course.RedactHiddenTestOutputs in list(cfg.GenerateFeedback.preprocessors)


def test_redact_hidden_test_outputs():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, seed=99)\n### END HIDDEN TESTS")
    cell.outputs = [nbformat.v4.new_output("error", ename="CheckFailed", evalue="wrong values: sqrt missing",
                                           traceback=["check(f, seed=99)", "secret"])]
    plain = nbformat.v4.new_code_cell("1/0")
    plain.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="x", traceback=["tb"])]
    nb.cells = [cell, plain]
    redact = course.RedactHiddenTestOutputs()
    assert redact.enabled  # nbconvert skips preprocessors that are not enabled
    out, _ = redact.preprocess(nb, {})
    text = json.dumps(out.cells[0].outputs)
    assert "seed=99" not in text and "secret" not in text and "sqrt missing" in text
    assert out.cells[1].outputs[0]["traceback"] == ["tb"]


# --- restoring damaged submissions (no execution) ----------------------------------------------

def _release(lab="lab01_forward"):
    return nbformat.read(str(REPO / "notebooks" / f"{lab}.ipynb"), as_version=4)


def _gids(nb):
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells if c.metadata.get("nbgrader")]


def test_restore_untouched_submission_changes_nothing():
    nb = _release()
    before = nbformat.writes(nb)
    assert course.restore_submission(nb, _release()) == []
    assert nbformat.writes(nb) == before


def test_restore_lost_metadata():
    release = _release()
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = cell.source.replace("raise NotImplementedError()", "return 0")
        cell.metadata = {"colab": {"base_uri": "https://localhost:8080/"}}
    notes = course.restore_submission(nb, release)
    assert _gids(nb) == _gids(release)
    assert any("matched by position" in n for n in notes) and any("matched by source" in n for n in notes)


def test_restore_copied_and_deleted_cells():
    release = _release()
    nb = copy.deepcopy(release)
    i = next(k for k, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "snr")
    nb.cells.insert(i + 1, copy.deepcopy(nb.cells[i]))  # copy-pasted solution cell, same id and grade_id
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_q_sample"]
    nb.metadata["kernelspec"] = {"name": "my-env", "display_name": "my env", "language": "python"}
    notes = course.restore_submission(nb, release)
    assert _gids(nb) == _gids(release)  # the copy lost its grade_id; the deleted test is back, in place
    ids = [c.id for c in nb.cells]
    assert len(ids) == len(set(ids))
    assert nb.metadata.kernelspec.name == "python3"
    assert any("duplicate of 'snr'" in n for n in notes)
    assert any("'test_q_sample' put back" in n for n in notes)
    nbformat.validate(nb)


def test_restore_reports_missing_answer_cell():
    release = _release()
    nb = copy.deepcopy(release)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "q_sample"]
    notes = course.restore_submission(nb, release)
    assert any("no answer cell found for ['q_sample']" in n for n in notes)


# --- submission layouts --------------------------------------------------------------------------

def test_find_submissions_layouts(tmp_path):
    release = _release()
    text = nbformat.writes(release)
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "lab01_forward.ipynb").write_text(text)
    (tmp_path / "bob" / "lab01_forward").mkdir(parents=True)  # nbgrader's submitted/<student>/<lab>/ layout
    (tmp_path / "bob" / "lab01_forward" / "lab01_forward.ipynb").write_text(text)
    (tmp_path / "carol_12345_lab01_forward.ipynb").write_text(text)  # LMS download
    (tmp_path / "dave_LAB01-late.ipynb").write_text(text)  # lab from the "lab01" prefix
    (tmp_path / "erin_homework.ipynb").write_text(text)  # lab from the content
    (tmp_path / "frank_notes.ipynb").write_text("{}")  # unknown lab
    (tmp_path / "alice" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "alice" / ".ipynb_checkpoints" / "lab01_forward-checkpoint.ipynb").write_text(text)
    subs, problems = course.find_submissions(tmp_path, LABS, {lab: _release(lab) for lab in LABS})
    assert [(s.student, s.lab) for s in subs] == [(n, "lab01_forward") for n in ("alice", "bob", "carol", "dave", "erin")]
    assert len(problems) == 1 and "frank_notes" in problems[0]


def test_find_submissions_keeps_newest(tmp_path):
    import os
    import time

    for k, name in enumerate(["gus_lab01_first.ipynb", "gus_lab01_second.ipynb"]):
        (tmp_path / name).write_text("{}")
        os.utime(tmp_path / name, (time.time() + k * 10, time.time() + k * 10))
    subs, problems = course.find_submissions(tmp_path, LABS)
    assert [s.path.name for s in subs] == ["gus_lab01_second.ipynb"] and "newest" in problems[0]


def test_scores_csv(tmp_path):
    rows = [course.GradeResult("a", "lab01_forward", 4.0, 4.0, "graded", manual_max=3.0),
            course.GradeResult("b", "lab01_forward", None, None, "failed", ["unreadable notebook"]),
            course.GradeResult("c", "lab01_forward", 1.0, 4.0, "graded", manual_score=2.5, manual_max=3.0)]
    course.write_scores_csv(rows, tmp_path / "scores.csv")
    with open(tmp_path / "scores.csv") as f:
        got = list(csv.DictReader(f))
    # autograded points and the written answers' manual points in their own columns; "" while pending
    assert got[0] == {"student": "a", "lab": "lab01_forward", "score": "4", "max_score": "4", "manual_score": "",
                      "manual_max": "3", "status": "graded", "notes": ""}
    assert got[1]["status"] == "failed" and got[1]["notes"] == "unreadable notebook"
    assert (got[2]["manual_score"], got[2]["manual_max"]) == ("2.5", "3")
    assert rows[0].manual_pending == 3.0 and rows[2].manual_pending == 0.0
    assert "+3 manual" in rows[0].line() and "+2.5/3" in rows[2].line()


def test_a_failed_result_has_no_score(tmp_path):
    """One meaning everywhere: a failed submission has no score (None), whatever set one before or after;
    scores.csv leaves it empty and the class report lists it as not graded, never as a 0 in the histogram."""
    from labkit.course.report import collect, write_class_reports

    r = course.GradeResult("b", "lab01_forward", 3.0, 11.0, "graded")
    r.fail("autograde failed: ...")
    r.score = 2.0  # (what a merge would read from the gradebook afterwards)
    old = course.GradeResult(**{"student": "c", "lab": "lab01_forward", "score": 0.0, "max_score": 11.0,
                                "status": "failed"})  # a manifest line written when failures scored 0
    assert (r.status, r.score, r.max_score, r.notes) == ("failed", None, 11.0, ["autograde failed: ..."])
    assert old.score is None and r.line().split()[2] == "-"
    ok = course.GradeResult("a", "lab01_forward", 11.0, 11.0, "graded")
    course.write_scores_csv([ok, r, old], tmp_path / "scores.csv")
    with open(tmp_path / "scores.csv") as f:
        assert [row["score"] for row in csv.DictReader(f)] == ["11", "", ""]
    rep = collect(tmp_path, "lab01_forward", [ok, r, old])
    assert rep.scores == [1.0] and rep.not_graded == ["b", "c"] and rep.students == 1
    (html,) = write_class_reports(tmp_path, [ok, r, old])
    assert "Not graded (failed, no score): 2" in html.read_text()


def test_cli_arguments():
    import argparse

    p = course.add_build_arguments(argparse.ArgumentParser())
    a = p.parse_args(["--lab", "lab01", "--check"])
    assert a.lab == ["lab01"] and a.check
    g = course.add_grade_arguments(argparse.ArgumentParser())
    a = g.parse_args(["subs", "--out", "o", "--timeout", "60", "--lab", "lab02"])
    assert (a.submissions, a.out, a.timeout, a.lab, a.no_feedback) == ("subs", "o", 60, ["lab02"], False)


def test_colab_helpers(monkeypatch):
    monkeypatch.delenv("LABKIT_FAST", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert not colab.fast_mode() and colab.pick(1, 2) == 1
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert colab.fast_mode() and colab.pick(1, 2) == 2
    monkeypatch.setenv("LABKIT_GIT_URL", "git+https://example.org/x.git@v1")
    assert colab.pip_spec() == "labkit @ git+https://example.org/x.git@v1"
    assert not colab.in_colab()
    assert colab.setup(verbose=False).type in ("cpu", "cuda", "mps")


@pytest.mark.nbgrader
def test_built_notebooks_are_fresh():
    """notebooks/ and solutions/*.ipynb are what `labkit build` produces now (real nbgrader)."""
    assert course.check_notebooks_fresh(REPO) == []
    assert course.main(["build", "--check", "--repo", str(REPO), "--lab", "lab00"]) == 0
