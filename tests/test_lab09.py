"""Lab 09 (the lab report): its checks, the library measurements behind its later cells, `labkit report`, and
the lab through the real grading path (solution = full autograded marks, untouched release = 0, written answers
left to the formgrader, feedback without hidden tests)."""

from __future__ import annotations

import html as htmllib
import math
import re
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from labkit.checks import lab09_report as c09
from labkit.evaluation import measures

REPO = Path(__file__).resolve().parents[1]
LAB = "lab09_report"
SOURCE = REPO / "solutions" / LAB / f"{LAB}.py"


# --- The reference answers, taken from the solution notebook's answer cells ------------------------------

def _solution_functions() -> dict:
    """The functions of the lab's solution cells, defined by running those cells' sources (nothing else)."""
    nb = nbformat.read(str(REPO / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
    scope = {"torch": torch, "math": math}
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and md.get("solution"):
            exec(compile(cell.source, f"<{md['grade_id']}>", "exec"), scope)
    return scope


SOL = _solution_functions()
EXERCISES = ["recognisable_from", "quartiles_per_digit", "relative_clip_score", "within_class_diversity",
             "speedup_at_quality", "accuracy_margin", "above_control", "later_than_rest", "pareto_front",
             "wilson_interval"]
# (heldout_x0_error takes a model: tests/test_mistake_naming.py)
CHECKS = {name: getattr(c09, f"check_{name}") for name in EXERCISES}
LIBRARY = {"recognisable_from": measures.recognisable_from, "quartiles_per_digit": measures.quartiles_per_digit,
           "relative_clip_score": measures.relative_clip_score, "within_class_diversity": measures.within_class_diversity,
           "speedup_at_quality": measures.speedup_at_quality, "accuracy_margin": measures.accuracy_margin,
           "above_control": measures.above_control, "later_than_rest": measures.later_than_rest,
           "pareto_front": measures.pareto_front, "wilson_interval": measures.wilson_interval}


def test_solution_defines_every_exercise():
    assert set(EXERCISES) <= set(SOL)


@pytest.mark.parametrize("name", EXERCISES)
@pytest.mark.parametrize("seed", [0, 1, 7, 12])
def test_solution_passes(name, seed, capsys):
    CHECKS[name](SOL[name], seed=seed)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("name", EXERCISES)
def test_library_measure_passes(name):
    """The later cells of the lab use labkit.evaluation.measures: it must agree with the checks."""
    CHECKS[name](LIBRARY[name], seed=3)


def test_hidden_test_calls_pass():
    """Every test cell of the source, hidden part included, passes the solution."""
    text = SOURCE.read_text()
    calls = re.findall(r"^checks\.(check_\w+)\((\w+)(.*)\)$", text, re.M)
    assert len(calls) >= 2 * len(EXERCISES)
    for check, fn, kwargs in calls:
        assert re.fullmatch(r"(, \w+=[-\w.(), ]+)*", kwargs), f"test cell arguments must be literals: {kwargs}"
        eval(f"c09.{check}(SOL[{fn!r}]{kwargs})")


# --- Wrong answers: each named --------------------------------------------------------------------------

def _rec_first(probs, threshold):
    above = probs >= threshold
    idx = torch.arange(probs.shape[0]).view(-1, 1).expand_as(above)
    return torch.where(above, idx, torch.full_like(idx, probs.shape[0])).min(0).values


def _rec_loop(probs, threshold, *, strict=False, never=None, offset=0, from_end=False):
    S, N = probs.shape
    out = []
    for n in range(N):
        k = S
        for j in range(S - 1, -1, -1):
            ok = probs[j, n] > threshold if strict else probs[j, n] >= threshold
            if not ok:
                break
            k = j
        if k == S and never is not None:
            out.append(never)
        else:
            out.append(S - k if from_end else k + offset)
    return torch.tensor(out)


def _q(values, labels, K, fn):
    return torch.stack([fn(values[labels == k]) for k in range(K)])


def _div(features, labels, K, fn):
    return torch.stack([fn(features[labels == k]) for k in range(K)])


def _spd(s, q, target, base, *, strict=False, none=0.0, invert=False, ignore_quality=False, first=False):
    out = []
    for row_s, row_q in zip(s, q):
        ok = (row_q > target) if strict else (row_q >= target)
        if ignore_quality:
            ok = torch.ones_like(ok)
        if not ok.any():
            out.append(none)
            continue
        t = row_s[ok][0] if first else row_s[ok].min()
        out.append(float(t / base if invert else base / t))
    return torch.tensor(out)


MISTAKES = [
    ("recognisable_from", _rec_first, "stays"),
    ("recognisable_from", lambda p, th: _rec_loop(p, th, strict=True), "p > threshold"),
    ("recognisable_from", lambda p, th: _rec_loop(p, th, offset=-1), "last step *below*"),
    ("recognisable_from", lambda p, th: _rec_loop(p, th, never=-1), "not -1"),
    ("recognisable_from", lambda p, th: _rec_loop(p, th, from_end=True), "counted from the end"),
    ("recognisable_from", lambda p, th: (p >= th).float().argmax(dim=1), "one value per step"),
    ("recognisable_from", lambda p, th: p >= th, "not the [steps, N] comparison"),
    ("quartiles_per_digit", lambda v, y, K: _q(v, y, K, lambda x: torch.stack(
        [x.quantile(0.25), x.median(), x.quantile(0.75)])), "torch.median"),
    ("quartiles_per_digit", lambda v, y, K: _q(v, y, K, lambda x: torch.stack(
        [x.mean() - x.std(), x.mean(), x.mean() + x.std()])), "standard deviation instead of the quartiles"),
    ("quartiles_per_digit", lambda v, y, K: _q(v, y, K, lambda x: torch.stack(
        [x.quantile(0.25), x.mean(), x.quantile(0.75)])), "the mean where the median belongs"),
    ("quartiles_per_digit", lambda v, y, K: _q(v, y, K, lambda x: x.sort().values[
        (torch.tensor([0.25, 0.5, 0.75]) * len(x)).long().clamp(max=len(x) - 1)]), "picked as sorted(v)[int(q * n)]"),
    ("quartiles_per_digit", lambda v, y, K: _q(v, y, K, lambda x: x.quantile(
        torch.tensor([0.25, 0.5, 0.75]), interpolation="nearest")), "interpolation 'nearest'"),
    ("quartiles_per_digit", lambda v, y, K: _q(v, y, K, lambda x: x.quantile(torch.tensor([0.5, 0.25, 0.75]))),
     "columns in the wrong order"),
    ("quartiles_per_digit", lambda v, y, K: v.quantile(torch.tensor([0.25, 0.5, 0.75])).expand(K, 3),
     "compute them per class"),
    ("quartiles_per_digit", lambda v, y, K: _q(v, y, K, lambda x: x.quantile(torch.tensor([0.25, 0.5, 0.75]))).T,
     "transposed"),
    ("relative_clip_score", lambda g, gy, r, ry, K: SOL["relative_clip_score"](r, ry, g, gy, K), "inverted"),
    ("relative_clip_score", lambda g, gy, r, ry, K: torch.stack([g[gy == k].mean() - r[ry == k].mean() for k in range(K)]),
     "a difference"),
    ("relative_clip_score", lambda g, gy, r, ry, K: torch.stack([g[gy == k].mean() for k in range(K)]) / r.mean(),
     "*all* real digits"),
    ("relative_clip_score", lambda g, gy, r, ry, K: torch.stack([g[gy == k].sum() / r[ry == k].sum() for k in range(K)]),
     "a ratio of sums"),
    ("relative_clip_score", lambda g, gy, r, ry, K: torch.stack([g[gy == k].median() / r[ry == k].median()
                                                                 for k in range(K)]), None),
    ("relative_clip_score", lambda g, gy, r, ry, K: g / r[:len(g)].mean(), "one value per generated image"),
    ("within_class_diversity", lambda f, y, K: _div(f, y, K, lambda x: torch.cdist(x, x).mean()), "to itself"),
    ("within_class_diversity", lambda f, y, K: _div(f, y, K, lambda x: (torch.cdist(x, x) ** 2).sum()
                                                    / (len(x) * (len(x) - 1))), "squared distances"),
    ("within_class_diversity", lambda f, y, K: _div(f, y, K, lambda x: torch.pdist(x).sum()
                                                    / (len(x) * (len(x) - 1))), "each pair counted once"),
    ("within_class_diversity", lambda f, y, K: _div(f, y, K, lambda x: (x - x.mean(0)).norm(dim=1).mean()),
     "distance to the class mean"),
    ("within_class_diversity", lambda f, y, K: _div(f, y, K, lambda x: x.std(0).mean()), "standard deviation"),
    ("within_class_diversity", lambda f, y, K: torch.pdist(f).mean().expand(K), "all samples together"),
    ("within_class_diversity", lambda f, y, K: torch.cdist(f, f), "the distance matrix itself"),
    ("speedup_at_quality", lambda s, q, t, b: _spd(s, q, t, b, invert=True), "inverted"),
    ("speedup_at_quality", lambda s, q, t, b: _spd(s, q, t, b, strict=True), "quality > target"),
    ("speedup_at_quality", lambda s, q, t, b: _spd(s, q, t, b, ignore_quality=True), "regardless of quality"),
    ("speedup_at_quality", lambda s, q, t, b: _spd(s, q, t, b, first=True), "in column order"),
    ("speedup_at_quality", lambda s, q, t, b: _spd(s, q, t, b, none=1.0), "not 1.0"),
    ("speedup_at_quality", lambda s, q, t, b: _spd(s, q, t, b, none=math.inf), "not inf or NaN"),
    ("speedup_at_quality", lambda s, q, t, b: _spd(s, q, t, b, none=math.nan), "not inf or NaN"),
    ("speedup_at_quality", lambda s, q, t, b: b / s.gather(1, q.argmax(1, keepdim=True))[:, 0], "best-quality"),
    ("speedup_at_quality", lambda s, q, t, b: torch.where(q >= t, b / s, torch.zeros_like(s)), "one value per setting"),
]


@pytest.mark.parametrize("name, fn, phrase", MISTAKES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(MISTAKES)])
def test_mistake_is_named(name, fn, phrase):
    with pytest.raises(AssertionError) as info:
        CHECKS[name](fn)
    message = str(info.value)
    assert message.startswith(f"check_{name}:")
    if phrase is None:
        assert "known mistake" in message or "wrong values" in message
    else:
        assert phrase in message, message


@pytest.mark.parametrize("name", EXERCISES)
def test_not_implemented_is_a_clear_failure(name):
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        CHECKS[name](stub)


@pytest.mark.parametrize("name", EXERCISES)
def test_numpy_and_none_results_are_refused(name):
    def as_numpy(*args):
        return np.asarray(SOL[name](*args))

    with pytest.raises(AssertionError, match="numpy"):
        CHECKS[name](as_numpy)
    with pytest.raises(AssertionError, match="return"):
        CHECKS[name](lambda *args: None)


@pytest.mark.parametrize("name", EXERCISES)
def test_in_place_edit_of_an_input_is_caught(name):
    def sorts_in_place(*args):
        out = SOL[name](*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        args[0].mul_(0.5)
        return out

    with pytest.raises(AssertionError, match="in place"):
        CHECKS[name](sorts_in_place)


@pytest.mark.parametrize("name", EXERCISES)
def test_patched_allclose_does_not_fool_the_checks(name, monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch, "equal", lambda *a, **k: True)
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)

    def wrong(*args):
        return SOL[name](*args) + 1

    with pytest.raises(AssertionError, match="wrong"):
        CHECKS[name](wrong)


@pytest.mark.parametrize("name", EXERCISES)
def test_checks_are_fast(name):
    start = time.perf_counter()
    CHECKS[name](SOL[name])
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("name", EXERCISES)
def test_check_inputs_and_answers_are_plain_data(name, monkeypatch):
    """What a check sends to the student's function survives torch.save / torch.load with weights_only=True
    (tensors, numbers), and what it gets back is tensors: the grader's wire format carries both."""
    import io

    seen = []

    def spy(*args):
        buf = io.BytesIO()
        torch.save(args, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
        seen.append(args)
        return SOL[name](*args)

    CHECKS[name](spy)
    assert seen
    assert all(isinstance(a, (torch.Tensor, int, float)) for args in seen for a in args)


def test_check_module_holds_no_reference_answers():
    assert not [n for n in dir(c09) if n.startswith("reference")]


# --- The library's measurements: edge cases ---------------------------------------------------------------

def test_measures_mark_missing_classes_nan():
    v = torch.tensor([0.1, 0.2, 0.3])
    y = torch.tensor([0, 0, 2])
    q = measures.quartiles_per_digit(v, y, 3)
    assert torch.isnan(q[1]).all() and not torch.isnan(q[[0, 2]]).any()
    assert torch.isnan(measures.within_class_diversity(torch.randn(3, 4), y, 3)[1:]).all()
    r = measures.relative_clip_score(v, y, v, torch.tensor([0, 1, 1]), 3)
    assert float(r[0]) == pytest.approx(0.15 / 0.1) and torch.isnan(r[2])


def test_recognisable_from_examples():
    p = torch.tensor([[0.9, 0.1, 0.6], [0.2, 0.2, 0.6], [0.7, 0.3, 0.5], [0.8, 0.4, 0.5]])
    assert measures.recognisable_from(p, 0.5).tolist() == [2, 4, 0]


def test_speedup_examples():
    s = torch.tensor([[10.0, 1.0, 2.0], [5.0, 6.0, 7.0]])
    q = torch.tensor([[0.99, 0.5, 0.98], [0.1, 0.2, 0.3]])
    assert measures.speedup_at_quality(s, q, 0.98, 20.0).tolist() == [10.0, 0.0]


def test_your_model_falls_back_to_the_shipped_one(tmp_path, capsys):
    model, schedule, meta = c09.your_model(tmp_path / "missing.pt", device="cpu")
    assert meta["yours"] is False and "could not load" in capsys.readouterr().out
    model, schedule, meta = c09.your_model(None, device="cpu", verbose=False)
    assert meta["yours"] is False and callable(model)


# --- labkit report --------------------------------------------------------------------------------------

def _executed_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    nb.cells = [nbformat.v4.new_markdown_cell("# My report\n\nDigit 8 needs more steps."),
                nbformat.v4.new_code_cell("print(1)", outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="1\n"),
                    nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})],
                    execution_count=1),
                nbformat.v4.new_markdown_cell("YOUR ANSWER HERE")]
    nbformat.write(nb, str(path))
    return path


