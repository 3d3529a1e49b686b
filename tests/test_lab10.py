"""Lab 10 (flow matching): its checks pass on the solution and on labkit, a wrong answer of each exercise is
named, and the lab through the real grading path (solution = full autograded marks, untouched release = 0 with
only its test cells failing, written answers left to the formgrader, feedback without hidden tests).

The checks' own tests of naming and tolerances are in test_mistake_naming / test_check_properties (the lab's
exercises are read from its source, tests/solution_code.py); labkit.flow's golden values in test_flow."""

from __future__ import annotations

import html as htmllib
import re
from pathlib import Path

import nbformat
import pytest
import torch

from labkit import flow
from labkit.checks import lab10_flow as c10
from solution_code import solution_function

REPO = Path(__file__).resolve().parents[1]
LAB = "lab10_flow"
SOURCE = REPO / "solutions" / LAB / f"{LAB}.py"


def _points() -> tuple[float, float]:
    nb = nbformat.read(str(REPO / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
    auto = sum(c.metadata["nbgrader"]["points"] for c in nb.cells
               if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade"))
    manual = sum(c.metadata["nbgrader"]["points"] for c in nb.cells
                 if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade"))
    return auto, manual


def test_points_add_up():
    assert _points() == (23, 5)


@pytest.mark.parametrize("check, name", [(c10.check_flow_matching_loss, "flow_matching_loss"),
                                         (c10.check_euler_step, "euler_step"), (c10.check_euler_loop, "euler_loop"),
                                         (c10.check_heun_loop, "heun_loop"), (c10.check_cfg_velocity, "cfg_velocity"),
                                         (c10.check_shifted_time_grid, "shifted_time_grid"),
                                         (c10.check_reflow_pairs, "reflow_pairs"), (c10.check_reflow_train, "reflow_train"),
                                         (c10.check_straightness, "straightness")])
def test_solution_and_labkit_pass(check, name, capsys):
    check(solution_function(LAB, name))
    check(getattr(flow, name))
    assert capsys.readouterr().out.count("passed") == 2


def _reversed_chord(model, x_1, y, times):
    """S computed with the chord x_0 - x_1 (the sign a student who thinks 'from start to end' writes)."""
    x, B, vs = x_1, x_1.shape[0], []
    for k in range(len(times) - 1):
        t, tn = times[k].float().expand(B), times[k + 1].float().expand(B)
        vs.append(model(x, t, y))
        x = flow.euler_step(x, vs[-1], t, tn)
    return sum((times[k] - times[k + 1]) * ((x - x_1 - v) ** 2).flatten(1).sum(1) for k, v in enumerate(vs)).mean()


def _broken_pairs(model, optimizer, x_0, x_1, y, steps, batch_size, generator):
    """reflow_train with the pairs broken: x_1 indexed with a second draw of indices."""
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x_0), (batch_size,), generator=generator)
        other = torch.randint(0, len(x_0), (batch_size,), generator=generator)
        t = torch.rand(batch_size, generator=generator)
        optimizer.zero_grad()
        loss = flow.flow_matching_loss(model, x_0[idx], y[idx], t, x_1[other])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("wrong, check, phrase", [
    (lambda m, x0, y, t, n: ((m((1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * n, t, y) - (x0 - n)) ** 2).mean(),
     c10.check_flow_matching_loss, "sign"),
    (lambda x, v, t, tn: x + (t - tn).view(-1, 1, 1, 1) * v, c10.check_euler_step, "sign is reversed"),
    (_reversed_chord, c10.check_straightness, "chord sign reversed"),
    (_broken_pairs, c10.check_reflow_train, "pairs from different noises"),
])
def test_a_reversed_sign_is_named(wrong, check, phrase):
    with pytest.raises(AssertionError, match=phrase):
        check(wrong)


def test_the_strict_model_says_which_input_is_wrong():
    model = c10.VelocityModel(1)
    x, y = torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="t must be a float tensor of shape"):
        model(x, torch.tensor(0.5), y)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        model(x, torch.tensor([999.0, 0.0]), y)
    with pytest.raises(ValueError, match="x_1's dtype"):
        model(x.double(), torch.tensor([0.5, 0.5]), y)


def test_flow_network_falls_back_to_labkits_unet():
    from labkit import recipes

    net, who = c10.flow_network(None, recipes.tiny().unet)
    assert isinstance(net, flow.TimeScaled) and "labkit" in who
    out = net(torch.zeros(2, 1, 8, 8), torch.tensor([0.0, 1.0]), torch.tensor([1, 10]))
    assert out.shape == (2, 1, 8, 8)


# --- the lab through the real grading path ----------------------------------------------------------------


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from conftest import copy_solution_and_release, grade_folder
    from labkit.course.sandbox import probe

    tmp = tmp_path_factory.mktemp("grading10")
    copy_solution_and_release(tmp / "subs", [LAB])
    results = grade_folder(tmp / "subs", tmp / "out", [LAB], timeout=600, jobs=1, verbose=False,
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


@pytest.mark.nbgrader
@pytest.mark.slow
def test_solution_full_autograded_marks_release_zero(graded):
    results, out = graded
    auto, manual = _points()
    sol, blank = results["solution"], results["blank"]
    assert sol.status == "graded", sol.notes
    assert (sol.score, sol.max_score) == (auto, auto), sol.notes
    assert sol.manual_max == manual and sol.manual_score is None
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


@pytest.mark.nbgrader
@pytest.mark.slow
def test_feedback_hides_hidden_tests(graded):
    _, out = graded
    py = SOURCE.read_text()
    hidden = [ln.strip() for block in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", py, re.S)
              for ln in block.splitlines() if ln.strip()]
    assert hidden
    for student in ("solution", "blank"):
        text = htmllib.unescape(re.sub(r"<[^>]+>", "", (out / "feedback" / student / f"{LAB}.html").read_text()))
        assert "HIDDEN TESTS" not in text
        for line in hidden:
            assert line not in text, f"{line!r} in {student}'s feedback"
