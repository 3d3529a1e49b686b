"""The library-answer review (issue 23, items 5 and 7): answers that call labkit's own function, disguised.

labkit holds the reference answers, so a student can score by calling ``diffusion.q_sample`` instead of
writing it. The static review (``labkit.course.review.static_notes``) reads each notebook as its kernel will
run it and follows names bound to labkit; the dynamic one (``kernel_side.watch_library``) sees which of
labkit's exercise functions a graded call ran. Fast tests here run on notebook JSON and in this process;
the real ``labkit grade`` run is in ``test_review_grading.py`` (extended).
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest

from labkit.course.restore import restore_submission
from labkit.course.review import static_notes

REPO = Path(__file__).resolve().parents[1]
LAB = "lab01_forward"
SIGNATURE = "def q_sample(x0, t, noise, alpha_bars):\n"
CALL = "(x0, t, noise, alpha_bars)"

# The 13 disguises that got full marks with status `graded` (issue 23), each a working answer: {grade id of the
# answer cell: its new source, "before": a cell inserted above it, "cell": how the answer cell is dressed}
DISGUISES = {
    "sys_modules": {"q_sample": SIGNATURE + f"    return sys.modules['labkit.diffusion'].q_sample{CALL}\n"},
    "getattr_concat": {"q_sample": SIGNATURE + f"    return getattr(diffusion, 'q_' + 'sample'){CALL}\n"},
    "alias_in_another_cell": {"before": "_D = diffusion  # a shorter name",
                              "q_sample": SIGNATURE + f"    return _D.q_sample{CALL}\n"},
    "default_argument": {"q_sample": "def q_sample(x0, t, noise, alpha_bars, _f=diffusion.q_sample):\n"
                                     f"    return _f{CALL}\n"},
    "decorator": {"q_sample": "def _borrow(f):\n    return diffusion.q_sample\n\n@_borrow\n" + SIGNATURE
                              + "    raise NotImplementedError()\n"},
    "lambda": {"q_sample": "q_sample = lambda x0, t, noise, alpha_bars: "
                           "diffusion.q_sample(x0, t, noise, alpha_bars)\n"},
    "subclasses_globals": {"snr": "def snr(alpha_bars):\n    for c in ().__class__.__base__.__subclasses__():\n"
                                  "        if c.__name__ == 'Schedule':  # labkit's; its method's globals hold snr\n"
                                  "            return c.snr.__globals__['snr'](alpha_bars)\n"},
    "getattr_builtins": {"q_sample": SIGNATURE + "    imp = getattr(__builtins__, '__imp' + 'ort__')\n"
                                     f"    return imp('labkit.diffusion', fromlist=['q_sample']).q_sample{CALL}\n"},
    "gc_objects": {"q_sample": "import gc\n\n" + SIGNATURE
                               + "    f = [o for o in gc.get_objects() if callable(o)"
                               " and getattr(o, '__qualname__', '')"
                               " == 'q_sample' and getattr(o, '__module__', '') == 'labkit.diffusion'][0]\n"
                               f"    return f{CALL}\n"},
    "locked_metadata": {"cell": "locked", "q_sample": SIGNATURE + f"    return diffusion.q_sample{CALL}\n"},
    "typed_markdown": {"cell": "markdown", "q_sample": SIGNATURE + f"    return diffusion.q_sample{CALL}\n"},
    "magic_line": {"q_sample": "here = %pwd\n" + SIGNATURE + f"    return diffusion.q_sample{CALL}\n"},
    "time_magic": {"q_sample": "%time from labkit.diffusion import q_sample\n"},
}
# More routes the review follows: containers, closures, a global set inside a function, a class, a
# comprehension, a helper in a later cell, IPython's output history, a module the notebook wrote itself.
MORE = {
    "container": {"before": "_BOX = {'f': [diffusion]}",
                  "q_sample": SIGNATURE + f"    return _BOX['f'][0].q_sample{CALL}\n"},
    "filled_list": {"before": "_L = []\n_L.append(diffusion.q_sample)",
                    "q_sample": SIGNATURE + f"    return _L[0]{CALL}\n"},
    "closure": {"q_sample": "def _make():\n    f = diffusion.q_sample\n    def inner(*a):\n        return f(*a)\n"
                            "    return inner\n\nq_sample = _make()\n"},
    "global_in_function": {"before": "def _setup():\n    global _G\n    _G = diffusion\n_setup()",
                           "q_sample": SIGNATURE + f"    return _G.q_sample{CALL}\n"},
    "class_method": {"q_sample": "class _Q:\n    def __call__(self, *a):\n        return diffusion.q_sample(*a)\n\n"
                                 "q_sample = _Q()\n"},
    "comprehension": {"q_sample": "q_sample = [f for f in [diffusion.q_sample]][0]\n"},
    "walrus": {"q_sample": SIGNATURE + f"    return (f := diffusion.q_sample){CALL}\n"},
    "output_history": {"before": "diffusion.q_sample", "q_sample": SIGNATURE + f"    return Out[5]{CALL}\n"},
    "written_module": {"before": "pathlib = __import__('pathlib')\n"
                                 "pathlib.Path('m.py').write_text('from labkit.diffusion import q_sample')",
                       "q_sample": "from m import q_sample\n"},
    "cell_magic": {"q_sample": "%%capture\nfrom labkit.diffusion import q_sample\n"},
    "shell_escape": {"q_sample": "!echo 'from labkit.diffusion import q_sample' > m2.py\nfrom m2 import *\n"},
    "exec_string": {"q_sample": "exec('from labkit.diffusion import q_' + 'sample')\n"},
    "star_import": {"q_sample": "from labkit.diffusion import *\n"},
    "sys_alias": {"before": "_s = sys",
                  "q_sample": SIGNATURE + f"    return _s.modules['labkit.diffusion'].q_sample{CALL}\n"},
    "sys_in_a_box": {"q_sample": SIGNATURE + f"    return [sys][0].modules['labkit.diffusion'].q_sample{CALL}\n"},
    "frame_walk": {"q_sample": SIGNATURE + "    import sys as s\n"
                               f"    return s._getframe(1).f_globals['diffusion'].q_sample{CALL}\n"},
}


def _notebook(lab: str, folder: str) -> nbformat.NotebookNode:
    name = f"{lab}.ipynb"
    return nbformat.read(str(REPO / folder / (name if folder == "notebooks" else f"{lab}/{name}")), as_version=4)


def disguised(spec: dict) -> nbformat.NotebookNode:
    """The lab 01 release with one answer replaced (and dressed) as ``spec`` says, restored as the grader
    restores it."""
    release = _notebook(LAB, "notebooks")
    nb = copy.deepcopy(release)
    gid = target(spec)
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
    cell = nb.cells[at]
    cell.source = spec[gid]
    if spec.get("cell") == "locked":
        cell.metadata["nbgrader"]["locked"] = True
    if spec.get("cell") == "markdown":
        nb.cells[at] = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata, id=cell.get("id"))
    if "before" in spec:
        nb.cells.insert(at, nbformat.v4.new_code_cell(spec["before"]))
    restore_submission(nb, release)
    return nb


def target(spec: dict) -> str:
    """The exercise a disguise answers."""
    return "snr" if "snr" in spec else "q_sample"


@pytest.mark.parametrize("name", sorted(DISGUISES))
def test_each_disguised_library_answer_is_flagged(name):
    notes = static_notes(disguised(DISGUISES[name]), _notebook(LAB, "notebooks"))
    assert any(n.startswith("REVIEW") for n in notes), notes


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_routes_to_labkit_are_flagged(name):
    notes = static_notes(disguised(MORE[name]), _notebook(LAB, "notebooks"))
    assert any(n.startswith("REVIEW") for n in notes), notes


@pytest.mark.parametrize("name, phrase", [
    ("alias_in_another_cell", "labkit.diffusion.q_sample (as _D.q_sample)"),
    ("container", "_BOX (built from diffusion)"),
    ("default_argument", "labkit.diffusion.q_sample"),
    ("time_magic", "labkit.diffusion.q_sample"),
    ("sys_modules", "sys.modules"),
    ("gc_objects", "import gc"),
    ("getattr_builtins", "__builtins__"),
    ("subclasses_globals", "__subclasses__"),
    ("getattr_concat", "getattr() with a computed name"),
])
def test_the_note_says_how_the_answer_reaches_labkit(name, phrase):
    notes = " | ".join(static_notes(disguised({**DISGUISES, **MORE}[name]), _notebook(LAB, "notebooks")))
    assert phrase in notes, notes


def test_a_plain_honest_answer_in_any_dress_is_not_flagged():
    honest = SIGNATURE + ("    ab = alpha_bars[t].view(-1, 1, 1, 1)\n"
                          "    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise\n")
    for dress in (None, "locked", "markdown"):
        spec = {"q_sample": honest, "cell": dress, "before": "here = %pwd\nprint(diffusion.q_sample)"}
        assert static_notes(disguised(spec), _notebook(LAB, "notebooks")) == [], dress
    spec = {"q_sample": "%time x = 1\nimport math, sys\n" + honest.replace("return", "print(sys.version)\n    return")}
    assert static_notes(disguised(spec), _notebook(LAB, "notebooks")) == []
    # the lab's own data (the device, fast mode, a schedule it built) is the student's to use
    spec = {"q_sample": honest.replace("return", "if FAST: print(linear.T)\n    return").replace(
        "* noise", "* noise.to(DEVICE)")}
    assert static_notes(disguised(spec), _notebook(LAB, "notebooks")) == []


def test_solutions_of_every_lab_are_not_flagged():
    """No false positive on the instructor's own answers, nor on the untouched release, in any of the labs."""
    labs = sorted(p.name for p in (REPO / "solutions").iterdir() if (p / f"{p.name}.py").exists())
    assert len(labs) >= 10
    for lab in labs:
        release, solution = _notebook(lab, "notebooks"), _notebook(lab, "solutions")
        restore_submission(solution, release)
        assert static_notes(solution, release) == [], lab
        assert static_notes(copy.deepcopy(release), release) == [], lab


