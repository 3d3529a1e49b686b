"""The library-answer review and the hidden seeds in one real `labkit grade` run (issue 23, items 5-7).

Lab 01 (4 points: alpha_bars 1 + snr 1 + q_sample 2), graded by the real path (sandboxed kernels, test
cells judged in the grader) beside an honest and a blank student, who must get exactly 4/4 and 0/4 with
status `graded`. Each disguised student answers one exercise with labkit's own function, spelled so that the
old review missed it; each must keep the points the checks give (the checks cannot tell) and be flagged
`needs review`, with the static review's reason and the dynamic review's finding in its notes. Two more
honest students print what their q_sample receives: the hidden inputs differ between them, the score not.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import grade_folder  # noqa: E402
from test_review import DISGUISES, LAB, disguised, target, _notebook  # noqa: E402

pytestmark = [pytest.mark.nbgrader, pytest.mark.slow, pytest.mark.extended]

GRADED = ["sys_modules", "alias_in_another_cell", "default_argument", "subclasses_globals", "getattr_builtins",
          "gc_objects", "locked_metadata", "typed_markdown", "magic_line", "time_magic"]
POINTS = {"q_sample": 2, "snr": 1}
# lab 01's autograded points, read from the release: what the honest (solution) notebook scores
FULL01 = float(sum(c.metadata["nbgrader"]["points"] for c in nbformat.read(
    str(Path(__file__).resolve().parents[1] / "notebooks" / "lab01_forward.ipynb"), as_version=4).cells
    if c.cell_type == "code" and (c.metadata.get("nbgrader") or {}).get("grade")))
SPY = ("def q_sample(x0, t, noise, alpha_bars):\n"
       "    print('INPUT', list(x0.shape), round(float(x0.double().abs().sum()), 6))\n"
       "    ab = alpha_bars[t].view(-1, 1, 1, 1).to(x0.dtype)\n"
       "    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise\n")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review")
    subs = tmp / "submissions"
    students = {"honest": _notebook(LAB, "solutions"), "blank": _notebook(LAB, "notebooks")}
    students.update({name.replace("_", "-"): disguised(DISGUISES[name]) for name in GRADED})
    for spy in ("spy-a", "spy-b"):
        students[spy] = disguised({"q_sample": SPY})
        for cell in students[spy].cells:  # the other answers right too: 4/4
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in ("alpha_bars_from_betas", "snr"):
                cell.source = next(c.source for c in students["honest"].cells
                                   if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
    for name, nb in students.items():
        (subs / name).mkdir(parents=True)
        nbformat.write(nb, str(subs / name / f"{LAB}.ipynb"))
    results = grade_folder(subs, tmp / "out", [LAB], jobs=2, timeout=60, memory_limit_gb=2, verbose=False)
    for r in results:
        print(r.line()[:400])
    return {"by": {r.student: r for r in results}, "out": tmp / "out"}


def _autograded(graded, student) -> nbformat.NotebookNode:
    return nbformat.read(str(graded["out"] / "nbgrader" / LAB / "autograded" / student / LAB / f"{LAB}.ipynb"),
                         as_version=4)


def test_honest_and_blank_students_get_exactly_their_marks(graded):
    by = graded["by"]
    assert (by["honest"].score, by["honest"].max_score, by["honest"].status) == (FULL01, FULL01, "graded"), by["honest"].line()
    assert (by["blank"].score, by["blank"].status) == (0, "graded"), by["blank"].line()
    assert not any("REVIEW" in n for n in by["honest"].notes + by["blank"].notes)


@pytest.mark.parametrize("name", GRADED)
def test_a_disguised_library_answer_keeps_its_points_and_is_flagged(graded, name):
    r = graded["by"][name.replace("_", "-")]
    assert r.score == POINTS[target(DISGUISES[name])], r.line()  # the checks cannot tell: hence the review
    assert r.status == "needs review", r.line()
    assert any(n.startswith("REVIEW") and "dynamic review" not in n for n in r.notes), r.notes  # static layer


def test_the_dynamic_review_names_what_ran(graded):
    """In the notes: the exercise function of labkit that the graded call ran, however it was reached."""
    found = 0
    for name in GRADED:
        r = graded["by"][name.replace("_", "-")]
        module = "schedules" if target(DISGUISES[name]) == "snr" else "diffusion"
        ran = f"it ran labkit.{module}.{target(DISGUISES[name])}"
        found += any(ran in n and "dynamic review" in n for n in r.notes)
    assert found == len(GRADED), [graded["by"][n.replace("_", "-")].notes for n in GRADED]


def test_hidden_inputs_differ_between_students_and_the_score_does_not(graded):
    by = graded["by"]
    assert by["spy-a"].score == by["spy-b"].score == 4 and by["spy-a"].status == "graded", by["spy-a"].line()
    seen = {}
    for spy in ("spy-a", "spy-b"):
        nb = _autograded(graded, spy)
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_q_sample")
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        seen[spy] = re.findall(r"INPUT .*", text)
        assert nb.metadata["labkit"]["hidden_seed_run"]  # the run id that replays these seeds
    visible = 2  # check_q_sample's default sizes: two calls with the public seed 0
    assert len(seen["spy-a"]) > visible and seen["spy-a"][:visible] == seen["spy-b"][:visible], seen
    assert seen["spy-a"][visible:] != seen["spy-b"][visible:], seen  # hidden inputs: drawn for each notebook
