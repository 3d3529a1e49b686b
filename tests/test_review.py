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

# The 13 disguises that got full marks with status `graded` (issue 23), each a working q_sample answer:
# {"q_sample": answer cell source, "before": a cell inserted above it, "cell": how the answer cell is dressed}
DISGUISES = {
    "sys_modules": {"q_sample": SIGNATURE + f"    return sys.modules['labkit.diffusion'].q_sample{CALL}\n"},
    "getattr_concat": {"q_sample": SIGNATURE + f"    return getattr(diffusion, 'q_' + 'sample'){CALL}\n"},
    "alias_in_another_cell": {"before": "_D = diffusion  # a shorter name",
                              "q_sample": SIGNATURE + f"    return _D.q_sample{CALL}\n"},
    "default_argument": {"q_sample": "def q_sample(x0, t, noise, alpha_bars, _f=diffusion.q_sample):\n"
                                     f"    return _f{CALL}\n"},
    "decorator": {"q_sample": "def _borrow(f):\n    return diffusion.q_sample\n\n@_borrow\n" + SIGNATURE
                              + "    raise NotImplementedError()\n"},
    "lambda": {"q_sample": "q_sample = lambda x0, t, noise, alpha_bars: diffusion.q_sample(x0, t, noise, alpha_bars)\n"},
    "subclasses_globals": {"q_sample": SIGNATURE + "    for c in ().__class__.__base__.__subclasses__():\n"
                                       "        if c.__name__ == 'Schedule':\n"
                                       "            g = c.snr.__globals__\n"
                                       "    return g['torch'].sqrt(g['torch'].zeros(1)) + "
                                       f"__import__('labkit.diffusion', fromlist=['x']).q_sample{CALL}\n"},
    "getattr_builtins": {"q_sample": SIGNATURE + "    imp = getattr(__builtins__, '__imp' + 'ort__')\n"
                                     f"    return imp('labkit.diffusion', fromlist=['q_sample']).q_sample{CALL}\n"},
    "gc_objects": {"q_sample": "import gc\n\n" + SIGNATURE
                               + "    f = [o for o in gc.get_objects() if callable(o) and getattr(o, '__qualname__', '')"
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
    "filled_list": {"before": "_L = []\n_L.append(diffusion.q_sample)", "q_sample": SIGNATURE + f"    return _L[0]{CALL}\n"},
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
}


def _notebook(lab: str, folder: str) -> nbformat.NotebookNode:
    name = f"{lab}.ipynb"
    return nbformat.read(str(REPO / folder / (name if folder == "notebooks" else f"{lab}/{name}")), as_version=4)


def disguised(spec: dict) -> nbformat.NotebookNode:
    """The lab 01 release with its q_sample answer replaced (and dressed) as ``spec`` says, restored as the
    grader restores it."""
    release = _notebook(LAB, "notebooks")
    nb = copy.deepcopy(release)
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "q_sample")
    cell = nb.cells[at]
    cell.source = spec["q_sample"]
    if spec.get("cell") == "locked":
        cell.metadata["nbgrader"]["locked"] = True
    if spec.get("cell") == "markdown":
        nb.cells[at] = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata, id=cell.get("id"))
    if "before" in spec:
        nb.cells.insert(at, nbformat.v4.new_code_cell(spec["before"]))
    restore_submission(nb, release)
    return nb


@pytest.mark.parametrize("name", sorted(DISGUISES))
def test_each_disguised_library_answer_is_flagged(name):
    notes = static_notes(disguised(DISGUISES[name]), _notebook(LAB, "notebooks"))
    assert any(n.startswith("REVIEW") for n in notes), notes


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_routes_to_labkit_are_flagged(name):
    notes = static_notes(disguised(MORE[name]), _notebook(LAB, "notebooks"))
    assert any(n.startswith("REVIEW") for n in notes), notes


@pytest.mark.parametrize("name, phrase", [
    ("alias_in_another_cell", "_D (built from diffusion)"),
    ("default_argument", "labkit.diffusion.q_sample"),
    ("time_magic", "labkit.diffusion.q_sample"),
    ("sys_modules", "sys.modules"),
    ("gc_objects", "import gc"),
    ("getattr_builtins", "__builtins__"),
    ("subclasses_globals", "__subclasses__"),
    ("getattr_concat", "getattr() with a computed name"),
])
def test_the_note_says_how_the_answer_reaches_labkit(name, phrase):
    notes = " | ".join(static_notes(disguised(DISGUISES[name]), _notebook(LAB, "notebooks")))
    assert phrase in notes, notes


def test_a_plain_honest_answer_in_any_dress_is_not_flagged():
    honest = SIGNATURE + "    ab = alpha_bars[t].view(-1, 1, 1, 1)\n    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise\n"
    for dress in (None, "locked", "markdown"):
        spec = {"q_sample": honest, "cell": dress, "before": "here = %pwd\nprint(diffusion.q_sample)"}
        assert static_notes(disguised(spec), _notebook(LAB, "notebooks")) == [], dress
    spec = {"q_sample": "%time x = 1\nimport math, sys\n" + honest.replace("return", "print(sys.version)\n    return")}
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