def test_a_cell_that_does_not_parse_runs_nothing_and_is_not_read():
    spec = {"q_sample": SIGNATURE + "    return diffusion.q_sample(x0, t, noise, alpha_bars\n"}  # a syntax error
    assert static_notes(disguised(spec), _notebook(LAB, "notebooks")) == []


# --- the dynamic layer: what a call ran ------------------------------------------------------------

def _solution_functions() -> dict[tuple[str, str], object]:
    """(lab, name) -> the instructor's answer, defined from the solution source (in this process)."""
    import ast
    import math

    import torch

    found = {}
    for path in sorted((REPO / "solutions").glob("lab*/lab*.py")):
        source = path.read_text()
        from labkit import samplers  # lab 08's guided loop runs labkit's step (exercises.GIVEN)

        scope = {"torch": torch, "F": torch.nn.functional, "math": math,  # one per lab: a loop calls its step
                 "samplers": samplers}
        for node in ast.parse(source).body:
            segment = ast.get_source_segment(source, node) or ""
            if isinstance(node, ast.FunctionDef) and "### BEGIN SOLUTION" in segment:
                exec(compile(segment, str(path), "exec"), scope)  # noqa: S102 (our own solutions)
                found[(path.stem, node.name)] = scope[node.name]
    return found


def _watched(name: str, fn, seen: list):
    from labkit.course.kernel_side import watch_library

    def call(*args, **kwargs):
        with watch_library(name) as report:
            try:
                return fn(*args, **kwargs)
            finally:
                seen.append(report)
    return call


