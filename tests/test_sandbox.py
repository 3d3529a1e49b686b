"""The pieces of safe grading, one by one and fast: the wire format, the sandbox's view of the machine, the
refusal without bubblewrap, the answer review, and a test cell judged in the grader against a real kernel.
The whole path, against submissions written to cheat, is tests/test_redteam.py."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import nbformat
import pytest
import torch

import labkit
from labkit.course import sandbox, wire
from labkit.course.forensics import answer_notes, review_notes
from labkit.course.trusted import apply_after
from labkit.errors import LabkitError

from conftest import run_sandboxed

REPO = Path(__file__).resolve().parents[1]


# --- the wire: data only, both ways -------------------------------------------------------------------

def _roundtrip(tmp_path, value):
    return wire.decode_reply(wire.encode_reply({"result": value}))["result"]


def test_wire_carries_tensors_numbers_and_structure(tmp_path):
    x = torch.randn(3, 4, dtype=torch.float64)
    loss = (torch.ones(2, requires_grad=True) * 2).sum()
    got = _roundtrip(tmp_path, (x, 1.5, 3, None, True, "s", [torch.arange(3)], {"a": loss}, float("nan")))
    assert isinstance(got, tuple) and torch.equal(got[0], x) and got[0].dtype == torch.float64
    assert got[1:6] == (1.5, 3, None, True, "s") and torch.equal(got[6][0], torch.arange(3))
    assert got[7]["a"].requires_grad and float(got[7]["a"].detach()) == 4.0
    assert got[8] != got[8]  # nan survives


def test_wire_turns_other_objects_into_named_stand_ins(tmp_path):
    import numpy as np

    got = _roundtrip(tmp_path, [np.zeros(3), torch.nn.Linear(2, 2), torch.empty(2, 3, device="meta")])
    assert isinstance(got[0], wire.Foreign) and type(got[0]).__module__ == "numpy" and type(got[0]).__name__ == "ndarray"
    assert isinstance(got[1], wire.Foreign) and "Linear" in got[1].type_name
    assert got[2].device.type == "meta" and list(got[2].shape) == [2, 3]


@pytest.mark.parametrize("payload, phrase", [
    (b"cos\nsystem\n(S'touch /tmp/labkit-never'\ntR.", "header"),  # a pickle: never unpickled
    (struct.pack("<Q", 2 ** 40) + b"{}", "header"),  # a header larger than the file
    (b"\x01", "truncated"),
    (struct.pack("<Q", 2) + b"{}", "header"),  # valid JSON, no labkit tree
])
def test_wire_refuses_what_labkit_does_not_write(tmp_path, payload, phrase):
    with pytest.raises(wire.WireError, match=phrase):
        wire.decode_reply(payload)
    assert not Path("/tmp/labkit-never").exists()


def test_wire_refuses_a_forged_tree(tmp_path):
    from safetensors.torch import save

    for tree in ({"t": "missing"}, {"v": {"nested": "dict"}}, {"code": "import os"}, [1, 2]):
        with pytest.raises(wire.WireError):
            wire.decode_reply(save({}, metadata={"labkit": json.dumps(tree)}))


def test_wire_refuses_an_oversized_reply(tmp_path, monkeypatch):
    monkeypatch.setattr(wire, "MAX_REPLY_BYTES", 1000)
    with pytest.raises(wire.WireError, match="limit"):
        wire.decode_reply(wire.encode_reply({"result": torch.zeros(1000)}))


def test_call_inputs_travel_with_gradients(tmp_path):
    from labkit.checks.lab04_training import BatchLoss, ToyEpsModel

    model = ToyEpsModel(1, 5)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = BatchLoss(model, torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]), torch.tensor([0, 1]), torch.zeros(2, 1, 3, 3))
    (m2, o2, l2), _ = wire.decode_call(wire.encode_call((model, opt, loss), {}))
    assert all(float(p.grad.mean()) == 0.25 for p in m2.parameters())
    assert o2.param_groups[0]["params"][0] is next(m2.parameters()) and l2.model is m2


def test_apply_after_shows_in_place_edits_and_model_updates():
    from labkit.checks._common import CheckFailed
    from labkit.checks.lab04_training import BatchLoss, ToyEpsModel

    x = torch.zeros(3)
    apply_after((x,), [torch.ones(3)])
    assert torch.equal(x, torch.ones(3))  # the check's own copy now shows the student's in-place edit
    with pytest.raises(CheckFailed, match="shape or dtype"):
        apply_after((torch.zeros(3),), [torch.ones(4)])
    model = ToyEpsModel(1, 5)
    new = {k: v + 1 for k, v in model.state_dict().items()}
    apply_after((model,), [new])
    assert all(torch.equal(v, new[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckFailed, match="names or shapes"):
        apply_after((model,), [{"conv.weight": torch.zeros(1)}])
    loss = BatchLoss(model, None, None, None, None)
    apply_after((loss,), [2])
    assert len(loss.calls) == 2


def test_no_reference_answer_is_a_module_attribute():
    from labkit.checks import lab05_sampling, lab07_improvements

    for module in (lab05_sampling, lab07_improvements):
        assert not [n for n in dir(module) if n.startswith("reference")], module.__name__


# --- the sandbox ------------------------------------------------------------------------------------

def test_sandbox_binds_the_package_not_the_repository():
    box = sandbox.Sandbox.create()
    try:
        paths = box.readonly_paths()
        pkg = str(Path(labkit.__file__).resolve().parent)
        assert pkg in paths or any(pkg.startswith(p + "/") for p in paths)
        for p in paths:  # nothing that holds the repository root, and so solutions/
            assert not (str(REPO / "solutions")).startswith(p.rstrip("/") + "/"), p
        cmd = box.wrap(["python", "-c", "pass"])
        assert ("--unshare-all" in cmd or "--unshare-pid" in cmd) and "--die-with-parent" in cmd and "--clearenv" in cmd
        assert box.environment()["HOME"] == str(box.workdir)
    finally:
        box.cleanup()
    assert not box.workdir.exists()


def test_sandbox_copies_the_submission_folder_but_no_notebook(tmp_path):
    (tmp_path / "data.txt").write_text("mine")
    (tmp_path / "lab.ipynb").write_text("{}")
    box = sandbox.Sandbox.create(tmp_path)
    try:
        assert (box.workdir / "data.txt").read_text() == "mine" and not (box.workdir / "lab.ipynb").exists()
    finally:
        box.cleanup()


def test_grading_refuses_without_bubblewrap(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    why = sandbox.probe()
    assert why and "bubblewrap" in why and "--unsafe-no-sandbox" in why and "\n" not in why
    from labkit import course

    (tmp_path / "subs").mkdir()
    with pytest.raises(LabkitError, match="bubblewrap"):
        course.grade_submissions(tmp_path / "subs", tmp_path / "out", ["lab01_forward"], verbose=False)
    from labkit.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bubblewrap" in err[0], err
    assert not (tmp_path / "out" / "scores.csv").exists()


def test_inside_the_sandbox(bwrap, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("nope")
    code = f"""