def test_report_exports_one_html_file_with_images(tmp_path, capsys):
    from labkit.cli import main

    src = _executed_notebook(tmp_path / "lab09_report.ipynb")
    assert main(["report", str(src)]) == 0
    out = tmp_path / "lab09_report.html"
    text = out.read_text(encoding="utf-8")
    assert "My report" in text and "data:image/png;base64," in text
    printed = capsys.readouterr().out
    assert str(out) in printed and "1 written answer" in printed  # the unanswered cell is pointed out
    assert main(["report", str(src), "--out", str(tmp_path / "sub" / "mine.html")]) == 0
    assert (tmp_path / "sub" / "mine.html").read_text(encoding="utf-8").count("<html") == 1


def test_report_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from labkit.cli import main

    def one_line_error(argv, phrase):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and len(err.splitlines()) == 1 and phrase in err, err

    one_line_error(["report", str(tmp_path / "nope.ipynb")], "no such notebook")
    (tmp_path / "bad.ipynb").write_text('{"cells": [')
    one_line_error(["report", str(tmp_path / "bad.ipynb")], "not a readable notebook")
    src = _executed_notebook(tmp_path / "ok.ipynb")
    one_line_error(["report", str(src), "--out", str(tmp_path / "x.pdf")], "unsupported file type")
    monkeypatch.setitem(sys.modules, "nbconvert", None)  # as if nbconvert were not installed
    one_line_error(["report", str(src)], "needs nbconvert")