def test_the_dynamic_review_sees_no_library_call_in_any_solution(capsys):
    """Every visible and hidden test line of every lab, the instructor's answer watched: nothing of labkit's
    answers runs (a U-Net's own calls to concat_skip inside a training step do not count)."""
    import importlib
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from test_one_formula import _test_calls

    answers = _solution_functions()
    assert len(answers) >= 23
    for (lab, name), fn in sorted(answers.items()):
        checks = importlib.import_module(f"labkit.checks.{lab}")
        seen: list = []
        for line in _test_calls(lab, name):
            eval(line, {"checks": checks, name: _watched(name, fn, seen)})  # noqa: S307 (our own source)
        assert seen and all(r["watched"] and r["ran"] == [] for r in seen), (lab, name, seen)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["sys_modules", "getattr_concat", "default_argument", "subclasses_globals",
                                  "getattr_builtins", "gc_objects", "closure", "class_method"])
def test_the_dynamic_review_sees_the_library_run_however_it_is_reached(name):
    """The disguised answers, run here: whatever the spelling, labkit's q_sample is what ran."""
    import gc
    import sys

    import torch

    from labkit import diffusion, schedules

    spec = {**DISGUISES, **MORE}[name]
    import builtins

    scope = {"diffusion": diffusion, "sys": sys, "gc": gc, "torch": torch, "__builtins__": builtins}  # as in IPython
    exec(spec[target(spec)], scope)  # noqa: S102 (the test's own strings)
    seen: list = []
    x0, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    ab = schedules.make_schedule("cosine", 10).alpha_bars
    if target(spec) == "snr":
        _watched("snr", scope["snr"], seen)(ab)
    else:
        _watched("q_sample", scope["q_sample"], seen)(x0, torch.tensor([1, 3]), noise, ab)
    module = "schedules" if target(spec) == "snr" else "diffusion"
    assert seen[0]["ran"] == [f"labkit.{module}.{target(spec)}"] and seen[0]["watched"], seen


