"""Grading that survives real submissions (issue 8): a class of simulated, damaged or hostile submissions of
lab01_forward, graded in ONE ``labkit.course.grade_submissions`` call (two parallel workers).

Every case must get the score it deserves, its status and notes must say what happened, and none may stop
the others. ``docs/reliability.md`` holds the table of these cases measured by this module; regenerate it
after a change with

    LABKIT_UPDATE_DOCS=1 pytest tests/test_grading_faults.py

(the test ``test_reliability_doc_matches_the_run`` fails while the table is out of date). About 2-3 minutes
on two cores: one autograde per student, plus one timed-out cell.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat
import pytest

from labkit import course

pytestmark = [pytest.mark.nbgrader, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
LAB = "lab01_forward"
FULL = 11.0  # 1 + 1 + 1 + 2 + 1 + 2 + 1 + 2 points (alpha_bars, snr, linear, cosine, chain, q_sample, x0, posterior)
TIMEOUT = 30  # seconds per cell: what the infinite loop costs; every real cell of the lab runs far below it
MEMORY_GB = course.DEFAULT_MEMORY_LIMIT_GB  # the documented kernel memory cap (4 GB)
DOC = REPO / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- grading-faults-table:start -->", "<!-- grading-faults-table:end -->"

RELEASE = nbformat.read(str(REPO / "notebooks" / f"{LAB}.ipynb"), as_version=4)
SOURCE = nbformat.read(str(REPO / "solutions" / LAB / f"{LAB}.ipynb"), as_version=4)
ANSWERS = {c.metadata["nbgrader"]["grade_id"]: c.source for c in SOURCE.cells
           if c.metadata.get("nbgrader", {}).get("solution")}


# --- building the class of submissions ------------------------------------------------------------

def _gid(cell) -> str | None:
    return (cell.metadata.get("nbgrader") or {}).get("grade_id")


def _index(nb, gid: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if _gid(c) == gid)


def solved(**replace: str):
    """The release notebook with every answer filled in as a student would (the solution's code, without
    the BEGIN/END SOLUTION markers), ``replace`` giving other sources for some answer cells."""
    nb = copy.deepcopy(RELEASE)
    for cell in nb.cells:
        gid = _gid(cell)
        if gid in ANSWERS:
            text = replace.get(gid, ANSWERS[gid])
            cell.source = "\n".join(ln for ln in text.splitlines() if "### " not in ln)
    return nb


def write(nb, folder: Path, name: str = f"{LAB}.ipynb") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / name))


def make_metadata_stripped(folder: Path) -> None:
    """An editor that drops all metadata and cell ids (nbformat 4.4 without ids), answers present."""
    nb = json.loads(nbformat.writes(solved()))
    nb["metadata"], nb["nbformat_minor"] = {}, 4
    for cell in nb["cells"]:
        cell["metadata"] = {}
        cell.pop("id", None)
    folder.mkdir(parents=True)
    (folder / f"{LAB}.ipynb").write_text(json.dumps(nb, indent=1))


def make_retyped(folder: Path) -> None:
    """The `snr` answer cell deleted, the function typed again in a new cell at the very end."""
    nb = solved()
    del nb.cells[_index(nb, "snr")]
    nb.cells.append(nbformat.v4.new_code_cell("# my snr, retyped\ndef snr(alpha_bars):\n"
                                              "    return alpha_bars / (1 - alpha_bars)\n"))
    write(nb, folder)


def make_tests_deleted(folder: Path) -> None:
    nb = solved()
    nb.cells = [c for c in nb.cells if not (c.metadata.get("nbgrader") or {}).get("grade")]
    write(nb, folder)


def make_copy_paste(folder: Path) -> None:
    """The q_sample answer cell copied (same cell id and grade_id): the first copy keeps a wrong attempt, the
    pasted one below it the right answer; the test_snr cell pasted twice."""
    nb = solved()
    k = _index(nb, "q_sample")
    wrong = copy.deepcopy(nb.cells[k])
    wrong.source = "def q_sample(x0, t, noise, alpha_bars):\n    return alpha_bars[t] * x0 + noise  # first try\n"
    nb.cells.insert(k, wrong)
    t = _index(nb, "test_snr")
    nb.cells.insert(t + 1, copy.deepcopy(nb.cells[t]))
    folder.mkdir(parents=True)  # raw JSON: nbformat.write would quietly repair the duplicate cell ids
    (folder / f"{LAB}.ipynb").write_text(json.dumps(nb, indent=1))


def make_infinite_loop(folder: Path) -> None:
    write(solved(snr="def snr(alpha_bars):\n    while True:  # forgot to update the loop variable\n"
                     "        pass\n"), folder)


def make_kernel_exit(folder: Path) -> None:
    write(solved(q_sample="import os\n\ndef q_sample(x0, t, noise, alpha_bars):\n"
                          "    os._exit(1)  # a debugging leftover that ends the kernel\n"), folder)


# Touches memory in 256 MB blocks up to the cap plus 1 GB. Bounded on purpose: should the cap ever fail, the
# kernel takes 5 GB for a moment (this 24 GB machine is shared) and the test reports that the cap failed.
BLOWUP = f"""import torch