# --- The lab through the real grading path ----------------------------------------------------------------

@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from conftest import copy_solution_and_release, grade_folder
    from labkit.course.sandbox import probe

    tmp = tmp_path_factory.mktemp("grading09")
    copy_solution_and_release(tmp / "subs", [LAB])
    results = grade_folder(tmp / "subs", tmp / "out", [LAB], timeout=300, jobs=1, verbose=False,
                           sandbox=probe() is None)
    return {r.student: r for r in results}, tmp / "out"


def _autograded(out: Path, student: str):
    found = sorted(out.glob(f"nbgrader/**/autograded/{student}/{LAB}/{LAB}.ipynb"))
    assert found, f"no autograded notebook for {student}"
    return nbformat.read(str(found[0]), as_version=4)


def test_outputs_hold_no_stray_reprs(graded):
    """No cell prints ``<matplotlib.legend.Legend at 0x...>`` and the like (fast mode, solution and untouched):
    tests/test_notebook_hygiene.py leaves this lab to these graded runs instead of executing it again."""
    from test_notebook_hygiene import stray_reprs

    _, out = graded
    assert stray_reprs(_autograded(out, "solution")) == []
    assert stray_reprs(_autograded(out, "blank"), skip_test_cells=True) == []


def _errors(cell):
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _points() -> tuple[float, float]:
    nb = nbformat.read(str(REPO / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
    auto = sum(c.metadata["nbgrader"]["points"] for c in nb.cells
               if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade"))
    manual = sum(c.metadata["nbgrader"]["points"] for c in nb.cells
                 if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade"))
    return auto, manual


def test_points_add_up():
    auto, manual = _points()
    assert auto == 22 and manual >= 8


@pytest.mark.nbgrader
@pytest.mark.slow
def test_solution_full_autograded_marks_release_zero(graded):
    results, out = graded
    auto, manual = _points()
    sol, blank = results["solution"], results["blank"]
    assert sol.status == "graded", sol.notes
    assert (sol.score, sol.max_score) == (auto, auto), sol.notes
    assert sol.manual_max == manual and sol.manual_score is None  # the written report waits for a person
    assert blank.status == "graded" and (blank.score, blank.max_score) == (0, auto), blank.notes
    nb = _autograded(out, "solution")
    assert [(i, e["evalue"][:200]) for i, c in enumerate(nb.cells) for e in _errors(c)] == []
    nb = _autograded(out, "blank")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.metadata.get("nbgrader", {}).get("grade"):
            assert _errors(cell) and "not implemented yet" in _errors(cell)[0]["evalue"], f"test cell {i}"
        else:
            assert not _errors(cell), f"cell {i} crashed in the untouched notebook: {_errors(cell)[0]['evalue'][:200]}"
    answers = [c for c in nb.cells if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")]
    assert answers and all("YOUR ANSWER HERE" in c.source for c in answers)


@pytest.mark.nbgrader
@pytest.mark.slow
def test_feedback_hides_hidden_tests_and_model_answers(graded):
    from labkit import course

    _, out = graded
    py = SOURCE.read_text()
    hidden = [ln.strip() for block in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", py, re.S)
              for ln in block.splitlines() if ln.strip()]
    solutions = [ln.strip() for b in course.SOLUTION_RE.findall(py) for ln in b.splitlines() if len(ln.strip()) > 3]
    rubric = re.findall(r"^# \*\*Rubric[^\n]*", py, re.M)
    assert hidden and solutions and rubric
    for student in ("solution", "blank"):
        raw = (out / "feedback" / student / f"{LAB}.html").read_text()
        text = htmllib.unescape(re.sub(r"<[^>]+>", "", raw))
        assert "HIDDEN TESTS" not in text
        for line in hidden:
            assert line not in text, f"{line!r} in {student}'s feedback"
        if student == "blank":
            for line in solutions:
                assert line not in text
            assert "Rubric" not in text


def test_release_holds_no_model_answer_or_rubric():
    py = SOURCE.read_text()
    nb = nbformat.read(str(REPO / "notebooks" / f"{LAB}.ipynb"), as_version=4)
    student = "\n".join(c.source for c in nb.cells)
    answers = re.findall(r"^# ### BEGIN SOLUTION\n(.*?)^# ### END SOLUTION", py, re.M | re.S)
    assert len(answers) >= 4
    for block in answers:
        for line in block.splitlines():
            line = line[2:].strip()
            if len(line) > 12:
                assert line not in student, f"model answer leaked: {line!r}"
    assert "Rubric" not in student


def test_above_control_subtracts_what_the_judge_gives_the_digit_on_other_digits():
    """Golden values by hand, and the case it exists for: a judge that calls every sample an 8 gives the 8s
    no margin at all (and the others a negative one), however sure it is."""
    from labkit.evaluation import measures

    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9]])
    y = torch.tensor([0, 0, 1, 1])
    assert torch.allclose(measures.above_control(p, y), torch.tensor([0.5, 0.4, 0.15, 0.75], dtype=torch.float64))
    biased = torch.zeros(20, 10)
    biased[:, 8] = 1.0  # "everything is an 8"
    labels = torch.arange(20) % 10
    margins = measures.above_control(biased, labels)
    assert torch.all(margins[labels == 8] == 0) and torch.all(margins[labels != 8] == 0)
    assert torch.all(measures.recognisable_from(margins[None].expand(5, -1), 0.5) == 5)  # never recognisable


def test_later_than_rest_and_pareto_front_examples():
    """Golden values by hand: ties count half; equal settings both stay on the front, a slower equal one does not."""
    v = torch.tensor([1.0, 2.0, 3.0, 1.0, 1.0, 5.0])
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    # class 0 against [1, 1, 5]: 1 ties twice (0.5 each), 2 and 3 beat both 1s -> (1 + 2 + 2) / 9
    assert measures.later_than_rest(v, y, 3).tolist() == pytest.approx([5 / 9, 1 / 8, 1.0])
    seconds = torch.tensor([1.0, 2.0, 3.0, 3.0, 1.0])
    quality = torch.tensor([0.5, 0.9, 0.8, 0.9, 0.5])
    assert measures.pareto_front(seconds, quality).tolist() == [True, True, False, False, True]