def test_a_function_that_switches_the_watch_off_is_reported():
    import sys

    from labkit import diffusion

    def q_sample(*a):
        sys.settrace(None)
        return diffusion.q_sample(*a)

    seen: list = []
    import torch

    _watched("q_sample", q_sample, seen)(torch.zeros(1, 1, 2, 2), torch.tensor([0]), torch.zeros(1, 1, 2, 2),
                                         torch.full((3,), 0.5))
    assert seen[0]["watched"] is False and seen[0]["ran"] == []
    assert sys.gettrace() is None


def test_dynamic_notes_read_only_plain_names_from_the_kernel():
    from labkit.course.review import dynamic_finding, dynamic_notes

    cell = nbformat.v4.new_code_cell("checks.check_q_sample(q_sample)",
                                     metadata={"nbgrader": {"grade_id": "test_q_sample", "grade": True}})
    forged = {"status": "ok", "library": {"ran": ["labkit.diffusion.q_sample", "<script>x</script>", 7] * 30,
                                          "watched": "yes"}}
    cell.metadata["labkit"] = {"library": [dynamic_finding("q_sample", forged),
                                           dynamic_finding("snr", {"status": "ok"}),
                                           dynamic_finding("alpha_bars_from_betas", {"status": "missing"})]}
    notes = dynamic_notes(nbformat.v4.new_notebook(cells=[cell]))
    assert notes[0] == ("REVIEW cell 0 (test_q_sample): while the grader called q_sample, it ran "
                        "labkit.diffusion.q_sample (labkit's own answer, seen by the dynamic review)")
    assert "switched off" in notes[1] and "q_sample" in notes[1]  # "watched" must be True, not truthy
    assert "said nothing about what ran" in notes[2] and "snr" in notes[2] and "alpha_bars" not in notes[2]
    assert len(notes) == 3 and "<script>" not in " ".join(notes)


def test_the_exercise_list_matches_the_solutions():
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from test_one_formula import LIBRARY

    from labkit.course.exercises import LIBRARY_ANSWERS

    from test_one_formula import CLASS_LIBRARY

    pairs = {(name, module) for (_, name), module in {**LIBRARY, **CLASS_LIBRARY}.items()}
    assert pairs == set(LIBRARY_ANSWERS.items())


# --- hidden seeds drawn per graded notebook (issue 23, item 6) ---------------------------------------

def _hidden_test_cells() -> list[tuple[str, str, str]]:
    """(lab, grade id, source) of every test cell that holds hidden tests, from the solution notebooks."""
    out = []
    for lab in sorted(p.name for p in (REPO / "solutions").iterdir() if (p / f"{p.name}.py").exists()):
        for c in _notebook(lab, "solutions").cells:
            if "### BEGIN HIDDEN TESTS" in c.source:
                out.append((lab, c.metadata["nbgrader"]["grade_id"], c.source))
    return out