import os, socket, pathlib, labkit
print("repo", sorted(os.listdir({str(REPO)!r})))
print("secret", os.path.exists({str(secret)!r}))
print("home", os.environ["HOME"] == os.getcwd())
try:
    socket.create_connection(("127.0.0.1", 22), timeout=1); print("net yes")
except OSError as e:
    print("net no")
try:
    open(pathlib.Path(labkit.__file__).parent / "x.py", "w"); print("write yes")
except OSError:
    print("write no")
print("pid1", open("/proc/1/cmdline").read().split("\\0")[0].split("/")[-1])
"""
    out = run_sandboxed(code).stdout
    repo_line = next(ln for ln in out.splitlines() if ln.startswith("repo"))
    assert "solutions" not in repo_line and "notebooks" not in repo_line and "labkit" in repo_line
    assert "secret False" in out and "home True" in out and "net no" in out and "write no" in out
    assert "pid1 bwrap" in out  # its own PID namespace: the host's processes do not exist there


def test_task_cap(bwrap):
    code = """
import os, time
n = 0
try:
    for _ in range(400):
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except OSError:
    pass
print("forked", n)
"""
    out = run_sandboxed(code, nproc=64).stdout
    forked = int(out.split("forked")[1].split()[0])
    assert 10 < forked < 64, out


# --- answer review ----------------------------------------------------------------------------------

def _lab01(cells: dict):
    nb = nbformat.read(str(REPO / "notebooks" / "lab01_forward.ipynb"), as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in cells:
            cell.source = cells[cell.metadata["nbgrader"]["grade_id"]]
    return nb


def test_review_flags_library_answers_and_dynamic_code():
    release = nbformat.read(str(REPO / "notebooks" / "lab01_forward.ipynb"), as_version=4)
    lib = _lab01({"q_sample": "def q_sample(x0, t, noise, ab):\n    return diffusion.q_sample(x0, t, noise, ab)"})
    assert any("labkit.diffusion.q_sample" in n for n in answer_notes(lib, release))
    dyn = _lab01({"snr": "def snr(a):\n    return eval('a / (1 - a)')"})
    assert any("eval()" in n for n in answer_notes(dyn, release))
    helper = _lab01({"snr": "def snr(a):\n    return helper(a)"})
    helper.cells.insert(3, nbformat.v4.new_code_cell("def helper(a):\n    return schedules.snr(a)"))
    assert any("helper uses labkit" in n for n in answer_notes(helper, release))


def test_review_leaves_honest_work_alone():
    release = nbformat.read(str(REPO / "notebooks" / "lab01_forward.ipynb"), as_version=4)
    for lab in ("lab01_forward", "lab05_sampling", "lab07_improvements"):
        rel = nbformat.read(str(REPO / "notebooks" / f"{lab}.ipynb"), as_version=4)
        sol = nbformat.read(str(REPO / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
        assert review_notes(sol, rel) == [] and review_notes(rel, rel) == [], lab
    # a second, plain definition (a copied answer cell) and a warning printed to stderr are the student's own
    copied = _lab01({})
    copied.cells.insert(15, nbformat.v4.new_code_cell("import sys\ndef q_sample(x0, t, noise, ab):\n"
                                                      "    print('debug', file=sys.stderr)\n    return x0"))
    assert answer_notes(copied, release) == []