def snr(alpha_bars):
    blocks = []
    for _ in range({int((MEMORY_GB + 1) * 4)}):
        blocks.append(torch.ones(64 * 2**20))  # 256 MB each, written
    return alpha_bars / (1 - alpha_bars)
"""


def make_memory_blowup(folder: Path) -> None:
    write(solved(snr=BLOWUP), folder)


def make_raises(folder: Path) -> None:
    write(solved(alpha_bars_from_betas="raise RuntimeError('I will finish this later')\n\n"
                                       + ANSWERS["alpha_bars_from_betas"]), folder)


def make_numpy_arrays(folder: Path) -> None:
    write(solved(alpha_bars_from_betas="import numpy as np\n\ndef alpha_bars_from_betas(betas):\n"
                                       "    return np.cumprod(1 - betas.numpy())\n"), folder)


def make_meta_device(folder: Path) -> None:
    write(solved(q_sample="def q_sample(x0, t, noise, alpha_bars):\n"
                          "    ab = alpha_bars[t].view(-1, 1, 1, 1).to(x0.dtype)\n"
                          "    return (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).to('meta')\n"), folder)


def make_wrong_dtypes(folder: Path) -> None:
    """int64 and float16 results fail with a message; float64 where float32 came in is accepted."""
    write(solved(alpha_bars_from_betas="def alpha_bars_from_betas(betas):\n"
                                       "    return torch.cumprod(1 - betas, dim=0).long()\n",
                 snr="def snr(alpha_bars):\n    return (alpha_bars / (1 - alpha_bars)).half()\n",
                 q_sample="def q_sample(x0, t, noise, alpha_bars):\n"
                          "    ab = alpha_bars[t].view(-1, 1, 1, 1)\n"
                          "    return ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()\n"), folder)


def make_monkeypatched(folder: Path) -> None:
    """Wrong answers plus patches that fool naive tests: allclose always True, a check replaced."""
    write(solved(snr="import numpy\n\ntorch.allclose = lambda *a, **k: True\nnumpy.allclose = lambda *a, **k: True\n"
                     "torch.Tensor.allclose = lambda *a, **k: True\n\n"
                     "def snr(alpha_bars):\n    return (1 - alpha_bars) / alpha_bars\n",
                 q_sample="checks.check_q_sample = lambda *a, **k: print('all good')\n\n"
                          "def q_sample(x0, t, noise, alpha_bars):\n    return x0\n"), folder)


def make_renamed_copy(folder: Path) -> None:
    write(solved(), folder, f"Copy of {LAB} (1).ipynb")


def make_renamed_dash(folder: Path) -> None:
    write(solved(), folder, f"{LAB}-2.ipynb")


def make_empty_folder(folder: Path) -> None:
    folder.mkdir(parents=True)


def make_truncated(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / f"{LAB}.ipynb").write_text(nbformat.writes(solved())[:5000])  # an upload cut short


def make_warns(folder: Path) -> None:
    """A correct answer that warns and prints to stderr (nbgrader alone would give its test cell 0)."""
    write(solved(snr="import sys, warnings\n\ndef snr(alpha_bars):\n"
                     "    warnings.warn('computing the SNR')\n    print('debug: in snr', file=sys.stderr)\n"
                     "    return alpha_bars / (1 - alpha_bars)\n"), folder)


def make_correct(folder: Path) -> None:
    write(solved(), folder)


def make_untouched(folder: Path) -> None:
    write(RELEASE, folder)


@dataclass
class Case:
    number: str
    student: str
    how: str
    make: Callable[[Path], None]
    expected: float | None  # None: no score (a failed submission)
    status: str
    note: str  # a regular expression that one of the student's notes must match


CASES = [
    Case("13a", "correct", "all eight answers right (control)", make_correct, FULL, "graded", r"^$"),
    Case("13b", "untouched", "the student notebook as released (control)", make_untouched, 0, "graded",
         r"test_alpha_bars_from_betas\) failed: CheckFailed: .*not implemented yet"),
    Case("1", "metadata-stripped", "all cell and notebook metadata and cell ids removed, answers present",
         make_metadata_stripped, FULL, "graded", r"restored nbgrader metadata of 'q_sample' \(matched by position"),
    Case("2", "retyped", "`snr` answer cell deleted, the function retyped in a new cell at the end",
         make_retyped, FULL, "graded", r"restored nbgrader metadata of 'snr' \(moved up from cell"),
    Case("3", "tests-deleted", "all eight test cells deleted", make_tests_deleted, FULL, "graded",
         r"deleted cell 'test_q_sample' put back"),
    Case("4", "copy-paste", "answer cell copied (same id and grade_id; wrong first copy, right second), "
         "a test cell pasted twice", make_copy_paste, FULL, "graded", r"duplicate of 'q_sample' \(copied cell\)"),
    Case("5", "infinite-loop", "`snr` loops forever", make_infinite_loop, FULL - 1, "graded",
         rf"\(test_snr\) failed: timed out after {TIMEOUT} s"),
    Case("6a", "kernel-exit", "`q_sample` calls os._exit(1)", make_kernel_exit, FULL - 2, "kernel died",
         r"\(test_q_sample\) failed: the kernel died here"),
    Case("6b", "memory-blowup", f"`snr` allocates {MEMORY_GB + 1:g} GB in 256 MB blocks "
         f"(cap {MEMORY_GB:g} GB)", make_memory_blowup, FULL - 1, "out of memory",
         rf"\(test_snr\) failed: reached the {MEMORY_GB:g} GB memory cap"),
    Case("7", "raises", "the `alpha_bars_from_betas` cell raises before defining it", make_raises, FULL - 1, "graded",
         r"\(alpha_bars_from_betas\): RuntimeError: I will finish this later"),
    Case("8", "numpy", "`alpha_bars_from_betas` returns a numpy array", make_numpy_arrays, FULL - 1, "graded",
         r"test_alpha_bars_from_betas\) failed: .*is a numpy array"),
    Case("9a", "meta-device", "`q_sample` returns its (right) result on the 'meta' device", make_meta_device, FULL - 2,
         "graded", r"test_q_sample\) failed: .*'meta' device"),
    Case("9b", "wrong-dtypes", "int64 alpha_bars, float16 SNR, float64 x_t (inputs float32)", make_wrong_dtypes, FULL - 2,
         "graded", r"test_snr\) failed: .*dtype torch.float16"),
    Case("10", "monkeypatched", "wrong `snr` and `q_sample`; torch/numpy allclose patched to return True, "
         "`checks.check_q_sample` replaced", make_monkeypatched, FULL - 3, "needs review",
         r"REVIEW cell \d+ \(snr\): replaces .*torch.allclose"),
    Case("11a", "renamed-copy", f"file named `Copy of {LAB} (1).ipynb`", make_renamed_copy, FULL, "graded", r"^$"),
    Case("11b", "renamed-dash", f"file named `{LAB}-2.ipynb`", make_renamed_dash, FULL, "graded", r"^$"),
    Case("12a", "empty", "empty student folder", make_empty_folder, 0, "no submission", r"empty folder, no notebook"),
    Case("12b", "truncated", "the upload was cut short (invalid JSON)", make_truncated, None, "failed",
         r"unreadable notebook lab01_forward.ipynb: NotJSONError"),
    Case("14", "warns", "right answers; `snr` warns and prints to stderr", make_warns, FULL, "graded",
         r"^$"),
]
BY_STUDENT = {c.student: c for c in CASES}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    subs = tmp / "submissions"
    subs.mkdir()
    for case in CASES:
        case.make(subs / case.student)
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_CACHE", str(tmp / "cache"))
    mp.delenv("LABKIT_DATA", raising=False)  # synthetic digits: fast and the same everywhere
    start = time.monotonic()
    try:
        results = course.grade_submissions(subs, tmp / "out", [LAB], repo_root=REPO, timeout=TIMEOUT, jobs=2,
                                           memory_limit_gb=MEMORY_GB)
    finally:
        mp.undo()
    elapsed = time.monotonic() - start
    print(f"\ngraded {len(results)} submissions in {elapsed:.0f} s")
    return {r.student: r for r in results}, tmp / "out"


def _autograded(out: Path, student: str):
    return nbformat.read(str(out / "nbgrader" / LAB / "autograded" / student / LAB / f"{LAB}.ipynb"), as_version=4)


def _errors(nb, gid: str) -> str:
    cell = nb.cells[_index(nb, gid)]
    return "\n".join(f"{o['ename']}: {o['evalue']}" for o in cell.get("outputs", []) if o.get("output_type") == "error")


# --- one grading run, every case -----------------------------------------------------------------

def test_every_case_is_in_the_report(graded):
    results, out = graded
    assert sorted(results) == sorted(BY_STUDENT)
    rows = (out / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.number}-{c.student}")
def test_score_and_status(graded, case):
    r = graded[0][case.student]
    assert (r.score, r.max_score) == (case.expected, FULL), r.notes
    assert r.status == case.status, r.notes


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.number}-{c.student}")
def test_notes_say_what_happened(graded, case):
    notes = graded[0][case.student].notes
    if case.note == r"^$":
        assert notes == [], notes
    else:
        assert any(re.search(case.note, n) for n in notes), notes


def test_nothing_hangs_or_repeats_the_timeout(graded):
    """The loop costs one timeout, in its own cell: the tests after it ran normally."""
    results, out = graded
    nb = _autograded(out, "infinite-loop")
    assert "CellTimeoutError" in _errors(nb, "test_snr")
    assert _errors(nb, "test_alpha_bars_from_betas") == "" and _errors(nb, "test_q_sample") == ""
    timeouts = [n for n in results["infinite-loop"].notes if "timed out" in n]
    assert len(timeouts) == 1, results["infinite-loop"].notes


def test_dead_kernel_is_restarted_and_grading_goes_on(graded):
    _, out = graded
    nb = _autograded(out, "kernel-exit")
    assert "DeadKernelError" in _errors(nb, "test_q_sample")
    assert _errors(nb, "test_alpha_bars_from_betas") == "" and _errors(nb, "test_snr") == ""
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]  # the cells after the death ran too
    assert last_code.get("execution_count") and not [o for o in last_code.outputs if o.output_type == "error"]


def test_memory_cap_stops_the_blowup(graded):
    _, out = graded
    text = _errors(_autograded(out, "memory-blowup"), "test_snr")
    assert any(m.lower() in text.lower() for m in course.MEMORY_ERRORS), text


def test_clear_messages_for_wrong_types_and_devices(graded):
    _, out = graded
    assert "is a numpy array" in _errors(_autograded(out, "numpy"), "test_alpha_bars_from_betas")
    assert "'meta' device" in _errors(_autograded(out, "meta-device"), "test_q_sample")
    nb = _autograded(out, "wrong-dtypes")
    assert "dtype torch.int64; expected a floating-point tensor" in _errors(nb, "test_alpha_bars_from_betas")
    assert "dtype torch.float16" in _errors(nb, "test_snr") and "float32" in _errors(nb, "test_snr")
    assert _errors(nb, "test_q_sample") == ""  # float64 is accepted


def test_monkeypatching_earns_nothing(graded):
    results, out = graded
    nb = _autograded(out, "monkeypatched")
    assert "inverted" in _errors(nb, "test_snr")  # allclose patched: the check still names the mistake
    assert "CheckFailed" in _errors(nb, "test_q_sample")  # the test ran in the grader, not in the patched kernel
    assert sum("REVIEW" in n for n in results["monkeypatched"].notes) >= 2


def test_renamed_notebooks_are_found(graded):
    _, out = graded
    for student in ("renamed-copy", "renamed-dash"):
        assert (out / "nbgrader" / LAB / "submitted" / student / LAB / f"{LAB}.ipynb").exists()


def test_warnings_do_not_cost_points(graded):
    _, out = graded
    cell = _autograded(out, "warns").cells[_index(RELEASE, "test_snr")]
    text = "".join(o.get("text", "") for o in cell.outputs)
    assert "note: your function warned: UserWarning: computing the SNR" in text and "debug: in snr" in text


def test_feedback_for_every_graded_student(graded):
    results, out = graded
    for student, r in results.items():
        html = out / "feedback" / student / f"{LAB}.html"
        assert html.exists() == (r.status not in ("no submission", "failed")), student
    raw = (out / "feedback" / "kernel-exit" / f"{LAB}.html").read_text()
    assert "HIDDEN TESTS" not in raw and "seed=4" not in raw


# --- the table in docs/reliability.md -------------------------------------------------------------

def _short(text: str, n: int = 140) -> str:
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " ..."


def fault_table(results) -> str:
    head = ("| # | case (student) | how it is simulated | expected | measured | status | notes (from the run) | survived |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = []
    for c in CASES:
        r = results[c.student]
        key = next((n for n in r.notes if re.search(c.note, n)), "") if c.note != r"^$" else "; ".join(r.notes)
        key = _short(re.sub(r"\s+", " ", key).replace("`", "'")).replace("|", "\\|") or "-"
        noted = not r.notes if c.note == r"^$" else any(re.search(c.note, n) for n in r.notes)
        ok = r.score == c.expected and r.status == c.status and noted
        measured = "-" if r.score is None else f"{r.score:g}/{r.max_score:g}"
        expected = "-" if c.expected is None else f"{c.expected:g}/{FULL:g}"
        rows.append(f"| {c.number} | {c.student} | {c.how} | {expected} | {measured} | {r.status} | "
                    f"{key} | {'yes' if ok else 'NO'} |")
    return head + "\n".join(rows) + "\n"


def test_reliability_doc_matches_the_run(graded):
    table = fault_table(graded[0])
    print("\n" + table)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert TABLE_START in text and TABLE_END in text, f"{DOC} needs the markers {TABLE_START} / {TABLE_END}"
    before, rest = text.split(TABLE_START, 1)
    current, after = rest.split(TABLE_END, 1)
    if os.environ.get("LABKIT_UPDATE_DOCS"):
        DOC.write_text(before + TABLE_START + "\n" + table + TABLE_END + after, encoding="utf-8")
    else:
        assert current.strip() == table.strip(), ("docs/reliability.md is out of date: "
                                                  "LABKIT_UPDATE_DOCS=1 pytest tests/test_grading_faults.py")
    assert "| NO |" not in table


# --- the pieces, without a grading run ------------------------------------------------------------

def test_guarded_execute_survives_hung_and_dead_kernels(tmp_path):
    """A loop that swallows the interrupt (nbgrader alone fails the whole notebook on it), os._exit and a
    blow-up against a 0.5 GB cap, in a bare kernel: each costs its own cell only, the state above survives."""
    cells = ["x = 41",
             "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except BaseException:\n        pass",
             "x += 1",
             "import os\nos._exit(3)",
             "print('after the death', x)",
             "blob = bytearray(2**30)",
             "print('end', x)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = dict(course.KERNELSPEC)
    ex = course.guarded_execute_class()(timeout=3, kernel_name="python3", memory_limit_gb=0.5, responsive_timeout=3)
    ex.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    enames = [[o.get("ename") for o in c.outputs if o.output_type == "error"] for c in nb.cells]
    assert enames == [[], ["CellTimeoutError"], [], ["DeadKernelError"], [], ["MemoryError"], []]
    assert nb.cells[4].outputs[0]["text"] == "after the death 42\n" and nb.cells[6].outputs[0]["text"] == "end 42\n"
    status, notes = course.execution_report(nb, 3, 0.5)
    assert status == "kernel died" and len(notes) == 3
    assert "ignored the interrupt" in notes[0] and "0.5 GB memory cap" in notes[2]


def test_no_tampering_notes_on_the_solutions():
    for lab in course.discover_labs(REPO):
        nb = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
        assert course.tampering_notes(nb) == [], lab
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("setattr(np, 'allclose', f)\nx = torch.ones(2)"),
                                         nbformat.v4.new_code_cell("import torch as T\ntorch = T\nx.data = 1")])
    assert [n.split(":")[0] for n in course.tampering_notes(nb)] == ["REVIEW cell 0"]


def test_cli_takes_a_memory_limit(tmp_path):
    import argparse

    args = course.add_grade_arguments(argparse.ArgumentParser()).parse_args(["subs", "--memory-limit", "2.5", "--jobs", "2"])
    assert (args.memory_limit, args.jobs) == (2.5, 2)
    assert course.add_grade_arguments(argparse.ArgumentParser()).parse_args(["subs"]).memory_limit == MEMORY_GB == 4
    (tmp_path / "nobody").mkdir()
    subs, problems = course.find_submissions(tmp_path, [LAB])
    assert subs == [] and problems == ["nobody/: empty folder, no notebook submitted"]