def test_hidden_seeds_are_drawn_per_run_and_visible_lines_stay():
    from labkit.course.hidden_seeds import reseed_hidden_tests

    cells = _hidden_test_cells()
    assert len(cells) >= 20
    secret = b"s" * 64
    for lab, gid, source in cells:
        one, two = (reseed_hidden_tests(source, secret, run, gid) for run in ("run-1", "run-2"))
        assert one == reseed_hidden_tests(source, secret, "run-1", gid)  # the secret and run id replay it
        assert one != source and one != two and two != source, (lab, gid)
        visible = source.split("### BEGIN HIDDEN TESTS")[0]
        assert one.startswith(visible) and two.startswith(visible)  # public tests keep their inputs
        for a, b in zip(one.splitlines(), source.splitlines()):  # only seed= numbers change
            assert a.split("seed=")[0] == b.split("seed=")[0]


def test_a_correct_answer_passes_the_hidden_tests_on_drawn_seeds(capsys):
    """Every hidden test line of every lab, with two runs' drawn seeds and labkit's own answer: all pass."""
    import importlib

    from labkit.course.exercises import LIBRARY_ANSWERS
    from labkit.course.hidden_seeds import passes_with_library, reseed_hidden_tests

    lines = 0
    for lab, gid, source in _hidden_test_cells():
        checks = importlib.import_module(f"labkit.checks.{lab}")
        names = {n: getattr(checks, f"labkit_{n.lower()}", None) or getattr(importlib.import_module(m), n)
                 for n, m in LIBRARY_ANSWERS.items()}  # labkit_unet: labkit's network from the student's arguments
        for run in ("first", "second"):
            hidden = reseed_hidden_tests(source, b"k" * 64, run, gid, passes_with_library(checks))
            hidden = hidden.split("### BEGIN HIDDEN TESTS")[1]
            exec(hidden, {"checks": checks, **names})  # noqa: S102 (our own solutions); raises on a failure
            lines += hidden.count("checks.check_")
    assert capsys.readouterr().out.count("passed") == lines > 40


def test_the_course_secret_is_private_and_never_read_through_a_link(tmp_path):
    import os
    import stat

    from labkit.course.hidden_seeds import course_secret, SECRET_FILE

    secret = course_secret(tmp_path)
    assert len(secret) == 64 and course_secret(tmp_path) == secret  # made once, then kept
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    (tmp_path / SECRET_FILE).chmod(0o644)  # as unpacked from a zip
    assert course_secret(tmp_path) == secret and stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [SECRET_FILE]  # no temporary file left
    target = tmp_path / "elsewhere"
    target.write_text("x" * 64)
    for odd in ("link", "fifo"):
        course = tmp_path / odd
        course.mkdir()
        if odd == "link":
            (course / SECRET_FILE).symlink_to(target)
        else:
            os.mkfifo(course / SECRET_FILE)
        with pytest.raises(OSError):
            course_secret(course)
    assert target.read_text() == "x" * 64


def test_a_seed_on_which_labkits_own_answer_fails_is_never_used(capsys):
    """A drawn seed is kept only when the acceptance test (labkit's own answer passes the line) says so.
    Every hidden line is valid for every seed now (tests/test_check_properties.py), so a stand-in acceptance
    test that refuses odd seeds plays the part of a check with bad seeds."""
    import importlib
    import re

    from labkit import diffusion
    from labkit.course.hidden_seeds import passes_with_library, reseed_hidden_tests

    checks = importlib.import_module("labkit.checks.lab01_forward")
    source = next(s for lab, gid, s in _hidden_test_cells() if gid == "test_q_sample")
    line = next(ln for ln in source.splitlines() if ln.endswith("T=10)"))
    cell = line.join(["### BEGIN HIDDEN TESTS\n", "\n"])

    def seed_of(text):
        return int(re.search(r"seed=(\d+)", text)[1])

    raw = [reseed_hidden_tests(cell, b"k" * 64, f"r{k}", "c") for k in range(12)]
    assert any(seed_of(r.splitlines()[1]) % 2 for r in raw)  # the unchecked draws do hit the refused seeds ...
    even = lambda text: seed_of(text) % 2 == 0  # noqa: E731
    for k in range(12):  # ... the checked ones never do, and labkit's own answer passes them
        drawn = reseed_hidden_tests(cell, b"k" * 64, f"r{k}", "c", even).splitlines()[1]
        assert even(drawn)
        assert passes_with_library(checks)(drawn)
        exec(drawn, {"checks": checks, "q_sample": diffusion.q_sample})  # noqa: S102
    capsys.readouterr()


def test_code_too_deep_to_parse_here_is_flagged_not_skipped():
    """The kernel may raise its recursion limit and run what this process cannot even parse."""
    spec = {"q_sample": "import sys\nsys.setrecursionlimit(100000)\n",
            "before": "q_sample = diffusion" + ".q_sample" * 1 + ".__call__" * 4000}
    notes = static_notes(disguised(spec), _notebook(LAB, "notebooks"))
    assert any("nested too deeply" in n for n in notes), notes


# --- module exercises (lab 02): the dynamic review watches classes too ---------------------------------

def _probe_reply(namespace: dict, name: str, request: dict) -> dict:
    from labkit.course import kernel_side, wire

    return wire.decode_reply(kernel_side.answer(namespace, name, wire.encode_call((request,), {}), "probe"))


def _conv_request():
    import torch

    from labkit import unet
    from labkit.checks import _modules

    ref = _modules.seeded_weights(unet.ConvBlock(8, 16, 4), 0)
    return {"init": dict(c_in=8, c_out=16, groups=4), "weights": _modules.weights_of(ref),
            "calls": [((torch.randn(2, 8, 5, 5),), {})]}


def test_the_dynamic_review_sees_a_class_that_borrows_labkits():
    """A student's ConvBlock that subclasses labkit's (or builds labkit's inside) runs labkit's answer: the
    probe's reply says so; the instructor's own class runs none of labkit's modules."""
    import sys

    import torch

    from labkit import unet

    sys.path.insert(0, str(REPO / "tests"))
    from solution_code import solution_namespace

    class ConvBlock(unet.ConvBlock):  # the copy: same weights, same outputs, labkit's code
        pass

    class Wrapper(torch.nn.Module):  # the disguise: labkit's block inside a module of the student's
        def __init__(self, c_in, c_out, groups):
            super().__init__()
            self.inner = unet.ConvBlock(c_in, c_out, groups)

        def forward(self, x):
            return self.inner(x)

    for cls in (ConvBlock, Wrapper):
        reply = _probe_reply({"ConvBlock": cls}, "ConvBlock", _conv_request())
        assert reply["status"] == "ok" and reply["result"]["loaded"] in ("names", "order")
        assert reply["library"]["ran"] == ["labkit.unet.ConvBlock"], reply["library"]
    own = solution_namespace("lab02_unet")
    for name in ("ConvBlock", "UNet"):
        request = _conv_request() if name == "ConvBlock" else {"init": {}, "weights": None,
                                                               "calls": [((torch.randn(1, 1, 28, 28),), {})]}
        reply = _probe_reply(own, name, request)
        assert reply["status"] == "ok" and reply["library"] == {"ran": [], "watched": True}, reply


def test_lab03_unet_may_use_the_given_levels_but_not_labkits_network():
    """Lab 03's UNet is given labkit's Down and Up (exercises.GIVEN): not flagged; labkit's UNet or ResBlock is.
    A class's super().__init__() does not carry labkit from one class to the next."""
    lab = "lab03_embeddings"
    release, solution = _notebook(lab, "notebooks"), _notebook(lab, "solutions")
    assert static_notes(solution, release) == []
    answer = next(c for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "UNet")
    for wrong, phrase in [("class UNet(unet.UNet):\n    pass\n", "labkit.unet.UNet"),
                          (answer.source.replace("self.mid1 = ResBlock(", "self.mid1 = unet.ResBlock("),
                           "labkit.unet.ResBlock")]:
        nb = copy.deepcopy(solution)
        next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "UNet").source = wrong
        notes = static_notes(nb, release)
        assert len(notes) == 1 and "cell" in notes[0] and "(UNet)" in notes[0] and phrase in notes[0], notes
